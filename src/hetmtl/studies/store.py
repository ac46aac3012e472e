"""SQLite results store of a study: one row per (study, setting, replicate, method).

What to use when:
- the runner writes through :class:`ResultStore` (you rarely need to);
- reading results yourself: :meth:`ResultStore.frame` (one row per returned metric row) or
  :meth:`ResultStore.records` (raw rows with status and error text).

Each finished job's rows are inserted in one transaction, so a killed study leaves either all or
none of a job's rows; the UNIQUE (study, setting, replicate, method) key means a restarted study
never counts a job twice. Metric rows are stored as JSON text (no pickles).

Several runners may share one store (two terminals, a cluster's nodes on a shared disk): each
claims a job in the ``claims`` table before running it (:meth:`ResultStore.claim`), so they split
the work instead of duplicating it; a runner releases its claims when it ends, and claims of a
process that died on this host are released by the next runner (a claim of a runner on another
host that died stays until you delete it: ``DELETE FROM claims`` in ``sqlite3 results.sqlite``).
A row whose stored JSON is damaged is reported by :meth:`ResultStore.damaged`, ignored by the
readers (with a warning naming the job) and recomputed on resume. Database errors (a corrupt or
unwritable file) are raised as :class:`StoreError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
import uuid
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from hetmtl.exceptions import HetmtlError

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    data_key TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    study TEXT NOT NULL,
    setting TEXT NOT NULL,
    setting_index INTEGER NOT NULL,
    params TEXT NOT NULL,
    replicate INTEGER NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    seconds REAL,
    rows TEXT,
    finished TEXT NOT NULL,
    UNIQUE (study, setting, replicate, method)
);
"""
# created by the first runner that claims a job (a reader never writes to the store)
CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    study TEXT NOT NULL,
    setting TEXT NOT NULL,
    replicate INTEGER NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    claimed TEXT NOT NULL,
    PRIMARY KEY (study, setting, replicate)
);
"""


class StoreError(HetmtlError, RuntimeError):
    """The results store cannot be opened, read or written (corrupt file, full disk, no permission)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _damage(params: Any, rows: Any, status: Any, replicate: Any) -> str | None:
    """Why a stored row cannot be used (None if it can)."""
    if isinstance(replicate, bool) or not isinstance(replicate, int):
        return f"replicate {replicate!r} is not an integer"
    try:
        p = json.loads(params)
    except (TypeError, ValueError, RecursionError):
        return "its params are not valid JSON"
    if not isinstance(p, dict):
        return "its params are not a JSON object"
    if status == "ok":
        try:
            r = json.loads(rows)
        except (TypeError, ValueError, RecursionError):
            return "its metric rows are not valid JSON"
        if not isinstance(r, list) or not r or not all(isinstance(x, dict) for x in r):
            return "its metric rows are not a non-empty list of objects"
    elif status != "failed":
        return f"status {status!r}"
    return None


def _clean(v: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, non-finite floats to None."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


class ResultStore:
    """The results database of one study directory (``results.sqlite``).

    Usable as a context manager (closes the connection on exit).

    Parameters
    ----------
    path : str or pathlib.Path
        The SQLite file (created with its parent directories when missing).
    """

    def __init__(self, path: str | Path) -> None:
        import stat

        self.path = Path(path)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            st = os.stat(self.path) if self.path.exists() else None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the results store ({exc.strerror or exc})") from None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{self.path}: the results store is not a regular file")
        self._lock = threading.RLock()  # claims may be taken from joblib's dispatch thread
        self._claims_ready = False
        self._closed = True
        with self._errors("open"):
            self._conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
        try:
            with self._errors("open"), self._conn:
                have = {n for (n,) in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"studies", "results"} <= have:  # a new store (an existing one is not written to)
                    self._conn.executescript(SCHEMA)
        except StoreError:
            self._conn.close()
            raise
        self._closed = False

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Database errors as one :class:`StoreError` naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot {doing} the results store ({exc}); "
                             f"if the file is damaged, move it away and rerun (finished jobs are lost)") from None

    def close(self) -> None:
        """Close the database connection (releasing this store's claims)."""
        if self._closed:
            return
        if self._claims_ready:
            try:
                self.release()
            except StoreError:
                pass
        self._conn.close()
        self._closed = True

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------------------- study
    def register_study(self, spec: dict, data_key: dict) -> None:
        """Record the study description; refuse a restart whose data would differ.

        Parameters
        ----------
        spec : dict
            :meth:`Study.to_dict <hetmtl.studies.Study.to_dict>` of the study.
        data_key : dict
            :meth:`Study.data_key <hetmtl.studies.Study.data_key>`; must match a previous run.
        """
        name = spec["name"]
        with self._errors("read"):
            row = self._conn.execute("SELECT data_key FROM studies WHERE name = ?", (name,)).fetchone()
        key = json.dumps(data_key, sort_keys=True)
        if row is not None and row[0] != key:
            raise ValueError(
                f"study {name!r} in {self.path} was started with another generator, grid, fixed arguments or "
                f"seed ({row[0]}); use a new output directory or the original description (now: {key})"
            )
        with self._errors("write"), self._conn:
            self._conn.execute(
                "INSERT INTO studies (name, spec, data_key, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                (name, json.dumps(spec), key, datetime.now(timezone.utc).isoformat()),
            )

    def study_specs(self) -> list[dict]:
        """The descriptions of every study in the store, oldest first.

        Returns
        -------
        list of dict
            :meth:`Study.to_dict <hetmtl.studies.Study.to_dict>` outputs.
        """
        out = []
        with self._errors("read"):
            rows = self._conn.execute("SELECT name, spec FROM studies ORDER BY created").fetchall()
        for name, text in rows:
            try:
                spec = json.loads(text)
            except (TypeError, ValueError, RecursionError):
                raise StoreError(f"{self.path}: the description of study {name!r} is damaged "
                                 f"(not valid JSON)") from None
            if not isinstance(spec, dict) or "name" not in spec:
                raise StoreError(f"{self.path}: the description of study {name!r} is damaged")
            out.append(spec)
        return out

    # ----------------------------------------------------------------------------- jobs
    def _result_rows(self, study: str) -> list[tuple]:
        """(setting, replicate, method, params, rows, status) of every stored result of a study."""
        with self._errors("read"):
            return self._conn.execute("SELECT setting, replicate, method, params, rows, status FROM results "
                                      "WHERE study = ?", (study,)).fetchall()

    def finished(self, study: str) -> set[tuple[str, int, str]]:
        """(setting, replicate, method) already recorded (ok or failed).

        Parameters
        ----------
        study : str
            Study name.

        Returns
        -------
        set of tuple
            The recorded keys.
        """
        cur = self._result_rows(study)
        return {(s, r, m) for s, r, m, p, rows, st in cur if _damage(p, rows, st, r) is None}

    def damaged(self, study: str) -> list[tuple[str, Any, str, str]]:
        """Rows of a study whose stored JSON cannot be read: (setting, replicate, method, why).

        Parameters
        ----------
        study : str
            Study name.

        Returns
        -------
        list of tuple
            The damaged rows' keys and the reason.
        """
        cur = self._result_rows(study)
        out = []
        for s, r, m, p, rows, st in cur:
            why = _damage(p, rows, st, r)
            if why is not None:
                out.append((s, r, m, why))
        return out

    def delete_damaged(self, study: str) -> list[tuple[str, Any, str, str]]:
        """Delete the damaged rows of a study (so a resumed run recomputes them).

        Parameters
        ----------
        study : str
            Study name.

        Returns
        -------
        list of tuple
            The deleted rows (as :meth:`damaged`).
        """
        bad = self.damaged(study)
        with self._errors("write"), self._conn:
            self._conn.executemany("DELETE FROM results WHERE study = ? AND setting = ? AND replicate = ? "
                                   "AND method = ?",
                                   [(study, s, r, m) for s, r, m, _ in bad])
        return bad

    # ----------------------------------------------------------------------------- claims
    def _claims(self) -> None:
        """Create the claims table on first use (stores written before it existed get it now)."""
        if not self._claims_ready:
            with self._lock, self._errors("write"), self._conn:
                self._conn.executescript(CLAIMS_SCHEMA)
            self._claims_ready = True

    def release_stale(self) -> int:
        """Release the claims of runners on this host whose process has ended (e.g. killed).

        Returns
        -------
        int
            Claims released.
        """
        self._claims()
        host = socket.gethostname()
        with self._errors("read"):
            rows = self._conn.execute("SELECT DISTINCT owner, pid FROM claims WHERE host = ?", (host,)).fetchall()
        dead = [owner for owner, pid in rows if owner != self.owner and not _pid_alive(int(pid))]
        n = 0
        with self._errors("write"), self._conn:
            for owner in dead:
                n += self._conn.execute("DELETE FROM claims WHERE owner = ?", (owner,)).rowcount
        return n

    def claim(self, study: str, setting: str, replicate: int) -> bool:
        """Claim a job for this store object's runner.

        Parameters
        ----------
        study, setting : str
            Study name and setting label.
        replicate : int
            Replicate index.

        Returns
        -------
        bool
            True if this runner now owns the job (another runner holds it otherwise).
        """
        self._claims()
        with self._lock, self._errors("write"), self._conn:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO claims (study, setting, replicate, owner, host, pid, claimed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (study, setting, int(replicate), self.owner, socket.gethostname(), os.getpid(),
                 datetime.now(timezone.utc).isoformat()))
            if cur.rowcount == 1:
                return True
            row = self._conn.execute("SELECT owner FROM claims WHERE study = ? AND setting = ? AND replicate = ?",
                                     (study, setting, int(replicate))).fetchone()
        return row is not None and row[0] == self.owner

    def missing(self, study: str, setting: str, replicate: int, methods: Iterable[str]) -> tuple[str, ...]:
        """The methods of one job not yet recorded (readable rows only).

        Parameters
        ----------
        study, setting : str
            Study name and setting label.
        replicate : int
            Replicate index.
        methods : iterable of str
            Methods wanted.

        Returns
        -------
        tuple of str
            Those without a usable row.
        """
        with self._lock, self._errors("read"):
            cur = self._conn.execute("SELECT method, params, rows, status, replicate FROM results WHERE study = ? AND "
                                     "setting = ? AND replicate = ?", (study, setting, int(replicate))).fetchall()
        done = {m for m, p, rows, st, r in cur if _damage(p, rows, st, r) is None}
        return tuple(m for m in methods if m not in done)

    def release(self) -> int:
        """Release every claim of this store object's runner.

        Returns
        -------
        int
            Claims released.
        """
        if not self._claims_ready:
            return 0
        with self._lock, self._errors("write"), self._conn:
            return self._conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,)).rowcount

    def delete_failed(self, study: str) -> int:
        """Delete the failed records of a study (so a rerun retries them).

        Parameters
        ----------
        study : str
            Study name.

        Returns
        -------
        int
            Number of records deleted.
        """
        with self._errors("write"), self._conn:
            return self._conn.execute("DELETE FROM results WHERE study = ? AND status = 'failed'", (study,)).rowcount

    def append(self, records: Iterable[dict]) -> int:
        """Insert one job's records atomically; already-present keys are ignored.

        Parameters
        ----------
        records : iterable of dict
            One record per (setting, replicate, method) with status, error, seconds and metric rows.

        Returns
        -------
        int
            Rows inserted.
        """
        now = datetime.now(timezone.utc).isoformat()
        records = list(records)
        values = [
            (r["study"], r["setting"], int(r["setting_index"]), json.dumps(_clean(r["params"])), int(r["replicate"]),
             r["method"], r["status"], r.get("error"), r.get("seconds"),
             None if r.get("rows") is None else json.dumps(_clean(r["rows"])), now)
            for r in records
        ]
        jobs = {(r["study"], r["setting"], int(r["replicate"])) for r in records}
        with self._lock, self._errors("write"), self._conn:
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO results (study, setting, setting_index, params, replicate, method, status, "
                "error, seconds, rows, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            n = self._conn.total_changes - before
            if self._claims_ready:
                self._conn.executemany("DELETE FROM claims WHERE study = ? AND setting = ? AND replicate = ? "
                                       "AND owner = ?", [(*j, self.owner) for j in jobs])
            return n

    # ----------------------------------------------------------------------------- reading
    def records(self, study: str | None = None) -> pd.DataFrame:
        """One row per (study, setting, replicate, method) with status, error and seconds.

        Parameters
        ----------
        study : str, optional
            A study name (default: every study in the store).

        Returns
        -------
        pandas.DataFrame
            The job records.
        """
        q = "SELECT study, setting, setting_index, params, replicate, method, status, error, seconds FROM results"
        args: tuple = ()
        if study is not None:
            q, args = q + " WHERE study = ?", (study,)
        with self._errors("read"):
            df = pd.read_sql_query(q + " ORDER BY study, setting_index, replicate, method", self._conn, params=args)
        return df

    def frame(self, study: str | None = None) -> pd.DataFrame:
        """Successful results, one row per metric row a method returned.

        Parameters
        ----------
        study : str, optional
            A study name (default: every study in the store).

        Returns
        -------
        pandas.DataFrame
            The setting's parameters as columns, ``replicate``, ``method``, ``seconds`` and the
            metrics.
        """
        q = "SELECT study, setting, setting_index, params, replicate, method, seconds, rows FROM results WHERE status = 'ok'"
        args: tuple = ()
        if study is not None:
            q, args = q + " AND study = ?", (study,)
        out = []
        with self._errors("read"):
            fetched = self._conn.execute(q, args).fetchall()
        for st, setting, si, params, rep, method, seconds, rows in fetched:
            why = _damage(params, rows, "ok", rep)
            if why is not None:
                warnings.warn(f"{self.path}: study {st!r}, setting {setting}, replicate {rep}, method {method!r}: "
                              f"damaged row ignored ({why}); resuming the study recomputes it", stacklevel=2)
                continue
            base = {"study": st, "setting": setting, "setting_index": si, **json.loads(params),
                    "replicate": rep, "method": method, "seconds": seconds}
            for row in json.loads(rows):
                out.append({**base, **{k: (float("nan") if v is None else v) for k, v in row.items()}})
        df = pd.DataFrame(out)
        if not df.empty:
            df = df.sort_values(["study", "setting_index", "replicate", "method"], kind="stable").reset_index(drop=True)
        return df
