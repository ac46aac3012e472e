"""Running a study: every (setting, replicate) is one independent, seeded job.

What to use when:

- on this machine: ``run_study(study, out, n_jobs=2)`` (joblib processes; ``n_jobs=1`` runs
  in-process, which is easiest to debug);
- on a Dask cluster: ``run_study(study, out, scheduler="tcp://host:8786")`` (or a
  ``distributed.Client``); results are identical to a local run with the same seed.

Within a job the data are generated once (and split once, if the study has a splitter) and every
method gets the same :class:`~hetmtl.studies.spec.Replicate` (a private copy), so comparisons are
paired. ``seconds`` is each method's own wall time; work shared through ``Replicate.cache``
(e.g. per-site fits reused by fusion methods) counts for the method that computed it first.
A job's results are written to the SQLite store as soon as it finishes; a restarted study
skips what is recorded. A method that raises is recorded as ``failed`` with its error; the other
methods and jobs go on. BLAS (and torch, when loaded) threads are capped per worker.
With a time limit (``run_study(..., timeout=SECONDS)``, ``Study.timeout``, CLI ``--timeout``) each
job runs in a forked child process that is killed at the limit: the methods it finished keep their
results, the others are recorded as failed ("timed out after N s"); a child that crashes is
recorded the same way. ``only=`` / ``methods=`` run a subset of settings / methods now.

Several runners on one output directory split the work: each claims a job in the store before
running it (local runs claim as they dispatch; a Dask run claims all its pending jobs at once) and
skips jobs claimed by another live runner (see :mod:`hetmtl.studies.store`). A
stored row whose JSON is damaged is deleted and recomputed when the study resumes. Store errors
(a corrupt or unwritable ``results.sqlite``) raise :class:`~hetmtl.studies.store.StoreError`.

Trusted input only: a study (object or YAML/TOML file) names its generator, splitter and methods
as ``"module:function"``, and the runner imports and calls whatever those name, with the
privileges of the user running it. Run study files only from sources you trust, as you would a
Python script (see ``docs/security.rst``).
"""
from __future__ import annotations

import copy
import json
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from hetmtl.studies.spec import Replicate, Study, resolve, setting_label
from hetmtl.exceptions import InputError
from hetmtl.studies.store import ResultStore, _clean

STORE_NAME = "results.sqlite"


@dataclass(frozen=True)
class Job:
    setting_index: int
    setting: dict
    replicate: int
    methods: tuple[str, ...]

    @property
    def label(self) -> str:
        return setting_label(self.setting)


@dataclass
class RunResult:
    """What :func:`run_study` did.

    Parameters
    ----------
    study : str
        Study name.
    path : pathlib.Path
        The output directory.
    n_jobs : int
        Jobs in the study (settings × replicates).
    n_skipped : int
        Jobs already stored.
    n_run : int
        Jobs run now.
    n_failed : int
        Jobs with at least one failed method.
    seconds : float
        Wall-clock time.
    n_elsewhere : int
        Pending jobs left to (or done by) another runner on the same store.
    n_damaged : int
        Damaged stored rows deleted so that they are recomputed.
    n_failed_stored : int
        Jobs of the study (in the ``only``/``methods`` selection) with a method recorded as
        failed, now or in an earlier run.
    """

    study: str
    path: Path
    n_jobs: int
    n_skipped: int
    n_run: int
    n_failed: int
    seconds: float
    n_elsewhere: int = 0
    n_damaged: int = 0
    n_failed_stored: int = 0


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class _ThreadCap:
    """Cap BLAS threads (threadpoolctl) and torch intra-op threads while a job runs; the thread
    environment variables are set too, so a library first loaded inside the job starts capped.
    Everything is restored afterwards (matters when jobs run in the calling process)."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> "_ThreadCap":
        self._torch_old = None
        if self.n is None:
            return self
        from threadpoolctl import threadpool_limits

        self._torch_old = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        self._env_old = {k: os.environ.get(k) for k in _THREAD_ENV}
        for k in _THREAD_ENV:
            os.environ[k] = str(int(self.n))
        self._limits = threadpool_limits(limits=int(self.n))
        self.cap_torch()
        return self

    def cap_torch(self) -> None:
        """Cap torch now (call again after code that may have imported torch)."""
        if self.n is not None and "torch" in sys.modules:
            if self._torch_old is None:
                self._torch_old = sys.modules["torch"].get_num_threads()
            sys.modules["torch"].set_num_threads(int(self.n))

    def __exit__(self, *exc) -> None:
        if self.n is None:
            return
        self._limits.restore_original_limits()
        for k, v in self._env_old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self._torch_old is not None:
            sys.modules["torch"].set_num_threads(self._torch_old)


def _error_text(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip() + "\n" + "".join(tb[-3:])


RESERVED = ("study", "setting", "setting_index", "params", "replicate", "method", "seconds")


def _as_rows(out: Any, method: str, reserved: set[str]) -> list[dict]:
    """Normalise a method's return value to a list of flat dicts of scalars."""
    if isinstance(out, pd.DataFrame):
        out = out.reset_index().to_dict("records") if out.index.name else out.to_dict("records")
    if isinstance(out, dict):
        out = [out]
    if not isinstance(out, list) or not out or not all(isinstance(r, dict) for r in out):
        raise TypeError(f"method {method!r} must return a dict of metrics, a non-empty list of dicts or a DataFrame, "
                        f"got {type(out).__name__}")
    rows = []
    for r in out:
        row = {}
        for k, v in r.items():
            if str(k) in reserved:
                raise ValueError(f"method {method!r} returned the column {k!r}, which the study uses itself "
                                 f"(reserved: {sorted(reserved)}); rename it")
            if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
                v = v.item()
            if v is not None and not isinstance(v, (int, float, str, bool)):
                raise TypeError(f"method {method!r}: metric {k!r} must be a scalar, got {type(v).__name__}")
            row[str(k)] = v
        rows.append(row)
    return rows


def _iter_job(study: Study, job: Job, n_threads: int | None = 1) -> Iterator[dict]:
    """Generate the job's data once and run the requested methods on it, yielding each method's
    record as soon as it is done; never raises."""
    base = _record_base(study, job)
    specs = {m.name: m for m in study.methods}
    data_seed, method_seed = study.seeds(job.setting_index, job.replicate)
    reserved = set(RESERVED) | set(study.grid)
    with _ThreadCap(n_threads) as cap:
        try:
            fns = {name: resolve(specs[name].fn, "method") for name in job.methods}
            cap.cap_torch()  # a method's module may just have loaded torch
            gen = resolve(study.generator, "generator")
            data = gen(**study.fixed, **job.setting, random_state=data_seed)
            splits = None
            if study.splitter is not None:
                splits = resolve(study.splitter, "generator")(data, method_seed)
            rep = Replicate(data=data, setting=dict(job.setting), replicate=job.replicate, seed=method_seed, splits=splits)
        except Exception as exc:  # data generation failed: every method of the job fails with it
            yield from _failed(study, job, job.methods, "data generation failed: " + _error_text(exc), None)
            return
        cache: dict = {}
        for name in job.methods:
            t0 = time.perf_counter()
            try:
                private = copy.deepcopy(rep)
                private.cache = cache
                cap.cap_torch()
                out = fns[name](private, **specs[name].options)
                rows = _as_rows(out, name, reserved)
                rec = {**base, "method": name, "status": "ok", "error": None,
                       "seconds": time.perf_counter() - t0, "rows": rows}
            except Exception as exc:
                rec = {**base, "method": name, "status": "failed", "error": _error_text(exc),
                       "seconds": time.perf_counter() - t0, "rows": None}
            yield rec


def _record_base(study: Study, job: Job) -> dict:
    return {"study": study.name, "setting": job.label, "setting_index": job.setting_index,
            "params": job.setting, "replicate": job.replicate}


def _failed(study: Study, job: Job, methods, error: str, seconds: float | None) -> list[dict]:
    base = _record_base(study, job)
    return [{**base, "method": m, "status": "failed", "error": error, "seconds": seconds, "rows": None} for m in methods]


def _run_job_forked(study: Study, job: Job, n_threads: int | None, timeout: float) -> list[dict]:
    """Run the job in a forked child process and kill it after ``timeout`` seconds.

    The child sends each method's record (JSON, one line) as soon as it is done, so the methods
    that finished before the limit keep their results; the running and remaining ones are
    recorded as failed ("timed out after N s"). A child that dies is reported the same way.
    ``os.fork`` is used directly (not multiprocessing) so that it also works inside daemonic
    joblib/Dask worker processes."""
    if not hasattr(os, "fork"):
        raise RuntimeError("a job timeout needs os.fork (POSIX); run without timeout on this platform")
    try:  # import the modules here, once per worker process, so that the child's time is the job's own
        resolve(study.generator, "generator")
        if study.splitter is not None:
            resolve(study.splitter, "generator")
        for m in study.methods:
            if m.name in job.methods:
                resolve(m.fn, "method")
    except Exception:  # noqa: BLE001 - the child records the error
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run the job, stream the records, exit without running the parent's cleanup
        code = 0
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "w") as fh:
                for rec in _iter_job(study, job, n_threads):
                    fh.write(json.dumps(_clean(rec)) + "\n")
                    fh.flush()
        except BaseException:  # noqa: BLE001 - the parent reports the missing records
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    records: list[dict] = []
    buf = b""
    timed_out = False
    deadline = t0 + float(timeout)
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:  # child closed the pipe (finished or died)
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            records += [json.loads(line) for line in lines if line]
    finally:
        os.close(read_fd)
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
    done = {r["method"] for r in records}
    missing = [m for m in job.methods if m not in done]
    if missing:
        elapsed = time.perf_counter() - t0
        if timed_out:
            first = f"timed out after {float(timeout):g} s (job time limit; killed while running this method)"
            rest = f"not run: the job timed out after {float(timeout):g} s"
        else:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.WEXITSTATUS(status)}")
            first = rest = f"the job's process died ({how}) before this method finished"
        records += _failed(study, job, missing[:1], first, elapsed - sum(r["seconds"] or 0.0 for r in records))
        records += _failed(study, job, missing[1:], rest, None)
    return records


def run_job(study: Study, job: Job, n_threads: int | None = 1, timeout: float | None = None) -> list[dict]:
    """Generate the job's data once and run the requested methods on it; never raises.

    Parameters
    ----------
    study : Study
        The study.
    job : Job
        One setting × replicate and the methods to run.
    n_threads : int or None
        BLAS / torch thread cap while the job runs (``None``: no cap).
    timeout : float, optional
        Seconds; the job then runs in a forked child process that is killed at the limit.

    Returns
    -------
    list of dict
        One record per method (status ``ok`` with metric rows, or ``failed`` with the error).
    """
    if timeout is None:
        return list(_iter_job(study, job, n_threads))
    return _run_job_forked(study, job, n_threads, timeout)


def _matches(setting: dict, only: Mapping[str, Sequence] | None) -> bool:
    if not only:
        return True
    return all(_same_value(setting[k], v) for k, v in only.items())


def _same_value(value: Any, wanted: Sequence) -> bool:
    return any(json.dumps(_clean(value)) == json.dumps(_clean(w)) or _num_equal(value, w) for w in wanted)


def _num_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def check_filters(study: Study, only: Mapping[str, Sequence] | None, methods: Sequence[str] | None) -> None:
    """Refuse filters that name unknown grid parameters, values or methods (before any job runs)."""
    if only is not None and not isinstance(only, Mapping):
        raise InputError(f"study {study.name!r}: only must map grid parameters to lists of values, "
                         f"got {type(only).__name__}")
    if methods is not None and (isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence)
                                or not all(isinstance(m, str) for m in methods)):
        raise InputError(f"study {study.name!r}: methods must be a list of method names, got {methods!r:.80}")
    for k, values in (only or {}).items():
        if k not in study.grid:
            raise InputError(f"study {study.name!r}: --only names {k!r}, which is not a grid parameter "
                             f"{list(study.grid)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise InputError(f"study {study.name!r}: the values of grid parameter {k!r} to run must be a list")
        unknown = [v for v in values if not _same_value(v, study.grid[k])]
        if unknown:
            raise InputError(f"study {study.name!r}: grid parameter {k!r} has no value(s) {unknown}; "
                             f"values are {study.grid[k]}")
    names = [m.name for m in study.methods]
    unknown = [m for m in (methods or []) if m not in names]
    if unknown:
        raise InputError(f"study {study.name!r} has no method(s) {unknown}; methods are {names}")


def pending_jobs(study: Study, store: ResultStore, only: Mapping[str, Sequence] | None = None,
                 methods: Sequence[str] | None = None) -> tuple[list[Job], int]:
    """Jobs with at least one method not yet recorded, and the number of complete jobs; ``only``
    keeps the settings whose grid values are among the given ones, ``methods`` the named methods."""
    done = store.finished(study.name)
    names = [m.name for m in study.methods if methods is None or m.name in methods]
    jobs, complete = [], 0
    for i, setting in enumerate(study.settings()):
        if not _matches(setting, only):
            continue
        label = setting_label(setting)
        for r in range(int(study.n_reps)):
            missing = tuple(m for m in names if (label, r, m) not in done)
            if missing:
                jobs.append(Job(i, setting, r, missing))
            else:
                complete += 1
    return jobs, complete


def _claimed(study: Study, jobs: Sequence[Job], store: ResultStore | None, skipped: list[Job]) -> Iterator[Job]:
    """The jobs this runner owns, claimed one by one as they are dispatched (so two runners on
    one store interleave); a job another runner holds or has finished meanwhile goes to
    ``skipped``."""
    for job in jobs:
        if store is None:
            yield job
            continue
        if not store.claim(study.name, job.label, job.replicate):
            skipped.append(job)
            continue
        missing = store.missing(study.name, job.label, job.replicate, job.methods)
        if not missing:  # finished by another runner between our reading and our claim
            skipped.append(job)
            continue
        yield Job(job.setting_index, job.setting, job.replicate, missing)


def _execute(study: Study, jobs: Iterable[Job] | list[Job], n_jobs: int, scheduler: Any, n_threads: int | None,
             timeout: float | None = None) -> Iterator[list[dict]]:
    """Yield each job's records as it finishes."""
    if scheduler is not None:
        from distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = [client.submit(run_job, study, job, n_threads, timeout, pure=False) for job in jobs]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            if client is not scheduler:
                client.close()
    elif n_jobs == 1:
        for job in jobs:
            yield run_job(study, job, n_threads, timeout)
    else:
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        yield from par(delayed(run_job)(study, job, n_threads, timeout) for job in jobs)


def run_study(
    study: Study,
    out: str | Path,
    *,
    n_reps: int | None = None,
    n_jobs: int = 1,
    scheduler: Any = None,
    threads_per_worker: int | None = 1,
    progress: bool = True,
    retry_failed: bool = False,
    timeout: float | None = None,
    only: Mapping[str, Sequence] | None = None,
    methods: Sequence[str] | None = None,
) -> RunResult:
    """Run (or resume) a study into a directory (``out/results.sqlite``, ``out/study.yaml``).

    Parameters
    ----------
    study : Study
        The study.
    out : str or pathlib.Path
        Output directory; jobs already stored there are skipped.
    n_reps : int, optional
        Override the study's replicates.
    n_jobs : int or None
        Local worker processes (joblib's meaning: None 1, -1 all cores, -2 all but one).
    scheduler : str or distributed.Client, optional
        A Dask scheduler address or client (then ``n_jobs`` is ignored).
    threads_per_worker : int or None
        BLAS / torch thread cap in each job (``None``: no cap).
    progress : bool
        Show a progress bar.
    retry_failed : bool
        Re-run methods recorded as failed.
    timeout : float, optional
        Seconds (default the study's ``timeout``): a job that runs longer is recorded as failed
        ("timed out after N s"; methods it finished before keep their results) and the other
        jobs go on; each job then runs in a forked child process (POSIX).
    only : mapping, optional
        ``{grid parameter: [values]}``: run a subset of settings now; the rest stays pending.
    methods : sequence of str, optional
        Run only these methods now.

    Returns
    -------
    RunResult
        Counts of jobs and the time taken.
    """
    from hetmtl._validation import check_bool, check_float, check_int, check_n_jobs

    if not isinstance(study, Study):
        raise InputError(f"study must be a hetmtl.studies.Study, got {type(study).__name__}")
    if scheduler is not None and n_jobs not in (1, None):
        raise InputError("pass either n_jobs (local) or scheduler (Dask), not both")
    n_jobs = check_n_jobs(n_jobs, "n_jobs")  # joblib's meaning: -1 all cores, -2 all but one
    most = 4 * (os.cpu_count() or 1)
    if n_jobs > most:  # each worker is a process: an unchecked 10**6 would exhaust the machine
        raise InputError(f"n_jobs={n_jobs} worker processes is more than 4 per core ({most} on this machine)")
    n_reps = check_int(n_reps, "n_reps", low=1, allow_none=True)
    retry_failed = check_bool(retry_failed, "retry_failed")
    progress = check_bool(progress, "progress")
    threads_per_worker = check_int(threads_per_worker, "threads_per_worker", low=1, high=4096, allow_none=True)
    study = study.with_reps(n_reps)
    study.check_resolvable()
    check_filters(study, only, methods)
    timeout = study.timeout if timeout is None else timeout
    if timeout is not None:
        try:
            timeout = check_float(timeout, "timeout", low=0.0, low_open=True)
        except InputError:
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}") from None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(f"{out}: cannot create the study directory ({why})") from None
    if not out.is_dir():
        raise InputError(f"{out}: not a directory")
    t0 = time.perf_counter()
    with ResultStore(out / STORE_NAME) as store:
        store.register_study(study.to_dict(), study.data_key())
        try:
            (out / "study.yaml").write_text(study.to_yaml())
        except Exception:  # options that YAML cannot hold; the JSON copy in the store is enough
            pass
        store.release_stale()
        damaged = store.delete_damaged(study.name)
        for setting, rep, method, why in damaged:
            print(f"hetmtl: study {study.name!r}, setting {setting}, replicate {rep}, method {method!r}: damaged "
                  f"row ({why}); recomputing it", file=sys.stderr)
        if retry_failed:
            store.delete_failed(study.name)
        jobs, complete = pending_jobs(study, store, only, methods)
        total = len(jobs) + complete
        n_failed = n_run = 0
        skipped: list[Job] = []
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=complete, desc=study.name, unit="job", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            bar.set_postfix(failed=0)
            mine: Iterable[Job] = _claimed(study, jobs, store, skipped)
            if scheduler is not None:
                mine = list(mine)  # Dask: every job is submitted at once
            for records in _execute(study, mine, n_jobs, scheduler, threads_per_worker, timeout):
                store.append(records)
                n_run += 1
                if any(r["status"] == "failed" for r in records):
                    n_failed += 1
                bar.update(1)
                bar.set_postfix(failed=n_failed)
        finally:
            bar.close()
        n_failed_stored = _failed_jobs(study, store, only, methods)
    return RunResult(study.name, out, total, complete, n_run, n_failed, time.perf_counter() - t0,
                     n_elsewhere=len(skipped), n_damaged=len(damaged), n_failed_stored=n_failed_stored)


def _failed_jobs(study: Study, store: ResultStore, only: Mapping[str, Sequence] | None,
                 methods: Sequence[str] | None) -> int:
    """Jobs of the selection with at least one method recorded as failed."""
    rec = store.records(study.name)
    if rec.empty:
        return 0
    rec = rec[rec["status"] == "failed"]
    if methods:
        rec = rec[rec["method"].isin(list(methods))]
    labels = {setting_label(s) for s in study.settings() if _matches(s, only)}
    rec = rec[rec["setting"].isin(labels) & (rec["replicate"] < int(study.n_reps))]
    return int(rec[["setting", "replicate"]].drop_duplicates().shape[0])
