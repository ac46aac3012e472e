"""Simulated multi-site data for late fusion (scenarios in the spirit of the late-fusion paper,
Bhattacharya, Chen & Liang, arXiv 2507.07941).

What to use when:

- Scenario 1 — scalar effect (ATE / PLR): θ_k = θ_0 + η ξ_k, ξ_k ~ N(0, 1);
- Scenario 2 — linear CATE τ_k(x) = (1, x)'θ_k, θ_k = θ_0 + η u_k with u_k uniform on the sphere;
- Scenario 3 — Scenario 1 or 2 plus a fraction ``outlier_frac`` of sites moved by 5·u_k;
- Scenario 4 — Scenario 1 with the nuisance heterogeneity (site offsets in propensity, outcome
  and covariate means) scaled by ``nuisance_shift`` (0 = identical nuisances across sites);
- Scenario 5 — the smooth DML scenario below (one site: :func:`simulate_dml_site`; many:
  :func:`make_dml_sites`): smooth nonlinear nuisances, heteroscedastic noise, n_k in the hundreds.

Common design: K sites, n_k ~ Uniform{40..80}, X ~ N(μ_k, I_p) with μ_k ~ N(0, 0.25 I),
e_k(x) = expit(α_k + x'β) with α_k ~ N(0, 0.25), Y = g(x) + s_k + D τ_k(x) + N(0, 1) with
g(x) = sin(x1) + x2² − 1 + 0.5 x3 x4.

Smooth DML scenario (:func:`simulate_dml_site` for one site, :func:`make_dml_sites` for many;
``scenario = 5`` in :class:`SimulatedSites`) — the design on which the defaults of
:class:`~hetmtl.latefusion.SiteDML` were chosen (``benchmarks/bench_dml_defaults.py``). Nuisances
are smooth but nonlinear in several covariates, with one interaction, and the noise is
heteroscedastic:

- X ~ N(μ, Σ), Σ_jl = ρ^|j−l| (ρ = 0.3), p ≥ 5 (x6.. are irrelevant);
- g(x) = 1.5 tanh(x1) + 0.5 x2² + 0.8 cos(x3) + 0.5 x4 + 0.5 x1 x5;
- noise SD σ_y(x) = 0.5 + expit(1.5 x1 − 0.5) ∈ (0.5, 1.5);
- ``model="ate"``: D ~ Bernoulli(e(x)), logit e(x) = α + 0.9 tanh(1.5 x1) + 0.6 sin(x2) + 0.4 x3
  − 0.4 cos(x4) (overlap at α = 0: e ∈ [0.06, 0.92] for 99.8 % of units, range ≈ [0.03, 0.97]),
  and
  Y = g(X) + s + D τ(X) + σ_y(X) ε with τ(x) = θ + 0.5 (x3 − μ3) + 0.5 (sin x2 − sin(μ2) e^{−1/2}),
  so the ATE E τ(X) is exactly θ;
- ``model="plr"``: D = m(X) + a + σ_d(X) v, m(x) = 0.8 tanh(1.5 x1) + 0.5 sin(x2) + 0.4 x3
  − 0.25 (x4² − 1), σ_d(x) = 0.4 + 0.6 expit(x3), and Y = θ D + g(X) + s + σ_y(X) ε;
- ε, v ~ N(0, 1) independent. The true nuisances (``l``, ``m`` for plr; ``g0``, ``g1``, ``m`` for
  ate, keyed as :meth:`SiteDML.fit`'s ``predictions``) come with the data, for oracle fits.

Across sites (:func:`make_dml_sites`): θ_k = θ_0 + η ξ_k, μ_k ~ N(0, 0.25 I), α_k (ate) or a_k
(plr) and s_k ~ N(0, 0.25), all scaled by ``nuisance_shift``; one site alone
(:func:`simulate_dml_site`) has μ = 0, α = a = s = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from hetmtl._validation import check_random_state
from hetmtl.data.multisite import MultiSiteData
from hetmtl.exceptions import ParameterError

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
    #: true nuisance values per row of ``data`` (smooth DML scenario only; empty otherwise)
    nuisances: dict = field(default_factory=dict)

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
        raise ParameterError(f"scenario must be 1, 2, 3 or 4, got {scenario}")
    if p < 4:
        raise ParameterError("p must be at least 4 (g uses x1..x4)")
    lo, hi = n_range
    if not 2 <= lo <= hi:
        raise ParameterError(f"n_range must satisfy 2 <= low <= high, got {n_range}")
    rng = check_random_state(random_state)
    K = int(n_sites)
    cate = scenario == 2 if cate is None else bool(cate)
    if cate and scenario in (1, 4):
        raise ParameterError(f"Scenario {scenario} has a scalar effect; use scenario 2 or 3 for a CATE")
    d_theta = p + 1 if cate else 1
    centre = np.zeros(d_theta)
    if np.ndim(theta0) == 0:
        centre[0] = float(theta0)
        if cate:
            centre[1:3] = (0.5, -0.3)
    else:
        centre = np.asarray(theta0, float)
        if centre.shape != (d_theta,):
            raise ParameterError(f"theta0 must have length {d_theta}")
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


# ====================================================================== smooth DML scenario
SMOOTH_MODELS = ("ate", "plr")


@dataclass(frozen=True)
class SimulatedSite:
    """One site of the smooth DML scenario: arrays ``y``, ``d``, ``X``, the true ``theta`` (the
    site's ATE or PLR slope) and the true nuisance values per row (``nuisances``, keyed as
    :meth:`SiteDML.fit`'s ``predictions``: ``l``, ``m`` for plr; ``g0``, ``g1``, ``m`` for ate)."""

    y: np.ndarray
    d: np.ndarray
    X: np.ndarray
    theta: float
    model: str
    nuisances: dict


def _smooth_covariates(rng: np.random.Generator, n: int, p: int, mu: np.ndarray, rho: float) -> np.ndarray:
    idx = np.arange(p)
    chol = np.linalg.cholesky(rho ** np.abs(np.subtract.outer(idx, idx)))
    return mu + rng.normal(size=(n, p)) @ chol.T


def _smooth_g(X: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4, x5 = X[:, :5].T
    return 1.5 * np.tanh(x1) + 0.5 * x2**2 + 0.8 * np.cos(x3) + 0.5 * x4 + 0.5 * x1 * x5


def _smooth_draw(
    rng: np.random.Generator, n: int, model: str, p: int, theta: float, rho: float,
    mu: np.ndarray, alpha: float, offset: float,
) -> SimulatedSite:
    X = _smooth_covariates(rng, n, p, mu, rho)
    x1, x2, x3, x4 = X[:, :4].T
    g = _smooth_g(X) + offset
    sd_y = 0.5 + expit(1.5 * x1 - 0.5)
    if model == "ate":
        e = expit(alpha + 0.9 * np.tanh(1.5 * x1) + 0.6 * np.sin(x2) + 0.4 * x3 - 0.4 * np.cos(x4))
        d = (rng.random(n) < e).astype(float)
        # the mean of τ(X) is θ exactly: E x3 = μ3, E sin(x2) = sin(μ2) exp(−Var(x2)/2), Var(x2) = 1
        tau = theta + 0.5 * (x3 - mu[2]) + 0.5 * (np.sin(x2) - np.sin(mu[1]) * np.exp(-0.5))
        y = g + d * tau + sd_y * rng.normal(size=n)
        nuisances = {"g0": g, "g1": g + tau, "m": e}
    else:
        m = alpha + 0.8 * np.tanh(1.5 * x1) + 0.5 * np.sin(x2) + 0.4 * x3 - 0.25 * (x4**2 - 1.0)
        d = m + (0.4 + 0.6 * expit(x3)) * rng.normal(size=n)
        y = theta * d + g + sd_y * rng.normal(size=n)
        nuisances = {"l": theta * m + g, "m": m}
    return SimulatedSite(y=y, d=d, X=X, theta=float(theta), model=model, nuisances=nuisances)


def _check_smooth(model: str, p: int) -> None:
    if model not in SMOOTH_MODELS:
        raise ParameterError(f"model must be one of {SMOOTH_MODELS}, got {model!r}")
    if p < 5:
        raise ParameterError(f"p must be at least 5 (the nuisances use x1..x5), got {p}")


def simulate_dml_site(
    n: int = 400,
    model: str = "ate",
    p: int = 6,
    theta: float = 1.0,
    rho: float = 0.3,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedSite:
    """One site of the smooth DML scenario (module docs) with μ = 0 and no site offsets.

    ``model="ate"``: confounded binary treatment, ``theta`` is the ATE; ``model="plr"``:
    continuous treatment, ``theta`` the partially linear slope. An ate draw with one arm only
    is repeated.
    """
    _check_smooth(model, p)
    if n < 2:
        raise ParameterError(f"n must be at least 2, got {n}")
    rng = check_random_state(random_state)
    while True:
        site = _smooth_draw(rng, int(n), model, int(p), float(theta), float(rho), np.zeros(p), 0.0, 0.0)
        if model == "plr" or site.d.min() != site.d.max():
            return site


def make_dml_sites(
    n_sites: int = 10,
    model: str = "ate",
    eta: float = 0.5,
    n_range: tuple[int, int] = (200, 400),
    p: int = 6,
    theta0: float = 1.0,
    nuisance_shift: float = 1.0,
    rho: float = 0.3,
    random_state: int | np.random.Generator | None = None,
) -> SimulatedSites:
    """Many sites of the smooth DML scenario (module docs): θ_k = θ_0 + η ξ_k, n_k ~ U{n_range},
    site shifts of covariate means, propensity (or treatment mean) and outcome level scaled by
    ``nuisance_shift``. Returns :class:`SimulatedSites` with ``scenario=5`` and the true nuisance
    values per row in ``nuisances``."""
    _check_smooth(model, p)
    lo, hi = n_range
    if not 2 <= lo <= hi:
        raise ParameterError(f"n_range must satisfy 2 <= low <= high, got {n_range}")
    rng = check_random_state(random_state)
    K = int(n_sites)
    theta = float(theta0) + eta * rng.normal(size=(K, 1))
    parts: list[SimulatedSite] = []
    sites = []
    for k in range(K):
        n_k = int(rng.integers(lo, hi + 1))
        mu = nuisance_shift * rng.normal(scale=0.5, size=p)
        alpha, offset = nuisance_shift * rng.normal(scale=0.5, size=2)
        while True:
            site = _smooth_draw(rng, n_k, model, int(p), float(theta[k, 0]), float(rho), mu, alpha, offset)
            if model == "plr" or site.d.min() != site.d.max():
                break
        parts.append(site)
        sites.append(np.full(n_k, f"site{k + 1:02d}", dtype=object))
    x_cols = [f"x{j + 1}" for j in range(p)]
    data = MultiSiteData(
        np.concatenate([s.y for s in parts]), np.concatenate([s.d for s in parts]),
        np.vstack([s.X for s in parts]), np.concatenate(sites), x_cols=x_cols,
    )
    data.notes = [f"simulated smooth DML scenario ({model}), eta={eta}"]
    nuisances = {key: np.concatenate([s.nuisances[key] for s in parts]) for key in parts[0].nuisances}
    return SimulatedSites(data=data, theta=theta, theta0=np.array([float(theta0)]), outlier=np.zeros(K, dtype=bool),
                          scenario=5, eta=float(eta), nuisances=nuisances)
