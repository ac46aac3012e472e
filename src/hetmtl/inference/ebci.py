"""Robust empirical-Bayes confidence intervals (Armstrong, Kolesár & Plagborg-Møller 2022).

Many units i = 1..n each come with an unbiased, normal preliminary estimate ``Y_i`` of θ_i and its
standard error σ_i (site effects, commuting-zone effects, teacher value added, ...). Shrinking
``Y_i`` toward a regression fit ``X_i'δ`` lowers mean squared error, but the usual parametric EB
interval ``th_eb ± z·√w·σ`` only covers on average when θ_i − X_i'δ is normal. The robust EBCI
keeps average coverage ≥ 1 − α for any distribution of the effects with the estimated second
moment μ₂ (and, optionally, kurtosis κ), by enlarging the critical value to account for the
shrinkage bias.

What to use when
----------------
- :func:`robust_ebci` — the whole procedure, equal to R's ``ebci::ebci()``: δ by weighted least
  squares, μ₂ and κ by (finite-sample corrected) moment estimates, EB shrinkage
  ``w_eb = μ₂/(μ₂ + σ²)``, robust half-lengths, and optionally the length-optimal shrinkage
  (``wopt=True``). ``X=None`` shrinks toward a (weighted) grand mean.
- :func:`ebci_moments` — only δ, μ₂ and κ (e.g. to build robust intervals around another linear
  shrinkage estimator ``X'δ + w(Y − X'δ)``: use ``cva_values(m2, kappa, alpha) * w * se`` with
  ``m2 = (1/w − 1)² μ₂/σ²``).
- :func:`cva` — one critical value with its least-favourable distribution (R's ``ebci::cva()``).
- :func:`cva_values` — many critical values at once (vectorised root finding; what the others use).

Formulas
--------
For a linear shrinkage estimator ``θ̂ = X'δ + w(Y − X'δ)`` with ``Y ~ N(θ, σ²)``,
``(θ̂ − θ)/(wσ) = Z + t`` with the normalised bias ``t = (1/w − 1)(X'δ − θ)/σ``. Over the units,
``E[t²] = m₂ = (1/w − 1)² μ₂/σ²`` and ``E[t⁴] = κ m₂²`` (μ₂ = E[(θ − X'δ)²], κ its kurtosis).
The robust critical value ``cva_α(m₂, κ)`` is the smallest χ with
``sup E_F r(t², χ) ≤ α`` over distributions F of t with those moments (``E[t⁴] ≤ κ m₂²``), where
``r(b², χ) = P(|Z + b| > χ)``; the interval is ``θ̂ ± cva_α(m₂, κ)·w·σ``. With κ = ∞ only the
second moment binds; κ = 1 means ``|t|`` = √m₂ is known (folded-normal quantile); m₂ = 0 gives
``z_{1−α/2}``. The least-favourable F has at most two support points for t², returned by
:func:`cva`.

Reference: T. B. Armstrong, M. Kolesár and M. Plagborg-Møller (2022), "Robust Empirical Bayes
Confidence Intervals", Econometrica 90(6), 2567–2602, doi:10.3982/ECTA18597. Numerical choices
(thresholds, the finite-sample corrections, the length-optimal search on a pre-computed grid of
critical values for more than 30 units) follow the R package ``ebci`` so results agree with it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import log_ndtr, ndtr, ndtri

from hetmtl.exceptions import DataValidationError, ParameterError
from hetmtl.inference.tables import _level_names

__all__ = [
    "CriticalValue",
    "EBCIMoments",
    "RobustEBCI",
    "cva",
    "cva_values",
    "ebci_moments",
    "robust_ebci",
]

FRAME_COLUMNS = (
    "w_eb", "w_opt", "ncov_pa", "len_eb", "len_op", "len_pa", "len_us",
    "th_us", "th_eb", "th_op", "se", "weights", "residuals",
)
FS_CORRECTIONS = ("PMT", "FPLIB", "none")

_TOL = 1e-12  # R ebci's `tol`
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_GRID = 48  # grid points per unit for the kurtosis-constrained maximisation (then refined) ...
_GRID_STEEP = 32  # ... and extra points where the non-coverage of the upper support point rises
_FMIN_TOL = 1e-12  # tolerance of the length-optimal shrinkage search (R: optimize(tol=1e-12))


# ---------------------------------------------------------------------------------------------
# The non-coverage function r(t, χ) = P(|Z + √t| > χ) and its derivatives
# ---------------------------------------------------------------------------------------------
def _dnorm(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _r(t: np.ndarray, chi: np.ndarray) -> np.ndarray:
    s = np.sqrt(t)
    return ndtr(-s - chi) + ndtr(s - chi)


def _r1(t: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """∂r/∂t, written to avoid cancellation near t = 0 (limit χφ(χ))."""
    s = np.sqrt(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _dnorm(s - chi) * -np.expm1(-2.0 * s * chi) / (2.0 * s)
    return np.where(s > 0, out, chi * _dnorm(chi))


def _r_chi(t: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """∂r/∂χ."""
    s = np.sqrt(t)
    return -(_dnorm(s + chi) + _dnorm(s - chi))


def _t0(chi: np.ndarray, c_start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tangency point t₀(χ) of the line from (0, r(0)) to r: the concave envelope of r(·, χ) is
    linear on [0, t₀] and equals r beyond. t₀ = 0 when χ² < 3 (r is then concave). Solved in
    c = √t₀ − χ, which stays well conditioned for large χ. Returns (t₀, c)."""
    chi = np.asarray(chi, float)
    t0 = np.zeros_like(chi)
    c_out = np.full_like(chi, np.nan)
    act = chi * chi > 3.0
    if not act.any():
        return t0, c_out
    x = chi[act]
    lo = np.sqrt(x * x - 3.0) - x  # t = χ² − 3 lies below the inflection point: g < 0 there
    hi = (np.sqrt(2.0) - 1.0) * x  # t = 2χ²: g > 0 (R's bracket)
    r0 = 2.0 * ndtr(-x)

    def g(c: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xx = x[k]
        d1, d2 = _dnorm(c), _dnorm(2.0 * xx + c)
        val = ndtr(c) + ndtr(-2.0 * xx - c) - 0.5 * (xx + c) * (d1 - d2) - r0[k]
        der = 0.5 * (d1 - d2) + 0.5 * (xx + c) * (c * d1 - (2.0 * xx + c) * d2)
        return val, der

    g_lo, _ = g(lo, np.arange(x.size))
    degenerate = g_lo >= 0  # χ² barely above 3: numerically t₀ = χ² − 3 (≈ 0)
    # large-χ approximation (Φ(c) ≈ 1 = χ φ(c)/2) unless warm-started
    start = np.sqrt(2.0 * np.log(np.maximum(x * _INV_SQRT_2PI / 2.0, np.e / 2.0)))
    if c_start is not None:
        start = np.where(np.isfinite(c_start[act]), c_start[act], start)
    c = _solve(g, lo, hi, start, increasing=True, xtol=1e-14)
    c = np.where(degenerate, lo, c)
    t0[act] = (x + c) ** 2
    c_out[act] = c
    return t0, c_out


# ---------------------------------------------------------------------------------------------
# Vectorised one-dimensional solvers
# ---------------------------------------------------------------------------------------------
def _solve(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    lo: np.ndarray,
    hi: np.ndarray,
    x: np.ndarray,
    *,
    increasing: bool,
    xtol: float = 1e-13,
    maxiter: int = 200,
) -> np.ndarray:
    """Simultaneous bracketed Newton (bisection when a step leaves the bracket) for units
    k = 0..n-1: ``fun(x, k)`` returns the values and derivatives at x for the units k. Each unit
    has one sign change on [lo, hi]."""
    lo, hi = np.array(lo, float), np.array(hi, float)
    x = np.clip(np.array(x, float), lo, hi)
    k = np.arange(x.size)
    sign = 1.0 if increasing else -1.0
    for _ in range(maxiter):
        if k.size == 0:
            break
        xk = x[k]
        f, df = fun(xk, k)
        above = sign * f > 0
        hi[k] = np.where(above, xk, hi[k])
        lo[k] = np.where(above, lo[k], xk)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = xk - f / df
        ok = (step >= lo[k]) & (step <= hi[k])  # False for NaN
        new = np.where(f == 0, xk, np.where(ok, step, 0.5 * (lo[k] + hi[k])))
        x[k] = new
        scale = xtol * np.maximum(1.0, np.abs(new))
        done = (f == 0) | (ok & (np.abs(step - xk) <= scale)) | (hi[k] - lo[k] <= scale)
        k = k[~done]
    return x


# ---------------------------------------------------------------------------------------------
# Maximal non-coverage ρ(m₂, κ, χ) and its least-favourable distribution
# ---------------------------------------------------------------------------------------------
class _Rho(NamedTuple):
    value: np.ndarray  # ρ(m₂, κ, χ)
    dchi: np.ndarray  # ∂ρ/∂χ (envelope theorem: derivative at the least-favourable F)
    x: np.ndarray  # (n, 2) support of t² under the least-favourable F
    p: np.ndarray  # (n, 2) its probabilities
    c: np.ndarray  # √t₀ − χ (warm start for the next call)


def _rho(m2: np.ndarray, kappa: np.ndarray | float, chi: np.ndarray, c_start: np.ndarray | None = None) -> _Rho:
    """sup E_F r(t, χ) over distributions F of t = b² ≥ 0 with E t = m₂ and E t² ≤ κ m₂²."""
    m2, kappa, chi = np.broadcast_arrays(*(np.asarray(a, float) for a in (m2, kappa, chi)))
    n = m2.size
    t0, c = _t0(chi, c_start)
    val, der = np.empty(n), np.empty(n)
    x, p = np.zeros((n, 2)), np.zeros((n, 2))

    point = (kappa == 1) | (m2 >= t0)  # |t| = √m₂ known, or the concave part: point mass
    val[point], der[point] = _r(m2[point], chi[point]), _r_chi(m2[point], chi[point])
    x[point, 1], p[point, 1] = m2[point], 1.0

    envelope = ~point & ((kappa == np.inf) | (m2 * kappa >= t0))  # kurtosis bound not binding
    if envelope.any():
        # mass 1 − q at 0 and q = m₂/t₀ at t₀ (this form is insensitive to rounding in t₀ since
        # t₀ is a tangency point); r at t₀ = (χ + c)² written in c, exact also for huge χ
        mm, tt, cc, c0 = m2[envelope], t0[envelope], chi[envelope], c[envelope]
        q = mm / tt
        val[envelope] = (1 - q) * 2.0 * ndtr(-cc) + q * (ndtr(-2.0 * cc - c0) + ndtr(c0))
        der[envelope] = -(1 - q) * 2.0 * _dnorm(cc) - q * (_dnorm(2.0 * cc + c0) + _dnorm(c0))
        x[envelope, 1] = tt
        p[envelope, 0], p[envelope, 1] = 1 - q, q

    binding = ~point & ~envelope
    tiny = binding & ~((kappa - 1.0) * m2 * m2 > 0)  # variance bound underflows: no room to spread
    if tiny.any():
        val[tiny], der[tiny] = _r(m2[tiny], chi[tiny]), _r_chi(m2[tiny], chi[tiny])
        x[tiny, 1], p[tiny, 1] = m2[tiny], 1.0
        binding &= ~tiny
    if binding.any():
        with np.errstate(divide="ignore", invalid="ignore"):  # κ → 1 or m₂ → 0: degenerate log grid ends
            v, d, xx, pp = _rho_binding(m2[binding], kappa[binding], chi[binding], t0[binding])
        val[binding], der[binding], x[binding], p[binding] = v, d, xx, pp
    return _Rho(val, der, x, p, c)


def _rho_binding(m2, kappa, chi, t0):
    """Kurtosis-constrained case (κ m₂ < t₀): the least-favourable F puts mass on
    x_a = m₂ − u and x_b = m₂ + V/u with V = (κ − 1) m₂² (variance bound binding); maximise the
    non-coverage over u on a log grid, then solve the first-order condition in the best cell."""
    var = (kappa - 1.0) * m2 * m2
    sv = np.sqrt(var)
    s_hi = np.log(m2 / sv)  # x_a = 0
    s_lo = np.log(sv / (t0 - m2))  # x_b = t₀ (the upper support point never exceeds t₀)
    m2c, vc, svc, chic = m2[:, None], var[:, None], sv[:, None], chi[:, None]

    def parts(s, m2_, v_, sv_):  # support (x_a, x_b) and probabilities at s = log(u/√V)
        u = np.minimum(sv_ * np.exp(s), m2_)
        xa = np.where(m2_ - u > 8 * np.finfo(float).eps * m2_, m2_ - u, 0.0)  # snap to the corner x_a = 0
        d = u * u + v_
        return xa, m2_ + v_ / u, v_ / d, u * u / d

    # A log grid in s, plus grids uniform in √x_b and in √x_a where r rises steeply (√x ≈ χ ± 8):
    # there the maximum can be too narrow for the log grid (large χ, or κ near 1).
    mid = (np.arange(_GRID_STEEP) + 0.5)[None, :] / _GRID_STEEP
    grid = s_lo[:, None] + (s_hi - s_lo)[:, None] * np.linspace(0.0, 1.0, _GRID)[None, :]
    qb_hi = np.sqrt(t0)
    qb_lo = np.minimum(np.maximum(np.sqrt(kappa * m2), chi - 8.0), qb_hi)
    qb = qb_lo[:, None] + (qb_hi - qb_lo)[:, None] * mid
    qa_hi = np.sqrt(m2)
    qa_lo = np.minimum(np.maximum(chi - 8.0, 0.0), qa_hi)
    qa = qa_lo[:, None] + (np.minimum(chi + 8.0, qa_hi) - qa_lo).clip(0)[:, None] * mid
    with np.errstate(divide="ignore"):
        s_b = np.log(svc / np.maximum(qb * qb - m2c, 0.0))
        s_a = np.log(np.maximum(m2c - qa * qa, 0.0) / svc)
    grid = np.sort(np.concatenate([grid, s_b, s_a], axis=1).clip(s_lo[:, None], s_hi[:, None]), axis=1)
    xa, xb, pa, pb = parts(grid, m2c, vc, svc)
    f = pa * _r(xa, chic) + pb * _r(xb, chic)
    j = np.argmax(f, axis=1)
    rows = np.arange(m2.size)
    best_s, best_f = grid[rows, j], f[rows, j]

    def h(s, k):  # sign of ∂f/∂s: secant slope vs. mean tangent slope at both points
        a, b, _, _ = parts(s, m2[k], var[k], sv[k])
        ra, rb = _r(a, chi[k]), _r(b, chi[k])
        return 2.0 * (rb - ra) / (b - a) - _r1(a, chi[k]) - _r1(b, chi[k])

    a_s = grid[rows, np.maximum(j - 1, 0)]
    b_s = grid[rows, np.minimum(j + 1, grid.shape[1] - 1)]
    ha, hb = h(a_s, rows), h(b_s, rows)
    at_hi_corner = (j == grid.shape[1] - 1) & (hb >= 0)  # x_a = 0 is optimal
    at_lo_corner = (j == 0) & (ha <= 0)
    bracket = (ha > 0) & (hb < 0) & ~at_hi_corner & ~at_lo_corner
    s_star = best_s.copy()
    s_star[at_hi_corner] = s_hi[at_hi_corner]
    s_star[at_lo_corner] = s_lo[at_lo_corner]
    if bracket.any():
        s_star[bracket] = _illinois(h, a_s[bracket], b_s[bracket], ha[bracket], hb[bracket], rows[bracket])
    xa, xb, pa, pb = parts(s_star, m2, var, sv)
    val = pa * _r(xa, chi) + pb * _r(xb, chi)
    worse = val < best_f  # keep the grid point if refinement did not help (flat, noisy f)
    if worse.any():
        xa_g, xb_g, pa_g, pb_g = parts(best_s, m2, var, sv)
        xa, xb, pa, pb = (np.where(worse, g_, o_) for g_, o_ in ((xa_g, xa), (xb_g, xb), (pa_g, pa), (pb_g, pb)))
        val = np.where(worse, best_f, val)
    der = pa * _r_chi(xa, chi) + pb * _r_chi(xb, chi)
    return val, der, np.column_stack([xa, xb]), np.column_stack([pa, pb])


def _illinois(fun, a, b, fa, fb, k, xtol=1e-12, maxiter=100):
    """Simultaneous Illinois (modified regula falsi) root search on brackets with fa·fb < 0."""
    a, b, fa, fb = (np.array(v, float) for v in (a, b, fa, fb))
    idx = np.arange(a.size)
    for _ in range(maxiter):
        if idx.size == 0:
            break
        ai, bi, fai, fbi = a[idx], b[idx], fa[idx], fb[idx]
        x = bi - fbi * (bi - ai) / (fbi - fai)
        inside = np.isfinite(x) & (x > np.minimum(ai, bi)) & (x < np.maximum(ai, bi))
        x = np.where(inside, x, 0.5 * (ai + bi))
        fx = fun(x, k[idx])
        flip = np.sign(fx) != np.sign(fbi)
        a[idx] = np.where(flip, bi, ai)
        fa[idx] = np.where(flip, fbi, 0.5 * fai)
        b[idx], fb[idx] = x, fx
        done = (fx == 0) | ~np.isfinite(fx) | (np.abs(x - a[idx]) <= xtol * np.maximum(1.0, np.abs(x)))
        idx = idx[~done]
    return b


# ---------------------------------------------------------------------------------------------
# Critical values
# ---------------------------------------------------------------------------------------------
class CriticalValue(NamedTuple):
    """Result of :func:`cva` (as R's ``ebci::cva``).

    Attributes
    ----------
    cv : float
        Critical value cva_α(m₂, κ); NaN when m₂ = ∞.
    alpha : float
        The argument α.
    x : ndarray, shape (2,)
        Support points of the least-favourable distribution of the squared normalised bias t².
    p : ndarray, shape (2,)
        Their probabilities.
    """

    cv: float
    alpha: float
    x: np.ndarray
    p: np.ndarray


def _cv_known_bias(b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Folded-normal quantile: χ with P(|Z + b| > χ) = α (R's ``CVb``: for b ≥ 10, b + z_{1−α})."""
    b, alpha = np.broadcast_arrays(np.asarray(b, float), np.asarray(alpha, float))
    out = b + ndtri(1.0 - alpha)
    small = b < 10
    if small.any():
        bs, al = b[small], alpha[small]
        lo, hi = bs + ndtri(1.0 - al), bs + ndtri(1.0 - al / 2.0)  # r(b², lo) ≥ α ≥ r(b², hi)

        def fun(chi, k):
            return _r(bs[k] ** 2, chi) - al[k], _r_chi(bs[k] ** 2, chi)

        # r is convex decreasing in χ > b: Newton from the left end converges monotonically
        out[small] = _solve(fun, lo, hi, lo.copy(), increasing=False, xtol=1e-15)
    return out


def _cva_solve(m2: np.ndarray, kappa: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Critical values for units with 0 < m₂ < ∞ and κ > 1, following R's ``cva`` step by step:
    the κ = ∞ value is the root on [cv(κ=1) − 0.01, Chebyshev bound √((1 + m₂)/α)] (the bound
    itself when its non-coverage is within 9e-6 of α); if κ < ∞ lowers the non-coverage there by
    more than 1e-5, the κ root on [cv(κ=1) − 0.01, cv(κ=∞)]."""
    cv1 = _cv_known_bias(np.sqrt(m2), alpha)
    lo = cv1 - 0.01
    up = np.sqrt((1.0 + m2) / alpha)
    r_up = _rho(m2, np.inf, up)
    cv = up.copy()
    warm = r_up.c.copy()
    need = np.flatnonzero(np.abs(r_up.value - alpha) >= 9e-6)
    if need.size:
        mm, aa, cw = m2[need], alpha[need], warm[need]

        def f_inf(chi, k):
            r = _rho(mm[k], np.inf, chi, cw[k])
            cw[k] = r.c
            return r.value - aa[k], r.dchi

        cv[need] = _solve(f_inf, lo[need], up[need], cv1[need], increasing=False)
        warm[need] = cw
    idx = np.flatnonzero(np.isfinite(kappa))
    if idx.size:
        r_k = _rho(m2[idx], kappa[idx], cv[idx], warm[idx])
        jdx = idx[r_k.value - alpha[idx] < -1e-5]
        if jdx.size:
            mm, kk, aa, cw = m2[jdx], kappa[jdx], alpha[jdx], warm[jdx]

            def f_k(chi, k):
                r = _rho(mm[k], kk[k], chi, cw[k])
                cw[k] = r.c
                return r.value - aa[k], r.dchi

            cv[jdx] = _solve(f_k, lo[jdx], cv[jdx], cv[jdx], increasing=False)
    return cv


def _check_alpha(alpha) -> None:
    a = np.asarray(alpha, float)
    if not np.all((a > 0) & (a < 1)):
        raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")


def cva_values(m2, kappa=np.inf, alpha: npt.ArrayLike = 0.05) -> np.ndarray:
    """Robust critical values cva_α(m₂, κ) for many units at once.

    Vectorised over units (simultaneous safeguarded Newton iterations), for the critical values
    of :func:`robust_ebci` or of any linear shrinkage estimator.

    Parameters
    ----------
    m2 : array_like
        Second moments E[t²] ≥ 0 of the normalised bias, ``(1/w − 1)² μ₂/σ²``. ``inf`` gives NaN.
    kappa : array_like, default inf
        Kurtosis bounds κ ≥ 1 (E[t⁴] ≤ κ m₂²); ``inf`` imposes only the second moment, 1 means
        ``|t|`` = √m₂ exactly (folded-normal quantile).
    alpha : array_like, default 0.05
        Non-coverage α in (0, 1); broadcast with ``m2`` and ``kappa``.

    Returns
    -------
    ndarray
        Critical values, the broadcast shape of the inputs.

    Examples
    --------
    >>> cva_values([0.0, 4.0, 4.0], [np.inf, np.inf, 3.0]).round(4)
    array([1.96  , 7.2164, 4.6195])
    """
    m2, kappa, alpha = np.broadcast_arrays(*(np.asarray(a, float) for a in (m2, kappa, alpha)))
    shape = m2.shape
    m2, kappa, alpha = (np.array(a, float).ravel() for a in (m2, kappa, alpha))
    if np.any(np.isnan(m2)) or np.any(m2 < 0):
        raise ParameterError("m2 must be non-negative (inf allowed)")
    if np.any(np.isnan(kappa)) or np.any(kappa < 1):
        raise ParameterError("kappa must be >= 1 (inf allowed)")
    _check_alpha(alpha)
    cv = np.full(m2.size, np.nan)
    known = (kappa == 1) | (m2 == 0)
    known_f = known & np.isfinite(m2)
    cv[known_f] = _cv_known_bias(np.sqrt(m2[known_f]), alpha[known_f])
    rest = ~known & np.isfinite(m2)
    if rest.any():
        kap = kappa[rest].copy()
        huge = (1.0 / m2[rest] < _TOL) & np.isfinite(kap)  # R: for m₂ > 1e12 assume κ = ∞
        kap[huge] = np.inf
        cv[rest] = _cva_solve(m2[rest], kap, alpha[rest])
        if huge.any():
            sub = np.flatnonzero(rest)[huge]
            lf = _rho(m2[sub], np.inf, cv[sub])
            if np.any(kappa[sub] < (lf.x**2 * lf.p).sum(axis=1) / m2[sub] ** 2):
                warnings.warn("m2 is too large to reliably compute the critical value; assuming the kappa "
                              "constraint is not binding", RuntimeWarning, stacklevel=2)
    return cv.reshape(shape)


def cva(m2: float, kappa: float = np.inf, alpha: float = 0.05) -> CriticalValue:
    """Robust critical value cva_α(m₂, κ) and its least-favourable distribution (R's ``ebci::cva``).

    Parameters
    ----------
    m2 : float
        Second moment E[t²] ≥ 0 of the normalised bias t; 0 gives z_{1−α/2}, ``inf`` gives NaN.
    kappa : float, default inf
        Bound κ ≥ 1 on the kurtosis, E[t⁴] ≤ κ m₂². ``inf``: second moment only; 1: ``|t|`` = √m₂.
    alpha : float, default 0.05
        The interval ``estimate ± cv·w·σ`` has average coverage ≥ 1 − α.

    Returns
    -------
    CriticalValue
        ``cv``, ``alpha``, and the least-favourable distribution of t²: support ``x`` and
        probabilities ``p`` (for κ = 1 or m₂ = 0: ``x = (0, m₂)``, ``p = (0, 1)``).

    Examples
    --------
    >>> round(cva(4.0, kappa=3.0).cv, 6)
    4.619513
    """
    m2, kappa, alpha = float(m2), float(kappa), float(alpha)
    cv = float(cva_values(m2, kappa, alpha))
    if kappa == 1 or m2 == 0 or np.isinf(m2):
        return CriticalValue(float("nan") if np.isinf(m2) else cv, alpha, np.array([0.0, m2]), np.array([0.0, 1.0]))
    lf = _rho(np.array([m2]), np.inf if 1.0 / m2 < _TOL else kappa, np.array([cv]))
    return CriticalValue(cv, alpha, lf.x[0].copy(), lf.p[0].copy())


# ---------------------------------------------------------------------------------------------
# Length-optimal shrinkage
# ---------------------------------------------------------------------------------------------
def _fmin(fun: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
          tol: float = _FMIN_TOL) -> np.ndarray:
    """Brent's derivative-free minimiser (golden section with parabolic steps), run for many
    units at once; the same iteration as R's ``optimize()``, so it stops at the same local
    minimum. ``fun(x, k)`` evaluates the objectives of units k at x."""
    gold = 0.5 * (3.0 - np.sqrt(5.0))
    sqeps = np.sqrt(np.finfo(float).eps)
    a, b = np.array(a, float), np.array(b, float)
    x = a + gold * (b - a)
    w, v = x.copy(), x.copy()
    d, e = np.zeros_like(x), np.zeros_like(x)
    fx = np.asarray(fun(x, np.arange(x.size)), float).copy()
    fw, fv = fx.copy(), fx.copy()
    k = np.arange(x.size)
    while k.size:
        xk, ak, bk, wk, vk, fxk, fwk, fvk, dk, ek = (z[k] for z in (x, a, b, w, v, fx, fw, fv, d, e))
        xm = 0.5 * (ak + bk)
        tol1 = sqeps * np.abs(xk) + tol / 3.0
        t2 = 2.0 * tol1
        stop = np.abs(xk - xm) <= t2 - 0.5 * (bk - ak)
        keep = ~stop
        k = k[keep]
        if k.size == 0:
            break
        xk, ak, bk, wk, vk, fxk, fwk, fvk, dk, ek, xm, tol1, t2 = (
            z[keep] for z in (xk, ak, bk, wk, vk, fxk, fwk, fvk, dk, ek, xm, tol1, t2))
        fit = np.abs(ek) > tol1  # try a parabola through x, w, v
        r = np.where(fit, (xk - wk) * (fxk - fvk), 0.0)
        q = np.where(fit, (xk - vk) * (fxk - fwk), 0.0)
        p = np.where(fit, (xk - vk) * q - (xk - wk) * r, 0.0)
        q = np.where(fit, 2.0 * (q - r), 0.0)
        p = np.where(q > 0, -p, p)
        q = np.abs(q)
        r = np.where(fit, ek, 0.0)
        ek = np.where(fit, dk, ek)
        golden = (np.abs(p) >= np.abs(0.5 * q * r)) | (p <= q * (ak - xk)) | (p >= q * (bk - xk))
        with np.errstate(divide="ignore", invalid="ignore"):
            d_par = p / q
        u_par = xk + d_par
        near_end = (u_par - ak < t2) | (bk - u_par < t2)
        d_par = np.where(near_end, np.where(xk >= xm, -tol1, tol1), d_par)
        e_gold = np.where(xk < xm, bk - xk, ak - xk)
        ek = np.where(golden, e_gold, ek)
        dk = np.where(golden, gold * e_gold, d_par)
        u = np.where(np.abs(dk) >= tol1, xk + dk, np.where(dk > 0, xk + tol1, xk - tol1))
        fu = np.asarray(fun(u, k), float)
        better = fu <= fxk
        left = u < xk
        a_new = np.where(better, np.where(left, ak, xk), np.where(left, u, ak))
        b_new = np.where(better, np.where(left, xk, bk), np.where(left, bk, u))
        to_w = ~better & ((fu <= fwk) | (wk == xk))
        to_v = ~better & ~to_w & ((fu <= fvk) | (vk == xk) | (vk == wk))
        v_new = np.where(better | to_w, wk, np.where(to_v, u, vk))
        fv_new = np.where(better | to_w, fwk, np.where(to_v, fu, fvk))
        w_new = np.where(better, xk, np.where(to_w, u, wk))
        fw_new = np.where(better, fxk, np.where(to_w, fu, fwk))
        x[k], fx[k] = np.where(better, u, xk), np.where(better, fu, fxk)
        a[k], b[k], v[k], fv[k], w[k], fw[k], d[k], e[k] = a_new, b_new, v_new, fv_new, w_new, fw_new, dk, ek
    return x


def _interp_table(tbl_m2: np.ndarray, tbl_cv: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """R ebci's linear interpolation in a table of critical values (index of the first entry
    above m₂ and the one before it)."""
    above = tbl_m2[None, :] > m2[:, None]
    idx = np.argmax(above, axis=1)  # 0 when none is above, as R's which.max
    idx0 = np.maximum(idx - 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tbl_cv[idx0] + (m2 - tbl_m2[idx0]) / (tbl_m2[idx] - tbl_m2[idx0]) * (tbl_cv[idx] - tbl_cv[idx0])


def _w_opt(S: np.ndarray, kappa: float, alpha: float,
           table: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrinkage w minimising the half-length cva_α((1/w − 1)² S, κ)·w (in units of σ) for
    signal-to-noise ratios S = μ₂/σ²; m₂ searched in [0, 100²] or, given a table of critical
    values, in its range with interpolated critical values. Returns (w, half-length, m₂)."""
    S = np.asarray(S, float)
    w = np.zeros(S.size)
    m2 = np.full(S.size, np.inf)
    ok = np.flatnonzero(S > _TOL)
    if table is None:
        max_bias, min_bias = 100.0**2, 0.0
    else:
        max_bias, min_bias = float(np.max(table[0])), float(np.min(table[0]))
    if ok.size:
        s_ok = S[ok]

        def length(wv: np.ndarray, k: np.ndarray) -> np.ndarray:
            mm = (1.0 / wv - 1.0) ** 2 * s_ok[k]
            if table is None:
                return cva_values(mm, kappa, alpha) * wv
            return _interp_table(table[0], table[1], mm) * wv

        lo = 1.0 / (np.sqrt(max_bias / s_ok) + 1.0)
        hi = 1.0 / (np.sqrt(min_bias / s_ok) + 1.0)
        w[ok] = _fmin(length, lo, hi)
        m2[ok] = (1.0 / w[ok] - 1.0) ** 2 * s_ok
    half = cva_values(m2, kappa, alpha) * w
    if np.any(m2 > max_bias - 1e-4):
        warnings.warn("Corner solution: optimum reached at maximal normalized bias", RuntimeWarning, stacklevel=3)
    return w, half, m2


# ---------------------------------------------------------------------------------------------
# Moments of θ − X'δ
# ---------------------------------------------------------------------------------------------
class EBCIMoments(NamedTuple):
    """Result of :func:`ebci_moments`.

    Attributes
    ----------
    delta : ndarray, shape (p,)
        Weighted least-squares coefficients δ of the estimates on X.
    mu2 : ndarray, shape (2,)
        μ₂ = E[(θ − X'δ)²]: ``[estimate, uncorrected_estimate]`` (after / before the
        finite-sample correction), as R's ``ebci()$mu2``.
    kappa : ndarray, shape (2,)
        Kurtosis κ of θ − X'δ, same layout (the first entry is the given κ when one was passed).
    fitted : ndarray, shape (n,)
        X'δ, the point each estimate is shrunk toward.
    residuals : ndarray, shape (n,)
        Y − X'δ.
    """

    delta: np.ndarray
    mu2: np.ndarray
    kappa: np.ndarray
    fitted: np.ndarray
    residuals: np.ndarray


def _row_label(index: pd.Index | None, i: int) -> str:
    if index is None or isinstance(index, pd.RangeIndex):
        return f"row {i}"
    return f"row {i} (label {index[i]!r})"


def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _prepare(estimate, se, X, weights, index: pd.Index | None = None):
    y = np.asarray(estimate, dtype=float)
    if y.ndim != 1:
        raise DataValidationError(f"estimate must be one-dimensional, got shape {y.shape}")
    n = y.size
    if n < 2:
        raise DataValidationError(f"estimate must hold at least 2 units, got {n}")
    if not np.all(np.isfinite(y)):
        raise DataValidationError(f"estimate must be finite; first offending {_row_label(index, _first_bad(~np.isfinite(y)))}")
    s = np.asarray(se, dtype=float)
    if s.shape != (n,):
        raise DataValidationError(f"se must have the same length as estimate ({n}), got shape {s.shape}")
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        raise DataValidationError(f"se must be positive and finite; first offending {_row_label(index, _first_bad(bad))}")
    if weights is None:
        wgt = np.ones(n)
    else:
        wgt = np.asarray(weights, dtype=float)
        if wgt.shape != (n,):
            raise DataValidationError(f"weights must have the same length as estimate ({n}), got shape {wgt.shape}")
        bad = ~(np.isfinite(wgt) & (wgt >= 0))
        if bad.any():
            raise DataValidationError("weights must be non-negative and finite; first offending "
                             f"{_row_label(index, _first_bad(bad))}")
        if not np.any(wgt > 0):
            raise DataValidationError("weights must not all be zero")
    if X is None:
        x = np.ones((n, 1))
    else:
        x = np.asarray(X, dtype=float)
        if x.ndim != 2:
            raise DataValidationError(f"X must be a 2-D design matrix with one row per estimate (include a column of ones "
                             f"for an intercept), got shape {x.shape}")
        if x.shape[0] != n:
            raise DataValidationError(f"X must have one row per estimate ({n}), got {x.shape[0]} rows")
        bad = ~np.all(np.isfinite(x), axis=1)
        if bad.any():
            raise DataValidationError(f"X must be finite; first offending {_row_label(index, _first_bad(bad))}")
        if x.shape[1] and np.linalg.matrix_rank(x[wgt > 0] * np.sqrt(wgt[wgt > 0])[:, None]) < x.shape[1]:
            raise DataValidationError(f"X must have full column rank ({x.shape[1]} columns) on the rows with positive weight")
    return y, s, x, wgt


def _moments(eps: np.ndarray, se: np.ndarray, wgt: np.ndarray, fs_correction: str, kappa: float | None) -> np.ndarray:
    """R ebci's moment estimates: [μ₂, κ, uncorrected μ₂, uncorrected κ]."""
    def wmean(z):
        return np.sum(z * wgt) / np.sum(wgt)

    def wvar(z):  # variance of the weighted mean of z
        return np.sum(wgt**2 * (z**2 - wmean(z) ** 2)) / (np.sum(wgt) ** 2 - np.sum(wgt**2))

    def tmean(m, v):  # mean of N(m, v) truncated to (0, ∞)
        sd = np.sqrt(v)
        z = m / sd
        return m + sd * np.exp(-0.5 * z * z - 0.5 * np.log(2 * np.pi) - log_ndtr(z))

    w2 = eps**2 - se**2
    w4 = eps**4 - 6 * se**2 * eps**2 + 3 * se**4
    tmu2, tmu4 = wmean(w2), wmean(w4)
    n = eps.size
    trim2 = 2 * np.sum(wgt**2 * se**4) / n / (np.sum(wgt) * np.sum(wgt * se**2) / n)
    trim4 = 32 * np.sum(wgt**2 * se**8) / n / (np.sum(wgt) * np.sum(wgt * se**4) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if fs_correction == "none":
            mu2 = max(tmu2, 0.0)
        elif fs_correction == "PMT":
            mu2 = max(tmu2, trim2)
        else:
            mu2 = float(tmean(tmu2, wvar(w2)))
        if kappa is not None:
            kap = float(kappa)
        elif fs_correction == "none":
            kap = tmu4 / mu2**2
            kap = kap if np.isnan(kap) else max(kap, 1.0)
        elif fs_correction == "PMT":
            kap = max(tmu4 / mu2**2, 1 + trim4 / mu2**2)
        else:
            kap = float(1 + tmean(tmu4 - tmu2**2, wvar(w4 - 2 * mu2 * w2)) / mu2**2)
        return np.array([mu2, kap, tmu2, tmu4 / tmu2**2])


def _check_options(alpha: float, kappa: float | None, fs_correction: str) -> None:
    _check_alpha(alpha)
    if np.ndim(alpha) != 0:
        raise ParameterError("alpha must be a scalar")
    if kappa is not None and not (float(kappa) >= 1):
        raise ParameterError(f"kappa must be None (estimate it) or >= 1 (inf allowed), got {kappa!r}")
    if fs_correction not in FS_CORRECTIONS:
        raise ParameterError(f"fs_correction must be one of {FS_CORRECTIONS}, got {fs_correction!r}")


def ebci_moments(estimate, se, X=None, weights=None, fs_correction: str = "PMT",
                 kappa: float | None = None) -> EBCIMoments:
    """Regression δ and the moments μ₂, κ of θ − X'δ, as R's ``ebci()`` estimates them.

    δ is the weighted least-squares fit of the estimates on X. With residuals ε = Y − X'δ,
    ``μ̃₂ = Σ ω (ε² − σ²) / Σ ω`` and ``μ̃₄ = Σ ω (ε⁴ − 6σ²ε² + 3σ⁴) / Σ ω`` are
    unbiased for the second and fourth moments of θ − X'δ; the finite-sample correction keeps
    μ₂ away from 0 (and κ = μ₄/μ₂² ≥ 1).

    Parameters
    ----------
    estimate : array_like, shape (n,)
        Preliminary unbiased estimates Y (finite).
    se : array_like, shape (n,)
        Their standard errors σ (positive, finite).
    X : array_like, shape (n, p), optional
        Design matrix of the shrinkage target X'δ, used as given (include a column of ones for an
        intercept; p = 0 columns shrinks toward 0). Default: intercept only (weighted grand mean).
    weights : array_like, shape (n,), optional
        Non-negative weights ω of the regression and of the moments (R's ``weights``), e.g.
        ``1/se**2``. Default: equal weights.
    fs_correction : {"PMT", "FPLIB", "none"}
        Finite-sample correction: posterior mean truncation (``max(μ̃₂, 2Σω²σ⁴/(Σω·Σωσ²))``, and
        likewise for κ), the flat-prior limited-information Bayes posterior mean ("FPLIB", R's
        name), or truncation at μ₂ ≥ 0, κ ≥ 1 ("none").
    kappa : float, optional
        Use this κ instead of estimating it (reported first in ``kappa``).

    Returns
    -------
    EBCIMoments
        ``delta``, ``mu2`` = [estimate, uncorrected], ``kappa`` = [estimate, uncorrected],
        ``fitted`` = X'δ and ``residuals``.
    """
    _check_options(0.5, kappa, fs_correction)
    index = estimate.index if isinstance(estimate, pd.Series) else None
    y, s, x, wgt = _prepare(estimate, se, X, weights, index)
    return _fit_moments(y, s, x, wgt, fs_correction, kappa)


def _fit_moments(y, s, x, wgt, fs_correction, kappa) -> EBCIMoments:
    if x.shape[1]:
        sw = np.sqrt(wgt)
        delta = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)[0]
    else:
        delta = np.zeros(0)
    fitted = x @ delta
    eps = y - fitted
    mus = _moments(eps, s, wgt, fs_correction, kappa)
    return EBCIMoments(delta, mus[[0, 2]], mus[[1, 3]], fitted, eps)


# ---------------------------------------------------------------------------------------------
# Robust EBCIs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RobustEBCI:
    """Robust EBCIs from :func:`robust_ebci` (R's ``ebci()`` list).

    Attributes
    ----------
    frame : DataFrame
        One row per unit with R's columns, in R's order: ``w_eb`` (EB shrinkage μ₂/(μ₂ + σ²)),
        ``w_opt`` (length-optimal shrinkage), ``ncov_pa`` (maximal non-coverage of the parametric
        EBCI), ``len_eb``, ``len_op``, ``len_pa``, ``len_us`` (half-lengths of the robust EB,
        robust length-optimal, parametric EB and unshrunk intervals), ``th_us`` (= Y),
        ``th_eb``, ``th_op`` (the estimates they are centred at), ``se``, ``weights``,
        ``residuals`` (Y − X'δ). ``w_opt``, ``len_op``, ``th_op`` are NaN unless ``wopt=True``.
    mu2, kappa : ndarray, shape (2,)
        [estimate used, uncorrected estimate] of μ₂ and of κ.
    delta : ndarray, shape (p,)
        Regression coefficients of the shrinkage target X'δ.
    alpha : float
        Intervals have average coverage ≥ 1 − α.
    wopt : bool
        Whether length-optimal intervals were computed (the default of :meth:`confint`).
    """

    frame: pd.DataFrame
    mu2: np.ndarray
    kappa: np.ndarray
    delta: np.ndarray
    alpha: float
    wopt: bool = False

    def confint(self, kind: str | None = None) -> pd.DataFrame:
        """Intervals as a DataFrame: ``estimate`` and ``'5 %'``/``'95 %'``-style bounds.

        Parameters
        ----------
        kind : {"eb", "op", "pa", "us"}, optional
            Robust EBCI around the EB estimate (``th_eb ± len_eb``; default unless ``wopt``),
            robust length-optimal (``th_op ± len_op``; default with ``wopt=True``), parametric EB
            (``th_eb ± len_pa``, not robust) or unshrunk (``th_us ± len_us``).
        """
        kind = kind or ("op" if self.wopt else "eb")
        centre = {"eb": "th_eb", "op": "th_op", "pa": "th_eb", "us": "th_us"}
        if kind not in centre:
            raise ParameterError(f"kind must be one of {tuple(centre)}, got {kind!r}")
        if kind == "op" and not self.wopt:
            raise ParameterError("length-optimal intervals need robust_ebci(..., wopt=True)")
        lo_name, hi_name = _level_names(1.0 - self.alpha)
        est, half = self.frame[centre[kind]], self.frame[f"len_{kind}"]
        return pd.DataFrame({"estimate": est, lo_name: est - half, hi_name: est + half}, index=self.frame.index)


def robust_ebci(
    estimate,
    se,
    X=None,
    weights=None,
    alpha: float = 0.05,
    kappa: float | None = None,
    wopt: bool = False,
    fs_correction: str = "PMT",
) -> RobustEBCI:
    """Robust empirical-Bayes confidence intervals shrinking toward a regression (R's ``ebci()``).

    The EB estimate is ``X'δ + w_eb (Y − X'δ)`` with ``w_eb = μ₂/(μ₂ + σ²)``; its robust interval
    has half-length ``cva_α(σ²/μ₂, κ)·w_eb·σ`` (the normalised bias has m₂ = σ²/μ₂), and the
    intervals cover θ_i for at least a fraction 1 − α of the units on average, whatever the
    distribution of θ − X'δ with second moment μ₂ (and kurtosis κ).

    Parameters
    ----------
    estimate : array_like or Series, shape (n,)
        Preliminary unbiased estimates Y. A Series' index labels the rows of the result.
    se : array_like, shape (n,)
        Standard errors σ of the estimates (positive, finite); by position.
    X : array_like, shape (n, p), optional
        Design matrix of the shrinkage target, used as given (include a column of ones for an
        intercept; zero columns shrinks toward 0). Default: intercept only (weighted mean).
    weights : array_like, shape (n,), optional
        Weights for δ, μ₂ and κ (R's ``weights``; e.g. ``1/se**2``). Default: equal.
    alpha : float, default 0.05
        1 − α is the (average) coverage. Note R's ``ebci()`` defaults to 0.1.
    kappa : float, optional
        Kurtosis of θ − X'δ; None estimates it, ``np.inf`` uses only μ₂.
    wopt : bool, default False
        Also compute length-optimal robust EBCIs (shrinkage chosen per unit to minimise the
        interval length; with more than 30 units through a table of 503 critical values, as R).
    fs_correction : {"PMT", "FPLIB", "none"}
        Finite-sample correction of μ₂ and κ, see :func:`ebci_moments`.

    Returns
    -------
    RobustEBCI
        ``frame`` (R's ``df``), ``mu2``, ``kappa``, ``delta``, ``alpha``; ``confint()`` gives the
        intervals.

    Notes
    -----
    If μ₂ is estimated as 0 (only possible with ``fs_correction="none"``) all estimates are
    shrunk to X'δ with undefined robust lengths, and a warning is issued; R then reports the
    residual as ``th_eb``, here ``th_eb = th_op = X'δ``.

    References
    ----------
    Armstrong, Kolesár and Plagborg-Møller (2022), Econometrica 90(6), 2567–2602.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> se = rng.uniform(0.5, 2.0, 50); theta = rng.normal(1.0, 1.0, 50)
    >>> res = robust_ebci(theta + se * rng.normal(size=50), se, alpha=0.1)
    >>> list(res.confint().columns)
    ['estimate', '5 %', '95 %']
    """
    _check_options(alpha, kappa, fs_correction)
    alpha = float(alpha)
    index = estimate.index if isinstance(estimate, pd.Series) else None
    y, s, x, wgt = _prepare(estimate, se, X, weights, index)
    mom = _fit_moments(y, s, x, wgt, fs_correction, kappa)
    mu2, kap = float(mom.mu2[0]), float(mom.kappa[0])
    mu1, resid = mom.fitted, mom.residuals
    za = float(ndtri(1.0 - alpha / 2.0))
    n = y.size
    nan = np.full(n, np.nan)
    if mu2 == 0:
        warnings.warn("mu2 estimate is 0: every estimate is shrunk to the regression fit", RuntimeWarning, stacklevel=2)
        cols = dict(w_eb=np.zeros(n), w_opt=np.zeros(n), ncov_pa=nan, len_eb=nan, len_op=nan, len_pa=nan,
                    len_us=za * s, th_us=y, th_eb=mu1, th_op=mu1.copy(), se=s, weights=wgt, residuals=resid)
    else:
        S = mu2 / s**2
        w_eb = S / (1.0 + S)
        m2 = 1.0 / S
        len_eb = cva_values(m2, kap, alpha) * w_eb * s
        th_eb = mu1 + w_eb * resid
        if wopt:
            table = None
            if n > 30:
                m_ext = _w_opt(mu2 / np.array([np.min(s), np.max(s)]) ** 2, kap, alpha)[2]
                tbl_m2 = np.concatenate([[m_ext[0] * 0.95], np.linspace(m_ext[0], m_ext[1], 501), [m_ext[1] * 1.05]])
                table = (tbl_m2, cva_values(tbl_m2, kap, alpha))
            w_op, half_op, _ = _w_opt(S, kap, alpha, table)
            len_op, th_op = half_op * s, mu1 + w_op * resid
        else:
            w_op, len_op, th_op = nan, nan.copy(), nan.copy()
        m2_pa = s**2 / mu2
        ncov_pa = _rho(m2_pa, kap, za * np.sqrt(1.0 + m2_pa)).value
        cols = dict(w_eb=w_eb, w_opt=w_op, ncov_pa=ncov_pa, len_eb=len_eb, len_op=len_op,
                    len_pa=np.sqrt(w_eb) * za * s, len_us=za * s, th_us=y, th_eb=th_eb, th_op=th_op,
                    se=s, weights=wgt, residuals=resid)
    frame = pd.DataFrame(cols, index=index if index is not None else pd.RangeIndex(n))[list(FRAME_COLUMNS)]
    return RobustEBCI(frame, mom.mu2.copy(), mom.kappa.copy(), mom.delta, alpha, bool(wopt))
