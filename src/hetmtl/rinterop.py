"""Plain-data bridge for the R front end (reticulate).

Debian's reticulate 1.28 cannot exchange NumPy 2 arrays (its NumPy C-API check fails), so R never
passes or receives arrays: it sends flat lists (column-major, as R stores matrices) and gets back
nested lists/dicts of Python floats, ints and strings. Everything here is a thin adapter around
the public Python API; no statistics is computed in this module.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def matrix(flat: Sequence[float] | None, nrow: int, ncol: int) -> np.ndarray | None:
    """An R matrix sent as ``as.list(m)`` (column-major) back to an (nrow, ncol) array."""
    if flat is None:
        return None
    values = np.asarray(list(flat), dtype=float)
    if values.size != int(nrow) * int(ncol):
        raise ValueError(f"matrix data has {values.size} values for {nrow} x {ncol}")
    return values.reshape(int(ncol), int(nrow)).T.copy()


def vector(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(list(values), dtype=float)


def plain(obj: Any) -> Any:
    """Convert NumPy arrays/scalars (recursively, in dicts, lists and DataFrames) to plain Python."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return {"index": [plain(i) for i in obj.index.tolist()], "columns": [str(c) for c in obj.columns],
                "data": {str(c): plain(obj[c].to_numpy()) for c in obj.columns}}
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return obj if isinstance(obj, (str, type(None))) else str(obj)


def multisite_dml(
    y: Sequence[float], d: Sequence[float], x: Sequence[float], nrow: int, x_cols: Sequence[str],
    site: Sequence[str], z: Sequence[float] | None, z_cols: Sequence[str] | None, y_col: str, d_col: str,
    **params: Any,
) -> dict[str, Any]:
    """Fit :class:`~hetmtl.latefusion.MultiSiteDML` from R data; return per-site results as plain data."""
    from hetmtl.data import MultiSiteData
    from hetmtl.latefusion import MultiSiteDML

    x_cols = list(x_cols)
    z_cols = list(z_cols) if z_cols else None
    data = MultiSiteData.from_arrays(
        vector(y), vector(d), matrix(x, nrow, len(x_cols)), np.asarray(list(site), dtype=object),
        matrix(z, nrow, len(z_cols)) if z_cols else None, x_cols=x_cols, z_cols=z_cols, y_col=y_col, d_col=d_col,
    )
    for key in ("n_folds", "n_rep", "random_state", "n_jobs"):
        if params.get(key) is not None:
            params[key] = int(params[key])
    fit = MultiSiteDML(**params).fit(data)
    sites = []
    for name, est in fit.estimators_.items():
        sites.append({
            "site": str(name), "terms": list(est.coef_names_), "coef": plain(est.coef_), "vcov": plain(est.vcov_),
            "n": int(est.n_), "summary_json": est.to_summary(site=str(name)).to_json(),
        })
    return {"sites": sites, "notes": list(data.notes)}


def late_fusion(summaries: Sequence[str], **params: Any) -> dict[str, Any]:
    """Fit :class:`~hetmtl.latefusion.LateFusion` on summary JSON texts (or file paths) from R."""
    from pathlib import Path

    from hetmtl.latefusion import LateFusion, SiteSummary

    sums = []
    for i, s in enumerate(summaries):
        text = str(s)
        if text.lstrip().startswith("{"):
            sums.append(SiteSummary.from_json(text, source=f"summary {i + 1}"))
        else:
            sums.append(SiteSummary.read_json(Path(text)))
    for key in ("n_boot", "random_state"):
        if params.get(key) is not None:
            params[key] = int(params[key])
    fit = LateFusion(**params).fit(sums)
    K, d = fit.coef_.shape
    out: dict[str, Any] = {
        "sites": [str(s) for s in fit.sites_], "terms": list(fit.coef_names_), "coef": plain(fit.coef_),
        "fused": plain(fit.fused_), "centre": plain(fit.centre_), "C": float(fit.C_), "n": plain(fit.n_),
        "dml_coef": plain(fit.dml_coef_), "dml_se": plain(np.sqrt(np.einsum("kii->ki", fit.dml_vcov_))),
        "inference": fit.inference_, "heterogeneity": plain(fit.heterogeneity_),
        "postfusion_se": plain(np.sqrt(np.diag(fit.postfusion_vcov_))), "penalty": fit.penalty,
    }
    if fit.penalty == "squared":
        out["se"] = plain(np.sqrt(np.einsum("kii->ki", fit.vcov_)))
        out["centre_se"] = plain(np.sqrt(np.diag(fit.centre_vcov_)))
    elif fit.inference_ == "bootstrap":  # R computes percentile intervals at any level from the draws
        out["boot_theta"] = plain(fit.boot_theta_.reshape(fit.n_boot, K * d))
        out["boot_centre"] = plain(fit.boot_centre_)
    if getattr(fit, "cv_results_", None) is not None:
        out["cv_results"] = plain(fit.cv_results_)
    return out


def _frame_columns(df) -> dict[str, Any]:
    return {"columns": [str(c) for c in df.columns], "data": {str(c): plain(df[c].to_numpy()) for c in df.columns}}


def ihdp_frame() -> dict[str, Any]:
    """The IHDP analysis file (all 985 rows; missing outcomes as NaN) as plain columns."""
    from hetmtl.datasets import load_ihdp_frame

    return _frame_columns(load_ihdp_frame())


def simulate_latefusion(**params: Any) -> dict[str, Any]:
    """A late-fusion simulation (see ``make_latefusion_data``) as plain columns plus the truth."""
    from hetmtl.latefusion.simulate import make_latefusion_data

    for key in ("scenario", "n_sites", "p", "random_state"):
        if params.get(key) is not None:
            params[key] = int(params[key])
    if params.get("n_range") is not None:
        params["n_range"] = tuple(int(v) for v in params["n_range"])
    sim = make_latefusion_data(**params)
    df = sim.data.to_dataframe(site_col="site")
    df = df.loc[:, ~df.columns.duplicated()]
    return {**_frame_columns(df), "theta": plain(sim.theta), "theta0": plain(sim.theta0),
            "outlier": plain(sim.outlier), "d": int(sim.theta.shape[1])}
