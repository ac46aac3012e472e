"""Joint (simultaneous) confidence intervals over several coefficients.

Three sup-t critical values, each the ``level`` quantile of max_j |T_j| over coefficients j:

- :func:`multiplier_critical_value` — multiplier bootstrap of the studentised influence values
  (DoubleML's ``bootstrap()`` + ``confint(joint=True)``): T*_j = Σ_i ξ_i IF_ij / (n se_j) with
  ξ_i i.i.d. N(0, 1) (``"normal"``), exp(1) − 1 (``"bayes"``) or Mammen's two-point law
  (``"wild"``); independent blocks (sites) draw independent multipliers;
- :func:`gaussian_critical_value` — simulation from an estimated covariance matrix (for fused
  estimates, which have no per-observation scores);
- :func:`draws_critical_value` — from bootstrap draws of the estimates themselves.

The simultaneous interval is ``estimate ± c·se`` for every coefficient.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hetmtl._validation import check_choice, check_int, check_level
from hetmtl.exceptions import ParameterError

MULTIPLIERS = ("normal", "bayes", "wild")
#: Multipliers drawn per block of bootstrap replications (memory bound: chunk × n floats).
_CHUNK = 256


def check_n_boot(n_boot, name: str = "n_boot", low: int = 100) -> int:
    """Bootstrap replications for a critical value: an integer >= ``low`` (a quantile from fewer
    draws is too noisy to report)."""
    return check_int(n_boot, name, low=low, high=10_000_000)  # type: ignore[return-value]


def _weights(rng: np.random.Generator, size: tuple[int, int], method: str) -> np.ndarray:
    if method == "normal":
        return rng.standard_normal(size)
    if method == "bayes":
        return rng.standard_exponential(size) - 1.0
    s5 = np.sqrt(5.0)  # Mammen: (1 − √5)/2 with prob. (√5 + 1)/(2√5), else (1 + √5)/2
    lo, hi = (1.0 - s5) / 2.0, (1.0 + s5) / 2.0
    return np.where(rng.random(size) < (s5 + 1.0) / (2.0 * s5), lo, hi)


def multiplier_max_t(influence: Sequence[np.ndarray], se: Sequence[np.ndarray], n_boot: int,
                     rng: np.random.Generator, method: str = "normal") -> np.ndarray:
    """Bootstrap draws of max_j |T*_j| over every coefficient of every block.

    Parameters
    ----------
    influence : sequence of arrays (n_b, d_b)
        Influence values IF_i of each independent block (θ̂ − θ ≈ mean_i IF_i).
    se : sequence of arrays (d_b,)
        Standard errors of the block's estimates (the ones the intervals use).
    n_boot : int
        Replications.
    rng : numpy.random.Generator
        Source of the multipliers.
    method : {"normal", "bayes", "wild"}
        Multiplier law.

    Returns
    -------
    numpy.ndarray
        Shape (n_boot,).
    """
    check_choice(method, "method", MULTIPLIERS)
    out = np.zeros(n_boot)
    for IF, s in zip(influence, se):
        IF = np.asarray(IF, float)
        s = np.asarray(s, float)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ParameterError("joint intervals need positive, finite standard errors")
        scaled = IF / (IF.shape[0] * s)
        for start in range(0, n_boot, _CHUNK):
            stop = min(start + _CHUNK, n_boot)
            t = _weights(rng, (stop - start, IF.shape[0]), method) @ scaled
            np.maximum(out[start:stop], np.abs(t).max(axis=1), out=out[start:stop])
    return out


def multiplier_critical_value(influence: Sequence[np.ndarray], se: Sequence[np.ndarray], level: float, n_boot: int,
                              rng: np.random.Generator, method: str = "normal") -> float:
    """The ``level`` quantile of :func:`multiplier_max_t`."""
    level = check_level(level)
    return float(np.quantile(multiplier_max_t(influence, se, n_boot, rng, method), level))


def gaussian_critical_value(cov: np.ndarray, level: float, n_boot: int, rng: np.random.Generator) -> float:
    """Sup-t critical value of N(0, cov): the ``level`` quantile of max_j |Z_j|/√cov_jj over draws.

    A (near-)singular covariance is handled through its eigen-decomposition (negative
    eigenvalues from rounding are set to 0)."""
    level = check_level(level)
    cov = np.asarray(cov, float)
    sd = np.sqrt(np.diag(cov))
    if not np.all(np.isfinite(sd)) or np.any(sd <= 0):
        raise ParameterError("joint intervals need positive, finite standard errors")
    corr = cov / np.outer(sd, sd)
    vals, vecs = np.linalg.eigh(0.5 * (corr + corr.T))
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        stop = min(start + _CHUNK, n_boot)
        z = rng.standard_normal((stop - start, root.shape[1])) @ root.T
        out[start:stop] = np.abs(z).max(axis=1)
    return float(np.quantile(out, level))


def draws_critical_value(draws: np.ndarray, centre: np.ndarray, sd: np.ndarray, level: float) -> float:
    """Sup-t critical value from bootstrap draws (B, m): the ``level`` quantile of
    max_j |draw_j − centre_j|/sd_j."""
    level = check_level(level)
    draws = np.asarray(draws, float)
    sd = np.asarray(sd, float)
    ok = sd > 0
    if not ok.any():
        raise ParameterError("joint intervals need at least one coefficient with a positive bootstrap spread")
    t = np.abs(draws[:, ok] - np.asarray(centre, float)[ok]) / sd[ok]
    return float(np.quantile(t.max(axis=1), level))
