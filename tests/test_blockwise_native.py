"""The C++ training kernel (``engine="native"``): loss terms and gradients against torch autograd
on the torch networks, training against the torch engine (full batch, where the mini-batch order
cannot differ), bit-for-bit grid == one by one, early stopping, and errors."""
import numpy as np
import pytest
import torch

from hetmtl import _core
from hetmtl.blockwise._native import hbi_spec, step2_spec, to_kernel
from hetmtl.blockwise.baselines import HTL
from hetmtl.blockwise.hbi import HBImputer
from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.nets import HBINet, Step2Net
from hetmtl.blockwise.simulate import simulate_blockwise

GRID = [dict(width=8, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.1),
        dict(width=8, depth=3, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.01),
        dict(width=16, depth=1, lambda_orth=0.1, lambda_imp=0.01, lambda_dr=0.01),
        dict(width=16, depth=3, lambda_orth=0.01, lambda_imp=0.1, lambda_dr=0.1)]
HBI_GRID = [dict(width=8, depth=1, lambda_orth=0.0), dict(width=4, depth=2, lambda_orth=1.0),
            dict(width=6, depth=3, lambda_orth=0.5)]


@pytest.fixture(scope="module")
def sim():
    return simulate_blockwise(n=(60, 50), p0=8, p_private=(3, 4), rho=(0.95, 0.7), seed=1)


def _padded(arrays, n):
    out = np.zeros((len(arrays), max(n), *arrays[0].shape[1:]), np.float32)
    for t, a in enumerate(arrays):
        out[t, : len(a)] = a
    return torch.as_tensor(out)


def _check_grads(grads, leaves, autograd, rtol=2e-5):
    assert set(grads) == set(leaves)
    for (name, leaf), g in zip(leaves.items(), autograd):
        scale = float(g.abs().max()) + 1e-6
        err = float((g[0] - torch.as_tensor(grads[name])).abs().max())
        assert err <= rtol * scale, (name, err, scale)


@pytest.mark.parametrize("dr_mode", ["per_task", "sum_inside"])
@pytest.mark.parametrize("T,depth,in_true", [(2, 3, None), (3, 2, [6, 9, 4]), (2, 1, None)])
def test_step2_loss_terms_and_gradients_match_autograd(dr_mode, T, depth, in_true):
    rng = np.random.default_rng(T + depth)
    p0, P, h = 5, 9, 6
    mask = torch.zeros(T, P)
    mask[0, 7:] = 1
    mask[1, 5:7] = 1
    net = Step2Net(p0, P, T, mask, h, depth, dr_mode, in_true=in_true)
    config = dict(width=h, depth=depth, lambda_orth=0.3, lambda_imp=0.2, lambda_dr=0.5)
    params, cfg = net.init([config], [0], 3, torch.float32)
    n = [7, 4, 5][:T]
    cols = in_true or [P] * T
    x0 = [rng.normal(size=(k, p0)).astype(np.float32) for k in n]
    xf = [np.hstack([rng.normal(size=(k, c)), np.zeros((k, P - c))]).astype(np.float32) for k, c in zip(n, cols)]
    y = [rng.normal(size=k).astype(np.float32) for k in n]
    loss, terms, grads = _core.blockwise_step2_loss(step2_spec(net, config), to_kernel(params),
                                                    dict(x0=x0, xf=xf, y=y))
    w = torch.zeros(T, max(n))
    for t, k in enumerate(n):
        w[t, :k] = 1.0
    batch = dict(x0=_padded(x0, n), xf=_padded(xf, n), y=_padded(y, n), w=w)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref = net.loss(leaves, cfg, batch)
    ref_terms = net.terms(leaves, cfg, batch)
    assert loss == pytest.approx(float(ref[0].detach()), rel=1e-5)
    for k in ("integ", "orth", "imp", "dr"):
        assert terms[k] == pytest.approx(float(ref_terms[k][0].detach()), rel=1e-5, abs=1e-7), k
    _check_grads(grads, leaves, torch.autograd.grad(ref.sum(), list(leaves.values())))


@pytest.mark.parametrize("heterogeneous,orth_power", [(True, 1), (True, 2), (False, 1)])
@pytest.mark.parametrize("depth", [1, 3])
def test_hbi_loss_terms_and_gradients_match_autograd(heterogeneous, orth_power, depth):
    gen = torch.Generator().manual_seed(depth)
    net = HBINet(5, 4, depth, 6, heterogeneous, orth_power)
    config = dict(width=6, depth=depth, lambda_orth=0.7)
    params, cfg = net.init([config], [0], 2, torch.float32)
    batch = dict(x0t=torch.randn(8, 5, generator=gen), xst=torch.randn(8, 4, generator=gen),
                 x0m=torch.randn(6, 5, generator=gen))
    loss, terms, grads = _core.blockwise_hbi_loss(hbi_spec(net, config), to_kernel(params),
                                                  {k: v.numpy() for k, v in batch.items()})
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref = net.loss(leaves, cfg, batch)
    assert loss == pytest.approx(float(ref[0].detach()), rel=1e-5)
    ref_terms = net.terms(leaves, batch)
    for k, v in ref_terms.items():
        assert terms[k] == pytest.approx(float(v[0].detach()), rel=1e-5), k
    _check_grads(grads, leaves, torch.autograd.grad(ref.sum(), list(leaves.values())))


def test_full_batch_training_matches_torch_engine(sim):
    """Full batch: the engines see the same data each step, so Adam, the learning-rate schedule,
    validation and early stopping agree up to float32 rounding. (Adam's first steps move every
    parameter by about lr whatever the size of its gradient, so a rounding-level sign flip of a
    near-zero gradient costs O(lr): the learning rate is kept small to compare trajectories.)"""
    imputer = HBImputer(grid=HBI_GRID[:1], max_epochs=30, random_state=0).fit(sim.data)
    kw = dict(grid=GRID, batch_size=None, max_epochs=12, patience=4, lr=2e-3, lr_step=5, lr_gamma=0.5,
              random_state=3, imputer=imputer, selection="min")
    nat = MTLHMB(engine="native", **kw).fit(sim.data)
    ref = MTLHMB(engine="torch", **kw).fit(sim.data)
    np.testing.assert_allclose(nat.fit_.val_loss, ref.fit_.val_loss, rtol=2e-4)
    np.testing.assert_array_equal(nat.fit_.best_epoch, ref.fit_.best_epoch)
    assert nat.selected_config_ == ref.selected_config_
    np.testing.assert_allclose(nat.test_rmse_.to_numpy(), ref.test_rmse_.to_numpy(), rtol=2e-4)
    # HBI (always full batch), both heterogeneous and naive
    for het in (True, False):
        kw = dict(grid=HBI_GRID, heterogeneous=het, max_epochs=25, patience=5, lr=2e-3, random_state=1)
        a = HBImputer(engine="native", **kw).fit(sim.data)
        b = HBImputer(engine="torch", **kw).fit(sim.data)
        for s in (1, 2):
            np.testing.assert_allclose(a.fits_[s].val_loss, b.fits_[s].val_loss, rtol=2e-4)
            np.testing.assert_array_equal(a.fits_[s].best_epoch, b.fits_[s].best_epoch)
        np.testing.assert_allclose(a.impute_block(sim.data.x0(1), 1), b.impute_block(sim.data.x0(1), 1),
                                   rtol=1e-3, atol=1e-4)


def test_grid_equals_one_by_one_bit_for_bit(sim):
    kw = dict(grid=GRID, hbi_grid=HBI_GRID, max_epochs=30, hbi_max_epochs=30, patience=5, lr=3e-3,
              engine="native", random_state=4)
    grid = MTLHMB(n_threads=2, **kw).fit(sim.data)
    alone = MTLHMB(group_by="config", n_threads=1, **kw).fit(sim.data)
    np.testing.assert_array_equal(grid.fit_.val_loss, alone.fit_.val_loss)
    np.testing.assert_array_equal(grid.fit_.best_epoch, alone.fit_.best_epoch)
    assert grid.selected_config_ == alone.selected_config_
    np.testing.assert_array_equal(grid.test_rmse_.to_numpy(), alone.test_rmse_.to_numpy())
    for s in (1, 2):
        np.testing.assert_array_equal(grid.imputer_.fits_[s].val_loss, alone.imputer_.fits_[s].val_loss)
    # a different seed gives another mini-batch order and initialisation
    other = MTLHMB(n_threads=2, **{**kw, "random_state": 5}).fit(sim.data)
    assert not np.array_equal(other.fit_.val_loss, grid.fit_.val_loss)


def test_early_stopping_and_returned_parameters(sim):
    """The kernel stops ``patience`` epochs after the best one and returns that epoch's
    parameters: the torch network's validation loss on them is the reported best loss."""
    m = MTLHMB(grid=GRID, hbi_grid=HBI_GRID[:1], max_epochs=400, hbi_max_epochs=20, patience=3, lr=0.05,
               engine="native", random_state=0).fit(sim.data)
    xf = m.imputer_.full_designs(sim.data)
    val = m.split_.val
    n = [len(v) for v in val]
    batch = dict(x0=_padded([sim.data.x0(t)[val[t]] for t in range(2)], n),
                 xf=_padded([xf[t][val[t]] for t in range(2)], n),
                 y=_padded([sim.data.y(t)[val[t]] for t in range(2)], n), w=torch.ones(2, max(n)))
    for t, k in enumerate(n):
        batch["w"][t, k:] = 0
    for i in range(len(GRID)):
        net, params, cfg = m.fit_.member(i)
        with torch.no_grad():
            assert float(net.val_loss(params, cfg, batch)[0]) == pytest.approx(m.fit_.val_loss[i], rel=1e-5)
    assert (m.fit_.best_epoch < 400 - 3).all()  # all stopped early at this learning rate
    # epochs run, straight from the kernel
    net = Step2Net(2, 3, 1, torch.zeros(1, 3), 4, 2)
    config = dict(width=4, depth=2)
    params, _ = net.init([config], [0], 0, torch.float32)
    rng = np.random.default_rng(0)
    data = dict(x0=[rng.normal(size=(30, 2)).astype(np.float32)], xf=[rng.normal(size=(30, 3)).astype(np.float32)],
                y=[rng.normal(size=30).astype(np.float32)])
    vdata = {k: [v[0][:10]] for k, v in data.items()}
    opts = dict(max_epochs=500, patience=7, lr=0.05, lr_step=0, lr_gamma=1.0)
    [(best, loss, best_epoch, epochs)] = _core.blockwise_train_step2(
        [dict(train=data, val=vdata, seed=0, batch_size=8)], [(0, step2_spec(net, config), to_kernel(params))], opts)
    assert epochs == best_epoch + 7 + 1 < 500
    assert set(best) == set(params)


def test_native_htl_and_export_roundtrip(sim):
    htl = HTL(grid=GRID[:2], max_epochs=20, patience=5, engine="native", random_state=0).fit(sim.data)
    assert np.isfinite(htl.test_rmse_avg_)
    m = MTLHMB(grid=GRID[:2], hbi_grid=HBI_GRID[:1], max_epochs=20, hbi_max_epochs=20, engine="native",
               random_state=0).fit(sim.data)
    back = MTLHMB.from_json(m.to_json())
    X = np.hstack([sim.data.x0(0), sim.data.x_private(0)])
    np.testing.assert_array_equal(back.predict(X, 0), m.predict(X, 0))


def test_native_learns_linear_truth():
    """Known truth, as for the torch engine: on the linear DGP the fit explains most of var(y)."""
    sim = simulate_blockwise(n=(150, 150), p0=10, p_private=3, rho=(0.9, 0.7), linear=True, seed=2)
    m = MTLHMB(grid=[dict(width=32, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.01)],
               hbi_grid=[dict(width=8, depth=1, lambda_orth=0.0)], max_epochs=300, hbi_max_epochs=100, lr=5e-3,
               engine="native", random_state=0).fit(sim.data)
    sd_y = np.mean([np.std(sim.data.y(t)[m.split_.test[t]]) for t in range(2)])
    assert m.test_rmse_avg_ < 0.2 * sd_y


def test_native_errors(sim):
    with pytest.raises(ValueError, match="engine must be one of"):
        MTLHMB(grid=GRID[:1], engine="gpu").fit(sim.data)
    with pytest.raises(ValueError, match="float32"):
        MTLHMB(grid=GRID[:1], hbi_grid=HBI_GRID[:1], dtype="float64", engine="native", max_epochs=2,
               hbi_max_epochs=2).fit(sim.data)
    net = HBINet(5, 4, 1, 6)
    config = dict(width=6, depth=1, lambda_orth=0.0)
    params = to_kernel(net.init([config], [0], 0, torch.float32)[0])
    batch = dict(x0t=np.zeros((3, 5), np.float32), xst=np.zeros((3, 4), np.float32), x0m=np.zeros((2, 5), np.float32))
    bad = {**params, "G0.W": np.zeros((6, 3), np.float32)}
    with pytest.raises(ValueError, match="'G0.W' has the wrong shape"):
        _core.blockwise_hbi_loss(hbi_spec(net, config), bad, batch)
    with pytest.raises(KeyError, match="missing parameter 'Ec0.b'"):
        _core.blockwise_hbi_loss(hbi_spec(net, config), {k: v for k, v in params.items() if k != "Ec0.b"}, batch)
    with pytest.raises(ValueError, match="x0t and xst"):
        _core.blockwise_hbi_loss(hbi_spec(net, config), params, {**batch, "xst": np.zeros((2, 4), np.float32)})


def test_batch_sizes_of_one_grid(sim):
    """Configurations with different mini-batch sizes (the paper grid's batch_sizes) train on their
    own streams; the grid still equals one by one."""
    base = dict(width=8, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.1)
    grid = [{**base, "batch_size": 8}, {**base, "batch_size": 16}]
    imputer = HBImputer(grid=HBI_GRID[:1], max_epochs=20, random_state=0).fit(sim.data)
    kw = dict(grid=grid, max_epochs=15, patience=30, lr=3e-3, engine="native", random_state=2, imputer=imputer)
    both = MTLHMB(n_threads=2, **kw).fit(sim.data)
    alone = MTLHMB(group_by="config", **kw).fit(sim.data)
    np.testing.assert_array_equal(both.fit_.val_loss, alone.fit_.val_loss)
    # alone at grid position 0, each starts from the same weights: only the batch size differs
    only8, only16 = (MTLHMB(**{**kw, "grid": [c]}).fit(sim.data) for c in grid)
    assert only8.fit_.val_loss[0] == both.fit_.val_loss[0]
    assert only16.fit_.val_loss[0] != only8.fit_.val_loss[0]


def test_native_imputation_equals_the_torch_network(sim):
    """A native fit imputes on the kernel (independent of torch's CPU kernels); the values are the
    torch network's forward pass up to float32 rounding, and a torch fit still imputes with torch."""
    imp = HBImputer(grid=HBI_GRID, max_epochs=15, engine="native", random_state=0).fit(sim.data)
    x0 = sim.data.x0(1)
    for s in (1, 2):
        net, params, _ = imp.members_[s]
        with torch.no_grad():
            ref = net.impute(params, torch.as_tensor(x0, dtype=torch.float32))[0].numpy()
        got = imp.impute_block(x0, s)
        assert got.dtype == np.float64 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="columns"):
        _core.blockwise_hbi_impute(hbi_spec(net, {}), to_kernel(params), np.zeros((3, 2), np.float32))
