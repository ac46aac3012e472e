"""BlockwiseData container, stacked design for MBI, and the simulation designs."""
import numpy as np
import pytest

from hetmtl.blockwise.simulate import SETTINGS, exchangeable_cov, setting_params, simulate_blockwise
from hetmtl.data import BlockwiseData
from hetmtl.exceptions import DataValidationError


def _blocks(rng, n=(8, 9, 10), p0=3, ps=(2, 2, 4)):
    T = len(n)
    blocks = []
    for t in range(T):
        row = [rng.normal(size=(n[t], p0))] + [rng.normal(size=(n[t], ps[s])) if s == t else None for s in range(T)]
        blocks.append(row)
    return blocks, [rng.normal(size=n[t]) for t in range(T)]


def test_from_arrays_shapes_and_masks():
    rng = np.random.default_rng(0)
    blocks, y = _blocks(rng)
    d = BlockwiseData.from_arrays(blocks, y, task_names=["a", "b", "c"])
    assert d.n_tasks == 3 and d.n_sources == 4
    assert d.source_dims == [3, 2, 2, 4]
    assert d.n_per_task == [8, 9, 10]
    assert d.private_source == [1, 2, 3]
    obs = d.observed.to_numpy()
    assert obs[:, 0].all() and np.array_equal(obs[:, 1:], np.eye(3, dtype=bool))
    assert d.block("b", 1) is None
    np.testing.assert_array_equal(d.x_private("c"), blocks[2][3])
    sd = d.stacked_design()
    assert sd.X.shape == (27, 11)
    np.testing.assert_array_equal(sd.cov_index, [1, 4, 6, 8])
    np.testing.assert_array_equal(sd.sub_index, [1, 9, 18])
    assert sd.miss_source == [[3, 4], [2, 4], [2, 3]]
    # NaN exactly in the missing blocks
    for t, rows in enumerate(sd.task_rows):
        for s, cols in enumerate(sd.source_columns):
            block = sd.X[np.ix_(rows, cols)]
            if s == 0 or s == t + 1:
                np.testing.assert_array_equal(block, blocks[t][s])
            else:
                assert np.isnan(block).all()
    np.testing.assert_array_equal(sd.y, np.concatenate(y))


def test_from_dataframe_roundtrip_and_permuted_private_sources():
    rng = np.random.default_rng(1)
    blocks, y = _blocks(rng, n=(6, 7), ps=(2, 3))
    d = BlockwiseData.from_arrays(blocks, y)
    df = d.to_dataframe()
    bmap = {"x0": [c for c in df.columns if c.startswith("x0_")], "x1": [c for c in df.columns if c.startswith("x1_")],
            "x2": [c for c in df.columns if c.startswith("x2_")]}
    d2 = BlockwiseData.from_dataframe(df.iloc[::-1], bmap, task_col="task", y_col="y")
    assert d2.task_names == ["task2", "task1"]
    assert d2.private_source == [2, 1]
    np.testing.assert_allclose(d2.x_private("task1"), blocks[0][1][::-1])
    np.testing.assert_allclose(d2.y("task2"), y[1][::-1])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[1].__setitem__(0, None), "task 'task2' does not observe the anchoring block 'x0'"),
        (lambda b: b[0].__setitem__(2, np.ones((8, 2))), "task 'task1' observes blocks ['x1', 'x2']"),
        (lambda b: b[1].__setitem__(2, None), "task 'task2' observes no private block"),
    ],
)
def test_undefined_patterns_are_refused(mutate, message):
    rng = np.random.default_rng(2)
    blocks, y = _blocks(rng, n=(8, 8), ps=(2, 2))
    mutate(blocks)
    with pytest.raises(DataValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        BlockwiseData(blocks, y)


def test_shared_private_block_and_bad_values_refused():
    rng = np.random.default_rng(3)
    blocks, y = _blocks(rng, n=(8, 8, 8), ps=(2, 2, 2))
    blocks[1][1], blocks[1][2] = np.ones((8, 2)), None
    blocks[2][1], blocks[2][3] = None, np.ones((8, 2))
    with pytest.raises(DataValidationError, match="block 'x1' is observed by tasks 'task1' and 'task2'"):
        BlockwiseData(blocks, y)
    blocks, y = _blocks(rng, n=(8, 8), ps=(2, 2))
    blocks[1][2][3, 1] = np.nan
    with pytest.raises(DataValidationError, match=r"task 'task2', block 'x2': 1 non-finite value\(s\) at row\(s\) 3"):
        BlockwiseData(blocks, y)
    blocks, y = _blocks(rng, n=(8, 8), ps=(2, 2))
    blocks[1][2] = np.ones((7, 2))
    with pytest.raises(DataValidationError, match="task 'task2', block 'x2': 7 rows but the response has 8"):
        BlockwiseData(blocks, y)
    blocks, y = _blocks(rng, n=(8, 8), ps=(2, 3))
    blocks[1][0] = np.ones((8, 4))
    with pytest.raises(DataValidationError, match="block 'x0' has different widths"):
        BlockwiseData(blocks, y)


def test_dataframe_partially_missing_block_named():
    rng = np.random.default_rng(4)
    blocks, y = _blocks(rng, n=(6, 6), ps=(2, 2))
    df = BlockwiseData(blocks, y).to_dataframe()
    df.loc[7, "x2_1"] = np.nan
    bmap = {s: [c for c in df.columns if c.startswith(s + "_")] for s in ("x0", "x1", "x2")}
    with pytest.raises(DataValidationError, match=r"task 'task2', block 'x2': partially missing"):
        BlockwiseData.from_dataframe(df, bmap, "task", "y")
    with pytest.raises(DataValidationError, match="not in the data frame"):
        BlockwiseData.from_dataframe(df, {"x0": ["nope"], **{k: v for k, v in bmap.items() if k != "x0"}}, "task", "y")


def test_subset_and_full_design():
    rng = np.random.default_rng(5)
    blocks, y = _blocks(rng, n=(8, 8), ps=(2, 2))
    d = BlockwiseData(blocks, y)
    sub = d.subset([np.array([0, 2]), np.array([1])])
    assert sub.n_per_task == [2, 1]
    full = d.full_design(0, {2: np.zeros((8, 2))})
    assert full.shape == (8, 7) and np.all(full[:, 5:] == 0)
    with pytest.raises(DataValidationError, match="block 'x2' is missing and no imputation was given"):
        d.full_design(0)


def test_simulation_matches_dgp():
    sim = simulate_blockwise(n=(400, 300), p0=10, p_private=(4, 6), rho=(0.9, 0.5), alpha=0.3, sigma=(0.1, 0.2), seed=3)
    d, par = sim.data, sim.params
    assert d.source_dims == [10, 4, 6] and d.n_per_task == [400, 300]
    X = sim.X_full[0]
    p = 20
    mu = 0.3 * (X**2) @ par["v_c"] / p + 0.7 * X @ par["v_t"][0] / p
    np.testing.assert_allclose(sim.mean[0], mu)
    np.testing.assert_allclose(d.x0(0), X[:, :10])
    np.testing.assert_allclose(d.x_private(1), sim.X_full[1][:, 14:20])
    resid = d.y(1) - sim.mean[1]
    assert abs(resid.std() - 0.2) < 0.03
    # empirical covariance close to rho^(0.01|i-j|)
    C = np.cov(X.T)
    assert np.abs(C - exchangeable_cov(p, 0.9)).max() < 0.25
    lin = simulate_blockwise(n=50, p0=5, p_private=2, linear=True, seed=1)
    Xl = lin.X_full[1]
    np.testing.assert_allclose(lin.mean[1], 0.3 * Xl @ lin.params["v_c"] / 9 + 0.7 * Xl @ lin.params["v_t"][1] / 9)


def test_settings_rows():
    assert setting_params("B", 0.6)["rho"] == (0.95, 0.6)
    assert setting_params("F", 0.3)["sigma"] == (0.3, 0.1)
    kw = setting_params("T", 4)
    assert kw["n_tasks"] == 4 and kw["p0"] == 125 and kw["rho"] == (0.95, 0.9, 0.9, 0.9)
    assert setting_params("ablation", 200)["n"] == (300, 200)
    assert set(SETTINGS) >= set("ABCDEF")
    sim = simulate_blockwise(**{**setting_params("T", 3), "n": 20, "p0": 6, "p_private": 2}, seed=0)
    assert sim.data.n_tasks == 3 and sim.data.observed.to_numpy().sum() == 6
    with pytest.raises(ValueError, match="unknown setting"):
        setting_params("Z", 1)


def test_adni_layout_loader(tmp_path):
    from hetmtl.blockwise.adni import load_adni_mtlhmb, simulate_adni_like

    df = simulate_adni_like(seed=0)
    assert df.shape == (141, 682)
    path = tmp_path / "adni.csv"
    df.to_csv(path, index=False)
    d = load_adni_mtlhmb(path)
    assert d.task_names == ["target", "source"] and d.source_names == ["MRI", "PET", "GENE"]
    assert d.source_dims == [267, 113, 300] and d.n_per_task == [72, 69]
    assert d.private_source == [1, 2]
    with pytest.raises(FileNotFoundError, match="not shipped"):
        load_adni_mtlhmb(tmp_path / "missing.csv")
    bad = df.copy()
    bad.loc[0, "X_3_1"] = 1.0  # a gene value in a PET-only (target) row
    bad.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="task 'target', block 'GENE': partially missing"):
        load_adni_mtlhmb(path)
