"""SQLite results store of a study: one row per (study, setting, replicate, method).

What to use when:
- the runner writes through :class:`ResultStore` (you rarely need to);
- reading results yourself: :meth:`ResultStore.frame` (one row per returned metric row) or
  :meth:`ResultStore.records` (raw rows with status and error text).

Each finished job's rows are inserted in one transaction, so a killed study leaves either all or
none of a job's rows; the UNIQUE (study, setting, replicate, method) key means a restarted study
never counts a job twice. Metric rows are stored as JSON text (no pickles).
"""
from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

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
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=60.0)
        with self._conn:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

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
        row = self._conn.execute("SELECT data_key FROM studies WHERE name = ?", (name,)).fetchone()
        key = json.dumps(data_key, sort_keys=True)
        if row is not None and row[0] != key:
            raise ValueError(
                f"study {name!r} in {self.path} was started with another generator, grid, fixed arguments or "
                f"seed ({row[0]}); use a new output directory or the original description (now: {key})"
            )
        with self._conn:
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
        return [json.loads(s) for (s,) in self._conn.execute("SELECT spec FROM studies ORDER BY created")]

    # ----------------------------------------------------------------------------- jobs
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
        cur = self._conn.execute("SELECT setting, replicate, method FROM results WHERE study = ?", (study,))
        return {(s, int(r), m) for s, r, m in cur}

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
        with self._conn:
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
        values = [
            (r["study"], r["setting"], int(r["setting_index"]), json.dumps(_clean(r["params"])), int(r["replicate"]),
             r["method"], r["status"], r.get("error"), r.get("seconds"),
             None if r.get("rows") is None else json.dumps(_clean(r["rows"])), now)
            for r in records
        ]
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO results (study, setting, setting_index, params, replicate, method, status, "
                "error, seconds, rows, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return self._conn.total_changes - before

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
        for st, setting, si, params, rep, method, seconds, rows in self._conn.execute(q, args):
            base = {"study": st, "setting": setting, "setting_index": si, **json.loads(params),
                    "replicate": rep, "method": method, "seconds": seconds}
            for row in json.loads(rows):
                out.append({**base, **{k: (float("nan") if v is None else v) for k, v in row.items()}})
        df = pd.DataFrame(out)
        if not df.empty:
            df = df.sort_values(["study", "setting_index", "replicate", "method"], kind="stable").reset_index(drop=True)
        return df
