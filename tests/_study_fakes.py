"""Cheap fake generators and methods for the study-runner tests (importable by worker processes)."""
from __future__ import annotations

import os
import time

import numpy as np
from scipy import stats


def toy(mu: float = 0.0, n: int = 20, random_state=None) -> dict:
    """n draws of N(mu, 1) with a known mean."""
    rng = np.random.default_rng(random_state)
    return {"x": rng.normal(mu, 1.0, n), "mu": float(mu)}


def bad_generator(mu: float = 0.0, random_state=None):
    if mu > 0:
        raise RuntimeError(f"cannot draw data for mu={mu}")
    return {"x": np.zeros(3), "mu": 0.0}


def halves(data, seed):
    """A shared random split of the rows into two halves."""
    perm = np.random.default_rng(seed).permutation(len(data["x"]))
    return perm[: len(perm) // 2], perm[len(perm) // 2:]


def mean_method(rep, level: float = 0.95) -> dict:
    x, mu = rep.data["x"], rep.data["mu"]
    est, se = x.mean(), x.std(ddof=1) / np.sqrt(x.size)
    q = stats.norm.ppf(0.5 + level / 2)
    return {"estimate": est, "bias": est - mu, "mse": (est - mu) ** 2,
            "coverage": float(abs(est - mu) <= q * se), "ci_width": 2 * q * se}


def median_method(rep) -> dict:
    x, mu = rep.data["x"], rep.data["mu"]
    est = float(np.median(x))
    return {"estimate": est, "bias": est - mu, "mse": (est - mu) ** 2}


def noisy_method(rep) -> dict:
    """Uses the method seed: identical across runs only if seeds are handled deterministically."""
    rng = np.random.default_rng(rep.seed)
    est = rep.data["x"].mean() + rng.normal(0, 0.1)
    return {"estimate": est, "mse": (est - rep.data["mu"]) ** 2}


def split_method(rep) -> dict:
    """Returns the first index of the shared split (to check every method saw the same split)."""
    return {"first_train": int(rep.splits[0][0]), "sum_x": float(rep.data["x"].sum())}


def mutating_method(rep) -> dict:
    rep.data["x"][:] = 1e6  # must not leak into the next method's data
    return {"sum_x": 0.0}


def failing_method(rep, fail_on: tuple = (1,)) -> dict:
    if rep.replicate in fail_on:
        raise ValueError(f"deliberate failure at replicate {rep.replicate}")
    return {"estimate": float(rep.data["x"].mean())}


def per_site_method(rep, values: dict) -> list[dict]:
    """Rows per site with given values (for hand-checked reports): values[site] = offset."""
    return [{"site": s, "mse": off + rep.replicate} for s, off in values.items()]


def fixed_method(rep, table: dict) -> dict:
    """Returns table['<setting mu>'][replicate] as the metric 'score'."""
    return {"score": table[str(rep.setting["mu"])][rep.replicate]}


def slow_method(rep, seconds: float = 0.3, log: str | None = None) -> dict:
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {rep.setting['mu']} {rep.replicate}\n")
    time.sleep(seconds)
    return {"estimate": float(rep.data["x"].mean())}


def threads_method(rep) -> dict:
    """Thread counts seen inside a job: torch intra-op threads and the largest BLAS pool."""
    import torch
    from threadpoolctl import threadpool_info

    pools = [p["num_threads"] for p in threadpool_info()]
    return {"torch_threads": torch.get_num_threads(), "blas_threads": max(pools) if pools else 1,
            "omp_env": int(os.environ.get("OMP_NUM_THREADS", "0"))}


def clashing_method(rep) -> dict:
    return {"mu": 3.0, "estimate": 1.0}


def sleepy_method(rep, seconds: float = 30.0, on: tuple = (1,)) -> dict:
    """Sleeps ``seconds`` at the replicates in ``on`` (to exceed a job timeout), else returns at once."""
    if rep.replicate in on:
        time.sleep(seconds)
    return {"estimate": float(rep.data["x"].mean())}


def dying_method(rep) -> dict:
    """Kills its own process (a crash a timeout-protected job must survive)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return {}
