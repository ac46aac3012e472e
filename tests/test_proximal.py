"""Proximal maps and centre updates (C++ core) against direct numpy / cvxpy computations."""
import numpy as np
import pytest
import torch

from hetmtl import _core
from hetmtl.encoders.proximal import prox_to_center, update_center


def numpy_prox(Z, c, t, penalty):
    out = np.empty_like(Z)
    for k in range(Z.shape[0]):
        d = Z[k] - c
        if penalty == "group_l2":
            nrm = np.linalg.norm(d)
            out[k] = c if nrm <= t[k] else c + (1 - t[k] / nrm) * d
        else:
            out[k] = c + np.sign(d) * np.maximum(np.abs(d) - t[k], 0)
    return out


@pytest.mark.parametrize("penalty", ["group_l2", "l1"])
def test_prox_matches_numpy_and_zero_distance(penalty):
    rng = np.random.default_rng(0)
    K, m = 6, 4
    Z = rng.normal(size=(K, m))
    c = rng.normal(size=m)
    Z[2] = c  # zero distance: must return the centre exactly, no NaN
    lam = rng.uniform(0.1, 1.0, K)
    step = rng.uniform(0.5, 2.0, K)
    w = rng.uniform(0.5, 1.5, K)
    got = prox_to_center(Z, c, lam, step, w, penalty)
    want = numpy_prox(Z, c, lam * step * w, penalty)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got[2], c)
    # a huge threshold fuses every task to the centre; zero threshold is the identity
    np.testing.assert_allclose(prox_to_center(Z, c, 1e6, penalty=penalty), np.tile(c, (K, 1)), atol=1e-12)
    np.testing.assert_allclose(prox_to_center(Z, c, 0.0, penalty=penalty), Z, atol=1e-14)


@pytest.mark.parametrize("penalty", ["group_l2", "l1"])
def test_prox_is_argmin_of_prox_objective(penalty):
    """Check against cvxpy's solution of min 0.5||v-z||^2 + t||v-c||."""
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(1)
    z, c, t = rng.normal(size=5), rng.normal(size=5), 0.7
    v = prox_to_center(z[None], c, t, penalty=penalty)[0]
    x = cp.Variable(5)
    norm = cp.norm(x - c, 2 if penalty == "group_l2" else 1)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - z) + t * norm))
    prob.solve()
    np.testing.assert_allclose(v, x.value, atol=1e-5)
    assert np.sum(v != c) >= 1  # not trivially fused at this threshold


@pytest.mark.parametrize("penalty", ["group_l2", "l1"])
def test_cpp_and_torch_prox_agree(penalty):
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(7, 3))
    c = rng.normal(size=3)
    Z[0] = c
    lam, step = rng.uniform(0, 1, 7), rng.uniform(0, 2, 7)
    a = prox_to_center(Z, c, lam, step, 1.0, penalty, backend="cpp")
    b = prox_to_center(torch.tensor(Z), c, lam, step, 1.0, penalty, backend="torch").numpy()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_geometric_median_matches_cvxpy():
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(3)
    V = rng.normal(size=(9, 4))
    w = rng.uniform(0.2, 2.0, 9)
    c = update_center(V, w, "group_l2", "median")
    x = cp.Variable(4)
    prob = cp.Problem(cp.Minimize(sum(w[k] * cp.norm(V[k] - x, 2) for k in range(9))))
    prob.solve()
    obj = lambda y: np.sum(w * np.linalg.norm(V - y, axis=1))  # noqa: E731
    assert obj(c) <= prob.value + 1e-7
    np.testing.assert_allclose(c, x.value, atol=1e-4)


def test_geometric_median_at_a_data_point():
    """A dominant weight on one point makes that point the median (Vardi-Zhang case)."""
    rng = np.random.default_rng(4)
    V = rng.normal(size=(5, 3))
    w = np.array([10.0, 1, 1, 1, 1])  # w_0 > sum of the others: median is V[0] exactly
    c, n_iter, conv = _core.geometric_median(V, w, 100, 1e-12)
    assert conv
    np.testing.assert_array_equal(c, V[0])  # returned exactly, not to rounding
    # start exactly at a data point that is NOT the median: the step must move away from it
    V2 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c2 = update_center(V2, 1.0, "group_l2", "median")
    np.testing.assert_allclose(c2, [0.5, 0.5], atol=1e-6)
    # identical rows: the median is that row
    np.testing.assert_array_equal(update_center(np.full((3, 2), 0.1), [0.3, 0.3, 0.4]), [0.1, 0.1])


def test_geometric_median_optimality_condition():
    rng = np.random.default_rng(5)
    V = rng.normal(size=(12, 6))
    w = rng.uniform(0.5, 1.5, 12)
    c = update_center(V, w)
    d = V - c
    g = (w[:, None] * d / np.linalg.norm(d, axis=1, keepdims=True)).sum(0)
    assert np.linalg.norm(g) < 1e-6


def test_coordinate_median_and_mean():
    rng = np.random.default_rng(6)
    V = rng.normal(size=(7, 3))
    w = rng.uniform(0.5, 1.5, 7)
    med = update_center(V, w, "l1", "median")
    for j in range(3):  # minimiser of sum_k w_k |v_kj - c| over candidate values
        vals = V[:, j]
        costs = [np.sum(w * np.abs(vals - v)) for v in vals]
        assert np.sum(w * np.abs(vals - med[j])) <= min(costs) + 1e-12
    np.testing.assert_allclose(update_center(V, w, center="mean"), (w[:, None] * V).sum(0) / w.sum())
    np.testing.assert_allclose(update_center(V, 1.0, "l1", "median"), np.median(V, axis=0))


def test_penalty_value_and_eigenvalues():
    rng = np.random.default_rng(7)
    V, c = rng.normal(size=(4, 3)), rng.normal(size=3)
    lam, w = rng.uniform(size=4), rng.uniform(size=4)
    assert np.isclose(_core.center_penalty_value(V, c, lam, w, "group_l2"), np.sum(lam * w * np.linalg.norm(V - c, axis=1)))
    assert np.isclose(_core.center_penalty_value(V, c, lam, w, "l1"), np.sum(lam * w * np.abs(V - c).sum(1)))
    A = rng.normal(size=(3, 5, 4))
    G = np.einsum("kni,knj->kij", A, A)
    np.testing.assert_allclose(_core.batched_max_eigenvalue(G.reshape(12, 4), 4), np.linalg.eigvalsh(G)[:, -1], rtol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="lam"):
        prox_to_center(np.zeros((3, 2)), np.zeros(2), np.ones(4))
    with pytest.raises(ValueError, match="center"):
        _core.prox_to_center(np.zeros((3, 2)), np.zeros(3), np.ones(3), np.ones(3), np.ones(3), "group_l2")
    with pytest.raises(ValueError, match="penalty"):
        prox_to_center(np.zeros((3, 2)), np.zeros(2), 1.0, penalty="l2sq")
    with pytest.raises(ValueError, match="weights"):
        update_center(np.zeros((3, 2)), [-1.0, 1.0, 1.0])
