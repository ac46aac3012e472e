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
"""
from __future__ import annotations

import copy
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from hetmtl.studies.spec import Replicate, Study, resolve, setting_label
from hetmtl.studies.store import ResultStore

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
    """What :func:`run_study` did: jobs in the study, skipped (already stored), run, and failures."""

    study: str
    path: Path
    n_jobs: int
    n_skipped: int
    n_run: int
    n_failed: int
    seconds: float


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


def run_job(study: Study, job: Job, n_threads: int | None = 1) -> list[dict]:
    """Generate the job's data once and run the requested methods on it; never raises."""
    base = {"study": study.name, "setting": job.label, "setting_index": job.setting_index,
            "params": job.setting, "replicate": job.replicate}
    specs = {m.name: m for m in study.methods}
    data_seed, method_seed = study.seeds(job.setting_index, job.replicate)
    reserved = set(RESERVED) | set(study.grid)
    records = []
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
            err = "data generation failed: " + _error_text(exc)
            return [{**base, "method": name, "status": "failed", "error": err, "seconds": None, "rows": None}
                    for name in job.methods]
        cache: dict = {}
        for name in job.methods:
            t0 = time.perf_counter()
            try:
                private = copy.deepcopy(rep)
                private.cache = cache
                cap.cap_torch()
                out = fns[name](private, **specs[name].options)
                rows = _as_rows(out, name, reserved)
                records.append({**base, "method": name, "status": "ok", "error": None,
                                "seconds": time.perf_counter() - t0, "rows": rows})
            except Exception as exc:
                records.append({**base, "method": name, "status": "failed", "error": _error_text(exc),
                                "seconds": time.perf_counter() - t0, "rows": None})
    return records


def pending_jobs(study: Study, store: ResultStore) -> tuple[list[Job], int]:
    """Jobs with at least one method not yet recorded, and the number of complete jobs."""
    done = store.finished(study.name)
    names = [m.name for m in study.methods]
    jobs, complete = [], 0
    for i, setting in enumerate(study.settings()):
        label = setting_label(setting)
        for r in range(int(study.n_reps)):
            missing = tuple(m for m in names if (label, r, m) not in done)
            if missing:
                jobs.append(Job(i, setting, r, missing))
            else:
                complete += 1
    return jobs, complete


def _execute(study: Study, jobs: list[Job], n_jobs: int, scheduler: Any, n_threads: int | None) -> Iterator[list[dict]]:
    """Yield each job's records as it finishes."""
    if scheduler is not None:
        from distributed import Client, as_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = [client.submit(run_job, study, job, n_threads, pure=False) for job in jobs]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            if client is not scheduler:
                client.close()
    elif n_jobs == 1:
        for job in jobs:
            yield run_job(study, job, n_threads)
    else:
        from joblib import Parallel, delayed

        par = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        yield from par(delayed(run_job)(study, job, n_threads) for job in jobs)


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
) -> RunResult:
    """Run (or resume) ``study`` into directory ``out`` (``out/results.sqlite``, ``out/study.yaml``).

    ``n_reps`` overrides the study's replicates; ``n_jobs`` local worker processes (joblib), or
    ``scheduler`` a Dask scheduler address / ``distributed.Client`` (then ``n_jobs`` is ignored).
    ``threads_per_worker`` caps BLAS/torch threads in each job (``None``: no cap).
    ``retry_failed`` re-runs methods recorded as failed. Returns a :class:`RunResult`.
    """
    if scheduler is not None and n_jobs not in (1, None):
        raise ValueError("pass either n_jobs (local) or scheduler (Dask), not both")
    n_jobs = int(n_jobs or 1)
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1, got {n_jobs}")
    study = study.with_reps(n_reps)
    study.check_resolvable()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ResultStore(out / STORE_NAME) as store:
        store.register_study(study.to_dict(), study.data_key())
        try:
            (out / "study.yaml").write_text(study.to_yaml())
        except Exception:  # options that YAML cannot hold; the JSON copy in the store is enough
            pass
        if retry_failed:
            store.delete_failed(study.name)
        jobs, complete = pending_jobs(study, store)
        total = len(jobs) + complete
        n_failed = 0
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=complete, desc=study.name, unit="job", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            bar.set_postfix(failed=0)
            for records in _execute(study, jobs, n_jobs, scheduler, threads_per_worker):
                store.append(records)
                if any(r["status"] == "failed" for r in records):
                    n_failed += 1
                bar.update(1)
                bar.set_postfix(failed=n_failed)
        finally:
            bar.close()
    return RunResult(study.name, out, total, complete, len(jobs), n_failed, time.perf_counter() - t0)
