"""Simulated multi-site data for late fusion (the spec's Scenarios 1–4, "in the spirit of" seed 000).

What to use when:
- Scenario 1 — scalar effect (ATE / PLR): θ_k = θ_0 + η ξ_k, ξ_k ~ N(0, 1);
- Scenario 2 — linear CATE τ_k(x) = (1, x)'θ_k, θ_k = θ_0 + η u_k with u_k uniform on the sphere;
- Scenario 3 — Scenario 1 or 2 plus a fraction ``outlier_frac`` of sites moved by 5·u_k;
- Scenario 4 — Scenario 1 with the nuisance heterogeneity (site offsets in propensity, outcome
  and covariate means) scaled by ``nuisance_shift`` (0 = identical nuisances across sites).

Common design: K sites, n_k ~ Uniform{40..80}, X ~ N(μ_k, I_p) with μ_k ~ N(0, 0.25 I),
e_k(x) = expit(α_k + x'β) with α_k ~ N(0, 0.25), Y = g(x) + s_k + D τ_k(x) + N(0, 1) with
g(x) = sin(x1) + x2² − 1 + 0.5 x3 x4.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetmtl.data.multisite import MultiSiteData

PROPENSITY_SLOPE = np.array([0.6, -0.4, 0.3, 0.0, 0.2])


@dataclass(frozen=True)
class SimulatedSites:
    """A simulated data set with its truth. ``theta`` is K × d on the raw basis φ(x) = (1, x)
    for CATE (just θ_k for scalar scenarios); ``outlier`` marks moved sites."""

    data: MultiSiteData
    theta: np.ndarray
    theta0: np.ndarray
    outlier: np.ndarray
    scenario: int
    eta: float

    def theta_standardized(self, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """True CATE coefficients on the standardised basis (1, (z − center)/scale)."""
        if self.theta.shape[1] == 1:
            return self.theta
        a, b = self.theta[:, :1], self.theta[:, 1:]
        return np.column_stack([a[:, 0] + b @ center, b * scale])


def _unit_vectors(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    u = rng.normal(size=(k, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def g_outcome(X: np.ndarray) -> np.ndarray:
    """The common nonlinear outcome surface g(x)."""
    return np.sin(X[:, 0]) + X[:, 1] ** 2 - 1.0 + 0.5 * X[:, 2] * X[:, 3]


def make_latefusion_data(
    scenario: int = 1,
    n_sites: int = 10,
    eta: float = 0.5,
    n_range: tuple[int, int] = (40, 80),
    p: int = 5,
    theta0: float | np.ndarray = 1.0,
    outlier_frac: float = 0.1,
    nuisance_shift: float = 1.0,
    cate: bool | None = None,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedSites:
    """Draw one data set of the given scenario (see module docs).

    ``theta0`` is the common centre: a scalar, or for CATE a length-(p+1) vector (a scalar gives
    the intercept, with slopes (0.5, −0.3) on x1, x2). ``cate`` (default: Scenario 2 only) makes
    Scenario 3 a CATE scenario. ``outlier_frac`` is used by Scenario 3 only.
    """
    if scenario not in (1, 2, 3, 4):
        raise ValueError(f"scenario must be 1, 2, 3 or 4, got {scenario}")
    if p < 4:
        raise ValueError("p must be at least 4 (g uses x1..x4)")
    lo, hi = n_range
    if not 2 <= lo <= hi:
        raise ValueError(f"n_range must satisfy 2 <= low <= high, got {n_range}")
    rng = np.random.default_rng(random_state)
    K = int(n_sites)
    cate = scenario == 2 if cate is None else bool(cate)
    if cate and scenario in (1, 4):
        raise ValueError(f"Scenario {scenario} has a scalar effect; use scenario 2 or 3 for a CATE")
    d_theta = p + 1 if cate else 1
    centre = np.zeros(d_theta)
    if np.ndim(theta0) == 0:
        centre[0] = float(theta0)
        if cate:
            centre[1:3] = (0.5, -0.3)
    else:
        centre = np.asarray(theta0, float)
        if centre.shape != (d_theta,):
            raise ValueError(f"theta0 must have length {d_theta}")
    if cate:
        theta = centre + eta * _unit_vectors(rng, K, d_theta)
    else:
        theta = centre + eta * rng.normal(size=(K, 1))
    outlier = np.zeros(K, dtype=bool)
    if scenario == 3:
        n_out = int(round(outlier_frac * K))
        outlier[rng.choice(K, n_out, replace=False)] = True
        theta[outlier] = centre + 5.0 * _unit_vectors(rng, n_out, d_theta)

    shift = nuisance_shift if scenario == 4 else 1.0
    beta = np.zeros(p)
    beta[: min(p, PROPENSITY_SLOPE.size)] = PROPENSITY_SLOPE[:p]
    ys, ds, Xs, sites = [], [], [], []
    for k in range(K):
        n_k = int(rng.integers(lo, hi + 1))
        mu_k = shift * rng.normal(scale=0.5, size=p)
        alpha_k = shift * rng.normal(scale=0.5)
        s_k = shift * rng.normal(scale=0.5)
        X = mu_k + rng.normal(size=(n_k, p))
        e = 1.0 / (1.0 + np.exp(-(alpha_k + X @ beta)))
        d = (rng.random(n_k) < e).astype(float)
        while d.min() == d.max():  # redraw until both arms are present
            d = (rng.random(n_k) < e).astype(float)
        tau = theta[k, 0] + (X @ theta[k, 1:] if cate else 0.0)
        ys.append(g_outcome(X) + s_k + d * tau + rng.normal(size=n_k))
        ds.append(d)
        Xs.append(X)
        sites.append(np.full(n_k, f"site{k + 1:02d}", dtype=object))
    X = np.vstack(Xs)
    x_cols = [f"x{j + 1}" for j in range(p)]
    data = MultiSiteData(
        np.concatenate(ys), np.concatenate(ds), X, np.concatenate(sites),
        Z=X.copy() if cate else None, x_cols=x_cols, z_cols=x_cols if cate else None,
    )
    data.notes = [f"simulated late-fusion Scenario {scenario}, eta={eta}"]
    return SimulatedSites(data=data, theta=theta, theta0=centre, outlier=outlier, scenario=scenario, eta=float(eta))
