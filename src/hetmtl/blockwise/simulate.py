"""Simulation designs of the MTL-HMB paper (Sui, Xu, Bai & Qu 2025, seed 002).

Use :func:`simulate_blockwise` for one data set of the paper's data-generating process (DGP) and
:func:`setting_params` / :data:`SETTINGS` for the parameter values of Settings A-F (§4.1, Tables
2-7), the multi-task design (A.2, Table 8), the linear DGP (A.7, Table 9) and the ablation design
(A.3, Figure 8).

DGP (two or more tasks). Task t draws all p = p_0 + sum_s p_s features from N(0, Sigma(rho_t)) with
Sigma(rho)_ij = rho^(0.01 |i-j|) (optionally X <- X + 0.3 sin X, the authors' non-Gaussian
variant) and

    y^t = alpha * sum_d v_cd x_d^2 / p + (1 - alpha) * sum_d v_td x_d / p + eps_t,  eps_t ~ N(0, sigma_t^2)

(``linear=True`` replaces x_d^2 by x_d in the shared term); v_c, v_t ~ N(-10, 10^2) once per
replicate. The sums run over all p features, including the blocks the task does not observe.
Task t observes the anchor x_0 and its own block x_t only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hetmtl.data.blockwise import BlockwiseData


@dataclass
class SimulatedBlockwise:
    """A simulated data set: the observed :class:`BlockwiseData`, the complete features of every
    task (``X_full[t]``, for checking imputations), the noiseless means and the DGP parameters."""

    data: BlockwiseData
    X_full: list[np.ndarray]
    mean: list[np.ndarray]
    params: dict = field(default_factory=dict)


def _per_task(name: str, value, T: int) -> list:
    if np.ndim(value) == 0:
        return [value] * T
    value = list(value)
    if len(value) != T:
        raise ValueError(f"{name} has {len(value)} values for {T} tasks")
    return value


def exchangeable_cov(p: int, rho: float) -> np.ndarray:
    """Sigma(rho)_ij = rho ** (0.01 |i - j|), the paper's covariance."""
    idx = np.arange(p)
    return rho ** (0.01 * np.abs(idx[:, None] - idx[None, :]))


def simulate_blockwise(
    n: int | Sequence[int] = 300,
    p0: int = 100,
    p_private: int | Sequence[int] = 25,
    rho: float | Sequence[float] = (0.95, 0.7),
    alpha: float = 0.3,
    sigma: float | Sequence[float] = 0.1,
    n_tasks: int | None = None,
    linear: bool = False,
    gaussian: bool = True,
    seed: int | np.random.Generator | None = None,
) -> SimulatedBlockwise:
    """One data set of the paper's DGP. ``n``, ``p_private``, ``rho`` and ``sigma`` are scalars or
    per-task sequences; ``n_tasks`` defaults to the length of ``rho`` (2 for a scalar)."""
    if n_tasks is None:
        n_tasks = len(rho) if np.ndim(rho) else 2
    T = int(n_tasks)
    if T < 2:
        raise ValueError("n_tasks must be at least 2")
    ns = [int(v) for v in _per_task("n", n, T)]
    ps = [int(v) for v in _per_task("p_private", p_private, T)]
    rhos = [float(v) for v in _per_task("rho", rho, T)]
    sigmas = [float(v) for v in _per_task("sigma", sigma, T)]
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rng = np.random.default_rng(seed)
    p = p0 + sum(ps)
    starts = np.concatenate([[0, p0], p0 + np.cumsum(ps)])
    v_c = rng.normal(-10.0, 10.0, p)
    v_t = [rng.normal(-10.0, 10.0, p) for _ in range(T)]
    X_full, mean, blocks, ys = [], [], [], []
    for t in range(T):
        L = np.linalg.cholesky(exchangeable_cov(p, rhos[t]))
        X = rng.standard_normal((ns[t], p)) @ L.T
        if not gaussian:
            X = X + 0.3 * np.sin(X)
        shared = X if linear else X**2
        mu = alpha * shared @ v_c / p + (1.0 - alpha) * X @ v_t[t] / p
        y = mu + rng.normal(0.0, sigmas[t], ns[t])
        X_full.append(X)
        mean.append(mu)
        ys.append(y)
        row = [X[:, :p0]] + [X[:, starts[s]:starts[s + 1]] if s == t + 1 else None for s in range(1, T + 1)]
        blocks.append(row)
    data = BlockwiseData(blocks, ys)
    params = dict(n=ns, p0=p0, p_private=ps, rho=rhos, alpha=alpha, sigma=sigmas, n_tasks=T,
                  linear=linear, gaussian=gaussian, v_c=v_c, v_t=v_t)
    return SimulatedBlockwise(data, X_full, mean, params)


_BASE = dict(n=300, p0=100, p_private=25, alpha=0.3, sigma=0.1)
_HET = dict(_BASE, rho=(0.95, 0.7))

#: Settings of the paper: what varies, its values, the table, and the fixed values. Where the paper
#: leaves a value unstated the choice is marked in ``note``.
SETTINGS: dict[str, dict] = {
    "A": dict(vary="rho1=rho2", values=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], table=2, base=_BASE),
    "B": dict(vary="rho2", values=[0.5, 0.6, 0.7, 0.8, 0.9], table=3, base=dict(_BASE, rho=(0.95, None))),
    "C": dict(vary="alpha", values=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], table=4, base=dict(_BASE, rho=(0.8, 0.8))),
    "D": dict(vary="n1=n2", values=[100, 200, 300, 400, 500, 600], table=5, base=_HET),
    "E": dict(vary="p1=p2", values=[25, 50, 75, 100], table=6, base=_HET),
    "F": dict(vary="sigma1", values=[0.1, 0.2, 0.3, 0.4, 0.5], table=7, base=_HET),
    "T": dict(vary="n_tasks", values=[2, 3, 4], table=8, base=dict(_BASE, p0=125),
              note="A.2: p0 = 125, rho_1 = 0.95, rho_t = 0.9 otherwise; T = 2 uses the same values (assumed)"),
    "linear": dict(vary="linear", values=[True], table=9, base=_HET,
                   note="A.7 keeps 'other parameters unchanged'; the rho = (0.95, 0.7) base is assumed"),
    "ablation": dict(vary="n2", values=[100, 200, 300, 400], table="Figure 8",
                     base=dict(_BASE, rho=(0.8, 0.6))),
}


def setting_params(setting: str, value) -> dict:
    """Keyword arguments of :func:`simulate_blockwise` for one row of a paper setting."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {sorted(SETTINGS)}")
    spec = SETTINGS[setting]
    kw = {k: v for k, v in spec["base"].items()}
    if setting == "A":
        kw["rho"] = (float(value), float(value))
    elif setting == "B":
        kw["rho"] = (0.95, float(value))
    elif setting == "C":
        kw["alpha"] = float(value)
    elif setting == "D":
        kw["n"] = int(value)
    elif setting == "E":
        kw["p_private"] = int(value)
    elif setting == "F":
        kw["sigma"] = (float(value), 0.1)
    elif setting == "T":
        T = int(value)
        kw["rho"] = tuple([0.95] + [0.9] * (T - 1))
        kw["n_tasks"] = T
    elif setting == "linear":
        kw["linear"] = bool(value)
    elif setting == "ablation":
        kw["n"] = (300, int(value))
    return kw
