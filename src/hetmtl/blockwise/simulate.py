"""Simulation designs of the MTL-HMB paper (Sui, Xu, Bai & Qu 2025, arXiv 2505.24413).

Use :func:`simulate_blockwise` for one data set of the paper's data-generating process (DGP) and
:func:`setting_params` / :data:`SETTINGS` for the parameter values of Settings A-F (§4.1, Tables
2-7), the multi-task design (A.2, Table 8), the linear DGP (A.7, Table 9) and the ablation design
(A.3, Figure 8).

DGP (two or more tasks). Task t draws all p = p_0 + sum_s p_s features from N(0, Sigma(rho_t)) with
Sigma(rho)_ij = rho^(0.01 abs(i - j)) (optionally X <- X + 0.3 sin X, the authors' non-Gaussian
variant) and::

    y^t = alpha * sum_d v_cd x_d^2 / p + (1 - alpha) * sum_d v_td x_d / p + eps_t,  eps_t ~ N(0, sigma_t^2)

(``linear=True`` replaces x_d^2 by x_d in the shared term); v_c, v_t ~ N(-10, 10^2) once per
replicate. The sums run over all p features, including the blocks the task does not observe.
Task t observes the anchor x_0 and its own block x_t only.

Because y depends on blocks a task never observes, no predictor reaches sigma_t: :func:`bayes_floor`
gives the exact Bayes floor RMSE, sqrt(E[(mu - E[mu | x_0, x_t])^2] + sigma_t^2), of a replicate
(the same seed draws the same coefficients as :func:`simulate_blockwise`), and
:func:`bayes_predict` the Bayes predictor E[mu | x_0, x_t].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hetmtl.data.blockwise import BlockwiseData


@dataclass
class SimulatedBlockwise:
    """A simulated data set.

    Parameters
    ----------
    data : BlockwiseData
        The observed blocks.
    X_full : list of numpy.ndarray
        The complete features of every task, for checking imputations.
    mean : list of numpy.ndarray
        The noiseless means of every task.
    params : dict
        The DGP parameters (including the drawn coefficients ``v_c``, ``v_t``).
    """

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


def _task_arguments(n, p_private, rho, alpha, sigma, n_tasks) -> tuple[int, list, list, list, list]:
    """The DGP's per-task arguments, checked: (T, n_t, p_t, rho_t, sigma_t); ``n_tasks`` defaults
    to the length of ``rho`` (2 for a scalar)."""
    if n_tasks is None:
        n_tasks = len(rho) if np.ndim(rho) else 2
    T = int(n_tasks)
    if T < 2:
        raise ValueError("n_tasks must be at least 2")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (T, [int(v) for v in _per_task("n", n, T)], [int(v) for v in _per_task("p_private", p_private, T)],
            [float(v) for v in _per_task("rho", rho, T)], [float(v) for v in _per_task("sigma", sigma, T)])


def exchangeable_cov(p: int, rho: float) -> np.ndarray:
    """The paper's covariance, Sigma(rho)_ij = rho ** (0.01 abs(i - j)).

    Parameters
    ----------
    p : int
        Dimension.
    rho : float
        Correlation parameter.

    Returns
    -------
    numpy.ndarray
        ``(p, p)``.
    """
    idx = np.arange(p)
    return rho ** (0.01 * np.abs(idx[:, None] - idx[None, :]))


def _draw_coefficients(rng: np.random.Generator, p: int, T: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """v_c, v_t ~ N(-10, 10^2): the first draws of a replicate's generator."""
    v_c = rng.normal(-10.0, 10.0, p)
    return v_c, [rng.normal(-10.0, 10.0, p) for _ in range(T)]


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
    """One data set of the paper's DGP (see the module notes).

    Parameters
    ----------
    n : int or sequence of int
        Rows per task.
    p0 : int
        Width of the anchoring block x_0.
    p_private : int or sequence of int
        Width of each task's private block.
    rho : float or sequence of float
        Correlation parameter rho_t of each task's covariance.
    alpha : float
        Weight of the shared (quadratic) term, in [0, 1].
    sigma : float or sequence of float
        Noise SD sigma_t of each task.
    n_tasks : int, optional
        Number of tasks (default the length of ``rho``, 2 for a scalar).
    linear : bool
        Linear DGP (x_d instead of x_d^2 in the shared term).
    gaussian : bool
        Gaussian features (False: X + 0.3 sin X, the authors' non-Gaussian variant).
    seed : int, numpy.random.Generator or None
        Seed; the coefficients v_c, v_t are its first draws.

    Returns
    -------
    SimulatedBlockwise
        Observed data, complete features, means and parameters.
    """
    T, ns, ps, rhos, sigmas = _task_arguments(n, p_private, rho, alpha, sigma, n_tasks)
    rng = np.random.default_rng(seed)
    p = p0 + sum(ps)
    starts = np.concatenate([[0, p0], p0 + np.cumsum(ps)])
    v_c, v_t = _draw_coefficients(rng, p, T)
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


@dataclass
class BayesFloor:
    """Bayes floor RMSE of a DGP.

    Parameters
    ----------
    per_task : numpy.ndarray
        Per task (mean over ``seeds`` when several).
    average : float
        The paper's average over tasks, mean over seeds.
    per_seed : numpy.ndarray
        Seeds x tasks.
    seeds : list
        The seeds.
    """

    per_task: np.ndarray
    average: float
    per_seed: np.ndarray
    seeds: list


def _observed_columns(p0: int, ps: Sequence[int], t: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of all p features that task t observes (anchor, own block) and those it does not."""
    p = p0 + sum(ps)
    start = p0 + sum(ps[:t])
    obs = np.r_[np.arange(p0), np.arange(start, start + ps[t])]
    return obs, np.setdiff1d(np.arange(p), obs)


def _conditional(p: int, rho: float, obs: np.ndarray, un: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x_U | x_O ~ N(B x_O, S) under Sigma(rho): returns B, S and Cov(B x_O) = Sigma_UU - S."""
    cov = exchangeable_cov(p, rho)
    s_oo, s_ou, s_uu = cov[np.ix_(obs, obs)], cov[np.ix_(obs, un)], cov[np.ix_(un, un)]
    B = np.linalg.solve(s_oo, s_ou).T
    S = s_uu - B @ s_ou
    S = (S + S.T) / 2
    return B, S, s_uu - S


def _task_params(params: dict, task: int) -> tuple:
    if not params.get("gaussian", True):
        raise ValueError("the Bayes floor is exact for Gaussian covariates only (gaussian=True); the non-Gaussian "
                         "variant X + 0.3 sin X has no closed-form conditional mean")
    p0, ps = int(params["p0"]), [int(v) for v in params["p_private"]]
    p = p0 + sum(ps)
    obs, un = _observed_columns(p0, ps, task)
    B, S, M = _conditional(p, float(params["rho"][task]), obs, un)
    a = float(params["alpha"])
    v_c, v_t = np.asarray(params["v_c"], float), np.asarray(params["v_t"][task], float)
    return p, obs, un, B, S, M, a, v_c, v_t


def bayes_predict(params: dict, task: int, X_obs: np.ndarray) -> np.ndarray:
    """The Bayes predictor E[mu | x_0, x_t] of one task.

    Parameters
    ----------
    params : dict
        :attr:`SimulatedBlockwise.params` of the replicate.
    task : int
        Task index.
    X_obs : array-like
        Rows ``[x_0, x_t]`` (the task's observed columns, anchor first).

    Returns
    -------
    numpy.ndarray
        ``(n,)``.
    """
    p, obs, un, B, S, _, a, v_c, v_t = _task_params(params, task)
    X_obs = np.asarray(X_obs, float)
    if X_obs.ndim != 2 or X_obs.shape[1] != len(obs):
        raise ValueError(f"X_obs must have {len(obs)} columns (anchor and task {task}'s block), got {X_obs.shape}")
    m = X_obs @ B.T
    lin = (X_obs @ v_t[obs] + m @ v_t[un]) / p
    if params.get("linear", False):
        shared = (X_obs @ v_c[obs] + m @ v_c[un]) / p
    else:
        shared = ((X_obs**2) @ v_c[obs] + (m**2 + np.diag(S)) @ v_c[un]) / p
    return a * shared + (1.0 - a) * lin


def _excess_variance(params: dict, task: int) -> float:
    """E[(mu - E[mu | x_0, x_t])^2] in closed form. With z = x_U - m ~ N(0, S) independent of
    m = E[x_U | x_O] ~ N(0, M), c = alpha v_cU / p and l = (1 - alpha) v_tU / p, the residual is
    (2 c*m + l)'z + sum_i c_i (z_i^2 - S_ii), whose variance is c'(4 S*M + 2 S*S)c + l'S l
    (* elementwise; the linear DGP: (c + l)'S(c + l))."""
    p, _, un, _, S, M, a, v_c, v_t = _task_params(params, task)
    c, lin = a * v_c[un] / p, (1.0 - a) * v_t[un] / p
    if params.get("linear", False):
        w = c + lin
        return float(w @ S @ w)
    return float(c @ (4.0 * S * M + 2.0 * S * S) @ c + lin @ S @ lin)


def bayes_floor(
    n: int | Sequence[int] = 300,
    p0: int = 100,
    p_private: int | Sequence[int] = 25,
    rho: float | Sequence[float] = (0.95, 0.7),
    alpha: float = 0.3,
    sigma: float | Sequence[float] = 0.1,
    n_tasks: int | None = None,
    linear: bool = False,
    gaussian: bool = True,
    seed: int | np.random.Generator | Sequence[int] | None = None,
    v_c: np.ndarray | None = None,
    v_t: Sequence[np.ndarray] | None = None,
) -> BayesFloor:
    """Exact Bayes floor RMSE of the DGP, per task.

    sqrt(E[(mu - E[mu | x_0, x_t])^2] + sigma_t^2): the smallest population RMSE any predictor
    of y from the task's observed blocks can reach. Computed from the Gaussian conditional
    x_U | x_O (quadratic terms via E[x^2 | x_O] = m^2 + s^2); Gaussian covariates only.

    Parameters
    ----------
    n : int or sequence of int
        Rows per task.
    p0 : int
        Width of the anchoring block x_0.
    p_private : int or sequence of int
        Width of each task's private block.
    rho : float or sequence of float
        Correlation parameter rho_t of each task's covariance.
    alpha : float
        Weight of the shared (quadratic) term, in [0, 1].
    sigma : float or sequence of float
        Noise SD sigma_t of each task.
    n_tasks : int, optional
        Number of tasks (default the length of ``rho``, 2 for a scalar).
    linear : bool
        Linear DGP (x_d instead of x_d^2 in the shared term).
    gaussian : bool
        Gaussian features (False: X + 0.3 sin X, the authors' non-Gaussian variant).
    seed : int, numpy.random.Generator, sequence of int or None
        The coefficients are those :func:`simulate_blockwise` draws with ``seed``, so this is
        the floor of that replicate; a sequence of seeds averages over replicates.
    v_c, v_t : numpy.ndarray, optional
        The coefficients instead of a seed (e.g. ``bayes_floor(**sim.params)``).

    Returns
    -------
    BayesFloor
        Per task, average and per seed.

    Notes
    -----
    ``n`` is accepted for symmetry with :func:`simulate_blockwise` and unused.
    """
    T, _, ps, rhos, sigmas = _task_arguments(n, p_private, rho, alpha, sigma, n_tasks)
    p = int(p0) + sum(ps)
    if (v_c is None) != (v_t is None):
        raise ValueError("give both v_c and v_t, or neither (then they are drawn with seed)")
    seeds: list[int | np.random.Generator | None]
    if v_c is not None:
        assert v_t is not None  # checked above: both or neither
        coefs, seeds = [(np.asarray(v_c, float), [np.asarray(v, float) for v in v_t])], [None]
        if len(coefs[0][0]) != p or len(coefs[0][1]) != T or any(len(v) != p for v in coefs[0][1]):
            raise ValueError(f"v_c and each of the {T} v_t must have p = {p} entries")
    else:
        seeds = list(seed) if isinstance(seed, Sequence) else [seed]
        coefs = [_draw_coefficients(np.random.default_rng(s), p, T) for s in seeds]
    params = dict(p0=int(p0), p_private=ps, rho=rhos, alpha=float(alpha), linear=linear, gaussian=gaussian)
    per_seed = np.array([[np.sqrt(_excess_variance({**params, "v_c": vc, "v_t": vt}, t) + sigmas[t] ** 2)
                          for t in range(T)] for vc, vt in coefs])
    return BayesFloor(per_seed.mean(axis=0), float(per_seed.mean()), per_seed, seeds)


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
    """Keyword arguments of :func:`simulate_blockwise` for one row of a paper setting.

    Parameters
    ----------
    setting : str
        A key of :data:`SETTINGS` (``"A"`` … ``"F"``, ``"T"``, ``"linear"``, ``"ablation"``).
    value : object
        The row's value of the varied parameter.

    Returns
    -------
    dict
        Arguments of :func:`simulate_blockwise`.
    """
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


def dgp_key(setting: str, value) -> tuple:
    """The resolved data-generating process of a paper row, hashable.

    Rows with equal keys draw identical data for a seed (the paper reports one run for them:
    Table 3 rho2 = 0.7, Table 5 n = 300, Table 6 p = 25 and Table 7 sigma1 = 0.1 are all the base
    row).

    Parameters
    ----------
    setting : str
        A key of :data:`SETTINGS`.
    value : object
        The row's value.

    Returns
    -------
    tuple
        The resolved DGP.
    """
    kw = setting_params(setting, value)
    T, ns, ps, rhos, sigmas = _task_arguments(kw["n"], kw["p_private"], kw["rho"], kw["alpha"], kw["sigma"],
                                              kw.get("n_tasks"))
    return (T, tuple(ns), int(kw["p0"]), tuple(ps), tuple(rhos), float(kw["alpha"]), tuple(sigmas),
            bool(kw.get("linear", False)), bool(kw.get("gaussian", True)))
