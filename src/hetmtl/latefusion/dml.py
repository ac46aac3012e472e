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
from hetmtl.data.multisite import MultiSiteData
from hetmtl.exceptions import ClippingWarning, DataValidationError
from hetmtl.inference import InferenceMixin, coef_table, format_table
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
    if rule not in ("min", "1se"):
        raise ValueError(f"rule must be 'min' or '1se', got {rule!r}")


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


def _coerce_folds(folds: Any, n: int, n_rep: int) -> list[Folds]:
    """Accept fold ids (n,) / (n_rep, n), or DoubleML's [[(train, test), ...], ...] per repetition."""
    if isinstance(folds, np.ndarray) or (isinstance(folds, (list, tuple)) and np.isscalar(folds[0])):
        ids = np.atleast_2d(np.asarray(folds))
        if ids.shape[1] != n:
            raise DataValidationError(f"fold ids have length {ids.shape[1]}, but the site has {n} rows")
        out = []
        for row in ids:
            labels = np.unique(row)
            out.append([(np.flatnonzero(row != k), np.flatnonzero(row == k)) for k in labels])
    else:
        out = [[(np.asarray(tr), np.asarray(te)) for tr, te in rep] for rep in folds]
    if len(out) != n_rep:
        raise DataValidationError(f"{len(out)} repetitions of folds given for n_rep={n_rep}")
    for rep in out:
        covered = np.sort(np.concatenate([te for _, te in rep]))
        if covered.shape[0] != n or not np.array_equal(covered, np.arange(n)):
            raise DataValidationError("the test folds of a repetition must partition the site's rows exactly once")
    return out


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
    ml_outcome : regressor for E[Y|X] (plr, cate) or E[Y|D=d, X] (ate, blp). Default:
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
    random_state : seed for folds and for the default learners.

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
        random_state: int | None = None,
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

    # ------------------------------------------------------------------ set-up
    def _check_params(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if int(self.n_folds) < 2:
            raise ValueError(f"n_folds must be at least 2, got {self.n_folds}")
        if self.n_rep is not None and int(self.n_rep) < 1:
            raise ValueError(f"n_rep must be at least 1 (or None), got {self.n_rep}")
        if not 0.0 <= self.clip < 0.5:
            raise ValueError(f"clip must be in [0, 0.5), got {self.clip}")
        if self.tuning_folds not in (None, "reuse", "nested"):
            raise ValueError(f"tuning_folds must be None, 'reuse' or 'nested', got {self.tuning_folds!r}")

    def _resolve_n_rep(self, folds: Any, predictions: dict | None) -> int:
        """``n_rep``, or when None: the repetitions in ``folds`` / ``predictions``, else DEFAULT_N_REP."""
        if self.n_rep is not None:
            return int(self.n_rep)
        if folds is not None:
            if isinstance(folds, np.ndarray) or (isinstance(folds, (list, tuple)) and np.isscalar(folds[0])):
                return int(np.atleast_2d(np.asarray(folds)).shape[0])
            return len(folds)
        if predictions:
            return int(np.atleast_2d(np.asarray(next(iter(predictions.values())), dtype=float).T).shape[0])
        return DEFAULT_N_REP

    def _learners(self, binary_d: bool, seed: int):
        rule = DEFAULT_RULES[self.model]
        outcome = self.ml_outcome if self.ml_outcome is not None else default_regressor(seed, rule=rule["outcome"])
        if self.ml_treatment is not None:
            treatment = self.ml_treatment
        elif binary_d:
            treatment = default_classifier(seed + 1, rule=rule["propensity"])
        else:
            treatment = default_regressor(seed + 1, rule=rule["treatment"])
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
    def _residuals(self, y, d, X, folds: Folds, outcome, treatment, predictions: dict | None = None) -> _Residuals:
        """Cross-fitted score pieces; ``predictions`` (already cross-fitted) replace learner fits."""
        n = y.shape[0]
        pred = predictions or {}
        if self.model in ("plr", "cate"):
            l_hat, m_hat = pred.get("l"), pred.get("m")
            if l_hat is None or m_hat is None:
                fits = {"l": np.full(n, np.nan), "m": np.full(n, np.nan)}
                for tr, te in folds:
                    if l_hat is None:
                        fits["l"][te] = _fit_predict(outcome, X, y, tr, te)
                    if m_hat is None:
                        fits["m"][te] = _fit_predict(treatment, X, d, tr, te)
                l_hat = fits["l"] if l_hat is None else l_hat
                m_hat = fits["m"] if m_hat is None else m_hat
            y_res, d_res = y - l_hat, d - m_hat
            return _Residuals(r=d_res * y_res, w=d_res**2, y2=y_res**2, pred={"l": l_hat, "m": m_hat})
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
            g0 = fits["g0"] if g0 is None else g0
            g1 = fits["g1"] if g1 is None else g1
            e = fits["m"] if e is None else e
        pred = {"g0": g0, "g1": g1, "m": e}
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
    def fit(self, y, d, X, Z=None, *, folds=None, predictions: dict | None = None) -> "SiteDML":
        """Fit on one site's arrays. ``folds``: fold ids (n,) or (n_rep, n), or DoubleML-style
        ``[[(train, test), ...], ...]`` per repetition; default: seeded (stratified) K-fold.
        ``predictions``: external cross-fitted nuisance predictions, arrays (n,) or (n, n_rep),
        keyed ``"l"``, ``"m"`` (plr, cate) or ``"g0"``, ``"g1"``, ``"m"`` (ate, blp) — e.g. from a
        multi-task nuisance model; they must come from models that did not see the row's fold
        (pass the same ``folds``). With ``tuning_folds="nested"`` the nested refits still use the
        learners. With ``n_rep=None`` the number of repetitions is read from ``folds`` or
        ``predictions`` when given. Raises a :class:`~hetmtl.exceptions.ClippingWarning` when more
        than ``CLIP_WARN_SHARE`` (5 %) of the propensities are clipped (ate, blp)."""
        self._check_params()
        z_cols = list(map(str, Z.columns)) if isinstance(Z, pd.DataFrame) else None
        x_cols = list(map(str, X.columns)) if isinstance(X, pd.DataFrame) else None
        data = MultiSiteData(y, d, X, np.zeros(np.shape(y)[0], dtype=int), Z, x_cols=x_cols, z_cols=z_cols)
        y, d, X, Z = data.y, data.d, data.X, data.Z
        binary = self.model in BINARY_MODELS
        if binary:
            data.check_binary_treatment()
        binary_d = bool(np.all(np.isin(d, (0.0, 1.0))))
        data.check_folds(int(self.n_folds), binary=binary_d)
        n = y.shape[0]
        n_rep = self._resolve_n_rep(folds, predictions)
        rng = np.random.default_rng(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        outcome, treatment = self._learners(binary_d, seed)
        phi, basis = self._basis(Z, n)
        if folds is None:
            all_folds = [make_folds(n, int(self.n_folds), d if binary_d else None, rng) for _ in range(n_rep)]
        else:
            all_folds = _coerce_folds(folds, n, n_rep)

        reps = []
        for rep_folds, rep_pred in zip(all_folds, self._check_predictions(predictions, n, n_rep)):
            res = self._residuals(y, d, X, rep_folds, outcome, treatment, rep_pred)
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
        self.residuals_ = reps[0][0]
        self.cv_folds_ = (
            self._tuning_statistics(y, d, X, phi, all_folds[0], reps[0][0], outcome, treatment)
            if self.tuning_folds is not None
            else []
        )
        self._warn_clipping()
        return self

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


class MultiSiteDML(BaseEstimator):
    """Per-site DML at every site of a :class:`MultiSiteData`.

    The effect-modifier basis is standardised with the pooled mean and SD (a summary statistic),
    so the CATE coefficients mean the same thing at every site. Each site gets its own seed drawn
    from ``random_state``; ``n_jobs`` runs sites in parallel (joblib).
    Parameters are those of :class:`SiteDML`.

    First-step diagnostics: ``diagnostics_`` is a per-site table (one row per site: n, and the
    keys of :func:`first_step_diagnostics`, averaged over repetitions), also returned by
    :meth:`diagnostics_frame`. A :class:`~hetmtl.exceptions.ClippingWarning` naming the site is
    raised (in the calling process, also with ``n_jobs``) for every site with more than
    ``CLIP_WARN_SHARE`` (5 %) of its propensities clipped.
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
        random_state: int | None = None,
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

    def fit(self, data: MultiSiteData, folds: dict | None = None, predictions: dict | None = None) -> "MultiSiteDML":
        """Fit every site. ``folds`` / ``predictions`` optionally map a site to its fold
        specification / external cross-fitted nuisance predictions (see :meth:`SiteDML.fit`)."""
        if not isinstance(data, MultiSiteData):
            raise TypeError(f"data must be a MultiSiteData, got {type(data).__name__}")
        if self.model in BINARY_MODELS:
            data.check_binary_treatment()
        data.check_folds(int(self.n_folds), binary=bool(np.all(np.isin(data.d, (0.0, 1.0)))))
        center = scale = None
        if self.model in ("cate", "blp"):
            if data.Z is None:
                raise DataValidationError(f"model {self.model!r} needs effect modifiers: pass z_cols / Z")
            center, scale = data.Z.mean(axis=0), data.Z.std(axis=0)
        seeds = np.random.SeedSequence(self.random_state).generate_state(data.n_sites)
        params = dict(
            model=self.model, ml_outcome=self.ml_outcome, ml_treatment=self.ml_treatment, n_folds=self.n_folds,
            n_rep=self.n_rep, clip=self.clip, basis_center=center, basis_scale=scale, tuning_folds=self.tuning_folds,
            df_correction=self.df_correction,
        )

        def fit_site(site, seed):
            s = data.site_arrays(site)
            est = SiteDML(**params, random_state=int(seed))
            with warnings.catch_warnings():  # re-raised below, with the site's name
                warnings.simplefilter("ignore", ClippingWarning)
                return est.fit(s.y, s.d, s.X, s.Z, folds=None if folds is None else folds.get(site),
                               predictions=None if predictions is None else predictions.get(site))

        fitted = Parallel(n_jobs=self.n_jobs)(delayed(fit_site)(s, seed) for s, seed in zip(data.sites, seeds))
        self.sites_ = list(data.sites)
        self.estimators_ = dict(zip(self.sites_, fitted))
        for est in fitted:
            if data.z_cols:
                est.coef_names_ = ["const", *data.z_cols]
        self.diagnostics_ = self.diagnostics_frame()
        for site, est in self.estimators_.items():
            est._warn_clipping(site=str(site))
        return self

    def diagnostics_frame(self) -> pd.DataFrame:
        """First-step diagnostics per site (index ``site``): n, repetitions, and the out-of-fold R²,
        log-loss and clipped share of :func:`first_step_diagnostics`, averaged over repetitions."""
        self._check_fitted()
        rows = [{"n": est.n_, "n_rep": est.n_rep_, **est.diagnostics_} for est in self.estimators_.values()]
        return pd.DataFrame(rows, index=pd.Index([str(s) for s in self.sites_], name="site"))

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimators_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This MultiSiteDML instance is not fitted yet; call fit first.")

    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Stacked per-site table, indexed by (site, coefficient), with n per site."""
        self._check_fitted()
        frames = []
        for site, est in self.estimators_.items():
            t = coef_table(est.coef_, est.se_, est.coef_names_, level)
            t.insert(0, "n", est.n_)
            frames.append(t)
        return pd.concat(frames, keys=[str(s) for s in self.sites_], names=["site", "coef"])

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        return self.summary_frame(level).iloc[:, -2:]

    def summary(self, level: float = 0.95) -> str:
        self._check_fitted()
        reps = sorted({est.n_rep_ for est in self.estimators_.values()})
        header = {"model": self.model, "sites": len(self.sites_),
                  "folds x repetitions": f"{self.n_folds} x {'/'.join(map(str, reps))}"}
        dg = self.diagnostics_frame()
        if "clip_share" in dg:
            worst = dg["clip_share"].idxmax()
            header["propensities clipped (max over sites)"] = f"{dg['clip_share'].max():.1%} (site {worst})"
        r2 = [c for c in dg.columns if c.startswith("r2_")]
        header["out-of-fold R2 (median over sites)"] = ", ".join(f"{c[3:]} {dg[c].median():.3f}" for c in r2)
        return format_table("Per-site DML", header, self.summary_frame(level))

    def summaries(self) -> list[SiteSummary]:
        """One :class:`SiteSummary` per site, for late fusion."""
        self._check_fitted()
        return [est.to_summary(site=str(s)) for s, est in self.estimators_.items()]
