"""The C++ fusion solvers against independent references: cvxpy (Clarabel), closed-form limits,
the weighted Huber location, and Monte Carlo for the squared-penalty delta method."""

import numpy as np
import pytest
from fusion_testdata import cvxpy_fusion, kkt_residual, random_problem
from scipy import optimize

from hetmtl import _core

pytest.importorskip("cvxpy")

SOLVERS = [("squared", "matched"), ("group", "matched"), ("group", "euclidean")]


@pytest.mark.parametrize("penalty,metric", SOLVERS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_solver_matches_cvxpy(penalty, metric, d):
    rng = np.random.default_rng(100 + d)
    theta, H, w, shape, _ = random_problem(rng, K=6, d=d, outlier=True)
    prob = _core.FusionProblem(theta, H, w, shape)
    for C in (0.3, 2.0, 10.0):
        sol = prob.solve(C, penalty, metric)
        T, c, value = cvxpy_fusion(theta, H, w, shape, C, penalty, metric)
        assert sol["converged"]
        # our optimum is never worse than cvxpy's and satisfies the optimality conditions to
        # rounding; the minimisers agree to cvxpy's accuracy (its KKT residuals reach 1e-7, and
        # the centre of the group penalty is weakly determined by the objective)
        assert sol["objective"] <= value + 1e-12
        assert abs(sol["objective"] - value) < 1e-9
        assert kkt_residual(sol["theta"], sol["centre"], theta, H, w, shape, C, penalty, metric) < 1e-9
        np.testing.assert_allclose(sol["theta"], T, atol=1e-5)
        np.testing.assert_allclose(sol["centre"], c, atol=1e-5)
        assert prob.objective(sol["theta"], sol["centre"], C, penalty, metric) == pytest.approx(sol["objective"], abs=1e-14)


@pytest.mark.parametrize("penalty,metric", SOLVERS)
def test_limits_itl_and_gls(penalty, metric):
    rng = np.random.default_rng(7)
    theta, H, w, shape, _ = random_problem(rng, K=7, d=3)
    prob = _core.FusionProblem(theta, H, w, shape)
    # C -> 0: individual-task estimates
    np.testing.assert_allclose(prob.solve(1e-10, penalty, metric)["theta"], theta, atol=1e-8)
    np.testing.assert_array_equal(prob.solve(0.0, penalty, metric)["theta"], theta)
    # C -> infinity: the GLS / fixed-effect centre (sum w H)^-1 sum w H theta, for every site
    gls = np.linalg.solve(np.einsum("k,kij->ij", w, H), np.einsum("k,kij,kj->i", w, H, theta))
    for C in (1e10, np.inf):
        sol = prob.solve(C, penalty, metric)
        np.testing.assert_allclose(sol["centre"], gls, atol=1e-8)
        np.testing.assert_allclose(sol["theta"], np.tile(gls, (7, 1)), atol=1e-8)
    if penalty == "group":
        assert prob.solve(1e10, penalty, metric)["fused"].all()


@pytest.mark.parametrize("metric", ["matched", "euclidean"])
def test_d1_centre_is_weighted_huber_location(metric):
    rng = np.random.default_rng(3)
    theta, H, w, shape, _ = random_problem(rng, K=9, d=1)
    h = H[:, 0, 0]
    C = 1.5
    lam = C * shape
    # Huber threshold in theta units: matched r = sqrt(h)|z| <= lam; euclidean h|z| <= lam
    delta = lam / np.sqrt(h) if metric == "matched" else lam / h

    def huber(c):
        z = np.abs(theta[:, 0] - c)
        return np.sum(w * h * np.where(z <= delta, 0.5 * z**2, delta * z - 0.5 * delta**2))

    ref = optimize.minimize_scalar(huber, bracket=(theta.min(), theta.max()), tol=1e-14).x
    sol = _core.FusionProblem(theta, H, w, shape).solve(C, "group", metric)
    assert sol["centre"][0] == pytest.approx(ref, abs=1e-8)
    z = theta[:, 0] - sol["centre"][0]
    soft = sol["centre"][0] + np.sign(z) * np.maximum(np.abs(z) - delta, 0.0)
    np.testing.assert_allclose(sol["theta"][:, 0], soft, atol=1e-12)


def test_group_centre_robust_to_outlier_squared_dragged():
    rng = np.random.default_rng(11)
    K, d = 10, 2
    truth = np.array([1.0, -0.5])
    V = np.stack([np.diag(rng.uniform(0.02, 0.05, d)) for _ in range(K)])
    theta = truth + np.stack([rng.multivariate_normal(np.zeros(d), V[k]) for k in range(K)])
    theta[0] = truth + np.array([8.0, 8.0])  # one outlier site
    n = rng.integers(40, 81, K).astype(float)
    H = np.linalg.inv(V) / n[:, None, None]  # Sigma^-1 = V^-1 / n
    w, shape = n / n.sum(), np.sqrt(d / n)
    prob = _core.FusionProblem(theta, H, w, shape)
    inlier_mean = theta[1:].mean(0)
    group = prob.solve(1.0, "group", "matched")
    squared = prob.solve(1.0, "squared")
    assert np.linalg.norm(group["centre"] - inlier_mean) < 0.2
    assert np.linalg.norm(squared["centre"] - inlier_mean) > 1.0  # dragged toward the outlier
    assert not group["fused"][0]
    # the outlier site keeps (almost) its own estimate
    assert np.linalg.norm(group["theta"][0] - theta[0]) < 0.1 * np.linalg.norm(theta[0] - group["centre"])


def test_squared_delta_method_equals_monte_carlo():
    rng = np.random.default_rng(5)
    theta, H, w, shape, n = random_problem(rng, K=5, d=2)
    V = np.linalg.inv(H) / n[:, None, None]
    prob = _core.FusionProblem(theta, H, w, shape)
    C = 0.8
    cov_sites, cov_centre, cross = prob.squared_covariance(C, V)
    # the linear map is exact: theta_tilde = A theta_hat
    P, G = prob.squared_map(C)
    sol = prob.solve(C, "squared")
    centre = np.einsum("kij,kj->i", G, theta)
    np.testing.assert_allclose(sol["centre"], centre, atol=1e-12)
    np.testing.assert_allclose(sol["theta"], np.einsum("kij,kj->ki", P, theta - centre) + centre, atol=1e-12)
    # Monte Carlo over theta* ~ N(theta_hat, V) (numpy draws, C++ solves)
    B = 4000
    draws = theta + np.einsum("kij,bkj->bki", np.linalg.cholesky(V), rng.normal(size=(B, 5, 2)))
    fits = [prob.__class__(x, H, w, shape).solve(C, "squared") for x in draws]
    th = np.stack([f["theta"] for f in fits])
    c0 = np.stack([f["centre"] for f in fits])
    for k in range(5):
        np.testing.assert_allclose(np.cov(th[:, k].T), cov_sites[k], rtol=0.1, atol=0.02 * np.abs(cov_sites[k]).max())
        emp_cross = ((th[:, k] - th[:, k].mean(0)).T @ (c0 - c0.mean(0))) / (B - 1)
        np.testing.assert_allclose(emp_cross, cross[k], atol=0.1 * np.abs(cross[k]).max())
    np.testing.assert_allclose(np.cov(c0.T), cov_centre, rtol=0.1, atol=0.02 * np.abs(cov_centre).max())


def test_bootstrap_draws_are_reproducible_and_match_delta_for_squared():
    rng = np.random.default_rng(8)
    theta, H, w, shape, n = random_problem(rng, K=6, d=2)
    V = np.linalg.inv(H) / n[:, None, None]
    prob = _core.FusionProblem(theta, H, w, shape)
    a = prob.bootstrap(V, 0.5, "squared", "matched", n_boot=3000, seed=42)
    b = prob.bootstrap(V, 0.5, "squared", "matched", n_boot=3000, seed=42)
    np.testing.assert_array_equal(a["theta"], b["theta"])
    cov_sites, cov_centre, _ = prob.squared_covariance(0.5, V)
    se_boot = a["theta"].std(0, ddof=1)
    np.testing.assert_allclose(se_boot, np.sqrt(np.einsum("kii->ki", cov_sites)), rtol=0.06)
    np.testing.assert_allclose(a["centre"].std(0, ddof=1), np.sqrt(np.diag(cov_centre)), rtol=0.06)
    # group bootstrap: draws centred near the fit, every refit converged
    g = prob.bootstrap(V, 1.0, "group", "matched", n_boot=500, seed=1)
    assert g["n_not_converged"] == 0
    assert len(g["fused_count"]) == 6


def test_path_matches_cold_solves():
    rng = np.random.default_rng(2)
    theta, H, w, shape, _ = random_problem(rng, K=8, d=2)
    prob = _core.FusionProblem(theta, H, w, shape)
    grid = [0.0, 0.1, 0.5, 1.0, 3.0, 10.0]
    for penalty, metric in SOLVERS:
        path = prob.path(grid, penalty, metric)
        for i, C in enumerate(grid):
            cold = prob.solve(C, penalty, metric)
            np.testing.assert_allclose(path["theta"][i], cold["theta"], atol=1e-9)
            np.testing.assert_array_equal(path["fused"][i], cold["fused"])


def test_core_rejects_bad_arrays():
    rng = np.random.default_rng(0)
    theta, H, w, shape, _ = random_problem(rng, K=4, d=2)
    H_bad = H.copy()
    H_bad[2] = -np.eye(2)
    with pytest.raises(ValueError, match="site 2"):
        _core.FusionProblem(theta, H_bad, w, shape)
    with pytest.raises(ValueError, match="weight"):
        _core.FusionProblem(theta, H, -w, shape)
    theta_nan = theta.copy()
    theta_nan[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _core.FusionProblem(theta_nan, H, w, shape)
    with pytest.raises(ValueError, match="penalty"):
        _core.FusionProblem(theta, H, w, shape).solve(1.0, "lasso", "matched")


@pytest.mark.parametrize("penalty,metric", [("squared", "matched"), ("group", "matched"), ("group", "euclidean")])
def test_threaded_site_loops_agree_with_one_thread(penalty, metric):
    """threads=2 splits the sites into two blocks (from 4000 sites on): same optimum to solver
    tolerance, and the same numbers on every threaded run (block sums added in a fixed order)."""
    rng = np.random.default_rng(11)
    theta, H, w, shape, _ = random_problem(rng, K=4500, d=3, outlier=False)
    theta[:40] += 4.0  # some unfused sites at every C of the grid
    grid = [0.0, 0.1, 0.5, 2.0, np.inf]
    runs = [_core.FusionProblem(theta, H, w, shape).path(grid, penalty, metric, threads=t) for t in (1, 2, 2)]
    one, two, again = runs
    scale = 1.0 + np.abs(one["theta"]).max()
    assert np.abs(one["theta"] - two["theta"]).max() <= 1e-7 * scale
    assert np.abs(one["centre"] - two["centre"]).max() <= 1e-7 * scale
    assert np.array_equal(two["theta"], again["theta"]) and np.array_equal(two["centre"], again["centre"])
    A = np.broadcast_to(np.eye(3), (4500, 3, 3)).copy()
    args = (grid, penalty, metric, A, theta, np.ones(4500), w)
    prob = _core.FusionProblem(theta, H, w, shape)
    l1, l2 = prob.path_losses(*args, threads=1), prob.path_losses(*args, threads=2)
    assert np.allclose(l1, l2, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="threads"):
        prob.solve(1.0, penalty, metric, threads=0)


@pytest.mark.parametrize("penalty,metric", [("group", "matched"), ("group", "euclidean")])
def test_cv_tolerance_leaves_the_heldout_curve_unchanged(penalty, metric):
    """LateFusion solves its CV paths to CV_TOL = 1e-9: the held-out losses equal the 1e-12 ones."""
    from hetmtl.latefusion.fusion import CV_TOL

    rng = np.random.default_rng(4)
    theta, H, w, shape, _ = random_problem(rng, K=300, d=3)
    A = np.broadcast_to(np.eye(3), (300, 3, 3)).copy()
    prob = _core.FusionProblem(theta, H, w, shape)
    grid = list(np.geomspace(0.05, 20, 30))
    args = (grid, penalty, metric, A, theta + 0.3, np.ones(300), w)
    tight, cv = np.array(prob.path_losses(*args, tol=1e-12)), np.array(prob.path_losses(*args, tol=CV_TOL))
    assert np.abs(cv - tight).max() <= 1e-10 * np.abs(tight).max()
