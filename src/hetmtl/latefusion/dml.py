"""Step 1 of late fusion: double machine learning (DML2) at one site, and at many.

What to use when:
- ``SiteDML(model="plr")`` — partially linear slope θ in Y = Dθ + g(X) + ε (partialling-out score);
- ``SiteDML(model="ate")`` — average treatment effect of a binary D (AIPW / IRM score, clipped
  propensities);
- ``SiteDML(model="cate")`` — linear CATE τ(z) = φ(z)'θ in R-learner (Robinson) form, φ(z) =
  (1, standardised effect modifiers z); works for binary or continuous D;
- ``SiteDML(model="blp")`` — best linear projection of the CATE on φ(z) (DR-learner: AIPW
  pseudo-outcome regressed on φ), binary D;
- :class:`MultiSiteDML` — one :class:`SiteDML` per site of a :class:`~hetmtl.data.MultiSiteData`,
  a stacked results table, and one :class:`SiteSummary` per site for the fusion step.

Every score is linear in θ, ψ_i(θ) = φ_i (r_i − w_i φ_i'θ); the C++ core solves the empirical
moment and returns Ĵ, Ω̂ and the sandwich V̂ = Ĵ⁻¹Ω̂Ĵ⁻ᵀ/n. Results match DoubleML's PLR/IRM (and
their ``cate`` BLP) given the same learners and folds. Repeated cross-fitting (``n_rep > 1``) is
aggregated with DoubleML's median rule.

Defaults (no learners given): ridge sieves — :class:`SieveFeatures` (cubic splines of every
covariate, pairwise products) with :class:`RidgeLOO` for regressions and
:class:`LogisticRidgeALO` for propensities — and ``n_rep = 3``; chosen by measured coverage,
then RMSE, then time (``benchmarks/results/dml_defaults.md``; see :class:`SiteDML`). The previous
random-forest defaults remain available as :func:`forest_regressor` / :func:`forest_classifier`.
Every fit records first-step diagnostics (:func:`first_step_diagnostics`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone, is_classifier
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer, StandardScaler
from threadpoolctl import ThreadpoolController

from hetmtl import _core
from hetmtl._parallel import resolve_n_jobs
from hetmtl._progress import check_verbose, progress_bar
from hetmtl._validation import (
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_is_fitted,
    check_level,
    check_random_state,
)
from hetmtl.data.multisite import MultiSiteData, treatment_indicator
from hetmtl.exceptions import ClippingWarning, DataValidationError, ParameterError, TrainingError
from hetmtl.inference import InferenceMixin, _level_names, coef_table, make_summary
from hetmtl.inference.joint import MULTIPLIERS, check_n_boot, multiplier_max_t
from hetmtl.latefusion.summary import CVFold, SiteSummary

MODELS = ("plr", "ate", "cate", "blp")
BINARY_MODELS = ("ate", "blp")
Folds = list[tuple[np.ndarray, np.ndarray]]


#: Share of units whose cross-fitted propensity is clipped above which a :class:`ClippingWarning`
#: is raised (mean over repetitions; models ate and blp).
CLIP_WARN_SHARE = 0.05
#: Pairwise products enter the default sieve only up to this many covariates (the benchmark has
#: p = 6; on IHDP, p = 26 and ~100 units per site, the 325 products made the out-of-fold R² of the
#: outcome models worse: median 0.06 / −0.13 against 0.15 / −0.01 without them).
MAX_INTERACTION_COLUMNS = 10
#: Repetitions of cross-fitting when ``n_rep`` is not given (and no folds/predictions fix it).
DEFAULT_N_REP = 3
#: Penalty rule of the default learners per model and nuisance ("min": best cross-validated loss;
#: "1se": the largest penalty within one standard error of it). Measured in
#: ``benchmarks/results/dml_defaults.md``.
DEFAULT_RULES = {
    "plr": {"outcome": "1se", "treatment": "1se", "propensity": "min"},
    "cate": {"outcome": "1se", "treatment": "1se", "propensity": "min"},
    "ate": {"outcome": "min", "treatment": "min", "propensity": "min"},
    "blp": {"outcome": "min", "treatment": "min", "propensity": "min"},
}


_THREADPOOLS: ThreadpoolController | None = None


def _one_blas_thread():
    """Context limiting BLAS to one thread: the sieve fits multiply small matrices, for which
    threaded OpenBLAS costs several times the CPU (and far more on a busy machine)."""
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def _alpha_grid(n: int) -> np.ndarray:
    """Ridge penalties on the sum-of-losses scale for standardised features: n·10^(−4 … 1.5)."""
    return float(n) * np.logspace(-4.0, 1.5, 23)


def _pick(mean: np.ndarray, se: np.ndarray, alphas: np.ndarray, rule: str) -> int:
    """Index of the chosen penalty: the minimum of the CV loss, or (``"1se"``) the largest penalty
    whose loss is within one standard error of the minimum (glmnet's ``lambda.1se``)."""
    j = int(np.argmin(mean))
    if rule == "min":
        return j
    ok = np.flatnonzero(mean <= mean[j] + se[j])
    return int(ok[np.argmax(alphas[ok])])


def _check_rule(rule: str) -> None:
    check_choice(rule, "rule", ("min", "1se"))


def _seed_sequence(random_state: Any) -> np.random.SeedSequence:
    """``random_state`` (None, int in [0, 2**32), Generator, RandomState) as a SeedSequence: an int
    seeds it directly (so a seed gives the same site seeds as before), a generator draws the entropy."""
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return np.random.SeedSequence(int(check_random_state(random_state).integers(0, 2**63 - 1)))
    check_random_state(random_state)  # refuses -1, 2.5, strings with the parameter's name
    return np.random.SeedSequence(int(random_state))


class SieveFeatures(TransformerMixin, BaseEstimator):
    """Sieve basis for nuisance regressions: each column standardised, a cubic B-spline expansion
    (``n_knots`` quantile knots, constant extrapolation, no bias column) of every column with at
    least ``min_unique`` distinct values, and all pairwise products of the standardised columns
    (``interactions=True``; ``"auto"``: only for at most ``MAX_INTERACTION_COLUMNS`` = 10 columns).
    p covariates give p + 6 p_cont + p(p − 1)/2 features with the defaults (57 for p = 6).
    Binary and other few-valued columns enter linearly (and in the products)."""

    def __init__(self, n_knots: int = 5, degree: int = 3, interactions: bool | str = "auto",
                 min_unique: int = 10) -> None:
        self.n_knots = n_knots
        self.degree = degree
        self.interactions = interactions
        self.min_unique = min_unique

    def fit(self, X, y=None) -> "SieveFeatures":
        X = np.asarray(X, dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.splines_: dict[int, SplineTransformer] = {}
        for j in range(X.shape[1]):
            if np.unique(X[:, j]).size < self.min_unique:
                continue
            for knots in ("quantile", "uniform"):  # tied quantiles give repeated knots
                try:
                    self.splines_[j] = SplineTransformer(
                        n_knots=self.n_knots, degree=self.degree, knots=knots, extrapolation="constant",
                        include_bias=False,
                    ).fit(X[:, [j]])
                    break
                except ValueError:
                    continue
        return self

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        if X.shape[1] != self.n_features_in_:
            raise DataValidationError(f"SieveFeatures was fitted on {self.n_features_in_} columns, got {X.shape[1]}")
        Z = (X - self.mean_) / self.scale_
        parts = [Z] + [sp.transform(X[:, [j]]) for j, sp in self.splines_.items()]
        p = X.shape[1]
        if p > 1 and (self.interactions is True or (self.interactions == "auto" and p <= MAX_INTERACTION_COLUMNS)):
            i, k = np.triu_indices(X.shape[1], 1)
            parts.append(Z[:, i] * Z[:, k])
        return np.hstack(parts)


class RidgeLOO(RegressorMixin, BaseEstimator):
    """Ridge regression whose penalty is chosen by exact leave-one-out squared error
    (sklearn's efficient LOO, :class:`~sklearn.linear_model.RidgeCV`): ``rule="min"`` takes the
    best penalty, ``"1se"`` the largest penalty within one standard error of the best (glmnet's
    ``lambda.1se``; smoother fits). ``alphas=None``: n·10^(−4 … 1.5) (23 values), n the number of
    fitting rows; features are expected standardised."""

    def __init__(self, alphas: Sequence[float] | None = None, rule: str = "min") -> None:
        self.alphas = alphas
        self.rule = rule

    def fit(self, X, y) -> "RidgeLOO":
        _check_rule(self.rule)
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        alphas = _alpha_grid(X.shape[0]) if self.alphas is None else np.asarray(self.alphas, dtype=float)
        with _one_blas_thread():
            cv = RidgeCV(alphas=alphas, store_cv_results=True).fit(X, y)
            loss = np.asarray(cv.cv_results_).reshape(X.shape[0], alphas.size)
            mean, se = loss.mean(axis=0), loss.std(axis=0, ddof=1) / np.sqrt(loss.shape[0])
            self.cv_loss_ = mean
            self.alpha_ = float(alphas[_pick(mean, se, alphas, self.rule)])
            model = Ridge(alpha=self.alpha_).fit(X, y)
        self.coef_, self.intercept_ = model.coef_, float(model.intercept_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_ + self.intercept_


class LogisticRidgeALO(ClassifierMixin, BaseEstimator):
    """Ridge-penalised logistic regression (intercept unpenalised) whose penalty is chosen by
    approximate leave-one-out log-loss (one Newton step from the full fit, exact to O(1/n²) for
    ridge GLMs; Rad & Maleki 2020, JRSS-B 82(4)); ``rule`` as in :class:`RidgeLOO`. Fitted by
    damped Newton along a decreasing penalty path (warm starts), in the row space of X when there
    are more features than rows. ``alphas=None``: n·10^(−4 … 1.5) (23 values). The penalty is on
    the sum of log-losses, so ``alpha`` = 1/C of sklearn's ``LogisticRegression``."""

    def __init__(self, alphas: Sequence[float] | None = None, rule: str = "min", max_iter: int = 100,
                 tol: float = 1e-10) -> None:
        self.alphas = alphas
        self.rule = rule
        self.max_iter = max_iter
        self.tol = tol

    @staticmethod
    def _loss(A, y, beta, pen) -> float:
        eta = A @ beta
        return float(-np.sum(y * log_expit(eta) + (1.0 - y) * log_expit(-eta)) + 0.5 * np.sum(pen * beta * beta))

    def _newton(self, A, y, lam, beta):
        pen = np.full(A.shape[1], lam)
        pen[0] = 0.0
        f = self._loss(A, y, beta, pen)
        for _ in range(int(self.max_iter)):
            p = expit(A @ beta)
            grad = A.T @ (p - y) + pen * beta
            H = (A.T * (p * (1.0 - p))) @ A + np.diag(pen + 1e-10)
            step = np.linalg.solve(H, grad)
            decrement = float(grad @ step)
            if decrement < self.tol * max(1.0, abs(f)):
                break
            t = 1.0
            while True:
                cand = beta - t * step
                f_new = self._loss(A, y, cand, pen)
                if f_new <= f - 1e-4 * t * decrement or t < 1e-8:
                    break
                t *= 0.5
            beta, f = cand, f_new
        p = expit(A @ beta)
        w = p * (1.0 - p)
        H = (A.T * w) @ A + np.diag(pen + 1e-10)
        return beta, p, w, H

    def fit(self, X, y) -> "LogisticRidgeALO":
        with _one_blas_thread():
            return self._fit(X, y)

    def _fit(self, X, y) -> "LogisticRidgeALO":
        _check_rule(self.rule)
        X = np.asarray(X, dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        y = np.asarray(y, dtype=float)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2 or not np.all(np.isin(self.classes_, (0.0, 1.0))):
            raise DataValidationError(f"LogisticRidgeALO needs a 0/1 target with both classes, got {self.classes_}")
        n = X.shape[0]
        center = X.mean(axis=0)
        Xc = X - center
        rotation = None
        if Xc.shape[1] > n:  # the ridge fit lives in the row space: work with n coordinates
            U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
            rotation, Xc = Vt.T, U * S
        A = np.column_stack([np.ones(n), Xc])
        alphas = _alpha_grid(n) if self.alphas is None else np.asarray(self.alphas, dtype=float)
        order = np.argsort(alphas)[::-1]  # strong → weak penalty, warm starts
        beta = np.zeros(A.shape[1])
        beta[0] = np.log(y.mean() / (1.0 - y.mean()))
        mean, se = np.empty(alphas.size), np.empty(alphas.size)
        betas: list[np.ndarray] = [beta] * alphas.size  # each entry replaced in the loop below
        for j in order:
            beta, p, w, H = self._newton(A, y, float(alphas[j]), beta)
            a = np.einsum("ij,ji->i", A, np.linalg.solve(H, A.T))
            eta_loo = A @ beta + (p - y) * a / np.maximum(1.0 - w * a, 1e-12)
            loss = -(y * log_expit(eta_loo) + (1.0 - y) * log_expit(-eta_loo))
            mean[j], se[j], betas[j] = loss.mean(), loss.std(ddof=1) / np.sqrt(n), beta.copy()
        self.cv_loss_ = mean
        k = _pick(mean, se, alphas, self.rule)
        self.alpha_ = float(alphas[k])
        coef = betas[k][1:]
        self.coef_ = coef if rotation is None else rotation @ coef
        self.intercept_ = float(betas[k][0] - center @ self.coef_)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_ + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def default_regressor(random_state: int | None = None, rule: str = "min") -> Pipeline:
    """The default outcome learner (and treatment learner for continuous D): a ridge sieve —
    :class:`SieveFeatures` (splines + pairwise products), standardised, :class:`RidgeLOO` with
    penalty ``rule`` (SiteDML uses ``DEFAULT_RULES``: "1se" for plr/cate, "min" for ate/blp).
    Deterministic (``random_state`` is accepted and ignored). Chosen by
    ``benchmarks/bench_dml_defaults.py`` (see :class:`SiteDML`)."""
    return Pipeline([("sieve", SieveFeatures()), ("scale", StandardScaler()), ("ridge", RidgeLOO(rule=rule))])


def default_classifier(random_state: int | None = None, rule: str = "min") -> Pipeline:
    """The default propensity learner: the same sieve with :class:`LogisticRidgeALO` (penalty
    ``rule`` on approximate leave-one-out log-loss; SiteDML uses "min": the one-SE rule
    over-smooths propensities, ATE bias ≈ 1 SD in the benchmark). Deterministic."""
    return Pipeline([("sieve", SieveFeatures()), ("scale", StandardScaler()), ("logit", LogisticRidgeALO(rule=rule))])


def forest_regressor(random_state: int | None = None) -> RandomForestRegressor:
    """The random forest that was the default outcome learner before the ridge sieve (pass it as
    ``ml_outcome`` to reproduce earlier results)."""
    return RandomForestRegressor(n_estimators=100, min_samples_leaf=5, max_features=0.5, random_state=random_state)


def forest_classifier(random_state: int | None = None) -> RandomForestClassifier:
    """The probability forest that was the default propensity learner before the sieve."""
    return RandomForestClassifier(n_estimators=100, min_samples_leaf=5, max_features=0.5, random_state=random_state)


def _learner_name(learner) -> str:
    if isinstance(learner, Pipeline):
        return "+".join(type(step).__name__ for _, step in learner.steps)
    return type(learner).__name__


def _fit_predict(learner, X: np.ndarray, target: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    model = clone(learner).fit(X[train], target[train])
    if is_classifier(model):
        return model.predict_proba(X[test])[:, 1]
    return model.predict(X[test])


@dataclass
class _Residuals:
    """Cross-fitted pieces of one repetition: r, w (score) and y2 (held-out loss constant), and
    the cross-fitted nuisance predictions (propensities before clipping)."""

    r: np.ndarray
    w: np.ndarray
    y2: np.ndarray
    pred: dict = field(default_factory=dict)


def _r2(target: np.ndarray, fitted: np.ndarray) -> float:
    """Out-of-fold R² = 1 − Σ(t − f)²/Σ(t − t̄)² (sklearn's ``r2_score``); NaN if t is constant."""
    if target.size < 2:
        return float("nan")
    ss = float(np.sum((target - target.mean()) ** 2))
    return 1.0 - float(np.sum((target - fitted) ** 2)) / ss if ss > 0 else float("nan")


def first_step_diagnostics(model: str, y: np.ndarray, d: np.ndarray, pred: dict, clip: float) -> dict[str, float]:
    """Quality of one repetition's cross-fitted nuisances (all on held-out rows).

    - ``r2_l``, ``r2_m`` (plr, cate): out-of-fold R² of E[Y|X] and E[D|X];
    - ``r2_g0``, ``r2_g1`` (ate, blp): out-of-fold R² of E[Y|D=0,X] on the controls and of
      E[Y|D=1,X] on the treated; ``r2_m``: out-of-fold R² of the propensity, which for a binary D
      is the Brier skill score 1 − Brier/Brier(constant d̄);
    - ``logloss_m``, ``logloss_skill_m`` (binary D): out-of-fold log-loss of the propensity
      (predictions bounded to [1e-15, 1 − 1e-15]) and 1 − log-loss/log-loss(constant d̄);
    - ``clip_share`` (ate, blp): share of units whose propensity lies outside [clip, 1 − clip]
      (and is clipped in the score); ``propensity_min``, ``propensity_max`` before clipping.
    """
    out: dict[str, float] = {}
    binary_d = bool(np.all(np.isin(d, (0.0, 1.0))))
    if model in ("plr", "cate"):
        out["r2_l"] = _r2(y, pred["l"])
    else:
        out["r2_g0"] = _r2(y[d == 0], pred["g0"][d == 0])
        out["r2_g1"] = _r2(y[d == 1], pred["g1"][d == 1])
    m = pred["m"]
    out["r2_m"] = _r2(d, m)
    if binary_d and np.all((m >= 0) & (m <= 1)):
        mb = np.clip(m, 1e-15, 1 - 1e-15)
        out["logloss_m"] = float(-np.mean(d * np.log(mb) + (1 - d) * np.log1p(-mb)))
        rate = float(np.clip(d.mean(), 1e-15, 1 - 1e-15))
        null = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
        out["logloss_skill_m"] = 1.0 - out["logloss_m"] / null
    if model in BINARY_MODELS:
        out["clip_share"] = float(np.mean((m < clip) | (m > 1.0 - clip)))
        out["propensity_min"], out["propensity_max"] = float(m.min()), float(m.max())
    return out


def make_folds(n: int, n_folds: int, d: np.ndarray | None, rng: np.random.Generator) -> Folds:
    """K-fold split, stratified on a binary treatment so every training set has both arms."""
    seed = int(rng.integers(2**31 - 1))
    if d is not None:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(n), d)]
    return [(tr, te) for tr, te in KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n))]


_FOLDS_FORMAT = ("folds must be fold ids, shape (n,) or (n_rep, n), or DoubleML's [[(train, test), ...], ...] "
                 "per repetition")


def _is_fold_ids(folds: Any) -> bool:
    """Fold ids (an array, or a list of scalars) rather than (train, test) pairs."""
    if isinstance(folds, (str, bytes, dict)) or not isinstance(folds, (np.ndarray, list, tuple)) or len(folds) == 0:
        raise DataValidationError(_FOLDS_FORMAT)
    return isinstance(folds, np.ndarray) or np.isscalar(folds[0])


def _coerce_folds(folds: Any, n: int, n_rep: int) -> list[Folds]:
    """Accept fold ids (n,) / (n_rep, n), or DoubleML's [[(train, test), ...], ...] per repetition."""
    if _is_fold_ids(folds):
        ids = np.atleast_2d(np.asarray(folds))
        if ids.ndim != 2 or ids.dtype.kind in "cOmMV":
            raise DataValidationError(_FOLDS_FORMAT)
        if ids.shape[1] != n:
            raise DataValidationError(f"fold ids have length {ids.shape[1]}, but the site has {n} rows")
        out = []
        for row in ids:
            labels = np.unique(row)
            out.append([(np.flatnonzero(row != k), np.flatnonzero(row == k)) for k in labels])
    else:
        try:
            out = [[(np.asarray(tr), np.asarray(te)) for tr, te in rep] for rep in folds]
        except (TypeError, ValueError):
            raise DataValidationError(_FOLDS_FORMAT) from None
    if len(out) != n_rep:
        raise DataValidationError(f"{len(out)} repetitions of folds given for n_rep={n_rep}")
    for r, rep in enumerate(out):
        _check_cross_fitting(rep, n, r)
    return out


def _check_cross_fitting(rep: Folds, n: int, r: int) -> None:
    """Refuse folds that do no cross-fitting (as DoubleML): at least 2 folds; the test sets
    partition the rows; every training set is non-empty, without repeats and disjoint from its
    test set (so none holds its own test rows, and none is all rows)."""
    where = f"folds (repetition {r})"
    if len(rep) < 2:
        raise DataValidationError(f"{where}: {len(rep)} fold(s); cross-fitting needs at least 2")
    for k, (tr, te) in enumerate(rep):
        for name, idx in (("train", tr), ("test", te)):
            if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
                raise DataValidationError(f"{where}, fold {k}: {name} indices must be a 1-d array of integers")
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DataValidationError(f"{where}, fold {k}: {name} indices outside 0..{n - 1}")
        if te.size == 0:
            raise DataValidationError(f"{where}, fold {k}: empty test set")
        if np.intersect1d(tr, te).size:
            raise DataValidationError(f"{where}, fold {k}: the training set contains rows of its own test set "
                                      "(no cross-fitting)")
        if np.unique(tr).size != tr.size:
            raise DataValidationError(f"{where}, fold {k}: repeated rows in the training set")
        if tr.size == 0:
            raise DataValidationError(f"{where}, fold {k}: empty training set")
    covered = np.sort(np.concatenate([te for _, te in rep]))
    if covered.shape[0] != n or not np.array_equal(covered, np.arange(n)):
        raise DataValidationError(f"{where}: the test sets must partition the site's rows exactly once")


class _nullcontext:
    """A context manager returning ``value`` (a progress bar owned by the caller)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _influence(phi: np.ndarray, r: np.ndarray, w: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Influence values IF_i = Â⁻¹ ψ_i(θ̂) of the linear score ψ_i(θ) = φ_i (r_i − w_i φ_i'θ),
    Â = mean_i w_i φ_i φ_i' (so θ̂ − θ ≈ mean_i IF_i); shape (n, d)."""
    psi = phi * (r - w * (phi @ theta))[:, None]
    A = phi.T @ (w[:, None] * phi) / phi.shape[0]
    return np.linalg.solve(A, psi.T).T


def _aggregate_diagnostics(by_rep: pd.DataFrame) -> dict[str, float]:
    """Mean over repetitions; the propensity range is the range over all repetitions."""
    out = {k: float(v) for k, v in by_rep.mean(axis=0).items()}
    if "propensity_min" in by_rep:
        out["propensity_min"] = float(by_rep["propensity_min"].min())
        out["propensity_max"] = float(by_rep["propensity_max"].max())
    return out


class SiteDML(InferenceMixin, BaseEstimator):
    """DML2 estimate at one site with K-fold cross-fitting.

    Parameters
    ----------
    model : "plr", "ate", "cate" or "blp" (see module docs).
    ml_outcome : regressor for E[Y|X] (plr, cate) or E[Y|D=d, X] (ate, blp), or a learner name of
        :mod:`hetmtl.learners` ("default", "forest", "lasso", "ridge", "boosting"). Default:
        :func:`default_regressor` — ridge sieve, penalty by leave-one-out error (one-SE rule for
        plr/cate, minimum for ate/blp; ``DEFAULT_RULES``).
    ml_treatment : learner for E[D|X]; a classifier's ``predict_proba`` is used when D is binary.
        Default: :func:`default_classifier` (ridge-logistic sieve, approximate-LOO log-loss) for
        binary D, :func:`default_regressor` otherwise. The previous defaults (random forests) are
        :func:`forest_regressor` / :func:`forest_classifier`.
    n_folds : cross-fitting folds.
    n_rep : repetitions of cross-fitting, aggregated with DoubleML's median rule. ``None``
        (default): the repetitions in ``folds`` / ``predictions`` when :meth:`fit` gets them, else
        ``DEFAULT_N_REP`` = 3 (measured below); the value used is ``n_rep_``. ``n_rep=1`` is
        DoubleML's default.
    clip : propensities are clipped to [clip, 1 − clip] (ate, blp; DoubleML's default 0.01).
    basis_center, basis_scale : transform of the effect modifiers, φ(z) = (1, (z − center)/scale);
        default: this site's own mean and SD. Pass pooled values so θ means the same at every site.
    tuning_folds : per-fold statistics that let the fusion step tune C from summaries alone (for
        each cross-fitting fold v: a fit without fold v and the held-out loss on fold v, whose
        nuisances never saw fold v). ``None``: skip. ``"reuse"``: the fit without fold v reuses the
        cross-fitted residuals of the other folds — no extra learner fits; fold v then enters
        θ̂^(−v) only through nuisance fits, a second-order effect under Neyman orthogonality.
        ``"nested"``: re-run cross-fitting on the other folds (exact; n_folds − 1 times more fits).
    df_correction : small-sample (HC1-type) degrees-of-freedom correction of the score variance,
        Ω̂ ← Ω̂·n/(n − d), so V̂ = Ĵ⁻¹Ω̂Ĵ⁻ᵀ/n grows by n/(n − d). It is applied to Ω̂ itself, so it
        carries into :meth:`to_summary` and every fusion table. ``False`` (default) reproduces
        DoubleML (and is kept as the default: the measured gain is small). Measured effect
        (``benchmarks/results/fusion_dml_coverage.md``, ATE, n = 40–80): intervals about 1 %
        wider, coverage +0.000 to +0.004 at nominal 0.95.
    random_state : None (fresh randomness), an int in [0, 2**32) or a numpy Generator: folds and
        the default learners' seeds.
    verbose : 0 (default) silent; 1 a tqdm progress bar over repetitions × folds (stderr).

    Joint intervals: ``confint(joint=True, n_boot=, random_state=)`` gives simultaneous intervals
    over the coefficients (cate/blp) by the multiplier bootstrap of the studentised influence values
    ψ̂_i Ĵ⁻¹ (DoubleML's ``bootstrap()`` then ``confint(joint=True)``: per repetition a sup-t
    critical value, the bounds aggregated by the median over repetitions).

    First-step diagnostics (every fit): ``diagnostics_`` (mean over repetitions) and
    ``diagnostics_by_rep_`` (one row per repetition) hold the out-of-fold R² of each nuisance,
    the propensity's log-loss and Brier skill, and the share of clipped propensities (see
    :func:`first_step_diagnostics`); :meth:`summary` shows them. More than ``CLIP_WARN_SHARE``
    (5 %) of the units clipped raises a :class:`~hetmtl.exceptions.ClippingWarning`.

    Validity of the Wald intervals: standard DML theory (asymptotic in n). Measured with the
    defaults in the smooth DML scenario (:func:`~hetmtl.latefusion.simulate.simulate_dml_site`:
    nonlinear nuisances in five covariates with an interaction, heteroscedastic noise, p = 6;
    5 folds; ``benchmarks/results/dml_defaults.md``, 500 replicates, MC SE ≈ 0.01), nominal 0.95:

    ============  ======  ======  ======  ==============================================
    model         n=100   n=200   n=400   notes (n = 200 / 400)
    ============  ======  ======  ======  ==============================================
    ate           0.954   0.960   0.950   bias 0.15 / 0.16 SD; RMSE 1.79 / 1.32 × oracle
    plr           0.906   0.938   0.952   bias 0.13 / −0.08 SD; RMSE 1.08 / 1.01 × oracle
    ============  ======  ======  ======  ==============================================

    The previous defaults (random forests, ``n_rep=1``; 200 replicates) cover too (ate 0.975 /
    0.955, plr 0.935 / 0.970), but conservatively for the ate: first-step bias up to 0.31 SD and
    intervals wider by 31–48 % (ate) and 11 % (plr) than the defaults' on the same data, with
    RMSE 0.265 / 0.185 against the defaults' 0.251 / 0.134 (ate) and 0.112 / 0.074 against
    0.108 / 0.067 (plr) (paired, n = 200 / 400). At n = 200 the defaults' ATE estimates are
    heavy-tailed (a few sites with propensities near the clip: SE/SD 0.83, coverage intact).
    Gradient boosting with early stopping undercovers for plr (0.905 / 0.895, bias up to 0.49 SD);
    ``n_rep=1`` with the sieves undercovers for plr at n = 200 (0.918); the one-SE rule for the
    propensity biases the ATE by ≈ 0.9 SD (coverage 0.78–0.79).
    Short-stacking forest and sieve ties the default on RMSE for the ate, at 2–3 × the time, and
    undercovers for plr at n = 200 (0.915). Below n ≈ 200 per site the per-site intervals are
    liberal for plr (0.906 at n = 100; and at n = 40–80, ATE, per-site sieves cover 0.915–0.920
    with ``n_rep=1`` and 0.932–0.934 with ``n_rep=5``, ``benchmarks/results/fusion_dml_coverage.md``).
    For sites that small whose nuisances are similar, use the multi-task nuisances
    (:func:`~hetmtl.latefusion.nuisance.fit_multitask_dml`, which borrow strength across sites
    and covered 0.941–0.945 at n = 40–80 with ``n_rep=1``); they need the pooled rows. Other
    designs (many covariates, discrete covariates, weaker overlap) were not measured: check
    ``diagnostics_``.
    """

    def __init__(
        self,
        model: str = "plr",
        ml_outcome=None,
        ml_treatment=None,
        n_folds: int = 5,
        n_rep: int | None = None,
        clip: float = 0.01,
        basis_center: Sequence[float] | None = None,
        basis_scale: Sequence[float] | None = None,
        tuning_folds: str | None = None,
        df_correction: bool = False,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.ml_outcome = ml_outcome
        self.ml_treatment = ml_treatment
        self.n_folds = n_folds
        self.n_rep = n_rep
        self.clip = clip
        self.basis_center = basis_center
        self.basis_scale = basis_scale
        self.tuning_folds = tuning_folds
        self.df_correction = df_correction
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ set-up
    def _check_params(self) -> None:
        """Validate the parameters (errors name the parameter; ParameterError)."""
        check_choice(self.model, "model", MODELS)
        check_int(self.n_folds, "n_folds", low=2, high=100_000)
        check_int(self.n_rep, "n_rep", low=1, high=10_000, allow_none=True)
        check_float(self.clip, "clip", low=0.0, high=0.5, high_open=True)
        for name in ("basis_center", "basis_scale"):
            value = getattr(self, name, None)
            if value is not None:
                try:
                    check_array(value, name, ndim=1)
                except (DataValidationError, OverflowError):
                    raise ParameterError(f"{name} must be a 1-d array of finite numbers (one per modifier)") from None
        check_choice(self.tuning_folds, "tuning_folds", (None, "reuse", "nested"))
        check_bool(self.df_correction, "df_correction")
        check_verbose(self.verbose)
        if self.random_state is not None and not isinstance(self.random_state, (np.random.Generator, np.random.RandomState)):
            check_random_state(self.random_state)

    def _resolve_n_rep(self, folds: Any, predictions: dict | None) -> int:
        """``n_rep``, or when None: the repetitions in ``folds`` / ``predictions``, else DEFAULT_N_REP."""
        if self.n_rep is not None:
            return check_int(self.n_rep, "n_rep", low=1)  # type: ignore[return-value]
        if folds is not None:
            if _is_fold_ids(folds):
                return int(np.atleast_2d(np.asarray(folds)).shape[0])
            return len(folds)
        if predictions:
            return int(np.atleast_2d(np.asarray(next(iter(predictions.values())), dtype=float).T).shape[0])
        return DEFAULT_N_REP

    def _learners(self, binary_d: bool, seed: int):
        from hetmtl.learners import make_learner

        rule = DEFAULT_RULES[self.model]
        outcome, treatment = self.ml_outcome, self.ml_treatment
        if isinstance(outcome, str):  # a name of hetmtl.learners.LEARNER_NAMES
            outcome = make_learner(outcome, "regressor", seed)
        if isinstance(treatment, str):
            treatment = make_learner(treatment, "classifier" if binary_d else "regressor", seed + 1)
        if outcome is None:
            outcome = default_regressor(seed, rule=rule["outcome"])
        if treatment is None:
            treatment = (default_classifier(seed + 1, rule=rule["propensity"]) if binary_d
                         else default_regressor(seed + 1, rule=rule["treatment"]))
        for name, learner in (("ml_outcome", outcome), ("ml_treatment", treatment)):
            if not (callable(getattr(learner, "fit", None)) and callable(getattr(learner, "predict", None))):
                raise ParameterError(f"{name} must be a learner name (str), None or an estimator with fit and "
                                     f"predict, got {type(learner).__name__} {learner!r:.60}")
        if is_classifier(treatment) and not binary_d:
            raise DataValidationError("ml_treatment is a classifier but the treatment is not binary 0/1")
        if is_classifier(outcome):
            raise DataValidationError("ml_outcome must be a regressor")
        return outcome, treatment

    def _basis(self, Z: np.ndarray | None, n: int) -> tuple[np.ndarray, dict | None]:
        if self.model in ("plr", "ate"):
            if Z is not None:
                raise DataValidationError(f"model {self.model!r} takes no effect modifiers Z; use 'cate' or 'blp'")
            return np.ones((n, 1)), None
        if Z is None or Z.shape[1] == 0:
            raise DataValidationError(f"model {self.model!r} needs effect modifiers Z (modifier columns)")
        center = np.mean(Z, axis=0) if self.basis_center is None else np.asarray(self.basis_center, float)
        scale = np.std(Z, axis=0) if self.basis_scale is None else np.asarray(self.basis_scale, float)
        if center.shape != (Z.shape[1],) or scale.shape != (Z.shape[1],):
            raise DataValidationError(f"basis_center/basis_scale must have length {Z.shape[1]} (one per modifier)")
        if np.any(scale <= 0):
            bad = np.flatnonzero(scale <= 0).tolist()
            raise DataValidationError(f"effect modifier column(s) {bad} have zero spread; drop them from Z")
        phi = np.column_stack([np.ones(n), (Z - center) / scale])
        return phi, {"center": center, "scale": scale}

    # ------------------------------------------------------------------ nuisances
    def _residuals(self, y, d, X, folds: Folds, outcome, treatment, predictions: dict | None = None,
                   bar: Any = None) -> _Residuals:
        """Cross-fitted score pieces; ``predictions`` (already cross-fitted) replace learner fits.
        ``bar`` (a progress bar) advances by one per fold."""
        pred = predictions or {}
        res = self._residuals_core(y, d, X, folds, outcome, treatment, pred, bar)
        if bar is not None and res.pred.get("_fitted_folds", 0) < len(folds):
            bar.update(len(folds) - res.pred.get("_fitted_folds", 0))
        res.pred.pop("_fitted_folds", None)
        return res

    def _residuals_core(self, y, d, X, folds: Folds, outcome, treatment, pred: dict, bar: Any) -> _Residuals:
        n = y.shape[0]
        if self.model in ("plr", "cate"):
            l_hat, m_hat = pred.get("l"), pred.get("m")
            if l_hat is None or m_hat is None:
                fits = {"l": np.full(n, np.nan), "m": np.full(n, np.nan)}
                for tr, te in folds:
                    if l_hat is None:
                        fits["l"][te] = _fit_predict(outcome, X, y, tr, te)
                    if m_hat is None:
                        fits["m"][te] = _fit_predict(treatment, X, d, tr, te)
                    if bar is not None:
                        bar.update(1)
                l_hat = fits["l"] if l_hat is None else l_hat
                m_hat = fits["m"] if m_hat is None else m_hat
                done = len(folds)
            else:
                done = 0
            y_res, d_res = y - l_hat, d - m_hat
            return _Residuals(r=d_res * y_res, w=d_res**2, y2=y_res**2,
                              pred={"l": l_hat, "m": m_hat, "_fitted_folds": done})
        g0, g1, e = pred.get("g0"), pred.get("g1"), pred.get("m")
        if g0 is None or g1 is None or e is None:
            fits = {k: np.full(n, np.nan) for k in ("g0", "g1", "m")}
            for tr, te in folds:
                if g0 is None:
                    fits["g0"][te] = _fit_predict(outcome, X, y, tr[d[tr] == 0], te)
                if g1 is None:
                    fits["g1"][te] = _fit_predict(outcome, X, y, tr[d[tr] == 1], te)
                if e is None:
                    fits["m"][te] = _fit_predict(treatment, X, d, tr, te)
                if bar is not None:
                    bar.update(1)
            g0 = fits["g0"] if g0 is None else g0
            g1 = fits["g1"] if g1 is None else g1
            e = fits["m"] if e is None else e
            done = len(folds)
        else:
            done = 0
        pred = {"g0": g0, "g1": g1, "m": e, "_fitted_folds": done}
        if self.clip == 0.0:
            bad = (e <= 0.0) | (e >= 1.0)
            if bad.any():
                raise DataValidationError(
                    f"clip=0 and {int(bad.sum())} cross-fitted propensities are exactly 0 or 1 (first at row "
                    f"{int(np.flatnonzero(bad)[0])}): the AIPW score divides by them. Use clip > 0 (e.g. the "
                    "default 0.01) or a propensity learner that does not predict 0/1"
                )
        e = np.clip(e, self.clip, 1.0 - self.clip)
        gamma = g1 - g0 + d * (y - g1) / e - (1.0 - d) * (y - g0) / (1.0 - e)
        return _Residuals(r=gamma, w=np.ones(n), y2=gamma**2, pred=pred)

    def _check_predictions(self, predictions: dict | None, n: int, n_rep: int) -> list[dict | None]:
        """Per-repetition dicts of external cross-fitted predictions (arrays (n,) or (n, n_rep))."""
        if predictions is None:
            return [None] * n_rep
        allowed = ("l", "m") if self.model in ("plr", "cate") else ("g0", "g1", "m")
        unknown = sorted(set(predictions) - set(allowed))
        if unknown:
            raise DataValidationError(f"model {self.model!r} takes external predictions {allowed}, got {unknown}")
        reps: list[dict | None] = [{} for _ in range(n_rep)]
        for key, value in predictions.items():
            arr = np.asarray(value, dtype=float)
            arr = arr[:, None] if arr.ndim == 1 else arr
            if arr.shape != (n, n_rep):
                raise DataValidationError(f"external prediction {key!r} has shape {arr.shape}, expected ({n}, {n_rep})")
            if not np.all(np.isfinite(arr)):
                raise DataValidationError(f"external prediction {key!r} has non-finite values")
            for r in range(n_rep):
                rep = reps[r]
                assert rep is not None  # built as dicts above
                rep[key] = arr[:, r]
        return reps

    # ------------------------------------------------------------------ fit
    def fit(self, y, d, X, Z=None, *, folds=None, predictions: dict | None = None, treated: Any = None,
            _bar: Any = None) -> "SiteDML":
        """Fit on one site's arrays. ``folds``: fold ids (n,) or (n_rep, n), or DoubleML-style
        ``[[(train, test), ...], ...]`` per repetition; default: seeded (stratified) K-fold. Folds
        that do no cross-fitting (a training set holding rows of its own test set, or all rows;
        test sets that do not partition the rows) are refused.
        ``predictions``: external cross-fitted nuisance predictions, arrays (n,) or (n, n_rep),
        keyed ``"l"``, ``"m"`` (plr, cate) or ``"g0"``, ``"g1"``, ``"m"`` (ate, blp) — e.g. from a
        multi-task nuisance model; they must come from models that did not see the row's fold
        (pass the same ``folds``). With ``tuning_folds="nested"`` the nested refits still use the
        learners. With ``n_rep=None`` the number of repetitions is read from ``folds`` or
        ``predictions`` when given. ``treated``: the level of ``d`` that is the treated arm (D = 1)
        when ``d`` is not coded 0/1 (strings, categories); stored as ``treated_``.
        Raises a :class:`~hetmtl.exceptions.ClippingWarning` when more than ``CLIP_WARN_SHARE`` (5 %)
        of the propensities are clipped (ate, blp)."""
        self._check_params()
        d, self.treated_ = treatment_indicator(d, treated, "d")
        z_cols = list(map(str, Z.columns)) if isinstance(Z, pd.DataFrame) else None
        x_cols = list(map(str, X.columns)) if isinstance(X, pd.DataFrame) else None
        data = MultiSiteData(y, d, X, None, Z, x_cols=x_cols, z_cols=z_cols)
        y, d, X, Z = data.y, data.d, data.X, data.Z
        binary = self.model in BINARY_MODELS
        if binary:
            data.check_binary_treatment()
        binary_d = bool(np.all(np.isin(d, (0.0, 1.0))))
        n_folds = int(self.n_folds)
        data.check_folds(n_folds, binary=binary_d)
        n = y.shape[0]
        n_rep = self._resolve_n_rep(folds, predictions)
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        outcome, treatment = self._learners(binary_d, seed)
        phi, basis = self._basis(Z, n)
        if folds is None:
            all_folds = [make_folds(n, n_folds, d if binary_d else None, rng) for _ in range(n_rep)]
        else:
            all_folds = _coerce_folds(folds, n, n_rep)
        rep_predictions = self._check_predictions(predictions, n, n_rep)

        reps = []
        total = sum(len(f) for f in all_folds)
        with (progress_bar(total, "SiteDML", self.verbose, unit="fold") if _bar is None else _nullcontext(_bar)) as bar:
            for rep_folds, rep_pred in zip(all_folds, rep_predictions):
                res = self._residuals(y, d, X, rep_folds, outcome, treatment, rep_pred, bar=bar)
                reps.append((res, self._moments(phi, res.r, res.w)))

        self.n_ = n
        self.n_rep_ = n_rep
        self.folds_ = all_folds
        self.coef_names_ = {"plr": ["theta"], "ate": ["ATE"]}.get(self.model, ["const", *data.z_cols])
        self.learners_ = (_learner_name(outcome), _learner_name(treatment))
        by_rep = [first_step_diagnostics(self.model, y, d, res.pred, self.clip) for res, _ in reps]
        self.diagnostics_by_rep_ = pd.DataFrame(by_rep, index=pd.RangeIndex(n_rep, name="rep"))
        self.diagnostics_ = _aggregate_diagnostics(self.diagnostics_by_rep_)
        self.basis_ = basis
        self.all_coef_ = np.column_stack([m["theta"] for _, m in reps])
        self.all_se_ = np.column_stack([np.sqrt(np.diag(m["vcov"])) for _, m in reps])
        self.all_vcov_ = np.stack([m["vcov"] for _, m in reps], axis=-1)
        self._aggregate([m for _, m in reps])
        self._check_finite()
        self.influence_ = np.stack([_influence(phi, res.r, res.w, m["theta"]) for res, m in reps])
        self.residuals_ = reps[0][0]
        self.cv_folds_ = (
            self._tuning_statistics(y, d, X, phi, all_folds[0], reps[0][0], outcome, treatment)
            if self.tuning_folds is not None
            else []
        )
        self._warn_clipping()
        return self

    def _check_finite(self) -> None:
        """Never a NaN/inf coefficient or SE silently: a fit whose moments are not finite is refused."""
        ok = np.all(np.isfinite(self.coef_)) and np.all(np.isfinite(self.vcov_)) and np.all(np.diag(self.vcov_) > 0)
        if not ok:
            raise TrainingError(
                "SiteDML: the estimate or its standard error is not finite (or the variance is 0): the cross-fitted "
                "nuisances leave no usable variation (e.g. a treatment perfectly predicted by X, propensities at "
                "0/1, or extreme values); see diagnostics_ and check the data and learners"
            )

    def _joint_confint(self, level: float, n_boot: Any, random_state: Any) -> pd.DataFrame:
        return joint_confint([self], [self.coef_names_], level, n_boot, random_state)

    def _warn_clipping(self, site: str | None = None) -> None:
        """:class:`ClippingWarning` if the mean clipped share exceeds ``CLIP_WARN_SHARE``."""
        share = self.diagnostics_.get("clip_share", 0.0)
        if share > CLIP_WARN_SHARE:
            where = f"site {site!r}" if site is not None else "SiteDML"
            warnings.warn(
                f"{where}: {share:.1%} of the cross-fitted propensities lie outside [{self.clip:g}, "
                f"{1 - self.clip:g}] and were clipped (warning threshold {CLIP_WARN_SHARE:.0%}; propensities range "
                f"{self.diagnostics_['propensity_min']:.3g}-{self.diagnostics_['propensity_max']:.3g}). Overlap is "
                "poor or the propensity model overfits: the ATE rests on few units and its interval may be off. "
                "See diagnostics_; consider trimming the sample, a smoother ml_treatment, or the CATE/BLP on the "
                "overlap region.",
                ClippingWarning,
                stacklevel=3,
            )

    def _moments(self, phi: np.ndarray, r: np.ndarray, w: np.ndarray) -> dict:
        """θ̂, Ĵ, Ω̂ and V̂ of the linear score; with ``df_correction`` Ω̂ and V̂ scaled by n/(n − d)."""
        m = _core.linear_score_moments(phi, r, w)
        if self.df_correction:
            n, d = phi.shape
            if n <= d:
                raise DataValidationError(f"df_correction needs more rows ({n}) than coefficients ({d})")
            m = dict(m)
            m["Omega"] = m["Omega"] * (n / (n - d))
            m["vcov"] = m["vcov"] * (n / (n - d))
        return m

    def _aggregate(self, moments: list[dict]) -> None:
        """DoubleML's median rule for θ and SE; the correlation is averaged over repetitions."""
        if len(moments) == 1:
            m = moments[0]
            self.coef_, self.vcov_, self.J_, self.Omega_ = m["theta"], m["vcov"], m["J"], m["Omega"]
            return
        coef = np.median(self.all_coef_, axis=1)
        crit = 1.96  # DoubleML aggregates the upper 1.96-bounds
        se = (np.median(self.all_coef_ + crit * self.all_se_, axis=1) - coef) / crit
        corr = np.mean(
            [m["vcov"] / np.sqrt(np.outer(np.diag(m["vcov"]), np.diag(m["vcov"]))) for m in moments], axis=0
        )
        self.coef_ = coef
        self.vcov_ = corr * np.outer(se, se)
        self.J_ = np.mean([m["J"] for m in moments], axis=0)
        # Ω consistent with the aggregated V: V = J⁻¹ΩJ⁻ᵀ/n  ⇔  Ω = n J V Jᵀ.
        self.Omega_ = self.n_ * self.J_ @ self.vcov_ @ self.J_.T
        self.Omega_ = 0.5 * (self.Omega_ + self.Omega_.T)

    def _tuning_statistics(self, y, d, X, phi, folds: Folds, res: _Residuals, outcome, treatment) -> list[CVFold]:
        """For each fold v: DML without fold v (see ``tuning_folds``) and the held-out loss on v."""
        out = []
        for v, (train_v, test_v) in enumerate(folds):
            if self.tuning_folds == "nested":
                pos = np.empty(y.shape[0], dtype=int)
                pos[train_v] = np.arange(train_v.size)
                inner = [
                    (pos[np.concatenate([te for k, (_, te) in enumerate(folds) if k not in (u, v)])], pos[test_u])
                    for u, (_, test_u) in enumerate(folds)
                    if u != v
                ]
                sub = self._residuals(y[train_v], d[train_v], X[train_v], inner, outcome, treatment)
            else:
                sub = _Residuals(r=res.r[train_v], w=res.w[train_v], y2=res.y2[train_v])
            m = self._moments(phi[train_v], sub.r, sub.w)
            A, b, c = _core.quadratic_loss_coefficients(phi[test_v], res.r[test_v], res.w[test_v], res.y2[test_v])
            out.append(
                CVFold(
                    n_train=int(train_v.size), theta=m["theta"], J=m["J"], Omega=m["Omega"],
                    n_test=int(test_v.size), A=A, b=b, c=float(c),
                )
            )
        return out

    # ------------------------------------------------------------------ outputs
    def _summary_header(self) -> dict[str, object]:
        self._check_fitted()
        header: dict[str, object] = {
            "model": self.model,
            "n obs": self.n_,
            **_treated_line(getattr(self, "treated_", None)),
            "folds x repetitions": f"{self.n_folds} x {self.n_rep_}",
            "outcome learner": self.learners_[0],
            "treatment learner": self.learners_[1],
        }
        dg = self.diagnostics_
        avg = " (mean over repetitions)" if self.n_rep_ > 1 else ""
        if "r2_l" in dg:
            header[f"out-of-fold R2{avg}"] = f"outcome {dg['r2_l']:.3f}, treatment {dg['r2_m']:.3f}"
        else:
            header[f"out-of-fold R2{avg}"] = (f"outcome|D=0 {dg['r2_g0']:.3f}, outcome|D=1 {dg['r2_g1']:.3f}, "
                                            f"propensity {dg['r2_m']:.3f} (Brier skill)")
        if "logloss_m" in dg:
            header["propensity log-loss"] = f"{dg['logloss_m']:.4f} (skill {dg['logloss_skill_m']:.3f})"
        if "clip_share" in dg:
            header["propensities clipped"] = (f"{dg['clip_share']:.1%} at clip {self.clip:g} "
                                              f"(range {dg['propensity_min']:.3g}-{dg['propensity_max']:.3g})")
        return header

    def to_summary(self, site: str = "site") -> SiteSummary:
        """The site's shareable aggregates (no individual rows)."""
        self._check_fitted()
        basis = None
        if self.basis_ is not None:
            basis = {"names": self.coef_names_[1:], "center": self.basis_["center"], "scale": self.basis_["scale"]}
        return SiteSummary(
            site=str(site), model=self.model, coef_names=list(self.coef_names_), n=int(self.n_),
            theta=self.coef_, J=self.J_, Omega=self.Omega_, n_folds=int(self.n_folds), n_rep=int(self.n_rep_),
            basis=basis, cv_folds=list(self.cv_folds_),
        )


def _treated_line(treated: Any) -> dict[str, object]:
    return {} if treated is None else {"treated level (D = 1)": treated}


def joint_confint(estimators: Sequence[SiteDML], names: Sequence[Sequence], level: float, n_boot: Any,
                  random_state: Any, method: str = "normal", index: pd.Index | None = None) -> pd.DataFrame:
    """Simultaneous intervals over every coefficient of independent SiteDML fits (sites).

    Per repetition r, the sup-t critical value c_r is the ``level`` quantile of max |T*| over all
    coefficients of all fits, T*_j = Σ_i ξ_i IF_ij/(n se_rj) with independent multipliers per
    fit; the interval of repetition r is θ̂_r ± c_r se_r, and the bounds are the medians over
    repetitions (DoubleML's rule; one repetition: θ̂ ± c·se). Fits with fewer repetitions reuse
    theirs cyclically."""
    level = check_level(level)
    n_boot = check_n_boot(n_boot)
    check_choice(method, "method", MULTIPLIERS)
    rng = check_random_state(random_state)
    R = max(est.n_rep_ for est in estimators)
    lo_all, hi_all = [], []
    for r in range(R):
        infl = [est.influence_[r % est.n_rep_] for est in estimators]
        ses = [est.all_se_[:, r % est.n_rep_] for est in estimators]
        c = float(np.quantile(multiplier_max_t(infl, ses, n_boot, rng, method), level))
        coef = np.concatenate([est.all_coef_[:, r % est.n_rep_] for est in estimators])
        se = np.concatenate(ses)
        lo_all.append(coef - c * se)
        hi_all.append(coef + c * se)
    lo_name, hi_name = _level_names(level)
    if index is None:
        index = pd.Index([str(n) for ns in names for n in ns])
    return pd.DataFrame({lo_name: np.median(lo_all, axis=0), hi_name: np.median(hi_all, axis=0)}, index=index)


class MultiSiteDML(BaseEstimator):
    """Per-site DML at every site of a :class:`MultiSiteData`.

    The effect-modifier basis is standardised with the pooled mean and SD (a summary statistic),
    so the CATE coefficients mean the same thing at every site. Each site gets its own seed drawn
    from ``random_state``; ``n_jobs`` runs sites in parallel (joblib's convention: None = 1,
    −1 = all cores, −2 = all but one). ``verbose=1`` shows a progress bar over
    sites × repetitions × folds. Other parameters are those of :class:`SiteDML`.

    First-step diagnostics: ``diagnostics_`` is a per-site table (one row per site: n, and the
    keys of :func:`first_step_diagnostics`, averaged over repetitions), also returned by
    :meth:`diagnostics_frame`. A :class:`~hetmtl.exceptions.ClippingWarning` naming the site is
    raised (in the calling process, also with ``n_jobs``) for every site with more than
    ``CLIP_WARN_SHARE`` (5 %) of its propensities clipped.

    Joint intervals: ``confint(joint=True)`` covers every coefficient of every site together
    (multiplier bootstrap with independent multipliers per site; see :func:`joint_confint`).
    """

    def __init__(
        self,
        model: str = "plr",
        ml_outcome=None,
        ml_treatment=None,
        n_folds: int = 5,
        n_rep: int | None = None,
        clip: float = 0.01,
        tuning_folds: str | None = "reuse",
        df_correction: bool = False,
        n_jobs: int | None = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.ml_outcome = ml_outcome
        self.ml_treatment = ml_treatment
        self.n_folds = n_folds
        self.n_rep = n_rep
        self.clip = clip
        self.tuning_folds = tuning_folds
        self.df_correction = df_correction
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, data: MultiSiteData, folds: dict | None = None, predictions: dict | None = None) -> "MultiSiteDML":
        """Fit every site. ``folds`` / ``predictions`` optionally map a site to its fold
        specification / external cross-fitted nuisance predictions (see :meth:`SiteDML.fit`)."""
        if not isinstance(data, MultiSiteData):
            raise ParameterError(f"data must be a MultiSiteData, got {type(data).__name__}")
        params = dict(
            model=self.model, ml_outcome=self.ml_outcome, ml_treatment=self.ml_treatment, n_folds=self.n_folds,
            n_rep=self.n_rep, clip=self.clip, tuning_folds=self.tuning_folds, df_correction=self.df_correction,
        )
        SiteDML(**params)._check_params()
        n_jobs = resolve_n_jobs(self.n_jobs)
        verbose = check_verbose(self.verbose)
        seeds = _seed_sequence(self.random_state).generate_state(data.n_sites)
        for name, given in (("folds", folds), ("predictions", predictions)):
            if given is not None:
                if not isinstance(given, dict):
                    raise ParameterError(f"{name} must be a dict mapping each site to its {name}")
                unknown = [s for s in given if s not in data.sites]
                if unknown:
                    raise DataValidationError(f"{name} names site(s) not in the data: {unknown[:5]}")
        if self.model in BINARY_MODELS:
            data.check_binary_treatment()
        data.check_folds(int(self.n_folds), binary=bool(np.all(np.isin(data.d, (0.0, 1.0)))))
        center = scale = None
        if self.model in ("cate", "blp"):
            if data.Z is None:
                raise DataValidationError(f"model {self.model!r} needs effect modifiers: pass z_cols / Z")
            center, scale = data.Z.mean(axis=0), data.Z.std(axis=0)
        params.update(basis_center=center, basis_scale=scale)

        def fit_site(site, seed, bar=None):
            s = data.site_arrays(site)
            est = SiteDML(**params, random_state=int(seed))
            with warnings.catch_warnings():  # re-raised below, with the site's name
                warnings.simplefilter("ignore", ClippingWarning)
                try:
                    return est.fit(s.y, s.d, s.X, s.Z, folds=None if folds is None else folds.get(site),
                                   predictions=None if predictions is None else predictions.get(site), _bar=bar)
                except (DataValidationError, TrainingError) as exc:
                    raise type(exc)(f"site {site!r}: {exc}") from None

        units = self._units_per_site(data, folds, predictions)
        with progress_bar(sum(units), "MultiSiteDML", verbose, unit="fold") as bar:
            if n_jobs == 1:
                fitted = [fit_site(s, seed, bar) for s, seed in zip(data.sites, seeds)]
            else:
                fitted = []
                jobs = Parallel(n_jobs=n_jobs, return_as="generator")(
                    delayed(fit_site)(s, seed) for s, seed in zip(data.sites, seeds)
                )
                for est, k in zip(jobs, units):
                    fitted.append(est)
                    bar.update(k)
        self.sites_ = list(data.sites)
        self.estimators_ = dict(zip(self.sites_, fitted))
        self.treated_ = data.treated
        for est in fitted:
            est.treated_ = data.treated
            if data.z_cols:
                est.coef_names_ = ["const", *data.z_cols]
        self.diagnostics_ = self.diagnostics_frame()
        for site, est in self.estimators_.items():
            est._warn_clipping(site=str(site))
        return self

    def _units_per_site(self, data: MultiSiteData, folds: dict | None, predictions: dict | None) -> list[int]:
        """Folds × repetitions per site (the progress bar's units)."""
        out = []
        for s in data.sites:
            est = SiteDML(n_rep=self.n_rep)
            f = None if folds is None else folds.get(s)
            p = None if predictions is None else predictions.get(s)
            reps = est._resolve_n_rep(f, p)
            if f is None:
                out.append(reps * int(self.n_folds))
                continue
            try:
                out.append(sum(len(r) for r in _coerce_folds(f, data.site_rows(s).size, reps)))
            except DataValidationError as exc:
                raise DataValidationError(f"site {s!r}: {exc}") from None
        return out

    def diagnostics_frame(self) -> pd.DataFrame:
        """First-step diagnostics per site (index ``site``): n, repetitions, and the out-of-fold R²,
        log-loss and clipped share of :func:`first_step_diagnostics`, averaged over repetitions."""
        self._check_fitted()
        rows = [{"n": est.n_, "n_rep": est.n_rep_, **est.diagnostics_} for est in self.estimators_.values()]
        return pd.DataFrame(rows, index=pd.Index([str(s) for s in self.sites_], name="site"))

    def _check_fitted(self) -> None:
        check_is_fitted(self, "estimators_")

    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Stacked per-site table, indexed by (site, coefficient), with n per site."""
        self._check_fitted()
        level = check_level(level)
        frames = []
        for site, est in self.estimators_.items():
            t = coef_table(est.coef_, est.se_, est.coef_names_, level)
            t.insert(0, "n", est.n_)
            frames.append(t)
        return pd.concat(frames, keys=[str(s) for s in self.sites_], names=["site", "coef"])

    def confint(self, level: float = 0.95, joint: bool = False, n_boot: int = 1000, random_state: Any = None
                ) -> pd.DataFrame:
        """Per-site intervals indexed by (site, coefficient): pointwise Wald, or with ``joint=True``
        simultaneous over every coefficient of every site (multiplier bootstrap of the
        studentised scores, independent multipliers per site, ``n_boot`` replications;
        :func:`joint_confint`)."""
        self._check_fitted()
        level = check_level(level)
        if not check_bool(joint, "joint"):
            return self.summary_frame(level).iloc[:, -2:]
        ests = list(self.estimators_.values())
        index = pd.MultiIndex.from_tuples([(str(s), c) for s, e in self.estimators_.items() for c in e.coef_names_],
                                          names=["site", "coef"])
        return joint_confint(ests, [e.coef_names_ for e in ests], level, n_boot, random_state, index=index)

    def summary(self, level: float = 0.95):
        """Summary (a statsmodels ``Summary``: ``as_text``/``as_html``/``as_latex``; ``print`` shows
        the text): settings, first-step diagnostics and the per-site table of :meth:`summary_frame`."""
        self._check_fitted()
        reps = sorted({est.n_rep_ for est in self.estimators_.values()})
        header: dict[str, object] = {"model": self.model, "sites": len(self.sites_),
                                     "folds x repetitions": f"{self.n_folds} x {'/'.join(map(str, reps))}",
                                     **_treated_line(getattr(self, "treated_", None))}
        dg = self.diagnostics_frame()
        if "clip_share" in dg:
            worst = dg["clip_share"].idxmax()
            header["propensities clipped (max over sites)"] = f"{dg['clip_share'].max():.1%} (site {worst})"
        r2 = [c for c in dg.columns if c.startswith("r2_")]
        header["out-of-fold R2 (median over sites)"] = ", ".join(f"{c[3:]} {dg[c].median():.3f}" for c in r2)
        return make_summary("Per-site DML", header, [("Per-site estimates", self.summary_frame(level))],
                            ["z and P>|z| from the normal law (DML asymptotics within each site)."])

    def summaries(self) -> list[SiteSummary]:
        """One :class:`SiteSummary` per site, for late fusion."""
        self._check_fitted()
        return [est.to_summary(site=str(s)) for s, est in self.estimators_.items()]
