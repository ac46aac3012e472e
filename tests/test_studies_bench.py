"""The benchmark protocols as built-in studies: a tiny encoders and a tiny block-wise study run
through the runner give the numbers of calling the methods directly with the same seeds and
splits, and the benchmark drivers' --summarize path works on tiny stores."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetmtl.studies import MethodSpec, get_study, load_results, run_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks/

pytestmark = pytest.mark.filterwarnings("ignore::hetmtl.exceptions.ConvergenceWarning")  # short training
ENC_TINY = {"max_epochs": 6, "hidden": [8], "patience": 3}


def _tiny_encoders_study():
    """encoders-imbalance with small tasks, short training and four of its methods."""
    base = get_study("encoders-imbalance")
    keep = {"dual", "dual_lam=0.03", "stl", "shared_lam=0.3"}
    methods = [MethodSpec(m.name, m.fn, {**m.options, **ENC_TINY}) for m in base.methods if m.name in keep]
    dual = next(m for m in methods if m.name == "dual")
    for c in dual.options["candidates"].values():
        assert set(c) == {"method", "lam"}
    return replace(base, methods=methods, n_reps=2, fixed={**base.fixed, "n": [30, 40, 60, 30, 50]})


@pytest.fixture(scope="module")
def encoders_store(tmp_path_factory):
    pytest.importorskip("hetmtl.encoders")
    root = tmp_path_factory.mktemp("enc")
    study = _tiny_encoders_study()
    run_study(study, root / "stores" / "encoders-imbalance", progress=False)
    return root, study


def test_encoders_study_matches_direct_fits(encoders_store):
    from hetmtl.encoders import simulate_latent
    from hetmtl.encoders.baselines import make_method

    root, study = encoders_store
    f = load_results(root / "stores" / "encoders-imbalance").frame
    assert set(f.method) == {"dual", "dual_lam=0.03", "stl", "shared_lam=0.3"} and len(f) == 2 * 4 * 5
    common = {k: v for k, v in study.methods[0].options.items() if k != "candidates"}
    common["hidden"] = tuple(common["hidden"])
    assert common["task_weights"] == "sqrt_n" and common["n_specific"] == 2
    for r in (0, 1):
        seed = 17 + 1000 * r  # the pre-runner script's seeds
        assert study.seeds(0, r) == (seed, seed)
        sim = simulate_latent(**study.fixed, random_state=seed)
        tr, va, te = sim.data.split(random_state=seed)
        truth = sim.test_data(500, random_state=seed + 1)
        direct = {}
        for label, method, lam in (("dual_lam=0.003", "dual", 0.003), ("dual_lam=0.03", "dual", 0.03),
                                   ("dual_lam=0.3", "dual", 0.3), ("stl", "stl", 0.03),
                                   ("shared_lam=0.3", "shared_only", 0.3)):
            model = make_method(method, **common, lam_alpha=lam, lam_beta=lam, random_state=seed)
            model.fit(tr, validation_data=va)
            direct[label] = (float(model.score_tasks(va).mse.sum()), model.score_tasks(te).rmse,
                             model.score_tasks(truth).rmse)
        best = min(("dual_lam=0.003", "dual_lam=0.03", "dual_lam=0.3"), key=lambda k: direct[k][0])
        rows = f[f.replicate == r].set_index(["method", "task"])
        for label in ("dual_lam=0.03", "stl", "shared_lam=0.3", "dual"):
            val, rmse, rmse_truth = direct[best if label == "dual" else label]
            got = rows.loc[label]
            np.testing.assert_allclose(got.rmse.loc[rmse.index], rmse, rtol=1e-10)
            np.testing.assert_allclose(got.rmse_truth.loc[rmse.index], rmse_truth, rtol=1e-10)
            np.testing.assert_allclose(got.val_mse_sum, val, rtol=1e-10)
        assert (rows.loc["dual"].chosen == best).all()
        # paired: every method was trained on the same rows of every task
        n_train = rows.n_train.unstack("method")
        assert (n_train.nunique(axis=1) == 1).all() and n_train["stl"].tolist() == [tr[t].n for t in tr.tasks]


def test_encoders_driver_summarize(encoders_store):
    from benchmarks import bench_encoders

    root, _ = encoders_store
    out = root / "results"
    bench_encoders.main(["--summarize", "--stores", str(root / "stores"), "--results", str(out), "--no-figures"])
    assert not (root / "stores" / "encoders-imbalance" / "report").exists()  # store reports only on request
    text = (out / "encoders_summary.md").read_text()
    assert "## imbalance (2 replicates)" in text and "## ablation: not run" in text
    csv = pd.read_csv(out / "encoders_imbalance.csv")
    assert list(csv.columns) == ["method", "task", "n_train", "val_mse_sum", "rmse", "rmse_truth", "seconds", "rep",
                                 "chosen"]
    # the table's mean (SD) and paired difference recomputed by hand from the exported rows
    per_rep = csv.groupby(["rep", "method"]).rmse_truth.mean().unstack("method")
    line = next(x for x in text.splitlines() if x.startswith("| stl "))
    d = per_rep["stl"] - per_rep["dual"]
    assert f"{per_rep['stl'].mean():.3f} ({per_rep['stl'].std():.3f})" in line
    assert f"{d.mean():+.3f} ({d.std() / np.sqrt(2):.3f})" in line
    bench_encoders.main(["--summarize", "--stores", str(root / "stores"), "--results", str(out), "--no-figures",
                         "--store-reports"])
    assert (root / "stores" / "encoders-imbalance" / "report" / "summary.csv").exists()


def test_encoders_legacy_seeds_and_protocol():
    pytest.importorskip("hetmtl.encoders")
    s = get_study("encoders-heterogeneity")
    assert s.grid == {"posterior_drift": [0.0, 1.0, 3.0, 6.0]} and s.n_reps == 20
    assert s.seeds(2, 3) == (3017, 3017)  # the same data in every kappa, as the pre-runner script
    names = [m.name for m in s.methods]
    assert names[:2] == ["dual", "dual_cv"] and "dual_lam=0" in names and {"stl", "pooled", "hps"} <= set(names)
    cands = s.methods[1].options["candidates"]
    assert sorted(cands) == ["dual_lam=0.003", "dual_lam=0.03", "dual_lam=0.3", "shared_lam=0.003",
                             "shared_lam=0.03", "shared_lam=0.3"]


# ------------------------------------------------------------------------------------ block-wise
BW_TINY = {"grid": "small", "hbi_grid": "small", "max_epochs": 3, "hbi_max_epochs": 3}


@pytest.fixture(scope="module")
def blockwise_store(tmp_path_factory):
    pytest.importorskip("hetmtl.blockwise")
    from benchmarks.bench_blockwise_repro import profile_name
    from hetmtl.studies.builtin import blockwise_study

    root = tmp_path_factory.mktemp("bw")
    study = blockwise_study("D", methods=["mtl-hmb", "stl", "step1+stl"], n_reps=2, **BW_TINY)
    d = root / "stores" / profile_name(**BW_TINY) / "blockwise-D"
    run_study(study, d, only={"setting_value": [100]}, progress=False)
    return root, study, d


def test_blockwise_study_matches_direct_fits_and_shares_hbi(blockwise_store):
    from hetmtl.blockwise import MTLHMB, STL, make_split, setting_params, simulate_blockwise

    _, study, d = blockwise_store
    res = load_results(d)
    assert set(res.records.setting) == {"setting_value=100"} and (res.records.status == "ok").all()
    f = res.frame.set_index(["replicate", "method", "task"])
    for r in (0, 1):
        assert study.seeds(0, r) == (r, r)  # the authors' seeds 0..19
        data = simulate_blockwise(**setting_params("D", 100), seed=r).data
        split = make_split(data, seed=r)
        common = dict(grid="small", max_epochs=3, n_threads=1, random_state=r, selection="min")
        mtl = MTLHMB(hbi_grid="small", hbi_max_epochs=3, dr_mode="per_task", engine="torch", **common).fit(data, split)
        stl = STL(**common).fit(data, split)
        s1 = STL(features="imputed", hbi_grid="small", hbi_max_epochs=3, imputer=mtl.imputer_, **common).fit(data, split)
        for name, est in (("mtl-hmb", mtl), ("stl", stl), ("step1+stl", s1)):
            got = f.loc[(r, name)]
            np.testing.assert_allclose(got.rmse.loc[est.test_rmse_.index], est.test_rmse_, rtol=1e-6)
            np.testing.assert_allclose(got.rmse_code.loc[est.test_rmse_.index],
                                       est.test_table_["rmse_code"].iloc[:-1], rtol=1e-6)  # the code's batch metric
            assert got.n.tolist() == [len(t) for t in split.test]
            assert json.loads(got.selected.iloc[0]) == json.loads(json.dumps(est.selected_config_))


def test_blockwise_driver_summarize_and_reference_deltas(blockwise_store):
    from benchmarks import bench_blockwise_repro as bw

    root, _, d = blockwise_store
    out = root / "results"
    bw.main(["--summarize", "--stores", str(root / "stores"), "--results", str(out), "--no-figures"])
    summ = pd.read_csv(out / "blockwise_repro_summary.csv", dtype=str)
    row = summ[(summ.setting == "D") & (summ.value == "100")].iloc[0]
    per_rep = load_results(d).frame.groupby(["replicate", "method"]).rmse.mean().unstack("method")
    assert row["ours MTL-HMB"] == f"{per_rep['mtl-hmb'].mean():.3f} ({per_rep['mtl-hmb'].std():.3f})"
    assert row["paper MTL-HMB"] == "0.598 (0.277)" and row["reps"] == "2" and row["grid"] == "small"
    assert row["MTL-HMB < STL"] == ("yes" if per_rep["mtl-hmb"].mean() < per_rep["stl"].mean() else "no")
    ref = pd.read_csv(out / "blockwise_repro_reference.csv")
    m = ref[(ref.setting == "D") & (ref.setting_value == 100) & (ref.method == "mtl-hmb")].iloc[0]
    assert m.reference == 0.598 and m.delta == pytest.approx(per_rep["mtl-hmb"].mean() - 0.598)
    assert set(ref.method) == {"mtl-hmb", "stl"}  # paper rows we did not run are left out
    # Bayes floor over the seeds run (0, 1), the authors' code printouts (code setting C n=100) on their metric
    from hetmtl.blockwise import bayes_floor, setting_params

    assert float(row["floor"]) == pytest.approx(bayes_floor(**setting_params("D", 100), seed=[0, 1]).average, abs=6e-4)
    assert row["paper below floor"] == "no" and row["code MTL-HMB"] == "0.780 (0.707)"
    code = load_results(d).frame.groupby(["replicate", "method"]).rmse_code.mean().unstack("method")
    assert row["code gap metric"] == "rmse_code"
    assert float(row["gap to code STL"]) == pytest.approx(code["stl"].mean() - 0.953, abs=6e-4)
    c = ref[(ref.metric == "rmse_code") & (ref.method == "stl")].iloc[0]
    assert c.reference == 0.953 and c.source.startswith("authors' code printout (C 100")
    assert c.ours == pytest.approx(code["stl"].mean())
    raw = pd.read_csv(out / "blockwise_repro_raw.csv", dtype={"value": str})
    assert len(raw) == 6 and set(raw.method) == {"MTL-HMB", "STL", "Step1+STL"}
    assert raw.rmse_avg.tolist() == pytest.approx(
        [per_rep.loc[r, bw.NAMES[m]] for r, m in zip(raw.rep, raw.method)])
    # the per-profile tally of the checks counts the summary's rows
    diff = (per_rep["mtl-hmb"] - per_rep["stl"]).to_numpy()
    half = stats.t.ppf(0.975, 1) * diff.std(ddof=1) / np.sqrt(2)
    text = (out / "blockwise_repro_summary.md").read_text()
    tally = text.split("## The issue's checks, by profile")[1].strip().splitlines()[2]
    assert [c.strip() for c in tally.strip("|").split("|")] == [
        "small", "small", "torch", "1", "2", "0 of 1", f"{int(diff.mean() < 0)} of 1", f"{int(diff.mean() + half < 0)} of 1",
        f"{int(row['MTL-HMB <= paper + 1 SE'] == 'yes')} of 1"]


def test_encoders_study_under_a_timeout_gives_the_same_numbers(encoders_store, tmp_path):
    """With a time limit each job runs in a forked child (torch fits included): same results."""
    root, study = encoders_store
    run_study(study, tmp_path, n_jobs=2, timeout=300, progress=False)
    drop = ["seconds", "fit_seconds"]
    a = load_results(root / "stores" / "encoders-imbalance").frame.drop(columns=drop)
    b = load_results(tmp_path).frame.drop(columns=drop)
    pd.testing.assert_frame_equal(a, b)


def test_blockwise_rows_with_the_same_dgp_share_replicates(tmp_path, capsys):
    """The paper's rows that are one DGP (its own tables repeat their numbers) are run once and the
    summary reports the stored replicates of the fullest of them, labelled."""
    from benchmarks import bench_blockwise_repro as bw
    from hetmtl.blockwise.simulate import dgp_key, setting_params, simulate_blockwise

    assert dgp_key("B", 0.7) == dgp_key("D", 300) == dgp_key("E", 25) == dgp_key("F", 0.1) != dgp_key("D", 200)
    assert dgp_key("A", 0.8) == dgp_key("C", 0.3) != dgp_key("A", 0.9)
    a, b = (simulate_blockwise(**setting_params(*row), seed=3).data for row in (("F", 0.1), ("D", 300)))
    np.testing.assert_array_equal(np.concatenate([a.y(t) for t in (0, 1)]), np.concatenate([b.y(t) for t in (0, 1)]))
    src = bw.shared_sources({("D", "300"): 20, ("B", "0.7"): 2})
    assert src[("B", "0.7")] == src[("E", "25")] == src[("F", "0.1")] == src[("D", "300")] == ("D", "300")
    assert src[("A", "0.8")] == src[("C", "0.3")] == ("A", "0.8") and src[("D", "200")] == ("D", "200")
    assert bw.shared_sources({})[("D", "300")] == ("B", "0.7")  # ties: paper order, unless a row is asked for
    assert bw.shared_sources({("A", "0.8"): 2, ("C", "0.3"): 2}, [("C", "0.3")])[("A", "0.8")] == ("C", "0.3")

    options = dict(BW_TINY, n_threads=1)
    stores = tmp_path / "stores"
    bw.run({"D": [300]}, 1, options, ["mtl-hmb", "stl"], stores=stores, progress=False)
    capsys.readouterr()
    bw.run({"E": [25], "F": [0.1]}, 1, options, ["mtl-hmb", "stl"], stores=stores, progress=False)
    out = capsys.readouterr().out
    assert "E 25: the same data as D 300" in out and "F 0.1: the same data as D 300" in out
    assert "D [300]: 0 jobs run" in out and not (stores / bw.profile_name(**BW_TINY) / "blockwise-E").exists()
    bw.main(["--summarize", "--stores", str(stores), "--results", str(tmp_path), "--no-figures"])
    summ = pd.read_csv(tmp_path / "blockwise_repro_summary.csv", dtype=str).fillna("").set_index(["setting", "value"])
    assert list(summ.index) == [("B", "0.7"), ("D", "300"), ("E", "25"), ("F", "0.1")]
    assert summ["replicates of"].tolist() == ["D 300", "", "D 300", "D 300"]
    for col in ("ours MTL-HMB", "ours STL", "reps", "floor", bw.PAIRED):
        assert summ[col].nunique() == 1, col
    assert summ.loc[("E", "25"), "paper MTL-HMB"] == "0.375 (0.143)"  # the row's own paper numbers


def test_blockwise_speed_flop_count_matches_closed_form():
    """The speed benchmark's work count: a Step-2 validation pass against the matmul FLOPs of its layers."""
    import torch

    from benchmarks.bench_blockwise_speed import _epochs_run, _step_flops
    from hetmtl.blockwise.nets import Step2Net

    T, p0, P, h, L, n = 2, 10, 6, 8, 3, 5
    net = Step2Net(p0, P, T, torch.zeros(T, P), h, L)
    params, cfg = net.init([dict(width=h, depth=L, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)], [0], 0,
                           torch.float32)
    data = {"x0": torch.randn(T, n, p0), "xf": torch.randn(T, n, P), "y": torch.randn(T, n), "w": torch.ones(T, n)}
    rows = T * n
    hidden = (L - 1) * 2 * rows * h * h * (2 + 1 + 2)  # c, u; g; r on own and shared codes
    first = 2 * rows * (p0 * h + P * h + 2 * (2 * h) * h)  # c0, u0, g0, r0
    out = 2 * rows * (2 * h + h)  # rout, gout
    step, val = _step_flops(net, params, cfg, data, data)
    assert val == first + hidden + out
    assert val < step < 4 * val  # backward about twice the forward, plus the regularisers
    assert _epochs_run(4, 30, 25000) == 35 and _epochs_run(4, 30, 20) == 20


def test_profile_names_and_method_specs_carry_the_engine():
    from benchmarks import bench_blockwise_repro as bw
    from hetmtl.studies.builtin import BLOCKWISE_PROTOCOL, blockwise_method_specs

    assert bw.profile_name(**BW_TINY) == "small-small-e3-h3-per_task"  # torch stores keep their names
    assert bw.profile_name(**BW_TINY, engine="native") == "small-small-e3-h3-per_task-native"
    for engine in ("torch", "native"):
        opts = bw._profile_options(bw.profile_name(**BW_TINY, engine=engine))
        assert opts == {**BW_TINY, "dr_mode": "per_task", "engine": engine}
    assert BLOCKWISE_PROTOCOL["engine"] == "torch"
    specs = {s.name: s.options for s in blockwise_method_specs(["mtl-hmb", "htl", "stl", "step1+stl"], engine="native")}
    assert specs["mtl-hmb"]["engine"] == specs["htl"]["engine"] == "native"
    assert "engine" not in specs["stl"] and "engine" not in specs["step1+stl"]  # STL trains on torch
