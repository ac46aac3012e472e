"""Random-effects meta-analysis of per-site estimates: τ², the centre, HKSJ, prediction intervals, BLUPs.

What to use when:

- :func:`random_effects` — the whole random-effects analysis of K per-site estimates in one call
  (metafor's ``rma()``, ``confint()``, ``predict()`` and ``blup()`` for an intercept-only model,
  generalised to d-dimensional site estimates). Returns a :class:`RandomEffects`.
- :func:`estimate_tau2` — only the between-site variance (DerSimonian–Laird, Paule–Mandel, REML).
- :func:`tau2_qprofile_ci` — only the Q-profile confidence interval of τ² (Viechtbauer 2007).
- :func:`heterogeneity` — Cochran's Q, its p-value, I² and the DerSimonian–Laird τ².

The model (d = 1 is the classical normal–normal random-effects model)::

    θ̂_k | θ_k ~ N(θ_k, V_k),    θ_k ~ N(θ_0, τ² I_d),    k = 1..K,

with V_k the (known) within-site covariance of site k. With W_k = (V_k + τ² I)⁻¹ and
S = Σ_k W_k:

- centre μ̂ = S⁻¹ Σ_k W_k θ̂_k, random-effects covariance S⁻¹ at τ² = τ̂² (Wald, z quantiles);
- Knapp–Hartung / Sidik–Jonkman (HKSJ, metafor ``test="knha"``): covariance s²·S⁻¹ with
  s² = Q(τ̂²)/(d(K − 1)), where Q(τ²) = Σ_k (θ̂_k − μ̂)' W_k (θ̂_k − μ̂) is the generalised Q, and t
  quantiles on K − 1 degrees of freedom; s² is not truncated at 1 (metafor's ``"knha"`` does not
  truncate either; its ``"adhoc"`` does). For d = 1 this is exactly metafor's knha. For d > 1
  the pooled scale is the natural one (under the model with τ² known, Q(τ²) ~ χ²_{d(K−1)}
  independently of μ̂), while the t degrees of freedom are the conservative K − 1 rather than
  d(K − 1): τ² is estimated from the same d(K − 1) residuals and the common τ²·I may not hold
  coordinate by coordinate. See ``benchmarks/results/re_centre_coverage.md`` for coverage with d = 2;
- prediction interval for a new site's θ: μ̂_j ± q·√(Var(μ̂_j) + τ̂²) (metafor ``pi.lb``/``pi.ub``),
  q the normal quantile (z) or t_{K−1} (knha);
- BLUP of site k: θ̃_k = μ̂ + τ̂² W_k (θ̂_k − μ̂) with prediction-error covariance
  Var(θ̃_k − θ_k) = τ̂² W_k V_k + (I − τ̂² W_k) Var(μ̂) (I − τ̂² W_k)' (the estimation error of μ̂
  included; metafor ``blup()``, which for d = 1 reads λ_k v_k + (1 − λ_k)² Var(μ̂) with
  λ_k = τ̂²/(τ̂² + v_k)). With ``test="knha"`` Var(μ̂) is the HKSJ one and intervals use t_{K−1};
- fixed-effect (common-effect) estimate: the same with τ² = 0 (metafor ``method="FE"``).

τ² estimators for the τ²·I model ("dl", "pm", "reml") reduce to metafor's for d = 1; for d > 1
they use the generalised Q with d(K − 1) degrees of freedom, and REML is the restricted
likelihood of the stacked model (metafor's ``rma.mv`` with one random effect per row). Every
quantity is conditional on τ̂² being the true τ² except the HKSJ covariance (which rescales) and
the Q-profile interval of τ².
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import pandas as pd
from scipy import optimize, stats

from hetmtl._validation import check_array, check_choice, check_level
from hetmtl.exceptions import DataValidationError, ParameterError
from hetmtl.inference.tables import _level_names

__all__ = ["RandomEffects", "TAU2_METHODS", "TESTS", "estimate_tau2", "heterogeneity", "random_effects",
           "tau2_qprofile_ci"]

TAU2_METHODS = ("dl", "pm", "reml")
TESTS = ("z", "knha")


# ----------------------------------------------------------------------------- core pieces
def _re_pieces(theta: np.ndarray, V: np.ndarray, tau2: float):
    """W_k = (V_k + τ² I)⁻¹, S = Σ W_k, the GLS centre μ̂ and the generalised Q at τ²."""
    K, d = theta.shape
    W = np.linalg.inv(V + tau2 * np.eye(d))
    S = W.sum(0)
    mu = np.linalg.solve(S, np.einsum("kij,kj->i", W, theta))
    r = theta - mu
    Q = float(np.einsum("ki,kij,kj->", r, W, r))
    return W, S, mu, Q


def _dl_denominator(W: np.ndarray, S: np.ndarray) -> float:
    """tr(S) − tr(S⁻¹ Σ_k W_k²) at τ² = 0: E[Q] = d(K − 1) + τ²·(this) under the τ²·I model."""
    return float(np.trace(S) - np.trace(np.linalg.solve(S, np.einsum("kij,kjl->il", W, W))))


def heterogeneity(theta: np.ndarray, V: np.ndarray) -> dict[str, float]:
    """Cochran's Q (multivariate: Σ_k (θ̂_k − θ̂_FE)' V̂_k⁻¹ (θ̂_k − θ̂_FE)), df = d(K − 1), its
    χ² p-value, I² = max(0, (Q − df)/Q) and the DerSimonian–Laird τ² of a common τ²·I
    (moment estimator; the classical DL for d = 1). ``theta`` (K, d), ``V`` (K, d, d)."""
    K, d = theta.shape
    W, S, _, Q = _re_pieces(theta, V, 0.0)
    df = d * (K - 1)
    denom = _dl_denominator(W, S)
    tau2 = max(0.0, (Q - df) / denom) if denom > 0 else 0.0
    return {
        "Q": Q,
        "df": float(df),
        "p-value": float(stats.chi2.sf(Q, df)),
        "I2": max(0.0, (Q - df) / Q) if Q > 0 else 0.0,
        "tau2": tau2,
    }


class _Profile:
    """Fast evaluation of the τ²·I model along τ² for fixed (θ̂, V): with V_k = U_k diag(λ_k) U_k',
    W_k(τ²) = U_k diag(1/(λ_k + τ²)) U_k', so every τ² costs two d × Kd × d products and no inverse."""

    def __init__(self, theta: np.ndarray, V: np.ndarray):
        self.theta = theta
        self.K, self.d = theta.shape
        self.lam, self.U = np.linalg.eigh(V)
        self.z = np.einsum("kij,ki->kj", self.U, theta)  # U_k' θ̂_k
        self.M = self.U.transpose(0, 2, 1).reshape(-1, self.d)  # rows (k, j): the j-th eigenvector of V_k
        self.scale = float(np.var(theta, axis=0).sum() + self.lam.max(1).max()) + 1e-300

    def _sum_outer(self, w: np.ndarray) -> np.ndarray:
        """Σ_k U_k diag(w_k) U_k' = M' diag(w) M for w (K, d)."""
        return self.M.T @ (self.M * w.reshape(-1, 1))

    def at(self, t: float):
        """(w, S, μ̂, rotated residuals ρ_k = U_k'(θ̂_k − μ̂), Q) at τ² = t."""
        w = 1.0 / (self.lam + t)
        S = self._sum_outer(w)
        mu = np.linalg.solve(S, np.einsum("kij,kj->i", self.U, w * self.z))
        rho = self.z - np.einsum("kij,i->kj", self.U, mu)
        return w, S, mu, rho, float(np.sum(w * rho**2))

    def Q(self, t: float) -> float:
        return self.at(t)[4]

    def nll(self, t: float) -> float:
        """Negative restricted log-likelihood (up to a constant) at τ² = t."""
        w, S, _, _, Q = self.at(t)
        return 0.5 * (-np.log(w).sum() + np.linalg.slogdet(S)[1] + Q)

    def score(self, t: float) -> float:
        """2 × d(nll)/dτ² = Σ tr W_k − tr(S⁻¹ Σ W_k²) − Σ r_k' W_k² r_k (dW_k/dτ² = −W_k²)."""
        w, S, _, rho, _ = self.at(t)
        return float(w.sum() - np.trace(np.linalg.solve(S, self._sum_outer(w**2))) - np.sum((w * rho) ** 2))


def _reml_nll(theta: np.ndarray, V: np.ndarray, t: float) -> float:
    """Negative restricted log-likelihood (up to a constant) of the τ²·I model at τ² = t."""
    return _Profile(theta, V).nll(t)


def _reml_score(theta: np.ndarray, V: np.ndarray, t: float) -> float:
    """2 × d(nll)/dτ² of the τ²·I model at τ² = t (zero at an interior REML estimate)."""
    return _Profile(theta, V).score(t)


_RTOL = 4 * np.finfo(float).eps


def _reml(P: _Profile) -> float:
    """REML τ²: global search of the restricted likelihood on a grid, then the root of the score."""
    grid = np.concatenate([[0.0], np.geomspace(1e-8 * P.scale, 10.0 * P.scale, 40)])
    while True:
        nll = np.array([P.nll(t) for t in grid])
        i = int(np.argmin(nll))
        if i < len(grid) - 1:
            break
        grid = np.concatenate([grid, grid[-1] * np.geomspace(2.0, 1e3, 10)])  # pragma: no cover (τ² ≫ scale)
    lo, hi = grid[max(i - 1, 0)], grid[i + 1]
    g_lo = P.score(lo)
    if i == 0 and g_lo >= 0.0:
        return 0.0
    if g_lo < 0.0 < P.score(hi):
        t = optimize.brentq(P.score, lo, hi, xtol=1e-300, rtol=_RTOL, maxiter=500)
    else:  # pragma: no cover (non-smooth corner; fall back on the likelihood itself)
        t = optimize.minimize_scalar(P.nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-14 * hi}).x
    return float(t) if P.nll(t) <= P.nll(0.0) else 0.0


def _root_decreasing(f, target: float, start: float) -> float:
    """The τ² ≥ 0 with f(τ²) = target for f non-increasing, f(0) > target and f → 0 as τ² → ∞."""
    hi = start
    while f(hi) > target:
        hi *= 4.0
    return float(optimize.brentq(lambda t: f(t) - target, 0.0, hi, xtol=1e-300, rtol=_RTOL, maxiter=500))


def estimate_tau2(theta: np.ndarray, V: np.ndarray, method: str) -> float:
    """Between-site variance τ² (of θ_k ~ N(θ_0, τ² I)) by "dl" (DerSimonian–Laird), "pm"
    (Paule–Mandel: generalised Q(τ²) = d(K − 1)) or "reml" (restricted likelihood; the root of
    the score near the global maximum on [0, ∞)). ``theta`` (K, d), ``V`` (K, d, d). For d = 1
    these are metafor's ``method="DL"``, ``"PM"``, ``"REML"`` (solved to machine precision)."""
    return _estimate_tau2(theta, V, method, None)


def _estimate_tau2(theta: np.ndarray, V: np.ndarray, method: str, P: _Profile | None) -> float:
    K, d = theta.shape
    if method == "dl":
        return heterogeneity(theta, V)["tau2"]
    P = _Profile(theta, V) if P is None else P
    if method == "pm":
        df = d * (K - 1)
        if P.Q(0.0) <= df:
            return 0.0
        return _root_decreasing(P.Q, df, P.scale)
    if method == "reml":
        return _reml(P)
    raise ValueError(f"tau2 method must be one of {TAU2_METHODS}, got {method!r}")


def tau2_qprofile_ci(theta: np.ndarray, V: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Q-profile confidence interval of τ² (Viechtbauer 2007; metafor ``confint(rma(...))``).

    The bounds solve Q(τ²) = χ²_{df; 1−α/2} (lower) and Q(τ²) = χ²_{df; α/2} (upper) for the
    generalised Q(τ²) = Σ_k (θ̂_k − μ̂(τ²))' W_k(τ²) (θ̂_k − μ̂(τ²)), df = d(K − 1), which is
    non-increasing in τ². A bound is 0 when Q(0) is already below its quantile (both are 0 when
    Q(0) < χ²_{df; α/2}). Unlike metafor, the upper bound is not capped at ``tau2.max``.
    ``theta`` (K, d), ``V`` (K, d, d)."""
    return _qprofile(_Profile(theta, V), level)


def _qprofile(P: _Profile, level: float) -> tuple[float, float]:
    df = P.d * (P.K - 1)
    alpha = 1.0 - level
    crit_hi, crit_lo = stats.chi2.isf(alpha / 2, df), stats.chi2.ppf(alpha / 2, df)
    q0 = P.Q(0.0)
    lb = _root_decreasing(P.Q, crit_hi, P.scale) if q0 > crit_hi else 0.0
    ub = _root_decreasing(P.Q, crit_lo, P.scale) if q0 > crit_lo else 0.0
    return lb, ub


# ----------------------------------------------------------------------------- validation
def _site_label(k: int, sites: Sequence | None) -> str:
    return f"site {k}" if sites is None else f"site {k} ({sites[k]!r})"


def _real(x, name: str) -> np.ndarray:
    """``x`` as a float array; text, complex and ragged input refused with DataValidationError."""
    try:
        arr = np.asarray(x)
    except Exception:  # noqa: BLE001  (ragged lists and the like)
        arr = None
    if arr is not None and arr.dtype.kind in "biuf":
        return arr.astype(float)
    try:
        return check_array(x, name, ndim=(0, 1, 2, 3), min_rows=0, allow_nan=True)
    except DataValidationError as exc:  # an inf inside an object array: re-read as floats
        if arr is not None and arr.dtype.kind == "O" and "infinite" in str(exc):
            return arr.astype(float)
        raise


def _as_model_inputs(theta, V, se, sites) -> tuple[np.ndarray, np.ndarray, bool]:
    """(theta (K, d), V (K, d, d), scalar) from the accepted input shapes; ValueError otherwise."""
    if (V is None) == (se is None):
        raise ParameterError("give exactly one of V (variances or covariance matrices) and se (standard errors)")
    theta = _real(theta, "theta")
    scalar = theta.ndim == 1
    if theta.ndim not in (1, 2):
        raise DataValidationError(f"theta must be (K,) or (K, d), got shape {theta.shape}")
    T = theta[:, None] if scalar else theta
    K, d = T.shape
    if sites is not None and len(sites) != K:
        raise DataValidationError(f"sites has {len(sites)} names for K = {K} sites")
    if K < 2:
        raise DataValidationError(f"random_effects needs K >= 2 sites, got K = {K}")
    if d < 1:
        raise DataValidationError("theta has no coefficients (d = 0)")
    bad = np.flatnonzero(~np.isfinite(T).all(1))
    if bad.size:
        raise DataValidationError(f"theta of {_site_label(int(bad[0]), sites)} is not finite: {T[bad[0]]}")
    if se is not None:
        M = _real(se, "se")
        if M.shape not in ((K,), (K, d)) or (M.ndim == 1 and d != 1):
            want: object = (K,) if d == 1 else (K, d)
            raise DataValidationError(f"se must have shape {want} to match theta {theta.shape}, got {M.shape}")
        M = M.reshape(K, d)
        bad = np.flatnonzero(~(np.isfinite(M) & (M > 0)).all(1))
        if bad.size:
            raise DataValidationError(f"se of {_site_label(int(bad[0]), sites)} must be finite and > 0, got {M[bad[0]]}")
        Vm = np.einsum("kj,ij->kij", M**2, np.eye(d))
    else:
        M = _real(V, "V")
        if M.shape == (K,) and d == 1:
            M = M.reshape(K, 1)
        if M.shape == (K, d):  # variances (diagonal covariance matrices)
            bad = np.flatnonzero(~(np.isfinite(M) & (M > 0)).all(1))
            if bad.size:
                raise DataValidationError(f"V of {_site_label(int(bad[0]), sites)} must hold finite variances > 0, "
                                 f"got {M[bad[0]]}")
            Vm = np.einsum("kj,ij->kij", M, np.eye(d))
        elif M.shape == (K, d, d):
            bad = np.flatnonzero(~np.isfinite(M).all((1, 2)))
            if bad.size:
                raise DataValidationError(f"V of {_site_label(int(bad[0]), sites)} is not finite")
            asym = np.abs(M - M.transpose(0, 2, 1)).max((1, 2)) > 1e-10 * np.abs(M).max((1, 2))
            if asym.any():
                raise DataValidationError(f"V of {_site_label(int(np.flatnonzero(asym)[0]), sites)} is not symmetric")
            Vm = 0.5 * (M + M.transpose(0, 2, 1))
            ev = np.linalg.eigvalsh(Vm)
            bad = np.flatnonzero(~(ev[:, 0] > 1e-12 * np.maximum(ev[:, -1], 0.0)))
            if bad.size:
                raise DataValidationError(f"V of {_site_label(int(bad[0]), sites)} is not positive definite "
                                 f"(smallest eigenvalue {ev[bad[0], 0]:.3g})")
        else:
            want = f"(K,) = {(K,)}" if d == 1 else f"(K, d) = {(K, d)} or (K, d, d) = {(K, d, d)}"
            raise DataValidationError(f"V must have shape {want} to match theta {theta.shape}, got {M.shape}")
    return T, Vm, scalar


def _check_level(level: float) -> float:
    return check_level(level, "level")


def _check_test(test: str) -> str:
    return check_choice(test, "test", TESTS)


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False, repr=False)
class RandomEffects:
    """Result of :func:`random_effects` (arrays are read-only; d-vectors even when d = 1).

    Heterogeneity
        ``tau2`` τ̂²; ``tau2_method`` ("reml", "dl", "pm" or "fixed"); ``tau2_ci`` (2,) Q-profile
        interval at ``level``; ``Q``, ``Q_df`` = d(K − 1), ``Q_pvalue`` Cochran's test (fixed-effect
        weights); ``I2`` = τ̂²/(τ̂² + ṽ) and ``H2`` = (τ̂² + ṽ)/ṽ with ṽ = d(K − 1)/(tr S₀ − tr(S₀⁻¹ΣW₀²))
        the "typical" within-site variance (metafor's I², as a fraction, not in %); ``I2_ci`` (2,)
        the Q-profile interval mapped through that (monotone) formula, as metafor's ``confint``.
    Centre (random-effects model)
        ``mu`` (d,); Wald: ``vcov`` (d, d) = (Σ_k W_k)⁻¹, ``se``, ``z``, ``pvalue``, ``ci`` (d, 2);
        HKSJ: ``knha_scale`` s², ``knha_df`` (K − 1), ``vcov_knha`` = s²·vcov, ``se_knha``,
        ``t_knha``, ``pvalue_knha``, ``ci_knha`` (d, 2).
    Prediction interval of a new site's θ
        ``pi`` (d, 2) with z quantiles and Wald vcov; ``pi_knha`` (d, 2) with t_{K−1} and the HKSJ vcov.
    Site effects (BLUPs)
        ``blup`` (K, d); ``blup_vcov`` (K, d, d), ``blup_se`` (K, d), ``blup_ci`` (K, d, 2) with the
        Wald vcov of μ̂ and z; ``blup_se_knha``, ``blup_ci_knha`` with the HKSJ vcov and t_{K−1}.
    Fixed-effect model (τ² = 0), for reference
        ``mu_fe`` (d,), ``vcov_fe`` (d, d), ``se_fe`` (d,).
    Bookkeeping
        ``K``, ``d``, ``level``, ``test`` (the default of the tables), ``coef_names``, ``sites``,
        ``theta`` (K, d) and ``V`` (K, d, d) as used.

    Tables: :meth:`summary_frame` (centre), :meth:`blup_frame` (sites), :meth:`prediction_frame`,
    :meth:`fe_frame`; :meth:`summary` is a printable text report.
    """

    K: int
    d: int
    level: float
    test: str
    coef_names: tuple
    sites: tuple
    theta: np.ndarray
    V: np.ndarray
    tau2: float
    tau2_method: str
    tau2_ci: np.ndarray
    I2_ci: np.ndarray
    Q: float
    Q_df: int
    Q_pvalue: float
    I2: float
    H2: float
    mu: np.ndarray
    vcov: np.ndarray
    se: np.ndarray
    z: np.ndarray
    pvalue: np.ndarray
    ci: np.ndarray
    knha_scale: float
    knha_df: int
    vcov_knha: np.ndarray
    se_knha: np.ndarray
    t_knha: np.ndarray
    pvalue_knha: np.ndarray
    ci_knha: np.ndarray
    pi: np.ndarray
    pi_knha: np.ndarray
    blup: np.ndarray
    blup_vcov: np.ndarray
    blup_se: np.ndarray
    blup_ci: np.ndarray
    blup_se_knha: np.ndarray
    blup_ci_knha: np.ndarray
    mu_fe: np.ndarray
    vcov_fe: np.ndarray
    se_fe: np.ndarray
    _blup_shrink: np.ndarray = field(repr=False)  # (K, d, d) I − τ̂² W_k (for other vcov's of μ̂)

    # -- helpers
    def _crit(self, level: float, test: str) -> float:
        level = _check_level(level)
        a = (1.0 - level) / 2.0
        return float(stats.t.isf(a, self.knha_df) if test == "knha" else stats.norm.isf(a))

    def _pick(self, test: str | None):
        test = _check_test(self.test if test is None else test)
        return test, (self.vcov_knha if test == "knha" else self.vcov)

    # -- tables
    def summary_frame(self, level: float | None = None, test: str | None = None) -> pd.DataFrame:
        """Centre table indexed by ``coef_names``: ``coef``, ``std err``, ``z`` and ``P>|z|`` (or ``t``
        and ``P>|t|`` with t_{K−1} for ``test="knha"``) and the CI columns (``'2.5 %'``, ``'97.5 %'``
        at level 0.95). ``level``/``test`` default to the ones of the fit."""
        level = self.level if level is None else _check_level(level)
        test, vcov = self._pick(test)
        se = np.sqrt(np.diag(vcov))
        stat = self.mu / se
        if test == "knha":
            names, p = ("t", "P>|t|"), 2.0 * stats.t.sf(np.abs(stat), self.knha_df)
        else:
            names, p = ("z", "P>|z|"), 2.0 * stats.norm.sf(np.abs(stat))
        q = self._crit(level, test)
        lo, hi = _level_names(level)
        return pd.DataFrame({"coef": self.mu, "std err": se, names[0]: stat, names[1]: p,
                             lo: self.mu - q * se, hi: self.mu + q * se}, index=pd.Index(self.coef_names))

    def prediction_frame(self, level: float | None = None, test: str | None = None) -> pd.DataFrame:
        """metafor ``predict()``: ``pred`` (= μ̂), ``se``, ``ci.lb``/``ci.ub`` and the prediction
        interval ``pi.lb``/``pi.ub`` of a new site's θ, q·√(Var(μ̂_j) + τ̂²)."""
        level = self.level if level is None else _check_level(level)
        test, vcov = self._pick(test)
        se = np.sqrt(np.diag(vcov))
        q = self._crit(level, test)
        half = q * np.sqrt(se**2 + self.tau2)
        return pd.DataFrame({"pred": self.mu, "se": se, "ci.lb": self.mu - q * se, "ci.ub": self.mu + q * se,
                             "pi.lb": self.mu - half, "pi.ub": self.mu + half}, index=pd.Index(self.coef_names))

    def blup_frame(self, level: float | None = None, test: str | None = None) -> pd.DataFrame:
        """Per-site BLUP table (metafor ``blup()``): ``blup``, ``std err`` (√ prediction-error
        variance, including the error of μ̂), CI columns, and the per-site ``estimate`` and its
        ``shrinkage`` weight on the site estimate (τ̂²/(τ̂² + v_k) for d = 1; the diagonal of τ̂²W_k
        otherwise). Indexed by site (by site and coefficient when d > 1)."""
        level = self.level if level is None else _check_level(level)
        test, vcov = self._pick(test)
        B = self._blup_shrink
        bv = (np.eye(self.d) - B) @ self.V + (B @ vcov) @ B.transpose(0, 2, 1)
        se = np.sqrt(np.einsum("kjj->kj", bv))
        q = self._crit(level, test)
        lo, hi = _level_names(level)
        lam = np.einsum("kjj->kj", np.eye(self.d) - B)
        cols = {"blup": self.blup, "std err": se, lo: self.blup - q * se, hi: self.blup + q * se,
                "estimate": self.theta, "shrinkage": lam}
        if self.d == 1:
            index = pd.Index(self.sites, name="site")
        else:
            index = pd.MultiIndex.from_product([self.sites, self.coef_names], names=["site", "coef"])
        return pd.DataFrame({k: np.asarray(v).ravel() for k, v in cols.items()}, index=index)

    def fe_frame(self, level: float | None = None) -> pd.DataFrame:
        """Fixed-effect (common-effect, τ² = 0) centre: coef, std err, z, P>|z|, CI (metafor ``method="FE"``)."""
        level = self.level if level is None else _check_level(level)
        z = self.mu_fe / self.se_fe
        q = self._crit(level, "z")
        lo, hi = _level_names(level)
        return pd.DataFrame({"coef": self.mu_fe, "std err": self.se_fe, "z": z, "P>|z|": 2.0 * stats.norm.sf(np.abs(z)),
                             lo: self.mu_fe - q * self.se_fe, hi: self.mu_fe + q * self.se_fe},
                            index=pd.Index(self.coef_names))

    def summary(self, level: float | None = None, test: str | None = None):
        """Report (a statsmodels ``Summary``: ``as_text``/``as_html``/``as_latex``; ``print`` shows
        the text): heterogeneity (τ², its Q-profile CI, Q test, I²), then the centre table."""
        from hetmtl.inference import make_summary

        level = self.level if level is None else _check_level(level)
        test = _check_test(self.test if test is None else test)
        ci = self.tau2_ci if level == self.level else np.array(tau2_qprofile_ci(self.theta, self.V, level))
        header = {
            "sites (K)": self.K,
            "coefficients (d)": self.d,
            "tau^2 estimator": self.tau2_method,
            "tau^2": f"{self.tau2:.4g} (Q-profile {100 * level:g}% CI [{ci[0]:.4g}, {ci[1]:.4g}])",
            "tau": f"{np.sqrt(self.tau2):.4g}",
            "I^2, H^2": f"{100 * self.I2:.2f}%, {self.H2:.4g}",
            "test for heterogeneity": f"Q({self.Q_df}) = {self.Q:.4f}, p = {self.Q_pvalue:.4g}",
            "centre": "Knapp-Hartung (HKSJ) SE, t(%d)" % self.knha_df if test == "knha" else "Wald SE, z",
        }
        return make_summary("Random-effects model", header, [("Centre", self.summary_frame(level, test))])

    def __str__(self) -> str:  # pragma: no cover (thin)
        return self.summary().as_text()

    def __repr__(self) -> str:
        return (f"RandomEffects(K={self.K}, d={self.d}, tau2={self.tau2:.6g} ({self.tau2_method}), "
                f"mu={np.array2string(self.mu, precision=6)}, se={np.array2string(self.se, precision=6)}, "
                f"se_knha={np.array2string(self.se_knha, precision=6)}, level={self.level:g}, test={self.test!r})")


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


def random_effects(
    theta,
    V=None,
    *,
    se=None,
    tau2: Union[str, float] = "reml",
    level: float = 0.95,
    test: str = "z",
    coef_names: Sequence[str] | None = None,
    sites: Sequence | None = None,
) -> RandomEffects:
    """Random-effects meta-analysis of K site estimates (see the module docs for the model).

    Parameters
    ----------
    theta : (K,) or (K, d) site estimates θ̂_k.
    V : within-site sampling variances (K,) when theta is (K,); for theta (K, d) either
        covariance matrices (K, d, d) or variances (K, d) (diagonal V_k). Give ``V`` or ``se``.
    se : standard errors instead of ``V``: (K,) for theta (K,), (K, d) (diagonal V_k) otherwise.
    tau2 : "reml" (default, as metafor), "dl", "pm", or a number ≥ 0 (τ² held fixed).
        Estimating τ² needs K ≥ 3 sites; a fixed τ² needs K ≥ 2.
    level : confidence level of every interval (Wald, HKSJ, prediction, BLUP and τ²).
    test : "z" (Wald, metafor's default) or "knha" (Knapp–Hartung/HKSJ with t_{K−1}); only the
        default of the tables — both sets of fields are always computed.
    coef_names : names of the d coefficients (default "mu" for d = 1, "mu[j]" otherwise).
    sites : names of the K sites (default 0..K−1); used in tables and error messages.

    Returns
    -------
    RandomEffects. Raises DataValidationError for text/complex/non-finite estimates, non-positive
    variances or non-positive-definite V_k (naming the site index and the argument) or too few
    sites, and ParameterError for a bad ``tau2``/``level``/``test`` (both are ValueErrors).
    """
    level = _check_level(level)
    test = _check_test(test)
    T, Vm, _ = _as_model_inputs(theta, V, se, sites)
    K, d = T.shape
    P = _Profile(T, Vm)
    if isinstance(tau2, str):
        method = tau2.lower()
        if method not in TAU2_METHODS:
            raise ParameterError(f"tau2 must be a number >= 0 or one of {TAU2_METHODS}, got {tau2!r}")
        if K < 3:
            raise DataValidationError(f"estimating tau2 ({method!r}) needs K >= 3 sites, got K = {K}; give a fixed tau2 instead")
        t2 = _estimate_tau2(T, Vm, method, P)
    else:
        try:
            t2 = float(tau2)
        except (TypeError, ValueError):
            raise ParameterError(f"tau2 must be a number >= 0 or one of {TAU2_METHODS}, got {tau2!r}") from None
        if not (np.isfinite(t2) and t2 >= 0.0):
            raise ParameterError(f"a fixed tau2 must be finite and >= 0, got {tau2!r}")
        method = "fixed"
    if coef_names is None:
        coef_names = ["mu"] if d == 1 else [f"mu[{j}]" for j in range(d)]
    if len(coef_names) != d:
        raise ParameterError(f"coef_names has {len(coef_names)} names for d = {d} coefficients")
    sites = list(range(K)) if sites is None else list(sites)

    # fixed effect and heterogeneity (τ² = 0)
    W0, S0, mu_fe, Q0 = _re_pieces(T, Vm, 0.0)
    vcov_fe = np.linalg.inv(S0)
    df = d * (K - 1)
    denom = _dl_denominator(W0, S0)
    if not (np.isfinite(denom) and denom > 0):
        raise DataValidationError("the sampling variances span a range that underflows the fixed-effect weights "
                                  f"(smallest {float(np.min(np.diagonal(Vm, axis1=1, axis2=2))):g}, largest "
                                  f"{float(np.max(np.diagonal(Vm, axis1=1, axis2=2))):g}); rescale the estimates")
    v_typ = df / denom  # denom = tr(S₀) − tr(S₀⁻¹ΣW₀²) > 0 for K ≥ 2
    I2_of = lambda t: np.asarray(t, dtype=float) / (np.asarray(t, dtype=float) + v_typ)  # noqa: E731
    I2, H2 = float(I2_of(t2)), (t2 + v_typ) / v_typ
    tau2_ci = np.array(_qprofile(P, level))

    # random-effects centre
    W, S, mu, Qt = _re_pieces(T, Vm, t2)
    vcov = np.linalg.inv(S)
    vcov = 0.5 * (vcov + vcov.T)
    se_ = np.sqrt(np.diag(vcov))
    zq = stats.norm.isf((1.0 - level) / 2.0)
    s2 = Qt / df
    knha_df = K - 1
    tq = stats.t.isf((1.0 - level) / 2.0, knha_df)
    vcov_k = s2 * vcov
    se_k = np.sqrt(s2) * se_
    band = lambda c, h: np.stack([c - h, c + h], axis=-1)  # noqa: E731

    # BLUPs: θ̃_k = μ̂ + τ²W_k(θ̂_k − μ̂); B_k = I − τ²W_k = V_k W_k
    B = np.eye(d) - t2 * W
    blup = T - np.einsum("kij,kj->ki", B, T - mu)
    base = (np.eye(d) - B) @ Vm  # τ² W_k V_k (symmetric)
    base = 0.5 * (base + base.transpose(0, 2, 1))
    bv = base + (B @ vcov) @ B.transpose(0, 2, 1)
    bv_k = base + (B @ vcov_k) @ B.transpose(0, 2, 1)
    bse = np.sqrt(np.einsum("kjj->kj", bv))
    bse_k = np.sqrt(np.einsum("kjj->kj", bv_k))

    return RandomEffects(
        K=K, d=d, level=level, test=test, coef_names=tuple(coef_names), sites=tuple(sites),
        theta=_readonly(T), V=_readonly(Vm),
        tau2=float(t2), tau2_method=method, tau2_ci=_readonly(tau2_ci), I2_ci=_readonly(I2_of(tau2_ci)),
        Q=float(Q0), Q_df=int(df), Q_pvalue=float(stats.chi2.sf(Q0, df)), I2=float(I2), H2=float(H2),
        mu=_readonly(mu), vcov=_readonly(vcov), se=_readonly(se_), z=_readonly(mu / se_),
        pvalue=_readonly(2.0 * stats.norm.sf(np.abs(mu / se_))), ci=_readonly(band(mu, zq * se_)),
        knha_scale=float(s2), knha_df=int(knha_df), vcov_knha=_readonly(vcov_k), se_knha=_readonly(se_k),
        t_knha=_readonly(mu / se_k), pvalue_knha=_readonly(2.0 * stats.t.sf(np.abs(mu / se_k), knha_df)),
        ci_knha=_readonly(band(mu, tq * se_k)),
        pi=_readonly(band(mu, zq * np.sqrt(se_**2 + t2))), pi_knha=_readonly(band(mu, tq * np.sqrt(se_k**2 + t2))),
        blup=_readonly(blup), blup_vcov=_readonly(bv), blup_se=_readonly(bse), blup_ci=_readonly(band(blup, zq * bse)),
        blup_se_knha=_readonly(bse_k), blup_ci_knha=_readonly(band(blup, tq * bse_k)),
        mu_fe=_readonly(mu_fe), vcov_fe=_readonly(vcov_fe), se_fe=_readonly(np.sqrt(np.diag(vcov_fe))),
        _blup_shrink=_readonly(B),
    )
