"""MBI — multiple block-wise imputation (Xue & Qu 2021, JASA), the block-wise missing baseline.

What to use when
----------------
* :class:`MBI` fits ONE common sparse linear model to subjects whose covariate sources
  (column blocks) are missing block-wise, e.g. two tasks that each miss the other's private
  block. Use it as the statistical baseline of the block-wise studies; it has no per-task
  heterogeneity.
* ``engine="native"`` (default) runs the estimator of R's ``BlockMissingData::MBI`` in the C++
  core: same standardisation, imputations, estimating equations, eigenvalue truncation of the
  weight matrix, SCAD penalty, λ grid construction and BIC (``bic1``) selection, but with exact
  derivatives and a deterministic proximal-Newton path solver instead of noisy finite
  differences.
* ``engine="r"`` calls the R package through rpy2 (see :mod:`hetmtl.blockwise._r_bridge`).
* :func:`mbi_layout` converts arrays to MBI's R layout (rows grouped by pattern, 1-based
  ``cov_index``/``sub_index``/``miss_source``, ``complete``).

Derivatives and optimality. Q is differentiated exactly, including the eigenvalue
truncation of the weight matrix: the retained eigenvectors move with β (Daleckii–Krein
derivative of the truncated inverse; checked against finite differences with the truncation
active in tests/test_mbi_exact.py). Q is smooth only inside a *piece* of fixed retained counts:
where an eigenvalue of a moment set crosses its threshold, a moment enters or leaves and Q jumps.
The path's solutions very often lie on such a boundary (moving further would let a moment in
and raise Q), so the optimality residual reported in ``stationarity_path_`` is the KKT residual
of the piece: the largest entry, over the support, of the gradient of Q + SCAD (+ anchor) plus
the best nonnegative combination of the outward normals of the boundaries within reach. A λ is
``converged_`` when it is at most ``stat_tol``. This holds where Q is smooth at the solution (e.g.
complete data) but NOT at most boundary solutions: the solver stops when no descent is left
across the boundary, while sliding along it could lower the objective further; the residual
says how far from stationary each λ is, and ``fit`` warns (ConvergenceWarning) when any λ
exceeds the tolerance. Near a smooth minimum, where the decrease left is below the rounding
of the objective, a step is accepted when it keeps the objective within rounding and halves
the residual. Before accepting a λ the path tries single-coefficient eliminations (the
smallest coefficients, greedily, up to two rounds) and single additions (the zero coefficients
whose exact derivative exceeds λ), keeping a candidate only when it lowers the objective.

Two candidate paths, one selection rule (``paths="both"``, the default). Minimising MBI's
objective exactly is not what makes MBI accurate in small samples: the QIF is continuously
updated (its weight matrix moves with β), and with a few hundred rows it has minimisers that
lower Q by fitting worse (benchmarks/results/mbi_vs_r.md: with 120 rows per group and p = 30–45
the exact path's selected model had ‖β̂ − β‖ 0.6 above R's on average), while R's optimiser, in
practice, stays near its start. With more rows the exact minimiser is the better estimator (600
rows per group: ‖β̂ − β‖ 0.13 against 0.33 for the anchored path). So the native engine
computes

* the *exact* path: MBI's penalised objective Q + SCAD minimised from the unpenalised QIF
  minimiser upwards (warm starts, eliminations and additions; ``paths="exact"``), and
* the *anchored* path: Q + SCAD + μ/2 ‖β − β_start‖² from MBI's start, μ = ``anchor`` × the
  largest Gauss-Newton curvature of Q at the start (``anchor_mu_``): a move along Q's
  best-determined direction is halved, weaker directions are damped more, flat ones stay at
  the start (``paths="anchored"``),

and selects, as MBI does, the λ with the smallest ``bic1`` = n log(RSS₁) + df log(n), now over
the solutions of both paths (``path_kind_`` says which path the selected model comes from,
``candidate_paths_`` holds both). The λ grid is geometric with ``nlam`` values (default 100);
benchmarks/results/mbi_grid.md records how the selected model's test RMSE varies with nlam.
Where MBI is not identified, or the unpenalised QIF minimiser fits more than twice as badly
as the start (the spurious region, ``unpenalized_rejected_``), only the anchored path is used.

How native and R differ (measured on the golden fixtures, see benchmarks/results/mbi_speed.md):
standardisation, imputations, RSS₁/bic1 and intercepts reproduce R to rounding error; R's λ_max
carries its gradient noise (the native one is the noiseless value).

* Identified case (at least as many retained moments as coefficients, e.g. with a complete
  group): R's optimiser stops near its start (eps2 = 1e-3 with noisy gradients, support frozen
  once zero), so it does not minimise its own objective; the native exact path does (per λ:
  warm start, greedy eliminations, additions), reaching lower penalised objectives and
  sometimes other models; the anchored path plays the part of R's early stop.
* Not identified (no complete group and strongly correlated columns, e.g. the two-task layout
  of the MTL-HMB paper, arXiv 2505.24413: the eigenvalue truncation keeps 2–14 moments for
  30–150 coefficients). Q then has (near-)flat directions and a spurious region where huge
  residuals shrink it; its minimisers are artefacts (test RMSE 1.7–8.7 on that paper's linear
  setting). What R's MBI returns in practice is its start — ``cv.glmnet`` on the copy-averaged
  rows, then a λ = 0 run — plus small moves. The native engine makes this explicit: ``fit``
  warns (``identified_`` is False) and uses only the anchored path, started from the
  cross-validated lasso on the copy-averaged rows (:func:`cv_lasso_start`). Not
  reproduced: R's exact start (its CV folds come from R's RNG; with nearly collinear columns the
  lasso's choice among them is unstable) and R's λ = 0 run, which moves further along
  directions that halve Q while raising RSS₁. So native coefficients differ from R's by more
  than R's seed-to-seed spread and native Q + SCAD is higher than R's there, while the fits
  agree within a few per cent, native bic1/RSS₁ are lower, and — on the fixtures whose
  generator is known — native predictions are closer to the true task means than R's
  (task-averaged RMSE; see tests/test_mbi.py).

Speed: see benchmarks/results/mbi_vs_r.md (paired against R's CPU time through the rpy2
bridge) and benchmarks/results/mbi_speed.md. ``n_jobs`` runs the elimination and addition
re-solves of each λ on several threads (identical path).

Security: ``r_args`` values given as strings are evaluated as R code by the R engine; pass
trusted input only.

Input: ``X`` (n × p) with NaN for missing blocks, ``y`` (n,), and ``sources``: one column range
``(start, stop)`` or list of column indices per source, together covering every column once.
Missing-pattern groups come from the NaN pattern (or from ``groups`` labels, checked against it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin

from hetmtl._parallel import single_blas_thread
from hetmtl._validation import (
    check_array,
    check_choice,
    check_float,
    check_int,
    check_is_fitted,
    check_n_jobs,
    seed_from,
)
from hetmtl.data._arrays import MAX_ABS_DATA
from hetmtl.exceptions import ConvergenceWarning, DataValidationError, ParameterError, TrainingError

__all__ = ["MBI", "MBILayout", "mbi_layout", "standardize_observed", "fit_imputation",
           "cv_lasso_start"]


# ----------------------------------------------------------------------------------- layout
@dataclass
class MBILayout:
    """Rows grouped by missing pattern, in MBI's order (a complete group, if any, first).

    ``group_rows[k]`` are row indices into the caller's X; ``missing_sources[k]`` /
    ``observed_cols[k]`` describe group k; ``donors[k]`` are the useful donor groups of group k
    (k itself for the complete group), in group order.
    """

    sources: list[np.ndarray]
    group_rows: list[np.ndarray]
    missing_sources: list[tuple[int, ...]]
    observed_cols: list[np.ndarray]
    donors: list[list[int]]
    n_features: int

    @property
    def complete(self) -> bool:
        return len(self.missing_sources) > 0 and len(self.missing_sources[0]) == 0

    def missing_cols(self, k: int) -> np.ndarray:
        mask = np.ones(self.n_features, dtype=bool)
        mask[self.observed_cols[k]] = False
        return np.flatnonzero(mask)


def _normalize_sources(sources, p: int) -> list[np.ndarray]:
    if sources is None or len(sources) == 0:
        raise DataValidationError("sources: give one column range or index list per source")
    out = []
    owner = np.full(p, -1)
    for s, src in enumerate(sources):
        if isinstance(src, slice):
            cols = np.arange(p)[src]
        elif isinstance(src, range):
            cols = np.asarray(src, dtype=int)
        elif isinstance(src, tuple) and len(src) == 2 and all(np.isscalar(v) for v in src):
            cols = np.arange(int(src[0]), int(src[1]))
        else:
            cols = np.asarray(src, dtype=int).ravel()
        if cols.size == 0:
            raise DataValidationError(f"source {s} has no columns")
        if cols.min() < 0 or cols.max() >= p:
            raise DataValidationError(f"source {s} has column indices outside 0..{p - 1}")
        for c in cols:
            if owner[c] >= 0:
                raise DataValidationError(f"column {c} belongs to sources {owner[c]} and {s}")
            owner[c] = s
        out.append(np.sort(cols))
    if np.any(owner < 0):
        raise DataValidationError(
            f"columns {np.flatnonzero(owner < 0)[:10].tolist()} belong to no source")
    return out


def _validate_xy(X, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    X = check_array(X, "X", ndim=2, allow_nan=True)
    if y is not None:
        y = check_array(y, "y", ndim=(1, 2), allow_nan=True).ravel()
        if y.shape[0] != X.shape[0]:
            raise DataValidationError(f"y has {y.shape[0]} rows, X has {X.shape[0]}")
        if not np.isfinite(y).all():
            raise DataValidationError(f"y is missing or non-finite at rows "
                                      f"{np.flatnonzero(~np.isfinite(y))[:10].tolist()}")
    # squared magnitudes beyond ~1e308 overflow the objective and Gram matrices (NaN coefficients)
    for name, a in (("X", X), ("y", y)):
        if a is not None and a.size and np.nanmax(np.abs(a), initial=0.0) > MAX_ABS_DATA:
            raise DataValidationError(f"{name} has values beyond ±{MAX_ABS_DATA:g} (largest "
                                      f"{np.nanmax(np.abs(a)):.3g}); rescale the data")
    return X, y


def _row_patterns(X: np.ndarray, sources: list[np.ndarray]) -> np.ndarray:
    """n × n_sources boolean: source missing in row. Partially missing blocks are refused."""
    miss = np.isnan(X)
    out = np.zeros((X.shape[0], len(sources)), dtype=bool)
    for s, cols in enumerate(sources):
        count = miss[:, cols].sum(axis=1)
        partial = (count > 0) & (count < cols.size)
        if partial.any():
            r = int(np.flatnonzero(partial)[0])
            bad = cols[miss[r, cols]].tolist()[:10]
            raise DataValidationError(
                f"row {r}: source {s} is partially missing (columns {bad} are NaN); MBI needs "
                f"each source fully observed or fully missing in a row")
        out[:, s] = count == cols.size
    full = out.all(axis=1)
    if full.any():
        raise DataValidationError(f"row {int(np.flatnonzero(full)[0])} has every source missing")
    return out


def _donors(missing: list[tuple[int, ...]], observed: list[np.ndarray], p: int) -> list[list[int]]:
    obs_sets = [set(o.tolist()) for o in observed]
    donors = []
    for k, miss_k in enumerate(missing):
        if not miss_k:
            donors.append([k])
            continue
        miss_cols = set(range(p)) - obs_sets[k]
        dk = [j for j in range(len(missing))
              if j != k and miss_cols <= obs_sets[j] and obs_sets[k] & obs_sets[j]]
        donors.append(dk)
    return donors


def _build_layout(X: np.ndarray, sources, groups=None) -> MBILayout:
    p = X.shape[1]
    src = _normalize_sources(sources, p)
    pat = _row_patterns(X, src)
    keys = [tuple(np.flatnonzero(r).tolist()) for r in pat]
    if groups is None:
        labels = keys
    else:
        labels = list(np.asarray(groups, dtype=object).ravel())
        if len(labels) != X.shape[0]:
            raise DataValidationError(f"groups has {len(labels)} labels, X has {X.shape[0]} rows")
    order: list = []
    first_key: dict = {}
    members: dict = {}
    for i, (lab, key) in enumerate(zip(labels, keys)):
        if lab not in members:
            order.append(lab)
            members[lab] = []
            first_key[lab] = key
        elif first_key[lab] != key:
            raise DataValidationError(
                f"group {lab!r}: row {i} misses sources {list(key)} but the group's first row "
                f"misses {list(first_key[lab])}; a group must share one missing pattern")
        members[lab].append(i)
    complete = [lab for lab in order if len(first_key[lab]) == 0]
    if len(complete) > 1:
        raise DataValidationError(f"groups {complete} are all complete; give them one label")
    order = complete + [lab for lab in order if lab not in complete]
    missing = [first_key[lab] for lab in order]
    observed = [np.sort(np.concatenate([src[s] for s in range(len(src)) if s not in m]))
                for m in missing]
    donors = _donors(missing, observed, p)
    for k, dk in enumerate(donors):
        if not dk:
            raise DataValidationError(
                f"group {order[k]!r} (missing sources {list(missing[k])}) has no donor group that "
                f"observes all its missing sources and shares an observed column with it; MBI "
                f"cannot impute it")
    return MBILayout(src, [np.asarray(members[lab]) for lab in order], missing, observed, donors, p)


def mbi_layout(X, y, sources, groups=None) -> dict:
    """Arrays in the layout of R's ``BlockMissingData::MBI``.

    Parameters
    ----------
    X : array-like
        Design ``(n, p)`` with NaN for missing blocks.
    y : array-like
        Responses ``(n,)``.
    sources : sequence
        Per source, a column range ``(start, stop)`` or a list of column indices; together they
        cover every column once.
    groups : array-like, optional
        Missing-pattern group label of every row (default: from the NaN pattern; checked
        against it).

    Returns
    -------
    dict
        ``X`` and ``y`` (rows grouped by pattern, columns grouped by source), 1-based
        ``cov_index``, ``sub_index``, ``miss_source`` (list of 1-based source lists, ``None`` for
        the complete group), ``complete``, and ``row_order`` / ``col_order`` (0-based indices into
        the inputs, so ``X_out = X[row_order][:, col_order]``).
    """
    X, y = _validate_xy(X, y)
    lay = _build_layout(X, sources, groups)
    row_order = np.concatenate(lay.group_rows)
    col_order = np.concatenate(lay.sources)
    cov_index = np.cumsum([0] + [s.size for s in lay.sources[:-1]]) + 1
    sub_index = np.cumsum([0] + [r.size for r in lay.group_rows[:-1]]) + 1
    return {
        "X": X[row_order][:, col_order],
        "y": y[row_order],
        "cov_index": cov_index.astype(int),
        "sub_index": sub_index.astype(int),
        "miss_source": [None if not m else [s + 1 for s in m] for m in lay.missing_sources],
        "complete": lay.complete,
        "row_order": row_order,
        "col_order": col_order,
    }


# ------------------------------------------------------------------ standardise and impute
def standardize_observed(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and scale each column by the mean and sd (ddof=1) of its observed entries."""
    obs = ~np.isnan(X)
    counts = obs.sum(axis=0)
    if np.any(counts < 2):
        raise DataValidationError(f"column {int(np.flatnonzero(counts < 2)[0])} has fewer than "
                                  f"two observed values")
    center = np.nanmean(X, axis=0)
    scale = np.nanstd(X, axis=0, ddof=1)
    if np.any(scale <= 0):
        raise DataValidationError(f"column {int(np.flatnonzero(scale <= 0)[0])} is constant on "
                                  f"its observed rows")
    with np.errstate(invalid="ignore"):
        X2 = (X - center) / scale
    return X2, center, scale


@dataclass
class ImputationModel:
    """Per missing column: intercept and coefficients on the predictor columns."""

    target_cols: np.ndarray
    predictor_cols: np.ndarray
    intercept: np.ndarray          # (n_targets,)
    coef: np.ndarray               # (n_targets, n_predictors)
    method: list[str] = field(default_factory=list)

    def predict(self, Xp: np.ndarray) -> np.ndarray:
        """Imputed target columns for rows with predictor values ``Xp`` (rows × predictors)."""
        return self.intercept[None, :] + Xp @ self.coef.T


def fit_imputation(X2: np.ndarray, targets: np.ndarray, predictors: np.ndarray,
                   random_state=0) -> ImputationModel:
    """MBI's regression imputation of ``targets`` from ``predictors`` (standardised data).

    Each target column is regressed on the predictors over every row where it and all the
    predictors are observed: OLS with intercept when rows > predictors, otherwise a lasso with
    3-fold cross-validation at the CV minimum (:func:`cv_lasso_start`, as R's
    ``cv.glmnet(nfolds = 3)`` at ``lambda.min``).
    """
    obs = ~np.isnan(X2)
    pred_ok = obs[:, predictors].all(axis=1)
    k = predictors.size
    intercept = np.zeros(targets.size)
    coef = np.zeros((targets.size, k))
    methods = []
    # Targets with the same training rows share one least-squares solve.
    masks: dict[bytes, list[int]] = {}
    for t, c in enumerate(targets):
        rows = pred_ok & obs[:, c]
        masks.setdefault(np.packbits(rows).tobytes(), []).append(t)
    for ts in masks.values():
        rows = pred_ok & obs[:, targets[ts[0]]]
        n_train = int(rows.sum())
        if n_train == 0:
            raise DataValidationError(
                f"column {int(targets[ts[0]])} cannot be imputed: no row observes it together "
                f"with predictor columns {predictors[:10].tolist()}")
        Xt = X2[np.ix_(rows, predictors)]
        Yt = X2[np.ix_(rows, targets[ts])]
        if n_train > k:
            design = np.column_stack([np.ones(n_train), Xt])
            # pivoted QR, as R's lm/glm
            sol = scipy.linalg.lstsq(design, Yt, lapack_driver="gelsy", check_finite=False)[0]
            intercept[ts] = sol[0]
            coef[ts] = sol[1:].T
            methods += ["ols"] * len(ts)
        else:
            for j, t in enumerate(ts):
                coef[t] = cv_lasso_start(Xt, Yt[:, j], random_state)
                intercept[t] = Yt[:, j].mean() - Xt.mean(axis=0) @ coef[t]
            methods += ["lasso_cv"] * len(ts)
    return ImputationModel(targets, predictors, intercept, coef, methods)


# ----------------------------------------------------------------------------- the problem
@dataclass
class _Prepared:
    layout: MBILayout
    X2: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    y_mean: float
    yc: np.ndarray
    copies: list[list[np.ndarray]]
    instruments: list[list[np.ndarray]]
    diff_cols: list[list[np.ndarray]]
    imputers: dict


def _prepare(X: np.ndarray, y: np.ndarray, sources, groups, random_state) -> _Prepared:
    with single_blas_thread():  # small dense solves: BLAS threads only add contention
        return _prepare_unlimited(X, y, sources, groups, random_state)


def _prepare_unlimited(X, y, sources, groups, random_state) -> _Prepared:
    lay = _build_layout(X, sources, groups)
    X2, center, scale = standardize_observed(X)
    y_mean = float(y.mean())
    yc = y - y_mean
    copies, instruments, diffs, imputers = [], [], [], {}
    for k, rows in enumerate(lay.group_rows):
        base = X2[rows]
        miss_k = lay.missing_cols(k)
        ck, ik, dk = [], [], []
        for j in lay.donors[k]:
            inst = np.intersect1d(lay.observed_cols[k], lay.observed_cols[j])
            Xk = base.copy()
            if miss_k.size:
                model = fit_imputation(X2, miss_k, inst, random_state)
                imputers[(k, j)] = model
                Xk[:, miss_k] = model.predict(base[:, inst])
            ck.append(Xk)
            ik.append(inst)
        for s, Xk in enumerate(ck):
            dk.append(np.flatnonzero(np.any(Xk != ck[0], axis=0)) if s else np.empty(0, int))
        copies.append(ck)
        instruments.append(ik)
        diffs.append(dk)
    return _Prepared(lay, X2, center, scale, y_mean, yc, copies, instruments, diffs, imputers)


def _core_problem(prep: _Prepared, eps3: float):
    from hetmtl import _core

    ys = [prep.yc[rows] for rows in prep.layout.group_rows]
    return _core.MBIProblem(
        ys, [[np.asfortranarray(c) for c in ck] for ck in prep.copies],
        [[i.astype(int).tolist() for i in ik] for ik in prep.instruments],
        [[d.astype(int).tolist() for d in dk] for dk in prep.diff_cols], eps3)


def cv_lasso_start(X: np.ndarray, y: np.ndarray, random_state=0, n_folds: int = 3,
                   n_lambda: int = 100) -> np.ndarray:
    """Cross-validated lasso at the CV-error minimum, as R's ``cv.glmnet(X, y, nfolds = 3)`` at
    ``lambda.min``: intercept; columns scaled to unit (1/n) sd for the penalty (glmnet's
    ``standardize = TRUE``, within every fold fit); ``n_lambda`` geometric λ values from λ_max
    down to 1e-4 λ_max (1e-2 when n ≤ p); coordinate descent with glmnet's covariance updates and
    convergence rule (``thresh = 1e-7``) in the C++ core; λ minimising the held-out mean squared
    error. Differences from glmnet: the fold assignment comes from ``KFold(shuffle=True,
    random_state)`` instead of R's RNG, and the λ sequence is never shortened (glmnet stops it
    early when the deviance ratio saturates). With nearly collinear columns the selected
    coefficients can differ from R's although the fits agree closely."""
    from sklearn.model_selection import KFold

    from hetmtl import _core

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape

    def scaled(rows):
        sd = X[rows].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        return X[rows] / sd, sd

    Xs, sd = scaled(np.arange(n))
    Xc = Xs - Xs.mean(axis=0)
    lam_max = np.abs(Xc.T @ (y - y.mean())).max() / n
    if not lam_max > 0:
        return np.zeros(p)
    ratio = 1e-4 if n > p else 1e-2
    lambdas = lam_max * np.exp(np.linspace(0.0, np.log(ratio), n_lambda))
    sq_err = np.zeros(n_lambda)
    folds = KFold(n_splits=min(n_folds, n), shuffle=True, random_state=random_state)
    for train, test in folds.split(X):
        Xt, sd_t = scaled(train)
        coef = _core.mbi_lasso_path(Xt, y[train], lambdas) / sd_t[:, None]  # p x L, original scale
        icpt = y[train].mean() - X[train].mean(axis=0) @ coef
        sq_err += ((y[test, None] - icpt[None, :] - X[test] @ coef) ** 2).sum(axis=0)
    best = int(np.argmin(sq_err))
    return _core.mbi_lasso_path(Xs, y, lambdas[:best + 1])[:, best] / sd


def _initial_beta(prep: _Prepared, random_state=0) -> np.ndarray:
    """MBI's start (standardised scale): with a complete group, OLS on it (cross-validated lasso
    when it has no more rows than columns); without one, the cross-validated lasso of the
    centred response on the copy-averaged rows (R's ``cv.glmnet`` on the averaged imputations)."""
    lay = prep.layout
    if lay.complete:
        Xs, ys = prep.copies[0][0], prep.yc[lay.group_rows[0]]
    else:
        Xs = np.vstack([np.mean(ck, axis=0) for ck in prep.copies])
        ys = np.concatenate([prep.yc[r] for r in lay.group_rows])
    if lay.complete and Xs.shape[0] > Xs.shape[1]:
        design = np.column_stack([np.ones(len(ys)), Xs])
        sol, *_ = np.linalg.lstsq(design, ys, rcond=None)
        return sol[1:]
    with single_blas_thread():
        return cv_lasso_start(Xs, ys, random_state)


# ---------------------------------------------------------------------------- estimator
class MBI(RegressorMixin, BaseEstimator):
    """SCAD-penalised GMM with multiple block-wise imputation (one common β for all groups).

    Parameters
    ----------
    engine : {"native", "r"}
        ``"native"``: the C++ core (default); ``"r"``: R's BlockMissingData through rpy2.
    nlam : int
        Number of λ values (default 100, R's default; at least 1).
    lambda_min_ratio : float, optional
        Smallest λ as a fraction of λ_max, in (0, 1) (default 1e-3 if n > p, else 0.05).
    lambdas : sequence of float, optional
        Explicit λ sequence (native engine only; finite values ≥ 0, run in the given order with
        warm starts).
    a : float
        SCAD parameter (> 2).
    eps1 : float
        Coefficients with ``abs(β_j) < eps1`` (standardised scale) are set to zero (≥ 0).
    eps3 : float
        Eigenvalue floor of the weight-matrix truncation (≥ 0).
    tol : float
        Native solver: stop when the largest step (standardised scale) is below ``tol`` (> 0).
    stat_tol : float
        Native solver: a solution is converged when its optimality residual on the support
        (``stationarity_path_``) is at most ``stat_tol`` (> 0).
    max_iter : int
        Native iteration cap per λ (≥ 1).
    anchor : float
        The anchored path minimises Q + SCAD + μ/2 ‖β − β_start‖² with μ = ``anchor`` × the
        largest Gauss-Newton curvature of Q at the start (see the module notes; > 0).
    paths : {"both", "exact", "anchored"}
        Native engine: the candidate paths computed; ``"both"`` (default) selects by ``bic1``
        over the exact and the anchored path, ``"exact"`` minimises MBI's objective only (the
        path compared with R's objective), ``"anchored"`` is the fast path alone. Where MBI is
        not identified only the anchored path is used.
    random_state : int, numpy Generator or None
        Seed of the lasso-CV folds (start without a complete group; imputations with rows ≤
        predictors). ``None`` draws a fresh seed at each fit (recorded in ``random_seed_``).
    r_seed : int
        R seed set right before the R call (``engine="r"``).
    r_args : dict, optional
        Extra MBI arguments for the R call (defaults ``eps2 = 1e-3``, ``h1 = 2^-(8:20)``; R's
        default ``eps2 = 1e-7`` practically never converges). **String values are evaluated as R
        code** (``"2^-(8:20)"``): pass trusted input only.
    n_jobs : int or None
        Native engine: threads for the elimination/addition re-solves at each λ (joblib's
        convention: None = 1, −1 = all cores, −2 = all but one); the path does not depend on it.

    Attributes
    ----------
    lambdas_ : numpy.ndarray
        The λ path.
    coef_path_, intercept_path_ : numpy.ndarray
        Coefficients ``(L, p)`` (original scale and column order) and intercepts along the path;
        ``coef_path_std_`` on the standardised scale.
    bic1_ : numpy.ndarray
        MBI's ``bic1`` along the path; ``best_index_`` is its minimiser (the selection rule).
    coef_, intercept_, lambda_, support_ : numpy.ndarray, float, float, numpy.ndarray
        The selected fit.
    objective_path_, qif_path_, converged_ : numpy.ndarray
        Q + SCAD, Q and convergence (stationarity within ``stat_tol``) along the path.
    stationarity_path_, stationarity_ : numpy.ndarray, float
        Native engine: optimality residual, the largest absolute value over the support of
        ``dQ/dbeta_j + SCAD'(|beta_j|) sign(beta_j)`` (plus ``mu (beta_j - beta_start_j)`` where
        anchored), with the exact gradient on the standardised scale, at each λ and at the selected one.
    identified_ : bool
        Native engine: whether the moment conditions identify β (see the module notes), with
        ``beta_start_std_`` (MBI's start), ``beta_unpenalized_std_`` (the unpenalised solution
        the selected path starts from) and ``anchor_mu_`` (μ of the anchored path);
        ``unpenalized_rejected_`` is True when the unpenalised solution fitted more than twice
        as badly as the start (RSS₁): then only the anchored path is used. Along every path no
        step goes to a fit with RSS₁ above the null model's (the QIF's spurious region, where
        huge residuals shrink Q).
    path_kind_ : str
        Native engine: ``"exact"`` or ``"anchored"``, the path of the selected model; the
        ``*_path_`` attributes above describe that path.
    candidate_paths_ : dict
        Native engine: per path computed (``"exact"``, ``"anchored"``), a dict of arrays along
        the λ grid: ``coef_path_std``, ``objective`` (Q + SCAD), ``solver_objective`` (plus the
        anchor term), ``qif``, ``rss1``, ``bic1``, ``stationarity``, ``converged``, ``n_iter``,
        and ``beta_unpenalized_std``.
    random_seed_ : int
        The integer seed used (from ``random_state``).
    test_table_ : pandas.DataFrame
        After ``fit(data, split)``: per-task test RMSE (with ``test_rmse_`` and
        ``test_rmse_avg_``).
    """

    def __init__(self, engine: str = "native", nlam: int = 100,
                 lambda_min_ratio: float | None = None, lambdas: Sequence[float] | None = None,
                 a: float = 3.7, eps1: float = 1e-3, eps3: float = 1e-8, tol: float = 1e-6,
                 stat_tol: float = 1e-6, max_iter: int = 500, anchor: float = 1.0,
                 paths: str = "both", random_state=0, r_seed: int = 1, r_args: dict | None = None,
                 n_jobs: int | None = None):
        self.engine = engine
        self.nlam = nlam
        self.lambda_min_ratio = lambda_min_ratio
        self.lambdas = lambdas
        self.a = a
        self.eps1 = eps1
        self.eps3 = eps3
        self.tol = tol
        self.stat_tol = stat_tol
        self.max_iter = max_iter
        self.anchor = anchor
        self.paths = paths
        self.random_state = random_state
        self.r_seed = r_seed
        self.r_args = r_args
        self.n_jobs = n_jobs

    # -- parameters
    def _checked_params(self) -> dict:
        """Every parameter validated (errors name it), as used by the fit."""
        out = {
            "engine": check_choice(self.engine, "engine", ("native", "r")),
            "nlam": check_int(self.nlam, "nlam", low=1, high=100_000),
            "lambda_min_ratio": check_float(self.lambda_min_ratio, "lambda_min_ratio", low=0.0,
                                            high=1.0, low_open=True, high_open=True,
                                            allow_none=True),
            "a": check_float(self.a, "a", low=2.0, low_open=True),
            "eps1": check_float(self.eps1, "eps1", low=0.0),
            "eps3": check_float(self.eps3, "eps3", low=0.0),
            "tol": check_float(self.tol, "tol", low=0.0, low_open=True),
            "stat_tol": check_float(self.stat_tol, "stat_tol", low=0.0, low_open=True),
            "max_iter": check_int(self.max_iter, "max_iter", low=1, high=10_000_000),
            "anchor": check_float(self.anchor, "anchor", low=0.0, low_open=True),
            "paths": check_choice(self.paths, "paths", ("both", "exact", "anchored")),
            "r_seed": check_int(self.r_seed, "r_seed", low=0, high=2**31 - 1),
            "n_jobs": check_n_jobs(self.n_jobs, "n_jobs"),
            "seed": seed_from(self.random_state, "random_state"),
        }
        if self.lambdas is None:
            out["lambdas"] = None
        else:
            if isinstance(self.lambdas, (str, bytes)):
                raise ParameterError(f"lambdas must be a sequence of numbers, got {self.lambdas!r}")
            try:
                lam = np.asarray(self.lambdas, dtype=float).ravel()
            except (TypeError, ValueError):
                raise ParameterError("lambdas must be a sequence of numbers") from None
            if lam.size == 0 or not np.isfinite(lam).all() or np.any(lam < 0):
                raise ParameterError("lambdas must be a non-empty sequence of finite values >= 0")
            if out["engine"] == "r":
                raise ParameterError("lambdas is supported by engine='native' only")
            out["lambdas"] = lam
        if self.r_args is not None and (
                not isinstance(self.r_args, dict) or not all(isinstance(k, str) for k in self.r_args)):
            raise ParameterError("r_args must be a dict with string keys (R argument names)")
        return out

    # -- fitting
    def fit(self, X, y=None, sources=None, groups=None):
        """Fit the λ path and select λ by ``bic1``.

        Parameters
        ----------
        X : array-like or BlockwiseData
            Design ``(n, p)`` with NaN for missing blocks; or a
            :class:`~hetmtl.data.BlockwiseData` (its stacked design, tasks as missing-pattern
            groups).
        y : array-like or BlockwiseSplit, optional
            Responses ``(n,)`` with an array ``X``; with a BlockwiseData, optionally a
            :class:`~hetmtl.blockwise.BlockwiseSplit`: MBI then fits on the training and validation
            rows (it has no use for a validation set; the MTL-HMB paper's protocol scores it on the
            20 % test rows) and sets ``test_table_``, as the other block-wise estimators do.
        sources : sequence, optional
            With an array ``X``: per source, a column range ``(start, stop)`` or column indices.
        groups : array-like, optional
            Missing-pattern group labels (default from the NaN pattern).

        Returns
        -------
        MBI
            The fitted estimator.
        """
        from hetmtl.blockwise.selection import BlockwiseSplit
        from hetmtl.data.blockwise import BlockwiseData

        if isinstance(X, BlockwiseData) and isinstance(y, BlockwiseSplit):
            return self._fit_split(X, y)
        params = self._checked_params()
        if isinstance(X, BlockwiseData):
            if y is not None or sources is not None:
                raise ValueError("pass either a BlockwiseData alone, a BlockwiseData and a "
                                 "BlockwiseSplit, or (X, y, sources)")
            design = X.stacked_design()
            X, y, sources = design.X, design.y, [list(map(int, c)) for c in design.source_columns]
        elif y is None or sources is None:
            raise ValueError("MBI.fit needs (X, y, sources) or a BlockwiseData")
        X, y = _validate_xy(X, y)
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)  # a refit leaves nothing of the previous one
        self.__dict__.pop("_problem", None)
        self.random_seed_ = params["seed"]
        self._prep = _prepare(X, y, sources, groups, self.random_seed_)
        self.n_features_in_ = X.shape[1]
        self.center_x_, self.scale_x_, self.y_mean_ = (
            self._prep.center, self._prep.scale, self._prep.y_mean)
        if params["engine"] == "r":
            from hetmtl.blockwise._r_bridge import run_r_mbi

            res = run_r_mbi(X, y, sources, groups, seed=params["r_seed"], nlam=params["nlam"],
                            lambda_min_ratio=params["lambda_min_ratio"], a=params["a"],
                            eps1=params["eps1"], eps3=params["eps3"], extra=self.r_args)
            self.lambdas_ = res["lambda"]
            self.coef_path_ = res["beta"]
            self.intercept_path_ = res["intercept"]
            self.bic1_ = res["bic1"]
            self.coef_path_std_ = self.coef_path_ * self.scale_x_
            self.notcon_ = res["notcon"]
            self.r_elapsed_ = res["elapsed"]
            self.r_cpu_seconds_ = res.get("cpu", res["elapsed"])
            nonzero = np.flatnonzero(self.bic1_ != 0)
            self.best_index_ = int(nonzero[np.argmin(self.bic1_[nonzero])])
        else:
            self._fit_native(params)
            self.stationarity_ = float(self.stationarity_path_[self.best_index_])
        if not (np.isfinite(self.coef_path_[self.best_index_]).all()
                and np.isfinite(self.intercept_path_[self.best_index_])):
            raise TrainingError(f"MBI fit gave non-finite coefficients at lambda index {self.best_index_}; "
                                "check the scale of X and y")
        self.coef_ = self.coef_path_[self.best_index_].copy()
        self.intercept_ = float(self.intercept_path_[self.best_index_])
        self.lambda_ = float(self.lambdas_[self.best_index_])
        self.support_ = np.flatnonzero(self.coef_ != 0)
        return self

    def _fit_split(self, data, split):
        split.check(data)
        fit_rows = [np.concatenate([np.asarray(a), np.asarray(b)]) for a, b in zip(split.train, split.val)]
        self.fit(data.subset(fit_rows))
        if all(len(r) > 0 for r in split.test):
            self.test_table_ = self.evaluate(data, split.test)
            self.test_rmse_ = self.test_table_["rmse"].iloc[:-1]
            self.test_rmse_avg_ = float(self.test_table_["rmse"].iloc[-1])
        return self

    def _fit_native(self, params: dict):
        threads = params["n_jobs"]
        a, tol, stat_tol, max_iter = params["a"], params["tol"], params["stat_tol"], params["max_iter"]
        prep = self._prep
        n, p = prep.X2.shape
        problem = _core_problem(prep, params["eps3"])
        self._problem = problem
        start = _initial_beta(prep, self.random_seed_)
        self.beta_start_std_ = start
        ev0 = problem.evaluate(start)
        self.identified_ = bool(np.sum(ev0["n_retained"]) >= p)
        # proximal weight of the anchored path: anchor x the largest Gauss-Newton curvature
        self.anchor_mu_ = float(params["anchor"] * max(np.linalg.eigvalsh(ev0["gn_hessian"])[-1],
                                                       1e-12))
        if not self.identified_:
            warnings.warn(
                f"MBI is not identified here: the weight-matrix truncation keeps "
                f"{int(np.sum(ev0['n_retained']))} moments (of {int(np.sum(ev0['n_moments']))}) "
                f"for {p} coefficients; only the path anchored at the cross-validated lasso start "
                f"(proximal weight {self.anchor_mu_:.3g}) is used, as R's MBI stays near it",
                UserWarning)
        kinds = {"both": ["exact", "anchored"], "exact": ["exact"],
                 "anchored": ["anchored"]}[params["paths"]]
        self.unpenalized_rejected_ = False
        if self.identified_ and "exact" in kinds:
            solved, _, _ = problem.solve(start, 0.0, a, tol, max_iter, 0.0, start, stat_tol)
            # The unpenalised QIF can head for its spurious region (huge residuals shrink Q): a
            # solution fitting more than twice as badly as the start (RSS1) is not used.
            self.unpenalized_rejected_ = bool(problem.rss1(solved) > 2.0 * problem.rss1(start))
            if self.unpenalized_rejected_:
                warnings.warn(
                    f"MBI: the unpenalised QIF minimiser fits more than twice as badly as the "
                    f"start (RSS1 {problem.rss1(solved):.4g} against {problem.rss1(start):.4g}); "
                    f"only the path anchored at the start is used", UserWarning)
        if not self.identified_ or self.unpenalized_rejected_:
            kinds = ["anchored"]
        lambdas = params["lambdas"]
        if lambdas is None:
            ratio = params["lambda_min_ratio"]
            if ratio is None:
                ratio = 1e-3 if n > p else 0.05
            lam_max = problem.lambda_max(np.full(p, 0.01))
            self.lambda_max_ = lam_max
            lambdas = np.exp(np.linspace(np.log(ratio * lam_max), np.log(lam_max), params["nlam"]))
        self.lambdas_ = lambdas
        self.candidate_paths_ = {}
        for kind in kinds:
            mu = self.anchor_mu_ if kind == "anchored" else 0.0
            if kind == "exact":
                first = solved
            else:
                first = problem.solve(start, 0.0, a, tol, max_iter, mu, start, stat_tol)[0]
                if problem.rss1(first) > 2.0 * problem.rss1(start):  # the spurious region
                    first = start
                    if not self.identified_:
                        self.unpenalized_rejected_ = True
            res = problem.path(first, lambdas, a, params["eps1"], tol, max_iter, mu=mu,
                               anchor=start, threads=threads, stat_tol=stat_tol)
            df = (res["beta"] != 0).sum(axis=1)
            self.candidate_paths_[kind] = {
                "beta_unpenalized_std": first,
                "coef_path_std": res["beta"],
                # MBI's own penalised objective Q + SCAD: the exact path's solver objective; the
                # anchored path minimised it plus mu/2 ||beta - start||^2 (solver_objective)
                "objective": res["objective"] if mu == 0.0 else np.array(
                    [problem.objective(b, lam, a) for b, lam in zip(res["beta"], lambdas)]),
                "solver_objective": res["objective"],
                "qif": res["qif"], "rss1": res["rss1"],
                "bic1": n * np.log(res["rss1"]) + df * np.log(n),
                "stationarity": res["stationarity"],
                "converged": res["converged"].astype(bool), "n_iter": res["n_iter"]}
        # MBI's selection rule (bic1) over the solutions of every path computed
        self.path_kind_ = min(self.candidate_paths_,
                              key=lambda k: float(np.min(self.candidate_paths_[k]["bic1"])))
        chosen = self.candidate_paths_[self.path_kind_]
        self.beta_unpenalized_std_ = chosen["beta_unpenalized_std"]
        self.coef_path_std_ = chosen["coef_path_std"]
        self.coef_path_ = chosen["coef_path_std"] / prep.scale
        self.intercept_path_ = prep.y_mean - self.coef_path_ @ prep.center
        self.objective_path_ = chosen["objective"]
        self.qif_path_ = chosen["qif"]
        self.stationarity_path_ = chosen["stationarity"]
        self.converged_ = chosen["converged"]
        self.n_iter_ = chosen["n_iter"]
        self.bic1_ = chosen["bic1"]
        self.best_index_ = int(np.argmin(self.bic1_))
        ev = problem.evaluate(self.coef_path_std_[self.best_index_])
        self.n_moments_retained_ = int(np.sum(ev["n_retained"]))
        if not self.converged_.all():
            warnings.warn(f"MBI: {int((~self.converged_).sum())} of {lambdas.size} λ values of "
                          f"the selected ({self.path_kind_}) path end with an optimality residual "
                          f"above stat_tol={stat_tol} (largest "
                          f"{float(np.max(self.stationarity_path_)):.3g}; see stationarity_path_)",
                          ConvergenceWarning)

    # -- pickling: the native problem is rebuilt from the prepared data when needed
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_problem", None)
        return state

    # -- evaluation helpers (standardised scale; work for any engine)
    def _native_problem(self):
        check_is_fitted(self, ["coef_", "_prep"])
        problem = self.__dict__.get("_problem")
        if problem is None:  # after unpickling or deepcopy
            problem = _core_problem(self._prep, check_float(self.eps3, "eps3", low=0.0))
            self._problem = problem
        return problem

    def penalized_objective(self, coef, lam: float) -> float:
        """Native penalised objective Q(β) + Σ_j SCAD_λ(abs(β_j)) at a coefficient vector.

        Parameters
        ----------
        coef : array-like
            Coefficients on the ORIGINAL scale (e.g. a row of R's ``beta``), converted to the
            standardised scale internally.
        lam : float
            λ.

        Returns
        -------
        float
            The objective.
        """
        problem = self._native_problem()
        beta_std = np.asarray(coef, dtype=float) * self.scale_x_
        return problem.objective(beta_std, float(lam), self.a)

    def bic1(self, coef) -> float:
        """MBI's bic1 = n log(RSS₁) + df log(n) at a coefficient vector.

        Parameters
        ----------
        coef : array-like
            Coefficients on the original scale.

        Returns
        -------
        float
            The criterion.
        """
        problem = self._native_problem()
        beta_std = np.asarray(coef, dtype=float) * self.scale_x_
        n = self._prep.X2.shape[0]
        df = int(np.count_nonzero(beta_std))
        return n * np.log(problem.rss1(beta_std)) + df * np.log(n)

    # -- prediction
    def predict(self, X) -> np.ndarray:
        """Predictions for rows that may miss whole sources.

        Missing sources are imputed with MBI's own regressions (on the training data) from every
        training group that can serve as donor; the prediction is averaged over those
        imputations, as MBI averages residuals over a group's imputed copies.

        Parameters
        ----------
        X : array-like
            Rows ``(n, p)`` in the training column order, NaN for missing blocks.

        Returns
        -------
        numpy.ndarray
            Predictions ``(n,)``.
        """
        check_is_fitted(self, ["coef_", "_prep"])
        X, _ = _validate_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise DataValidationError(f"X has {X.shape[1]} columns, the model {self.n_features_in_}")
        lay = self._prep.layout
        pat = _row_patterns(X, lay.sources)
        Xs = (X - self.center_x_) / self.scale_x_
        beta_std = self.coef_ * self.scale_x_
        out = np.empty(X.shape[0])
        train_obs = [set(o.tolist()) for o in lay.observed_cols]
        p = self.n_features_in_
        # imputation models: the training ones, plus any this call needs (kept local: predict
        # writes nothing into the estimator)
        cache = {(tuple(m.target_cols.tolist()), tuple(m.predictor_cols.tolist())): m
                 for m in self._prep.imputers.values()}
        for key in sorted({tuple(r) for r in pat.tolist()}):
            rows = np.flatnonzero((pat == np.array(key)).all(axis=1))
            miss_src = [s for s, m in enumerate(key) if m]
            if not miss_src:
                out[rows] = self.y_mean_ + Xs[rows] @ beta_std
                continue
            miss_cols = np.sort(np.concatenate([lay.sources[s] for s in miss_src]))
            obs_cols = np.setdiff1d(np.arange(p), miss_cols)
            obs_set, miss_set = set(obs_cols.tolist()), set(miss_cols.tolist())
            donors = [j for j in range(len(lay.group_rows))
                      if miss_set <= train_obs[j] and obs_set & train_obs[j]]
            if not donors:
                raise DataValidationError(
                    f"row {int(rows[0])} misses sources {miss_src} and no training group observes "
                    f"them together with one of its observed columns; MBI cannot impute it")
            preds = []
            for j in donors:
                inst = np.intersect1d(obs_cols, lay.observed_cols[j])
                ck = (tuple(miss_cols.tolist()), tuple(inst.tolist()))
                if ck not in cache:
                    cache[ck] = fit_imputation(self._prep.X2, miss_cols, inst, self.random_seed_)
                Xk = Xs[rows].copy()
                Xk[:, miss_cols] = cache[ck].predict(Xs[np.ix_(rows, inst)])
                preds.append(Xk @ beta_std)
            out[rows] = self.y_mean_ + np.mean(preds, axis=0)
        return out

    def evaluate(self, data, rows=None):
        """Per-task RMSE and their average, as the other block-wise estimators' ``evaluate``.

        Parameters
        ----------
        data : BlockwiseData
            Tasks to score.
        rows : sequence of numpy.ndarray, optional
            ``rows[t]``: rows of task t (default all).

        Returns
        -------
        pandas.DataFrame
            As :func:`~hetmtl.blockwise.rmse_table`.
        """
        from hetmtl.blockwise.selection import rmse_table

        if rows is not None:
            data = data.subset([np.asarray(r) for r in rows])
        design = data.stacked_design()
        pred = self.predict(design.X)
        return rmse_table([design.y[r] for r in design.task_rows], [pred[r] for r in design.task_rows],
                          list(data.task_names))

    def path_frame(self):
        """The λ path as a DataFrame.

        Returns
        -------
        pandas.DataFrame
            lambda, bic1, df, intercept and one column per feature.
        """
        import pandas as pd

        frame = pd.DataFrame(self.coef_path_, columns=[f"x{j}" for j in range(self.n_features_in_)])
        frame.insert(0, "intercept", self.intercept_path_)
        frame.insert(0, "df", (self.coef_path_ != 0).sum(axis=1))
        frame.insert(0, "bic1", self.bic1_)
        frame.insert(0, "lambda", self.lambdas_)
        return frame
