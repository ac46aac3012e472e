"""Simulated multi-task regression with covariate shift and posterior drift controlled separately.

What to use when:

- :func:`simulate_latent` — the model-matched design: random one-hidden-layer tanh
  networks play the true shared encoder C* and task encoders S_r*; y = alpha_r*'S_r*(x) +
  beta_r*'C*(x) + eps. ``covariate_shift`` moves each task's feature mean and scale (P_r(X)
  differs), ``posterior_drift`` moves beta_r* away from a common centre (P_r(Y|X) differs) for the
  ``n_drifted`` tasks; ``specific_strength`` scales the task-specific signal. Unequal ``n``
  (a sequence) gives imbalanced tasks; any n_r >= 2 is allowed.
- :func:`simulate_paper_like` — the simulation design of the sister MTL-HMB paper (arXiv 2505.24413):
  equicorrelated-type Gaussian features with task correlation rho_r and a quadratic (shared)
  plus linear (task) signal.

Both return :class:`SimulatedTasks`: training data plus a noise-free test mean function per task
for the truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from hetmtl.data.multitask import MultiTaskData


@dataclass
class SimulatedTasks:
    """Simulated data, the true regression function of each task and the true coefficients.

    Parameters
    ----------
    data : MultiTaskData
        The training rows.
    mean_function : callable
        ``mean_function(X, r)``: the noise-free E[y | x] of task r.
    sample_X : callable
        ``sample_X(r, m, rng)``: m fresh feature rows from task r's P_r(X).
    beta : numpy.ndarray, optional
        True shared-encoder coefficients beta_r*, shape (R, n_shared).
    beta_center : numpy.ndarray, optional
        Their common centre.
    drifted : numpy.ndarray, optional
        Which tasks were moved away from the centre.
    info : dict
        The design's settings.
    """

    data: MultiTaskData
    mean_function: Callable[[np.ndarray, int], np.ndarray]
    sample_X: Callable[[int, int, np.random.Generator], np.ndarray]
    beta: np.ndarray | None = None
    beta_center: np.ndarray | None = None
    drifted: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def test_data(self, n: int | Sequence[int], random_state=None, noise: bool = False) -> MultiTaskData:
        """Fresh rows from every task's P_r(X) with the noise-free (or noisy) outcome.

        Parameters
        ----------
        n : int or sequence of int
            Rows per task (one value, or one per task).
        random_state : int, numpy.random.Generator or None
            Seed.
        noise : bool
            Add the simulation's noise to the outcome (default: the true mean, for RMSE vs truth).

        Returns
        -------
        MultiTaskData
            The test rows, same tasks.
        """
        rng = np.random.default_rng(random_state)
        R = self.data.n_tasks
        ns = np.broadcast_to(np.asarray(n), (R,)) if np.ndim(n) == 0 else np.asarray(n)
        Xs = [self.sample_X(r, int(ns[r]), rng) for r in range(R)]
        ys = [self.mean_function(X, r) + (self.info["noise"] * rng.normal(size=len(X)) if noise else 0.0) for r, X in enumerate(Xs)]
        return MultiTaskData(Xs, ys, self.data.tasks)


def _sizes(n, R: int) -> np.ndarray:
    ns = np.full(R, int(n)) if np.ndim(n) == 0 else np.asarray(n, int)
    if ns.shape != (R,) or np.any(ns < 2):
        raise ValueError(f"n must be an int or one size >= 2 per task ({R}), got {n!r}")
    return ns


def simulate_latent(
    n_tasks: int = 5,
    n: int | Sequence[int] = 100,
    d: int = 10,
    n_shared: int = 3,
    n_specific: int = 2,
    covariate_shift: float = 0.0,
    posterior_drift: float = 0.0,
    n_drifted: int | None = None,
    specific_strength: float = 0.5,
    noise: float = 0.5,
    random_state=None,
) -> SimulatedTasks:
    """Model-matched tasks: random one-hidden-layer tanh networks as true encoders (module notes).

    Parameters
    ----------
    n_tasks : int
        Number of tasks R.
    n : int or sequence of int
        Rows per task (a sequence gives imbalanced tasks; each at least 2).
    d : int
        Number of features.
    n_shared, n_specific : int
        Widths of the true shared encoder C* and task encoders S_r*.
    covariate_shift : float
        Size of the shift of each task's feature mean and scale (P_r(X) differs).
    posterior_drift : float
        Euclidean distance of each drifted task's beta_r* from the centre (the centre has norm
        sqrt(n_shared)); P_r(Y | X) differs.
    n_drifted : int, optional
        Number of drifted tasks (default all).
    specific_strength : float
        Scale of the task-specific signal alpha_r*.
    noise : float
        Noise SD.
    random_state : int, numpy.random.Generator or None
        Seed.

    Returns
    -------
    SimulatedTasks
        Data plus the true mean functions and coefficients.
    """
    rng = np.random.default_rng(random_state)
    R = int(n_tasks)
    ns = _sizes(n, R)
    n_drifted = R if n_drifted is None else int(n_drifted)
    Wc, bc = rng.normal(size=(d, n_shared)) * 2 / np.sqrt(d), rng.normal(size=n_shared) * 0.5
    Ws = [rng.normal(size=(d, n_specific)) * 2 / np.sqrt(d) for _ in range(R)]
    bs = [rng.normal(size=n_specific) * 0.5 for _ in range(R)]
    beta_c = rng.choice([-1.0, 1.0], size=n_shared) * rng.uniform(0.8, 1.2, n_shared)
    dirs = rng.normal(size=(R, n_shared))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    drifted = np.arange(R) < n_drifted
    beta = beta_c + posterior_drift * dirs * drifted[:, None]
    alpha = specific_strength * rng.normal(size=(R, n_specific))
    mu_dirs = rng.normal(size=(R, d))
    mu_dirs /= np.linalg.norm(mu_dirs, axis=1, keepdims=True)
    mus = covariate_shift * mu_dirs
    scales = np.exp(0.3 * covariate_shift * rng.uniform(-1, 1, size=(R, d)))

    def sample_X(r: int, m: int, g: np.random.Generator) -> np.ndarray:
        return mus[r] + scales[r] * g.normal(size=(m, d))

    def mean_function(X: np.ndarray, r: int) -> np.ndarray:
        C = np.tanh(X @ Wc + bc)
        S = np.tanh(X @ Ws[r] + bs[r])
        return C @ beta[r] + S @ alpha[r]

    Xs = [sample_X(r, int(ns[r]), rng) for r in range(R)]
    ys = [mean_function(X, r) + noise * rng.normal(size=len(X)) for r, X in enumerate(Xs)]
    data = MultiTaskData(Xs, ys, [f"task{r + 1}" for r in range(R)])
    info = dict(kind="latent", covariate_shift=covariate_shift, posterior_drift=posterior_drift, noise=noise,
                specific_strength=specific_strength, n=ns.tolist(), d=d)
    return SimulatedTasks(data, mean_function, sample_X, beta, beta_c, drifted, info)


def simulate_paper_like(
    n_tasks: int = 5,
    n: int | Sequence[int] = 100,
    d: int = 10,
    rho: float | Sequence[float] = 0.5,
    shared_weight: float = 0.5,
    nonlinear_x: bool = False,
    noise: float = 0.1,
    random_state=None,
) -> SimulatedTasks:
    """Tasks with the simulation design of the MTL-HMB paper (arXiv 2505.24413).

    X_r ~ N(0, Sigma(rho_r)) with Sigma_ij = rho_r^(0.01 abs(i - j)) (optionally X + 0.3 sin X),
    y = a * sum_j v_c,j x_j^2 / d + (1 - a) * sum_j v_r,j x_j / d + eps, v ~ N(-10, 10^2).

    Parameters
    ----------
    n_tasks : int
        Number of tasks R.
    n : int or sequence of int
        Rows per task.
    d : int
        Number of features.
    rho : float or sequence of float
        Correlation parameter rho_r (one value, or one per task).
    shared_weight : float
        a = 1 makes the tasks share one posterior, a = 0 makes them unrelated.
    nonlinear_x : bool
        Use X + 0.3 sin X as features.
    noise : float
        Noise SD.
    random_state : int, numpy.random.Generator or None
        Seed.

    Returns
    -------
    SimulatedTasks
        Data plus the true mean functions.
    """
    rng = np.random.default_rng(random_state)
    R = int(n_tasks)
    ns = _sizes(n, R)
    rhos = np.broadcast_to(np.asarray(rho, float), (R,)) if np.ndim(rho) == 0 else np.asarray(rho, float)
    idx = np.arange(d)
    chols = [np.linalg.cholesky(r_ ** (0.01 * np.abs(idx[:, None] - idx[None, :])) + 1e-10 * np.eye(d)) for r_ in rhos]
    v_c = rng.normal(-10, 10, size=d)
    v_r = rng.normal(-10, 10, size=(R, d))
    a = float(shared_weight)

    def sample_X(r: int, m: int, g: np.random.Generator) -> np.ndarray:
        X = g.normal(size=(m, d)) @ chols[r].T
        return X + 0.3 * np.sin(X) if nonlinear_x else X

    def mean_function(X: np.ndarray, r: int) -> np.ndarray:
        return a * (X**2) @ v_c / d + (1 - a) * X @ v_r[r] / d

    Xs = [sample_X(r, int(ns[r]), rng) for r in range(R)]
    ys = [mean_function(X, r) + noise * rng.normal(size=len(X)) for r, X in enumerate(Xs)]
    data = MultiTaskData(Xs, ys, [f"task{r + 1}" for r in range(R)])
    return SimulatedTasks(data, mean_function, sample_X, info=dict(kind="paper_like", rho=rhos.tolist(), shared_weight=a,
                                                                   noise=noise, n=ns.tolist(), d=d))
