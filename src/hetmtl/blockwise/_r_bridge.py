"""Bridge to R's ``BlockMissingData::MBI`` through rpy2 (``MBI(engine="r")``).

Needs R, the R package BlockMissingData and rpy2 ``>=3.5,<3.6`` (rpy2 3.6 needs R >= 4.5).
``set.seed(seed)`` is called right before ``MBI``: the R optimiser adds random noise to its
gradients, so results depend on the seed (reruns with one seed are bit-identical).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from hetmtl.blockwise.mbi import mbi_layout

__all__ = ["r_mbi_available", "run_r_mbi"]

# The man page's settings: R's default eps2 = 1e-7 practically never converges.
DEFAULT_R_ARGS = {"eps2": 1e-3, "h1": "2^-(8:20)"}


def _load():
    import os

    saved = os.environ.get("LD_LIBRARY_PATH")
    try:
        import rpy2.robjects as ro
        from rpy2.robjects.packages import PackageNotInstalledError, importr
    except ImportError as exc:  # rpy2 missing, or it cannot find / load R
        raise ImportError(
            "MBI(engine='r') needs rpy2 and R: install R (e.g. apt-get install r-base-core), "
            "the R package BlockMissingData (install.packages('BlockMissingData')) and "
            f"pip install 'rpy2>=3.5,<3.6' (rpy2 3.6 needs R >= 4.5). Import failed: {exc}"
        ) from exc
    try:
        pkg = importr("BlockMissingData")
    except PackageNotInstalledError as exc:
        raise ImportError(
            "MBI(engine='r'): the R package BlockMissingData is not installed in the R that rpy2 "
            "uses; run install.packages('BlockMissingData') in R, or use engine='native'"
        ) from exc
    finally:
        # starting R sets LD_LIBRARY_PATH to R's libraries; child Pythons would then load the
        # system libpython instead of their own and crash
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved
    return ro, pkg


def r_mbi_available() -> tuple[bool, str]:
    """(True, "") when the R engine can run, otherwise (False, the reason)."""
    try:
        _load()
    except Exception as exc:  # noqa: BLE001 - any failure means: not available, with reason
        return False, str(exc)
    return True, ""


def run_r_mbi(X, y, sources, groups=None, *, seed: int = 1, nlam: int = 100,
              lambda_min_ratio: float | None = None, a: float = 3.7, eps1: float = 1e-3,
              eps3: float = 1e-8, extra: dict | None = None) -> dict:
    """Run R's MBI on arrays (NaN = missing block) and map its outputs back.

    Returns ``beta`` (L × p, original scale, the caller's column order), ``intercept``,
    ``lambda``, ``bic1``, ``notcon``, ``beta0`` (standardised, caller's column order) and
    ``elapsed`` / ``cpu`` (wall and CPU seconds of the R call; R runs embedded in this process,
    so its CPU time is this process's). ``extra`` values that are strings are evaluated as R
    code (e.g. ``"2^-(8:20)"``): trusted input only.
    """
    ro, pkg = _load()
    lay = mbi_layout(X, y, sources, groups)
    n, p = lay["X"].shape
    Xr = ro.r["matrix"](ro.FloatVector(np.where(np.isnan(lay["X"]), np.nan, lay["X"]).ravel(
        order="F")), nrow=n, ncol=p)
    miss = ro.ListVector.from_length(len(lay["miss_source"]))
    for k, m in enumerate(lay["miss_source"]):
        miss[k] = ro.NULL if m is None else ro.IntVector(m)
    args = {"nlam": nlam, "a": a, "eps1": eps1, "eps3": eps3}
    if lambda_min_ratio is not None:
        args["lambda.min"] = lambda_min_ratio
    for key, value in {**DEFAULT_R_ARGS, **(extra or {})}.items():
        args[key] = ro.r(value) if isinstance(value, str) else value
    ro.r["set.seed"](int(seed))
    t0, c0 = time.perf_counter(), time.process_time()
    res = pkg.MBI(X=Xr, y=ro.FloatVector(lay["y"]), cov_index=ro.IntVector(lay["cov_index"]),
                  sub_index=ro.IntVector(lay["sub_index"]), miss_source=miss,
                  complete=lay["complete"], **args)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    out: dict[str, Any] = {name: np.asarray(res.rx2(name)) for name in ("beta", "intercept", "lambda", "bic1",
                                                          "beta0")}
    col_order = lay["col_order"]
    for name in ("beta", "beta0"):
        mat = np.asarray(out[name], dtype=float).reshape(-1, p)
        back = np.empty_like(mat)
        back[:, col_order] = mat
        out[name] = back
    out["intercept"] = np.asarray(out["intercept"], dtype=float).ravel()
    out["lambda"] = np.asarray(out["lambda"], dtype=float).ravel()
    out["bic1"] = np.asarray(out["bic1"], dtype=float).ravel()
    out["notcon"] = int(np.asarray(res.rx2("notcon"))[0])
    out["elapsed"] = elapsed
    out["cpu"] = cpu
    return out
