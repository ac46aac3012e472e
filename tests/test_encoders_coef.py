"""The coefficient/centre block of Algorithm 1 with encodings held fixed is a convex problem:
iterating it must reach the joint optimum over (b_r, alpha_r, beta_r, centres) found by cvxpy."""
import numpy as np
import pytest
import torch

from hetmtl.encoders.model import Coefficients, coefficient_step


@pytest.mark.parametrize("penalty", ["group_l2", "l1"])
def test_coefficient_block_reaches_cvxpy_optimum(penalty):
    """center_step="joint" (default) reaches the joint optimum; the literal block version is
    no better (and here stalls above it when fused tasks would need to move together)."""
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(0)
    R, n, q, p = 4, 30, 2, 3
    sizes = np.array([30, 25, 20, 30])
    S = torch.zeros(R, n, q, dtype=torch.float64)
    C = torch.zeros(R, n, p, dtype=torch.float64)
    y = torch.zeros(R, n, dtype=torch.float64)
    mask = torch.zeros(R, n, dtype=torch.float64)
    beta_true = np.array([1.0, -1.0, 0.5]) + np.array([[0, 0, 0], [0, 0, 0], [0.8, 0, 0], [0, -0.6, 0.4]])
    for r, nr in enumerate(sizes):
        S[r, :nr] = torch.from_numpy(rng.normal(size=(nr, q)))
        C[r, :nr] = torch.from_numpy(rng.normal(size=(nr, p)))
        y[r, :nr] = C[r, :nr] @ torch.from_numpy(beta_true[r]) + 0.3 * torch.randn(nr, generator=torch.Generator().manual_seed(r), dtype=torch.float64)
        mask[r, :nr] = 1.0
    N = float(sizes.sum())
    lam = 0.05
    w = np.array([1.0, 1.2, 0.8, 1.0])
    lam_t = torch.from_numpy(lam * w)
    coef = Coefficients(torch.zeros(R, q, dtype=torch.float64), torch.zeros(R, p, dtype=torch.float64),
                        torch.zeros(R, dtype=torch.float64), torch.zeros(q, dtype=torch.float64), torch.zeros(p, dtype=torch.float64))
    start = coef

    def run(center_step):
        out = start
        for _ in range(150):
            out = coefficient_step(S, C, y, mask, out, n_total=N, lam_alpha=lam_t, lam_beta=lam_t, penalty=penalty, n_steps=40,
                                   backend="cpp", update_centers=True, center="median", center_alpha=True,
                                   center_weights=(lam * w, lam * w), center_step=center_step)
        return out

    coef = run("joint")
    block = run("block")

    b, A, B = cp.Variable(R), cp.Variable((R, q)), cp.Variable((R, p))
    ca, cb = cp.Variable(q), cp.Variable(p)
    order = 2 if penalty == "group_l2" else 1
    loss = 0
    for r, nr in enumerate(sizes):
        Sr, Cr, yr = S[r, :nr].numpy(), C[r, :nr].numpy(), y[r, :nr].numpy()
        loss += cp.sum_squares(yr - b[r] - Sr @ A[r] - Cr @ B[r]) / N
        loss += lam * w[r] * (cp.norm(A[r] - ca, order) + cp.norm(B[r] - cb, order))
    prob = cp.Problem(cp.Minimize(loss))
    prob.solve()

    def objective(b_, A_, B_, ca_, cb_):
        nrm = (lambda v: np.linalg.norm(v)) if penalty == "group_l2" else (lambda v: np.abs(v).sum())
        tot = 0.0
        for r, nr in enumerate(sizes):
            res = y[r, :nr].numpy() - b_[r] - S[r, :nr].numpy() @ A_[r] - C[r, :nr].numpy() @ B_[r]
            tot += res @ res / N + lam * w[r] * (nrm(A_[r] - ca_) + nrm(B_[r] - cb_))
        return tot

    ours = objective(coef.b.numpy(), coef.alpha.numpy(), coef.beta.numpy(), coef.alpha_center.numpy(), coef.beta_center.numpy())
    assert ours <= prob.value + 1e-6 * max(1.0, abs(prob.value))
    theirs_block = objective(block.b.numpy(), block.alpha.numpy(), block.beta.numpy(), block.alpha_center.numpy(),
                             block.beta_center.numpy())
    assert theirs_block >= ours - 1e-9
    fitted = np.column_stack([coef.b.numpy(), coef.alpha.numpy(), coef.beta.numpy()])
    ref = np.column_stack([b.value, A.value, B.value])
    np.testing.assert_allclose(fitted, ref, atol=2e-3)
    np.testing.assert_allclose(coef.beta_center.numpy(), cb.value, atol=2e-3)


@pytest.mark.parametrize("joint", [True, False])
def test_cpp_coefficient_step_matches_torch_path(joint):
    rng = np.random.default_rng(1)
    R, n, q, p = 3, 25, 2, 3
    S = torch.from_numpy(rng.normal(size=(R, n, q)))
    C = torch.from_numpy(rng.normal(size=(R, n, p)))
    y = torch.from_numpy(rng.normal(size=(R, n)))
    mask = torch.ones(R, n, dtype=torch.float64)
    mask[2, 20:] = 0
    lam_a = torch.tensor([0.02, 0.0, 0.05], dtype=torch.float64)
    lam_b = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    coef = Coefficients(torch.from_numpy(rng.normal(size=(R, q))), torch.from_numpy(rng.normal(size=(R, p))),
                        torch.zeros(R, dtype=torch.float64), torch.zeros(q, dtype=torch.float64), torch.zeros(p, dtype=torch.float64))
    out = {}
    for backend in ("cpp", "torch"):
        out[backend] = coefficient_step(S, C, y, mask, coef, n_total=70.0, lam_alpha=lam_a, lam_beta=lam_b, penalty="group_l2",
                                        n_steps=7, backend=backend, update_centers=True, center="median", center_alpha=True,
                                        center_weights=(lam_a.numpy(), lam_b.numpy()), center_step="joint" if joint else "block")
    for name in ("alpha", "beta", "b", "alpha_center", "beta_center"):
        torch.testing.assert_close(getattr(out["cpp"], name), getattr(out["torch"], name), rtol=1e-10, atol=1e-12)


def test_generic_quadratic_solver_armul_form():
    """One penalised group, no intercept (ARMUL on least squares): matches cvxpy."""
    cp = pytest.importorskip("cvxpy")
    from hetmtl import _core

    rng = np.random.default_rng(2)
    K, m, n = 5, 3, 40
    Xs = [rng.normal(size=(n, m)) for _ in range(K)]
    th = np.array([1.0, 0.5, -0.5]) + np.r_[np.zeros((3, m)), rng.normal(scale=1.0, size=(2, m))].reshape(K, m)
    ys = [X @ t + 0.5 * rng.normal(size=n) for X, t in zip(Xs, th)]
    G = np.vstack([X.T @ X for X in Xs])
    h = np.stack([X.T @ y for X, y in zip(Xs, ys)])
    lam = np.full((K, 1), 0.08)
    theta, c = np.zeros((K, m)), np.zeros(m)
    for _ in range(60):
        theta, c, _, _ = _core.prox_grad_center_quadratic(G, h, theta, c, np.zeros(m, np.int32), lam, 1 / (K * n), "group_l2",
                                                          True, "median", 50, 0.0)
    T, cc = cp.Variable((K, m)), cp.Variable(m)
    obj = sum(cp.sum_squares(y - X @ T[k]) for k, (X, y) in enumerate(zip(Xs, ys))) / (K * n) + sum(
        0.08 * cp.norm(T[k] - cc, 2) for k in range(K))
    cp.Problem(cp.Minimize(obj)).solve()
    np.testing.assert_allclose(theta, T.value, atol=2e-4)
    np.testing.assert_allclose(c, cc.value, atol=2e-4)
    with pytest.raises(ValueError, match="groups entries must be < the number of lam columns"):
        _core.prox_grad_center_quadratic(G, h, theta, c, np.array([0, 1, 2], np.int32), np.ones((K, 2)), 1.0, "group_l2", True, "median", 5, 0.0)
    with pytest.raises(ValueError, match="one row per task"):
        _core.prox_grad_center_quadratic(G, h, theta, c, np.zeros(m, np.int32), np.ones((K + 1, 1)), 1.0, "group_l2", True, "median", 5, 0.0)
