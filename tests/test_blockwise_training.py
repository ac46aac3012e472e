"""Batched grid training (== one by one), Step 1 imputation, paired splits, estimator API."""
import numpy as np
import pytest
import torch

from hetmtl.blockwise._engine import TaskBatches
from hetmtl.blockwise.baselines import HPS, HTL, STL, naive_step2
from hetmtl.blockwise.hbi import HBImputer
from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.selection import make_split, step2_grid
from hetmtl.blockwise.simulate import simulate_blockwise
from hetmtl.exceptions import DataValidationError, NotFittedError

TINY = [dict(width=8, depth=1, lambda_orth=0.0), dict(width=4, depth=2, lambda_orth=1.0)]
GRID = [dict(width=8, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.1),
        dict(width=8, depth=3, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.01),
        dict(width=16, depth=2, lambda_orth=0.1, lambda_imp=0.01, lambda_dr=0.01),
        dict(width=16, depth=3, lambda_orth=0.01, lambda_imp=0.1, lambda_dr=0.1)]


@pytest.fixture(scope="module")
def sim():
    return simulate_blockwise(n=(60, 50), p0=8, p_private=(3, 4), rho=(0.95, 0.7), seed=1)


def test_batched_equals_one_by_one(sim):
    kw = dict(grid=GRID, hbi_grid=TINY, max_epochs=25, hbi_max_epochs=25, patience=5, lr=3e-3, dtype="float64",
              random_state=4)
    split = make_split(sim.data, seed=4)
    fast = MTLHMB(group_by="all", **kw).fit(sim.data, split)
    slow = MTLHMB(group_by="config", **kw).fit(sim.data, split)
    assert len(fast.fit_.groups) == 1 and len(slow.fit_.groups) == len(GRID)
    assert fast.selected_config_ == slow.selected_config_
    np.testing.assert_allclose(fast.fit_.val_loss, slow.fit_.val_loss, rtol=1e-7)
    np.testing.assert_array_equal(fast.fit_.best_epoch, slow.fit_.best_epoch)
    np.testing.assert_allclose(fast.test_rmse_.to_numpy(), slow.test_rmse_.to_numpy(), rtol=1e-7)
    for s in (1, 2):
        np.testing.assert_allclose(fast.imputer_.fits_[s].val_loss, slow.imputer_.fits_[s].val_loss, rtol=1e-7)
    by_width = MTLHMB(group_by="width", **kw).fit(sim.data, split)
    assert len(by_width.fit_.groups) == 2
    np.testing.assert_allclose(by_width.test_rmse_avg_, slow.test_rmse_avg_, rtol=1e-7)
    # two threads: groups trained in parallel, the same fits as one after the other
    two = MTLHMB(group_by="width", n_threads=2, **kw).fit(sim.data, split)
    np.testing.assert_allclose(two.fit_.val_loss, by_width.fit_.val_loss, rtol=1e-12)
    np.testing.assert_array_equal(two.fit_.best_epoch, by_width.fit_.best_epoch)
    np.testing.assert_allclose(two.test_rmse_avg_, by_width.test_rmse_avg_, rtol=1e-12)
    assert two.imputer_.n_threads == 2
    for s in (1, 2):  # the HBI grids of both sources share the two threads
        np.testing.assert_allclose(two.imputer_.fits_[s].val_loss, by_width.imputer_.fits_[s].val_loss, rtol=1e-12)
    # deepest configurations first within a group; the width-16 group, more than half of the
    # work, is split by depth so that it does not bound the wall time
    assert [c["depth"] for c in (GRID[i] for i in two.fit_.groups[0].index)] == [3, 2]
    assert [[GRID[i]["depth"] for i in g.index] for g in two.fit_.groups[1:]] == [[3], [2]]


def test_early_stopping_stops_and_restores_best(sim):
    m = MTLHMB(grid=GRID[:2], hbi_grid=TINY[:1], max_epochs=400, hbi_max_epochs=20, patience=3, lr=0.05,
               random_state=0).fit(sim.data)
    table = m.selection_table()
    assert (table["best_epoch"] < 397).all()  # stopped long before the cap
    # restored parameters reproduce the recorded best validation loss
    net, params, cfg = m.member_
    val = TaskBatches({"x0": [sim.data.x0(t)[m.split_.val[t]] for t in range(2)],
                       "xf": [m.imputer_.full_designs(sim.data)[t][m.split_.val[t]] for t in range(2)],
                       "y": [sim.data.y(t)[m.split_.val[t]] for t in range(2)]}, None, torch.float32).full()
    np.testing.assert_allclose(float(net.val_loss(params, cfg, val)[0]), table.loc[table.selected, "val_loss"].item(),
                               rtol=1e-5)


def test_hbi_imputes_exactly_the_missing_blocks(sim):
    imp = HBImputer(grid=TINY, max_epochs=30, random_state=0).fit(sim.data)
    filled = imp.transform(sim.data)
    assert [sorted(f) for f in filled] == [[2], [1]]
    assert filled[0][2].shape == (60, 4) and filled[1][1].shape == (50, 3)
    full = imp.full_designs(sim.data)
    d = sim.data
    np.testing.assert_array_equal(full[0][:, :8], d.x0(0))
    np.testing.assert_array_equal(full[0][:, 8:11], d.x_private(0))
    np.testing.assert_allclose(full[0][:, 11:], filled[0][2])
    np.testing.assert_array_equal(full[1][:, 11:], d.x_private(1))
    np.testing.assert_allclose(full[1][:, 8:11], filled[1][1])
    # the imputation is G(E_c(x0)) of the other task's anchor rows, row by row
    np.testing.assert_allclose(imp.impute_block(d.x0(1)[:5], 1), filled[1][1][:5], rtol=1e-6)
    sel = imp.selection_table()
    assert sel.groupby("source")["selected"].sum().tolist() == [1, 1]


def test_hbi_beats_mean_imputation():
    """On the paper's nearly rank-one design HBI recovers the missing block far better than 0."""
    sim = simulate_blockwise(n=(200, 200), p0=20, p_private=5, rho=(0.95, 0.9), seed=0)
    imp = HBImputer(grid=[dict(width=8, depth=1, lambda_orth=0.0)], max_epochs=400, lr=1e-2, random_state=0).fit(sim.data)
    truth = sim.X_full[1][:, 20:25]
    err = np.mean((imp.transform(sim.data)[1][1] - truth) ** 2)
    assert err < 0.5 * np.mean(truth**2)


def test_paired_splits_and_api(sim):
    split = make_split(sim.data, seed=7)
    assert [len(a) for a in split.train] == [36, 30] and [len(a) for a in split.test] == [12, 10]
    np.testing.assert_array_equal(make_split(sim.data, seed=7).test[1], split.test[1])
    kw = dict(max_epochs=8, random_state=0)
    m = MTLHMB(grid=GRID[:1], hbi_grid=TINY[:1], hbi_max_epochs=8, **kw).fit(sim.data, split)
    ests = [STL(grid=[dict(width=8, depth=2)], **kw), STL(grid=[dict(width=8, depth=2)], features="imputed",
            imputer=m.imputer_, **kw), HPS(grid=[dict(width=8, depth=2)], imputer=m.imputer_, **kw),
            HTL(grid=[dict(width=8, depth=2, lambda_orth=1.0, lambda_imp=0.0, lambda_dr=1.0)], **kw),
            naive_step2(grid=GRID[:1], hbi_grid=TINY[:1], hbi_max_epochs=8, **kw)]
    for e in ests:
        e.fit(sim.data, split)
        assert e.split_ is split
        assert list(e.test_table_.index) == ["task1", "task2", "average"]
        np.testing.assert_allclose(e.test_rmse_avg_, e.test_rmse_.mean())
    # test RMSE is the pooled RMSE on the test rows
    t = 1
    rows = split.test[t]
    X = np.hstack([sim.data.x0(t)[rows], sim.data.x_private(t)[rows]])
    pred = m.predict(X, task="task2")
    np.testing.assert_allclose(m.test_rmse_["task2"], np.sqrt(np.mean((pred - sim.data.y(t)[rows]) ** 2)))
    assert isinstance(m.score(X, sim.data.y(t)[rows], 1), float)
    from hetmtl.blockwise.selection import batch_rmse

    err = pred - sim.data.y(t)[rows]
    expect = np.mean([np.sqrt(np.mean(err[:8] ** 2)), np.sqrt(np.mean(err[8:] ** 2))])
    np.testing.assert_allclose(batch_rmse(sim.data.y(t)[rows], pred, batch_size=8), expect)
    np.testing.assert_allclose(m.test_table_.loc["task2", "rmse_code"], batch_rmse(sim.data.y(t)[rows], pred))
    rep = m.transform(X, "task2")
    assert rep["shared"].shape == (len(rows), 8) and rep["specific"].shape == (len(rows), 8)
    assert m.get_params()["grid"] is GRID[:1] or m.get_params()["grid"] == GRID[:1]
    with pytest.raises(DataValidationError, match="task 'task2': X must have"):
        m.predict(X[:, :5], task=1)
    with pytest.raises(DataValidationError, match="unknown task"):
        m.predict(X, task="nope")
    with pytest.raises(NotFittedError, match="not fitted"):
        MTLHMB().predict(X, 0)
    with pytest.raises(TypeError, match="BlockwiseData"):
        MTLHMB().fit(np.zeros((3, 3)))


def test_grids_and_bad_options(sim):
    assert len(step2_grid("code")) == 72 and len(step2_grid("paper")) == 243 and len(step2_grid("small")) == 8
    with pytest.raises(ValueError, match="grid must be one of"):
        step2_grid("huge")
    with pytest.raises(ValueError, match="imputation must be"):
        MTLHMB(imputation="mean", grid=GRID[:1], max_epochs=2).fit(sim.data)
    with pytest.raises(ValueError, match="dr_mode"):
        MTLHMB(dr_mode="x", grid=GRID[:1], hbi_grid=TINY[:1], max_epochs=2, hbi_max_epochs=2).fit(sim.data)
    bad = make_split(sim.data, seed=0)
    bad = type(bad)(bad.train, (bad.train[0][:3], bad.val[1]), bad.test)
    with pytest.raises(DataValidationError, match="task 'task1': train/validation/test rows overlap"):
        MTLHMB(grid=GRID[:1]).fit(sim.data, bad)


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_matches_torch_adam(fused, monkeypatch):
    from hetmtl.blockwise._engine import StackedAdam

    monkeypatch.setattr(StackedAdam, "fused", fused and hasattr(torch, "_fused_adam_"))
    gen = torch.Generator().manual_seed(0)
    p0 = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64), torch.randn(3, 1, 5, generator=gen, dtype=torch.float64)]
    mine = [p.clone() for p in p0]
    ref = [p.clone().requires_grad_(True) for p in p0]
    opt_ref = torch.optim.Adam(ref, lr=0.01)
    opt = StackedAdam({"a": mine[0], "b": mine[1]})
    for step in range(5):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in p0]
        for r, g in zip(ref, grads):
            r.grad = g.clone()
        opt_ref.step()
        opt.step(mine, grads, ["a", "b"], 0.01)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_mtlhmb_learns_linear_truth():
    """Known truth: on the linear DGP the fitted model explains most of the variance of y."""
    sim = simulate_blockwise(n=(150, 150), p0=10, p_private=3, rho=(0.9, 0.7), linear=True, seed=2)
    m = MTLHMB(grid=[dict(width=32, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.01)],
               hbi_grid=[dict(width=8, depth=1, lambda_orth=0.0)], max_epochs=300, hbi_max_epochs=100, lr=5e-3,
               random_state=0).fit(sim.data)
    sd_y = np.mean([np.std(sim.data.y(t)[m.split_.test[t]]) for t in range(2)])
    assert m.test_rmse_avg_ < 0.2 * sd_y  # about 0.04 in practice


def test_group_with_unused_padded_layer_trains():
    """A hidden layer no configuration of the group uses (e.g. after the deeper configurations
    stopped) gets zero gradients and stays zero."""
    from hetmtl.blockwise._engine import TrainSettings, train_group
    from hetmtl.blockwise.nets import Step2Net

    rng = np.random.default_rng(0)
    T, p0, P, n = 2, 4, 6, 20
    net = Step2Net(p0, P, T, torch.zeros(T, P), width=8, depth=3)
    cfgs = [dict(width=8, depth=2, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)] * 2
    params, cfg = net.init(cfgs, [0, 1], seed=0, dtype=torch.float64)
    x0 = [rng.normal(size=(n, p0)) for _ in range(T)]
    arrays = {"x0": x0, "xf": [np.hstack([a, rng.normal(size=(n, P - p0))]) for a in x0],
              "y": [rng.normal(size=n) for _ in range(T)]}
    stream = TaskBatches(arrays, 8, torch.float64)
    es = train_group(net, params, cfg, stream, TaskBatches(arrays, None, torch.float64).full(),
                     TrainSettings(max_epochs=3, patience=5, dtype=torch.float64), seed=0)
    assert float(es.best_params["c2.W"].abs().sum()) == 0.0 and float(es.best_params["c1.W"].abs().sum()) > 0
    assert np.isfinite(es.best_loss.numpy()).all()


def test_training_leaves_cover_exactly_the_layers_in_use():
    """Hidden-layer leaves hold only the leading configurations that use the layer (deepest first)
    and share storage with the stacked parameters; unused layers are not trained."""
    from hetmtl.blockwise._engine import _training_leaves
    from hetmtl.blockwise.nets import HBINet, Step2Net

    net = Step2Net(4, 6, 2, torch.zeros(2, 6), width=8, depth=4)
    cfgs = [dict(width=8, depth=d, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1) for d in (3, 2, 2)]
    params, cfg = net.init(cfgs, [0, 1, 2], seed=0, dtype=torch.float64)
    leaves, names = _training_leaves(net, params, cfg)
    assert leaves["c1.W"].shape[0] == 3 and leaves["rs2.W"].shape[0] == 1 and leaves["g0.W"].shape[0] == 3
    assert "u3.W" not in names and "r3.b" not in names and "rs1.W" in names
    before = params["g2.W"].clone()
    with torch.no_grad():
        leaves["g2.W"].add_(1.0)  # an optimiser step on the leaf lands in the stacked parameter
    assert torch.equal(params["g2.W"][0], before[0] + 1.0) and torch.equal(params["g2.W"][1:], before[1:])
    hbi = HBINet(5, 3, depth=2, width=4)
    p, c = hbi.init([dict(width=4, depth=2), dict(width=2, depth=2)], [0, 1], seed=0, dtype=torch.float64)
    hl, hn = _training_leaves(hbi, p, c)
    assert hn == list(p) and all(hl[k].shape == p[k].shape for k in hn)


def test_split_weight_parts_are_rows_of_the_unsplit_layer():
    from hetmtl.blockwise._engine import ParamStack, config_generator

    whole, parts = ParamStack(1), ParamStack(1)
    whole.linear("r1", 0, config_generator(3, 0), [3, 3], [4, 4], 3, 4)
    parts.linear("r1", 0, config_generator(3, 0), [3, 3], [4, 4], 3, 4, weight_parts=("r1", "rs1"))
    W = whole.tensors["r1.W"]
    assert torch.equal(parts.tensors["r1.W"], W[:, :4]) and torch.equal(parts.tensors["rs1.W"], W[:, 4:])
    assert torch.equal(parts.tensors["r1.b"], whole.tensors["r1.b"]) and float(W[:, 3].abs().sum()) == 0.0


def test_retain_freed_memory_on_glibc():
    import platform

    from hetmtl._parallel import retain_freed_memory

    assert retain_freed_memory() is (platform.libc_ver()[0] == "glibc")
