"""Synthetic site summaries for the fusion tests (genuine per-site DR/BLP fits on simulated
pseudo-outcomes, with V-fold tuning statistics computed exactly as a site would)."""
from __future__ import annotations

import warnings

import numpy as np

from hetmtl import _core
from hetmtl.latefusion import CVFold, SiteSummary


def make_site(rng, theta, n, name, n_folds=5, noise=1.0):
    d = len(theta)
    phi = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))]) if d > 1 else np.ones((n, 1))
    gamma = phi @ theta + noise * (1.0 + 0.5 * np.abs(phi[:, -1])) * rng.normal(size=n)
    ones = np.ones(n)
    m = _core.linear_score_moments(phi, gamma, ones)
    folds = []
    if n_folds:
        fold = rng.permutation(np.arange(n) % n_folds)
        for v in range(n_folds):
            tr, te = fold != v, fold == v
            mt = _core.linear_score_moments(phi[tr], gamma[tr], ones[tr])
            A, b, c = _core.quadratic_loss_coefficients(phi[te], gamma[te], ones[te], gamma[te] ** 2)
            folds.append(CVFold(int(tr.sum()), mt["theta"], mt["J"], mt["Omega"], int(te.sum()), A, b, c))
    names = ["const"] + [f"x{j}" for j in range(1, d)]
    return SiteSummary(site=name, model="blp", coef_names=names, n=int(n), theta=m["theta"], J=m["J"],
                       Omega=m["Omega"], n_folds=max(n_folds, 2), cv_folds=folds)


def make_summaries(rng, K=8, d=2, eta=0.3, n_range=(40, 80), n_folds=5, outliers=0, shift=5.0, theta0=None):
    """K site summaries with θ_k = θ_0 + η ξ_k (+ shift·u_k for the first ``outliers`` sites)."""
    theta0 = np.linspace(1.0, 0.5, d) if theta0 is None else np.asarray(theta0, float)
    theta = theta0 + eta * rng.normal(size=(K, d))
    for k in range(outliers):
        u = rng.normal(size=d)
        theta[k] = theta0 + shift * u / np.linalg.norm(u)
    n = rng.integers(n_range[0], n_range[1] + 1, size=K)
    sums = [make_site(rng, theta[k], n[k], f"s{k}", n_folds) for k in range(K)]
    return sums, theta


def random_problem(rng, K=6, d=2, outlier=True):
    """Arrays of a random fusion problem: θ̂ (K, d), H (K, d, d) PD, w, shape = √(d/n)."""
    theta = rng.normal(size=(K, d))
    if outlier:
        theta[0] += 6.0
    A = rng.normal(size=(K, d, d))
    H = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(d)
    n = rng.integers(40, 81, size=K).astype(float)
    return theta, H, n / n.sum(), np.sqrt(d / n), n


def cvxpy_fusion(theta, H, w, shape, C, penalty, metric):
    """The fusion objective solved by cvxpy/Clarabel at tight tolerances: (θ_k, θ_0, optimum)."""
    import cvxpy as cp

    K, d = theta.shape
    T, c = cp.Variable((K, d)), cp.Variable(d)
    obj = 0
    for k in range(K):
        L = np.linalg.cholesky(H[k])
        obj += w[k] * 0.5 * cp.sum_squares(L.T @ (T[k] - theta[k]))
        v = T[k] - c
        if penalty == "squared":
            obj += w[k] * C * shape[k] * cp.sum_squares(v)
        elif metric == "matched":
            obj += w[k] * C * shape[k] * cp.norm(L.T @ v)
        else:
            obj += w[k] * C * shape[k] * cp.norm(v)
    prob = cp.Problem(cp.Minimize(obj))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10,
                   max_iter=500)
    return T.value, c.value, prob.value


def kkt_residual(T, c, theta, H, w, shape, C, penalty, metric, fused_tol=1e-9):
    """Largest violation of the first-order optimality conditions of the fusion objective at
    (T, c), site by site (a subgradient bound for sites fused to the centre); an exact check
    that does not depend on a reference solver's accuracy."""
    worst = 0.0
    for k in range(len(w)):
        L = np.linalg.cholesky(H[k])
        g = H[k] @ (T[k] - theta[k])  # smooth part, divided by w_k
        v = T[k] - c
        if penalty == "squared":
            worst = max(worst, np.abs(g + 2 * C * shape[k] * v).max())
            continue
        M = L.T if metric == "matched" else np.eye(len(v))
        nv = np.linalg.norm(M @ v)
        if nv > fused_tol:
            worst = max(worst, np.abs(g + C * shape[k] * M.T @ (M @ v) / nv).max())
        else:  # g = -C s_k M' u with ||u|| <= 1
            u = np.linalg.solve(M.T, -g) / (C * shape[k])
            worst = max(worst, np.linalg.norm(u) - 1.0)
    return worst
