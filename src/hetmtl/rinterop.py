"""Plain-data bridge for the R front end (reticulate).

Debian's reticulate 1.28 cannot exchange NumPy 2 arrays (its NumPy C-API check fails), so R never
passes or receives arrays: it sends flat lists (column-major, as R stores matrices) and gets back
nested lists/dicts of Python floats, ints and strings. Everything here is a thin adapter around
the public Python API; no statistics is computed in this module.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from hetmtl.exceptions import HetmtlError, InputError, ParameterError

#: Warning categories not forwarded to R (library housekeeping, not about the user's fit).
_QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _error_record(exc: BaseException) -> dict[str, Any]:
    """How R should raise ``exc``: its condition kind, Python type and plain message."""
    if isinstance(exc, InputError):
        kind = "input"
    elif isinstance(exc, HetmtlError):
        kind = "hetmtl"
    else:
        kind = "python"
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return {"kind": kind, "type": type(exc).__name__, "message": message or type(exc).__name__}


def r_call(name: str, kwargs: Any = None) -> dict[str, Any]:
    """Run the entry point ``name`` of this module for R and report instead of raising.

    Every warning raised during the call is recorded (``catch_warnings(record=True)``, each
    distinct category and message once, with its count) and every exception is caught, so R
    re-raises them as its own conditions: warnings of class ``hetmtl_warning`` (and the category),
    errors of class ``hetmtl_input_error`` (an :class:`~hetmtl.exceptions.InputError`),
    ``hetmtl_error`` (another :class:`~hetmtl.exceptions.HetmtlError`) or ``hetmtl_python_error``.

    Parameters
    ----------
    name : str
        A public function of this module.
    kwargs : dict or None
        Its keyword arguments (an empty R list arrives as an empty Python list).

    Returns
    -------
    dict
        ``{"value": result or None, "error": None or {kind, type, message}, "warnings": [...]}``.
    """
    func = globals().get(str(name))
    if str(name).startswith("_") or str(name) == "r_call" or not callable(func):
        return {"value": None, "warnings": [],
                "error": {"kind": "python", "type": "AttributeError", "message": f"no R entry point {name!r}"}}
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cat in _QUIET:
            warnings.simplefilter("ignore", cat)
        try:
            value, error = func(**kwargs), None
        except Exception as exc:  # noqa: BLE001 - reported to R, which raises it as a classed condition
            value, error = None, _error_record(exc)
    for w in caught:
        key = (w.category.__name__, str(w.message))
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {"category": key[0], "message": key[1], "count": 1,
                         "module": getattr(w.category, "__module__", "")}
    return {"value": value, "error": error, "warnings": list(seen.values())}


def describe_learners() -> dict[str, dict[str, str]]:
    """The nuisance learner names (:mod:`hetmtl.learners`) and what each builds."""
    from hetmtl.learners import describe_learners as describe

    return describe()


def _check_known(params: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    """Refuse keyword arguments an estimator does not have (named as the R arguments)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"{where} has no argument(s) {', '.join(unknown)}; the extra settings it accepts are "
                             f"{', '.join(sorted(allowed))}")


def _floats(values: Any) -> np.ndarray:
    """R numbers as a float array; R's NA (a signalling NaN, whose arithmetic raises numpy's
    'invalid value' warning) and None become a quiet NaN."""
    out = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    out[np.isnan(out)] = np.nan
    return out


def matrix(flat: Sequence[float] | None, nrow: int, ncol: int) -> np.ndarray | None:
    """An R matrix sent as ``as.list(m)`` (column-major) back to an (nrow, ncol) array."""
    if flat is None:
        return None
    values = _floats(list(flat))
    if values.size != int(nrow) * int(ncol):
        raise ValueError(f"matrix data has {values.size} values for {nrow} x {ncol}")
    return values.reshape(int(ncol), int(nrow)).T.copy()


def vector(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else _floats(list(values))


def plain(obj: Any) -> Any:
    """Convert NumPy arrays/scalars (recursively, in dicts, lists and DataFrames) to plain Python."""
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
    from hetmtl.learners import resolve_learner

    for key in ("n_folds", "n_rep", "random_state", "n_jobs"):
        if params.get(key) is not None:
            params[key] = int(params[key])
    binary = bool(np.isin(np.unique(np.asarray(list(d), dtype=float)), (0.0, 1.0)).all())
    seed = params.get("random_state")
    params["ml_outcome"] = resolve_learner(params.get("ml_outcome"), "regressor", seed, "ml_outcome")
    params["ml_treatment"] = resolve_learner(params.get("ml_treatment"), "classifier" if binary else "regressor",
                                             None if seed is None else seed + 1, "ml_treatment")
    _check_known(params, list(MultiSiteDML().get_params()), "site_dml()")
    fit = MultiSiteDML(**params).fit(data)
    sites = []
    for name, est in fit.estimators_.items():
        sites.append({
            "site": str(name), "terms": list(est.coef_names_), "coef": plain(est.coef_), "vcov": plain(est.vcov_),
            "n": int(est.n_), "summary_json": est.to_summary(site=str(name)).to_json(),
            "learners": [str(v) for v in est.learners_], "n_rep": int(est.n_rep_),
        })
    return {"sites": sites, "notes": list(data.notes)}


FUSION_LEVELS = (0.8, 0.9, 0.95, 0.99)


def late_fusion(summaries: Any, levels: Sequence[float] = FUSION_LEVELS, **params: Any) -> dict[str, Any]:
    """Fit :class:`~hetmtl.latefusion.LateFusion` from R on summary JSON texts or file paths, or on
    a long table of published estimates (a dict of columns site, [coefficient,] estimate, se[, n]).
    Intervals come back at every level of ``levels``, so the R object answers ``confint`` offline."""
    from pathlib import Path

    from hetmtl.latefusion import LateFusion, SiteSummary

    if isinstance(summaries, dict):
        data = pd.DataFrame({str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in summaries.items()})
    else:
        data = []
        for i, s in enumerate(summaries):
            text = str(s)
            if text.lstrip().startswith("{"):
                data.append(SiteSummary.from_json(text, source=f"summary {i + 1}"))
            else:
                data.append(SiteSummary.read_json(Path(text)))
    for key in ("n_boot", "random_state"):
        if params.get(key) is not None:
            params[key] = int(params[key])
    if params.get("site_covariates") is not None:
        params["site_covariates"] = np.asarray(params["site_covariates"], float)
    _check_known(params, list(LateFusion().get_params()), "late_fusion()")
    fit = LateFusion(**params).fit(data)
    levels = sorted({float(v) for v in levels})
    frame = fit.summary_frame(0.95)
    out: dict[str, Any] = {
        "sites": [str(s) for s in fit.sites_], "terms": list(fit.coef_names_), "coef": plain(fit.coef_),
        "fused": plain(fit.fused_), "centre": plain(fit.centre_), "C": float(fit.C_), "n": plain(fit.n_),
        "n_given": bool(fit.table_.n_given),
        "dml_coef": plain(fit.dml_coef_), "dml_se": plain(np.sqrt(np.einsum("kii->ki", fit.dml_vcov_))),
        "ci": fit.ci, "heterogeneity": plain(fit.heterogeneity_), "penalty": fit.penalty,
        "header": {str(k): str(v) for k, v in fit._summary_header().items()},
        "levels": levels,
        "intervals": [plain(fit.confint(level).to_numpy()) for level in levels],
        "interval_estimate": plain(fit.confint(0.95)["estimate"].to_numpy()),
        "site_table": _frame_columns(frame.rename_axis(["site", "term"]).reset_index()),
        "centre_table": _frame_columns(fit.centre_frame(0.95).rename_axis("term").reset_index()),
    }
    if fit.penalty == "squared":
        out["vcov_sites"] = plain(fit.vcov_)
    boot = getattr(fit, "boot_theta_", None)
    if boot is not None:
        draws = np.asarray(boot, float).reshape(np.asarray(boot).shape[0], -1)
        draws = draws[np.all(np.isfinite(draws), axis=1)]
        if draws.shape[0] > 1:
            out["vcov_boot"] = plain(np.cov(draws, rowvar=False).reshape(draws.shape[1], draws.shape[1]))
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


# ---------------------------------------------------------------------------- dual encoder
def _ints(params: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    for key in keys:
        if params.get(key) is not None:
            params[key] = int(params[key])
    return params


def _rmse_parts(score, parts: dict[str, Any]) -> dict[str, Any]:
    """Per-task n and RMSE of each named part (train / validation / test) as plain columns."""
    out: dict[str, Any] = {}
    for name, part in parts.items():
        if part is None:
            continue
        tab = score(part)
        out["task"] = [str(t) for t in tab.index]
        out[f"n_{name}"] = [int(v) for v in tab["n"]]
        out[f"rmse_{name}"] = [float(v) for v in tab["rmse"]]
    return out


def dual_encoder_fit(x: Sequence[float], nrow: int, x_cols: Sequence[str], y: Sequence[float], task: Sequence[str],
                     split: Sequence[float] = (0.6, 0.2, 0.2), lambdas: Sequence[float] = (0.01,),
                     **params: Any) -> dict[str, Any]:
    """Fit :class:`~hetmtl.encoders.DualEncoderMTL` from R data (stacked rows, per-row task labels).

    Every task's rows are split by ``split`` (train / validation[ / test]) with ``random_state``;
    with several ``lambdas`` (lam_alpha = lam_beta) the one with the smallest summed validation
    MSE is kept. Returns the model JSON, per-task RMSE of every part, the heads and the selection.
    """
    from hetmtl.data.multitask import MultiTaskData
    from hetmtl.encoders import DualEncoderMTL

    x_cols = [str(c) for c in x_cols]
    _check_known(params, [k for k in DualEncoderMTL().get_params() if k not in ("lam_alpha", "lam_beta")],
                 "dual_encoder()")
    params = _ints(dict(params), ("n_shared", "n_specific", "max_epochs", "patience", "batch_size", "prox_steps",
                                  "random_state", "n_threads"))
    if params.get("hidden") is not None:
        params["hidden"] = tuple(int(h) for h in np.atleast_1d(params["hidden"]))
    data = MultiTaskData.from_arrays(matrix(x, nrow, len(x_cols)), vector(y), [str(t) for t in task], x_cols=x_cols)
    fractions = [float(f) for f in split]
    parts = data.split(fractions, random_state=params.get("random_state"))
    train, val = parts[0], parts[1]
    test = parts[2] if len(parts) > 2 else None
    rows, best, best_loss = [], None, np.inf
    for lam in [float(v) for v in lambdas]:
        model = DualEncoderMTL(**{**params, "lam_alpha": lam, "lam_beta": lam}).fit(train, validation_data=val)
        loss = float(model.score_tasks(val)["mse"].sum())
        rows.append({"lambda": lam, "val_mse_sum": loss, "n_epochs": int(model.n_epochs_)})
        if loss < best_loss:
            best, best_loss = model, loss
    if best is None:
        from hetmtl.exceptions import TrainingError

        raise TrainingError("no value of lambda gave a finite validation loss")
    c = best.coef_
    X_all = matrix(x, nrow, len(x_cols))
    labels = np.asarray([str(t) for t in task], dtype=object)
    return {
        "fitted": plain(best.predict(X_all, labels)), "linear_coef": _linear_coef(best, len(x_cols)),
        "model_json": best.to_json(), "tasks": [str(t) for t in best.tasks_], "x_cols": x_cols,
        "rmse": _rmse_parts(best.score_tasks, {"train": train, "validation": val, "test": test}),
        "alpha": plain(c.alpha.numpy()), "beta": plain(c.beta.numpy()), "b": plain(c.b.numpy()),
        "alpha_center": plain(c.alpha_center.numpy()), "beta_center": plain(c.beta_center.numpy()),
        "selection": plain(pd.DataFrame(rows)), "lambda": float(best.lam_alpha), "params": plain(best.get_params()),
        "n_epochs": int(best.n_epochs_), "best_epoch": plain(best.best_epoch_),
    }


def _grid_values(grid: Any) -> Any:
    """An R named list of candidate values as DualEncoderMTLCV's param_grid (hidden as tuples)."""
    if grid is None:
        return None
    out: dict[str, list] = {}
    for key, values in dict(grid).items():
        vals = values if isinstance(values, list) else [values]
        if key == "hidden":
            vals = [tuple(int(h) for h in np.atleast_1d(v)) if v is not None else () for v in vals]
        elif key in ("n_shared", "n_specific", "max_epochs", "patience", "batch_size", "prox_steps"):
            vals = [int(v) for v in vals]
        out[str(key)] = vals
    return out


def dual_encoder_cv_fit(x: Sequence[float], nrow: int, x_cols: Sequence[str], y: Sequence[float],
                        task: Sequence[str], test_fraction: float = 0.2, param_grid: Any = None, cv: Any = 3,
                        random_state: int | None = None, n_jobs: int | None = None, verbose: int = 0,
                        **base_params: Any) -> dict[str, Any]:
    """Fit :class:`~hetmtl.encoders.DualEncoderMTLCV` from R data: a seeded per-task test split of
    ``test_fraction`` (0: none), cross-validation over ``param_grid`` on the other rows, the chosen
    setting refitted on them. Returns what :func:`dual_encoder_fit` returns, with ``cv_results_``
    as the selection table."""
    from hetmtl.data.multitask import MultiTaskData
    from hetmtl.encoders import DualEncoderMTL, DualEncoderMTLCV

    x_cols = [str(c) for c in x_cols]
    _check_known(base_params, [k for k in DualEncoderMTL().get_params() if k != "random_state"], "dual_encoder_cv()")
    base_params = _ints(dict(base_params), ("n_shared", "n_specific", "max_epochs", "patience", "batch_size",
                                            "prox_steps", "n_threads"))
    if base_params.get("hidden") is not None:
        base_params["hidden"] = tuple(int(h) for h in np.atleast_1d(base_params["hidden"]))
    seed = None if random_state is None else int(random_state)
    data = MultiTaskData.from_arrays(matrix(x, nrow, len(x_cols)), vector(y), [str(t) for t in task], x_cols=x_cols)
    f = float(test_fraction)
    if f > 0:
        train, test = data.split([1.0 - f, f], random_state=seed)[:2]
    else:
        train, test = data, None
    cv_value: Any = int(cv) if float(cv) >= 1 else float(cv)
    model = DualEncoderMTLCV(param_grid=_grid_values(param_grid), cv=cv_value, base_params=base_params or None,
                             n_jobs=None if n_jobs is None else int(n_jobs), random_state=seed,
                             verbose=int(verbose)).fit(train)
    best = model.best_estimator_
    c = best.coef_
    X_all = matrix(x, nrow, len(x_cols))
    labels = np.asarray([str(t) for t in task], dtype=object)
    results = model.cv_results_.drop(columns=["params"], errors="ignore").copy()
    for col in results.columns:
        if results[col].dtype == object:
            results[col] = results[col].map(lambda v: str(v) if isinstance(v, (tuple, list)) else v)
    return {
        "fitted": plain(best.predict(X_all, labels)), "linear_coef": _linear_coef(best, len(x_cols)),
        "model_json": best.to_json(), "tasks": [str(t) for t in best.tasks_], "x_cols": x_cols,
        "rmse": _rmse_parts(best.score_tasks, {"train": train, "test": test}),
        "alpha": plain(c.alpha.numpy()), "beta": plain(c.beta.numpy()), "b": plain(c.b.numpy()),
        "alpha_center": plain(c.alpha_center.numpy()), "beta_center": plain(c.beta_center.numpy()),
        "selection": plain(results), "lambda": float(np.atleast_1d(best.lam_alpha)[0]),
        "best_params": {str(k): str(v) if isinstance(v, (tuple, list)) else plain(v)
                        for k, v in model.best_params_.items()},
        "params": plain({k: (list(v) if isinstance(v, tuple) else v) for k, v in best.get_params().items()}),
        "hidden": [int(h) for h in tuple(best.hidden)],
        "n_epochs": int(best.n_epochs_), "best_epoch": plain(getattr(best, "best_epoch_", None)),
    }


def _linear_coef(model, p: int) -> list[list[float]] | None:
    """Per-task covariate coefficients ``[intercept, x_1..x_p]`` of a dual encoder without hidden
    layers (then every task's prediction is affine in x); None when the encoders are nonlinear or the
    affine read-out does not reproduce the predictions (checked at random points)."""
    if len(tuple(model.hidden)) > 0:
        return None
    out = []
    basis = np.vstack([np.zeros(p), np.eye(p)])
    check = np.random.default_rng(0).normal(size=(4, p))
    for t in model.tasks_:
        f = np.asarray(model.predict(basis, np.full(p + 1, t, dtype=object)), float)
        coef = np.concatenate([[f[0]], f[1:] - f[0]])
        g = np.asarray(model.predict(check, np.full(4, t, dtype=object)), float)
        if not np.allclose(g, coef[0] + check @ coef[1:], rtol=1e-4, atol=1e-4 * (1 + np.abs(g).max())):
            return None
        out.append([float(v) for v in coef])
    return out


def dual_encoder_predict(model_json: str, x: Sequence[float], nrow: int, ncol: int, task: Sequence[str]) -> list[float]:
    """Predictions of a dual-encoder model (its JSON) for stacked rows with per-row task labels."""
    from hetmtl.encoders import DualEncoderMTL

    model = DualEncoderMTL.from_json(str(model_json))
    return plain(model.predict(matrix(x, nrow, ncol), np.asarray([str(t) for t in task], dtype=object)))


def simulate_encoders(design: str = "latent", n_test: int = 0, test_seed: int | None = None, **params: Any) -> dict[str, Any]:
    """A dual-encoder simulation (``simulate_latent`` or ``simulate_paper_like``) as plain columns;
    with ``n_test > 0`` also fresh rows per task with the noise-free mean as ``y`` (the truth)."""
    from hetmtl.encoders.simulate import simulate_latent, simulate_paper_like

    params = _ints(dict(params), ("n_tasks", "d", "n_shared", "n_specific", "n_drifted", "random_state"))
    if params.get("n") is not None:
        n = np.atleast_1d(params["n"]).astype(int)
        params["n"] = int(n[0]) if n.size == 1 else n.tolist()
    makers: dict[str, Callable[..., Any]] = {"latent": simulate_latent, "paper_like": simulate_paper_like}
    make = makers.get(design)
    if make is None:
        raise ValueError(f"design must be 'latent' or 'paper_like', got {design!r}")
    sim = make(**params)

    def frame(data):
        df = data.to_dataframe(task_col="task")
        return _frame_columns(df[["task", "y", *data.x_cols]])

    out: dict[str, Any] = {"data": frame(sim.data), "info": plain(sim.info)}
    for key in ("beta", "beta_center", "drifted"):
        if getattr(sim, key) is not None:
            out[key] = plain(getattr(sim, key))
    if int(n_test) > 0:
        seed = params.get("random_state") if test_seed is None else int(test_seed)
        out["test"] = frame(sim.test_data(int(n_test), random_state=seed))
    return out


# ---------------------------------------------------------------------------- MTL-HMB
def _blockwise_frame(columns: dict[str, Sequence[float]], task: Sequence[str], y: Sequence[float] | None) -> pd.DataFrame:
    df = pd.DataFrame({str(k): _floats(vals) for k, vals in columns.items()})
    df.insert(0, ".task", [str(t) for t in task])
    if y is not None:
        df.insert(1, ".y", _floats(list(y)))
    return df


def _grid(grid: Any, int_keys: Sequence[str]) -> Any:
    if isinstance(grid, str) or grid is None:
        return grid
    if isinstance(grid, dict):  # an R data.frame arrives as {column: [values]}
        keys = list(grid)
        grid = [dict(zip(keys, vals)) for vals in zip(*(list(np.atleast_1d(grid[k])) for k in keys))]
    return [{k: int(v) if k in int_keys else float(v) for k, v in dict(c).items()} for c in grid]


def _blockwise_setup(columns, task, y, block_map, anchor, split, params):
    """(data, split, params) of a block-wise fit from R plain data."""
    from hetmtl.blockwise import make_split
    from hetmtl.data.blockwise import BlockwiseData

    params = _ints(dict(params), ("batch_size", "max_epochs", "patience", "lr_step", "hbi_max_epochs", "n_threads",
                                  "random_state", "hbi_orth_power"))
    for key, ints in (("grid", ("width", "depth", "batch_size")), ("hbi_grid", ("width", "depth"))):
        if key in params:
            params[key] = _grid(params[key], ints)
    df = _blockwise_frame(columns, task, y)
    block_map = {str(k): [str(c) for c in np.atleast_1d(v)] for k, v in block_map.items()}
    data = BlockwiseData.from_dataframe(df, block_map, ".task", ".y", anchor=str(anchor))
    return data, make_split(data, [float(f) for f in split], seed=params.get("random_state")), params


def _blockwise_rmse(model, data, split) -> dict[str, Any]:
    rmse: dict[str, Any] = {}
    for name, rows in {"train": split.train, "validation": split.val, "test": split.test}.items():
        if all(len(r) > 0 for r in rows):
            tab = model.evaluate(data, rows).iloc[:-1]
            rmse["task"] = [str(t) for t in tab.index]
            rmse[f"n_{name}"] = [int(v) for v in tab["n"]]
            rmse[f"rmse_{name}"] = [float(v) for v in tab["rmse"]]
    return rmse


def mtl_hmb_fit(columns: dict[str, Sequence[float]], task: Sequence[str], y: Sequence[float],
                block_map: dict[str, Sequence[str]], anchor: str, split: Sequence[float] = (0.6, 0.2, 0.2),
                **params: Any) -> dict[str, Any]:
    """Fit :class:`~hetmtl.blockwise.MTLHMB` from R columns (NaN = missing block), a task label per
    row and a block map (source -> columns, ``anchor`` first); a seeded per-task split by
    ``split``. Returns the model JSON, per-task RMSE of every part and the selected configurations."""
    from hetmtl.blockwise import MTLHMB

    _check_known(params, list(MTLHMB().get_params()), "mtl_hmb()")
    data, split_, params = _blockwise_setup(columns, task, y, block_map, anchor, split, params)
    model = MTLHMB(**params).fit(data, split_)
    return {
        "fitted": _blockwise_fitted(model, columns, task), "split": _split_labels(split_, task, data.task_names),
        "model_json": model.to_json(), "tasks": list(model.task_names_), "sources": list(model.source_names_),
        "block_map": {n: list(model.source_columns_[n]) for n in model.source_names_},
        "private": {model.task_names_[t]: model.source_names_[s] for t, s in enumerate(model.private_source_)},
        "rmse": _blockwise_rmse(model, data, split_), "selected": plain(model.selected_config_),
        "selection": plain(model.selection_table()), "hbi_selection": plain(model.imputer_.selection_table()),
        "params": plain({**model.get_params(deep=False), "imputer": None}),
    }


def blockwise_baseline_fit(method: str, columns: dict[str, Sequence[float]], task: Sequence[str], y: Sequence[float],
                           block_map: dict[str, Sequence[str]], anchor: str, split: Sequence[float] = (0.6, 0.2, 0.2),
                           **params: Any) -> dict[str, Any]:
    """Fit a block-wise competitor (``"stl"``, ``"htl"``, ``"hps"``, ``"mbi"``, ``"cc_lasso"``) on
    the same seeded split as :func:`mtl_hmb_fit`; returns per-task RMSE of every part, the fitted
    value and split part of every row (HTL imputes nothing: no HBI settings; MBI, native engine, and
    the complete-case lasso take only their own settings, ``random_state`` and ``n_threads``)."""
    from hetmtl.blockwise import HPS, HTL, MBI, STL

    classes: dict[str, Any] = {"stl": STL, "htl": HTL, "hps": HPS, "mbi": MBI}
    try:
        from hetmtl.blockwise.baselines import CCLasso

        classes["cc_lasso"] = CCLasso
    except ImportError:  # an older hetmtl without the complete-case lasso
        pass
    if method not in classes:
        raise ParameterError(f"method must be one of {', '.join(sorted(classes))}, got {method!r}")
    extra = {"mbi": ["n_threads"], "cc_lasso": ["n_threads"], "htl": ["hbi_grid", "hbi_max_epochs"]}.get(method, [])
    _check_known(params, list(classes[method]().get_params()) + extra,
                 f'blockwise_baseline(method = "{method}")')
    data, split_, params = _blockwise_setup(columns, task, y, block_map, anchor, split, params)
    if method == "htl":
        params = {k: v for k, v in params.items() if not k.startswith("hbi_")}
    if method == "mbi":
        n_threads = params.pop("n_threads", None)
        known = sorted(MBI().get_params())
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"MBI has no setting(s) {unknown}; its settings are {known}")
        params["n_jobs"] = n_threads
    if method == "cc_lasso":
        params.pop("n_threads", None)
    model = classes[method](**params).fit(data, split_)
    return {"rmse": _blockwise_rmse(model, data, split_), "fitted": _blockwise_fitted(model, columns, task),
            "split": _split_labels(split_, task, data.task_names)}


def _split_labels(split, task: Sequence[str], names: Sequence[str]) -> list[str]:
    """The part ("train", "validation", "test") of every row, in data order."""
    labels = np.asarray([str(t) for t in task], dtype=object)
    out = np.full(len(labels), "", dtype=object)
    for part, rows in (("train", split.train), ("validation", split.val), ("test", split.test)):
        for name, idx in zip(names, rows):
            where = np.flatnonzero(labels == name)
            out[where[np.asarray(idx, dtype=int)]] = part
    return [str(v) for v in out]


def _blockwise_fitted(model, columns: dict[str, Sequence[float]], task: Sequence[str]) -> list[float]:
    """Predictions of a fitted block-wise model for every row of its own data, in data order."""
    df = _blockwise_frame(columns, task, None)
    out = np.full(len(df), np.nan)
    if hasattr(model, "source_columns_") and hasattr(model, "private_source_"):
        cols_of = model.source_columns_
        for name in pd.unique(df[".task"]):
            t = model._task(name)
            need = [*cols_of[model.source_names_[0]], *cols_of[model.source_names_[model.private_source_[t]]]]
            rows = (df[".task"] == name).to_numpy()
            out[rows] = model.predict(df.loc[rows, need].to_numpy(float), t)
    else:  # MBI: all columns in training order, NaN in missing blocks
        out[:] = model.predict(df[[str(c) for c in columns]].to_numpy(float))
    return plain(out)


def mtl_hmb_predict(model_json: str, columns: dict[str, Sequence[float]], task: Sequence[str]) -> list[float]:
    """Predictions of an MTL-HMB model (its JSON) for rows with a task label each; every row needs
    its task's anchor and own-block columns (other blocks are ignored)."""
    from hetmtl.blockwise import MTLHMB
    from hetmtl.exceptions import DataValidationError

    model = MTLHMB.from_json(str(model_json))
    df = _blockwise_frame(columns, task, None)
    out = np.full(len(df), np.nan)
    cols_of = model.source_columns_
    if cols_of is None:
        raise DataValidationError("this model was fitted on arrays without column names; predict with MTLHMB.predict")
    for name in pd.unique(df[".task"]):
        t = model._task(name)
        need = [*cols_of[model.source_names_[0]], *cols_of[model.source_names_[model.private_source_[t]]]]
        absent = [c for c in need if c not in df.columns]
        if absent:
            raise DataValidationError(f"task {name!r}: column(s) {absent} not in newdata")
        rows = (df[".task"] == name).to_numpy()
        X = df.loc[rows, need].to_numpy(float)
        bad = [c for j, c in enumerate(need) if np.isnan(X[:, j]).any()]
        if bad:
            raise DataValidationError(f"task {name!r}: missing values in column(s) {bad} (its anchor or own block)")
        out[rows] = model.predict(X, t)
    return plain(out)


def simulate_blockwise(setting: str | None = None, value: Any = None, **params: Any) -> dict[str, Any]:
    """A block-wise simulation (paper setting ``setting`` at ``value``, then ``params`` overrides)
    as plain columns (NaN in missing blocks), its block map and the noise-free means."""
    from hetmtl.blockwise.simulate import setting_params
    from hetmtl.blockwise.simulate import simulate_blockwise as simulate

    kw = setting_params(setting, value) if setting is not None else {}
    params = _ints(dict(params), ("p0", "n_tasks", "seed"))
    for key in ("n", "p_private"):
        if params.get(key) is not None:
            v = np.atleast_1d(params[key]).astype(int)
            params[key] = int(v[0]) if v.size == 1 else v.tolist()
    for key in ("rho", "sigma"):
        if params.get(key) is not None:
            v = np.atleast_1d(params[key]).astype(float)
            params[key] = float(v[0]) if v.size == 1 else tuple(v.tolist())
    kw.update({k: v for k, v in params.items() if v is not None})
    sim = simulate(**kw)
    df = sim.data.to_dataframe()
    dims = sim.data.source_dims
    names = list(df.columns[2:])
    starts = np.concatenate([[0], np.cumsum(dims)])
    block_map = {s: names[starts[i]:starts[i + 1]] for i, s in enumerate(sim.data.source_names)}
    info = {k: v for k, v in sim.params.items() if k not in ("v_c", "v_t")}
    return {"data": _frame_columns(df), "block_map": block_map, "mean": plain(np.concatenate(sim.mean)), "params": plain(info)}
