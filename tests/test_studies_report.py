"""Study reports: numbers recomputed by hand for a tiny study, reference deltas, figures, built-ins."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from hetmtl.studies import (MethodSpec, Study, compare_reference, load_results, paired_differences, run_study,
                            summary_table, write_report)

FAKES = "_study_fakes"
# scores by setting (mu) and replicate: hand-made, so every summary number can be checked by hand
TABLE_A = {"0.0": [1.0, 2.0, 4.0], "1.0": [0.0, 0.0, 3.0]}
TABLE_B = {"0.0": [2.0, 2.0, 7.0], "1.0": [1.0, 2.0, 3.0]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    s = Study(name="tiny", generator=f"{FAKES}:toy", grid={"mu": [0.0, 1.0]}, n_reps=3, seed=1,
              methods=[MethodSpec("a", f"{FAKES}:fixed_method", {"table": TABLE_A}),
                       MethodSpec("b", f"{FAKES}:fixed_method", {"table": TABLE_B}),
                       MethodSpec("sites", f"{FAKES}:per_site_method", {"values": {"s1": 0.0, "s2": 1.0}})],
              metrics=["score", "mse"])
    run_study(s, out, progress=False)
    return out


def test_summary_by_hand(tiny):
    summ = summary_table(load_results(tiny))
    row = summ[(summ.metric == "score") & (summ.method == "a") & (summ.mu == 0.0)].iloc[0]
    # a at mu=0: 1, 2, 4 -> mean 7/3, SD sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2)/2) = sqrt(7/3), SE sqrt(7)/3
    assert row.n_reps == 3
    assert row["mean"] == pytest.approx(7 / 3)
    assert row.sd == pytest.approx(np.sqrt(7 / 3))
    assert row.se == pytest.approx(np.sqrt(7) / 3)
    row = summ[(summ.metric == "score") & (summ.method == "b") & (summ.mu == 1.0)].iloc[0]
    assert (row["mean"], row.sd, row.se) == pytest.approx((2.0, 1.0, 1 / np.sqrt(3)))
    # per-site rows are averaged within a replicate first: replicate r gives (r + r + 1)/2 = r + 0.5
    row = summ[(summ.metric == "mse") & (summ.method == "sites") & (summ.mu == 0.0)].iloc[0]
    assert (row.n_reps, row["mean"], row.sd, row.se) == pytest.approx((3, 1.5, 1.0, 1 / np.sqrt(3)))
    # methods that do not return a metric have no row for it
    assert not ((summ.metric == "mse") & (summ.method == "a")).any()


def test_paired_differences_by_hand(tiny):
    pdiff = paired_differences(load_results(tiny), "score", baseline="a")
    row = pdiff[(pdiff.method == "b") & (pdiff.mu == 0.0)].iloc[0]
    # b - a at mu=0: 1, 0, 3 -> mean 4/3, SD sqrt(7/3), SE sqrt(7)/3, t(0.975, 2) = 4.302653
    half = 4.302653 * np.sqrt(7) / 3
    assert (row.n_reps, row.mean_diff, row.sd) == pytest.approx((3, 4 / 3, np.sqrt(7 / 3)))
    assert (row.ci_low, row.ci_high) == pytest.approx((4 / 3 - half, 4 / 3 + half), rel=1e-6)
    row = pdiff[(pdiff.method == "b") & (pdiff.mu == 1.0)].iloc[0]
    # b - a at mu=1: 1, 2, 0 -> mean 1, SD 1
    assert (row.mean_diff, row.sd) == pytest.approx((1.0, 1.0))
    assert set(pdiff.method) == {"b"}  # 'sites' has no 'score'
    with pytest.raises(ValueError, match="baseline 'zzz'"):
        paired_differences(load_results(tiny), "score", baseline="zzz")


def test_reference_deltas(tiny):
    summ = summary_table(load_results(tiny))
    ref = pd.DataFrame({"mu": [0, 1.0, 2.0], "method": ["a", "b", "a"], "metric": ["score"] * 3,
                        "value": [2.0, 2.5, 1.0], "source": ["paper"] * 3})
    comp = compare_reference(summ, ref, ["mu"])
    assert len(comp) == 3
    r0 = comp.iloc[0]  # ours 7/3 vs 2 (integer 0 in the reference matches 0.0)
    assert (r0.ours, r0.delta, r0.rel_delta) == pytest.approx((7 / 3, 1 / 3, 1 / 6))
    assert r0.delta_in_se == pytest.approx((1 / 3) / (np.sqrt(7) / 3))
    assert comp.iloc[1].delta == pytest.approx(-0.5)
    assert np.isnan(comp.iloc[2].ours) and np.isnan(comp.iloc[2].delta)  # a setting we did not run
    with pytest.raises(ValueError, match="neither grid parameters"):
        compare_reference(summ, ref.assign(colour="red"), ["mu"])


def test_write_report_files(tiny, tmp_path):
    ref = tmp_path / "ref.csv"
    pd.DataFrame({"setting": ["mu=0.0"], "method": ["a"], "metric": ["score"], "value": [2.0]}).to_csv(ref, index=False)
    written = write_report(tiny, out=tmp_path / "rep", reference=ref)
    summ = pd.read_csv(written["summary"])
    assert summ.loc[(summ.metric == "score") & (summ.method == "a") & (summ.mu == 0.0), "mean"].item() == pytest.approx(7 / 3)
    assert pd.read_csv(written["reference"]).delta.item() == pytest.approx(1 / 3)
    md = written["report"].read_text()
    assert "| mu=0.0 | 2.333 (0.88) | 3.667 (1.7) |" in md
    assert (tmp_path / "rep" / "boxplot_mse.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "curve_mse_vs_mu.png").exists()
    assert (tmp_path / "rep" / "curve_max_mse_vs_mu.png").exists()  # the per-site method has units
    assert "units_mse" in written and "| mu=0.0 | sites | 2 | 1.5 | 2 | s2 |" in md


def test_report_lists_failures(tmp_path):
    s = Study(name="f", generator=f"{FAKES}:toy", grid={"mu": [0.0]}, n_reps=3,
              methods=[MethodSpec("mean", f"{FAKES}:mean_method"),
                       MethodSpec("fails", f"{FAKES}:failing_method", {"fail_on": [0, 2]})])
    run_study(s, tmp_path, progress=False)
    written = write_report(tmp_path, figures=False)
    fail = pd.read_csv(written["failures"])
    assert fail.replicate.tolist() == [0, 2] and (fail.method == "fails").all()
    assert "## Failures" in written["report"].read_text()
    # coverage figure: nominal line and a curve per method
    s2 = Study(name="c", generator=f"{FAKES}:toy", grid={"mu": [0.0, 1.0]}, n_reps=4,
               methods=[MethodSpec("mean", f"{FAKES}:mean_method")])
    run_study(s2, tmp_path / "c", progress=False)
    assert "fig_coverage" in write_report(tmp_path / "c")


def test_builtin_registry():
    from hetmtl.studies import get_study, list_studies

    names = {s["name"]: s for s in list_studies()}
    assert names["latefusion-eta"]["available"]
    s = get_study("latefusion-eta")
    assert s.grid["eta"] == [0.0, 0.1, 0.25, 0.5, 1.0, 2.0] and s.methods[0].name == "itl-dml"
    with pytest.raises(ValueError, match="unknown built-in study"):
        get_study("nope")
    for name in [n for n, st in names.items() if st["available"]]:  # every built-in survives YAML
        study = get_study(name)
        study.check_resolvable()
        import yaml

        assert Study.from_dict(yaml.safe_load(study.to_yaml())).to_dict() == study.to_dict()


def test_latefusion_builtin_method_against_truth(tmp_path):
    """Per-site DML rows of the built-in method agree with a direct fit and the simulated truth."""
    from hetmtl.latefusion import MultiSiteDML
    from hetmtl.studies.builtin import latefusion_generator
    from sklearn.linear_model import LinearRegression, LogisticRegression

    s = Study(name="lf", generator="latefusion", grid={"eta": [0.5]}, fixed={"n_sites": 3, "n_range": [150, 150]},
              n_reps=1, seed=5, methods=[MethodSpec("itl", "site-dml", {"learners": "linear", "n_folds": 2})])
    run_study(s, tmp_path, progress=False)
    rows = load_results(tmp_path).frame
    assert len(rows) == 3 and set(rows.site) == {"site01", "site02", "site03"}
    data_seed, method_seed = s.seeds(0, 0)
    sim = latefusion_generator(eta=0.5, n_sites=3, n_range=(150, 150), random_state=data_seed)
    est = MultiSiteDML(model="ate", ml_outcome=LinearRegression(), ml_treatment=LogisticRegression(max_iter=1000), n_rep=1,
                       n_folds=2, random_state=method_seed).fit(sim.data)
    tab = est.summary_frame()
    for k, r in enumerate(rows.sort_values("site").itertuples()):
        assert r.estimate == pytest.approx(tab["coef"].iloc[k])
        assert r.truth == pytest.approx(sim.theta[k, 0])
        assert r.bias == pytest.approx(r.estimate - r.truth) and r.mse == pytest.approx(r.bias ** 2)
        lo, hi = tab.iloc[k, -2], tab.iloc[k, -1]
        assert r.ci_width == pytest.approx(hi - lo) and r.coverage == float(lo <= r.truth <= hi)


def test_unit_summary_by_hand(tiny):
    from hetmtl.studies.report import unit_summary

    u = unit_summary(load_results(tiny), "mse")
    # per_site_method: site s1 gives r, s2 gives r + 1 over r = 0, 1, 2 -> per-site means 1 and 2
    row = u[(u.method == "sites") & (u.mu == 1.0)].iloc[0]
    assert (row.n_units, row.avg, row["max"], row["max_at"]) == (2, 1.5, 2.0, "s2")
    assert set(u.method) == {"sites"}
    assert unit_summary(load_results(tiny), "score").empty


def test_latefusion_fused_methods_share_the_site_fits(tmp_path):
    """The fused methods start from the same per-site DML fits as ITL (paired) and equal a direct
    LateFusion fit on those summaries."""
    lf = pytest.importorskip("hetmtl.latefusion")
    if not hasattr(lf, "LateFusion"):
        pytest.skip("LateFusion not on this branch")
    from hetmtl.latefusion import LateFusion, MultiSiteDML
    from hetmtl.studies.builtin import latefusion_generator
    from sklearn.linear_model import LinearRegression, LogisticRegression

    common = {"learners": "linear", "n_folds": 2}
    s = Study(name="lf2", generator="latefusion", grid={"eta": [0.25]}, fixed={"n_sites": 4, "n_range": [120, 120]},
              n_reps=1, seed=9, methods=[MethodSpec("itl", "site-dml", common),
                                         MethodSpec("sq", "late-fusion", {**common, "penalty": "squared", "C": 1.0}),
                                         MethodSpec("grp", "late-fusion", {**common, "penalty": "group", "C": 1.0,
                                                                           "n_boot": 200})])
    run_study(s, tmp_path, progress=False)
    f = load_results(tmp_path).frame.set_index(["method", "site"]).sort_index()
    assert len(f) == 12 and f.loc["sq", "fused"].isin([0.0, 1.0]).all()
    data_seed, method_seed = s.seeds(0, 0)
    sim = latefusion_generator(eta=0.25, n_sites=4, n_range=(120, 120), random_state=data_seed)
    dml = MultiSiteDML(model="ate", ml_outcome=LinearRegression(), ml_treatment=LogisticRegression(max_iter=1000), n_rep=1,
                       n_folds=2, random_state=method_seed).fit(sim.data)
    np.testing.assert_allclose(f.loc["itl", "estimate"], dml.summary_frame()["coef"])
    for name, opts in (("sq", {"penalty": "squared"}), ("grp", {"penalty": "group", "n_boot": 200})):
        fit = LateFusion(C=1.0, random_state=method_seed, **opts).fit(dml.summaries())
        direct, ci = fit.summary_frame(), fit.confint().drop(index="(centre)", level="site")
        np.testing.assert_allclose(f.loc[name, "estimate"], direct["coef"])
        np.testing.assert_allclose(f.loc[name, "ci_width"], ci["97.5 %"] - ci["2.5 %"])  # the reported interval
        # truth is the simulated per-site effect, the same for every method
        np.testing.assert_allclose(f.loc[name, "truth"], sim.theta[:, 0])


def test_shipped_reference_tables():
    """The shipped reference values parse and match the grids of their studies (the MTL-HMB paper's
    Tables 2-9, arXiv 2505.24413: 6, 5, 6, 6, 4, 5, 3 and 1 rows of STL/HTL/MTL-HMB/MBI)."""
    from pathlib import Path

    import hetmtl.studies

    ref_dir = Path(hetmtl.studies.__file__).parent / "reference"
    rows = {"A": 6, "B": 5, "C": 6, "D": 6, "E": 4, "F": 5, "T": 3, "linear": 1}
    for setting, n in rows.items():
        ref = pd.read_csv(ref_dir / f"blockwise-{setting}.csv")
        assert len(ref) == 4 * n and set(ref.method) == {"stl", "htl", "mtl-hmb", "mbi"}
        assert (ref.metric == "rmse").all() and (ref.value > 0).all() and (ref.sd > 0).all()
        assert ref.source.str.fullmatch(r"MTL-HMB paper \(arXiv 2505\.24413\) Table [2-9]").all()
    a = pd.read_csv(ref_dir / "blockwise-A.csv")
    assert a.loc[(a.setting_value == 0.95) & (a.method == "mtl-hmb"), "value"].item() == 0.270
    lf = pd.read_csv(ref_dir / "latefusion-eta.csv")
    from hetmtl.studies import get_study

    assert set(lf.eta) <= set(get_study("latefusion-eta").grid["eta"])


def test_reference_boolean_grid_values_match():
    summ = pd.DataFrame({"setting_index": [0], "setting": ["linear=true"], "linear": [True], "method": ["stl"],
                         "metric": ["rmse"], "n_reps": [4], "mean": [0.3], "sd": [0.02], "se": [0.01]})
    ref = pd.DataFrame({"linear": [True], "method": ["stl"], "metric": ["rmse"], "value": [0.295], "sd": [0.028]})
    comp = compare_reference(summ, ref, ["linear"])
    assert comp.delta.item() == pytest.approx(0.005)
    assert (comp.reference_sd.item(), comp.ours_sd.item()) == (0.028, 0.02)


@pytest.mark.filterwarnings("ignore::hetmtl.exceptions.ConvergenceWarning")  # deliberately short training
def test_encoders_builtin_matches_direct_comparison(tmp_path):
    """The built-in encoder method on the shared split equals compare_methods on that split."""
    enc = pytest.importorskip("hetmtl.encoders")
    from hetmtl.studies import get_study
    from hetmtl.studies.builtin import encoders_generator, encoders_splitter

    base = get_study("encoders-ablation")
    assert [m.name for m in base.methods][:2] == ["dual", "dual_cv"]
    opts = {"max_epochs": 15, "hidden": [8]}
    s = Study(name="enc", generator="encoders-latent", splitter="encoders-split", n_reps=1, seed=4,
              grid={"posterior_drift": [1.0]}, fixed={"n_tasks": 3, "n": 40},
              methods=[MethodSpec(n, "encoders", {"name": n, **opts}) for n in ("dual", "stl")])
    run_study(s, tmp_path, progress=False)
    f = load_results(tmp_path).frame
    assert len(f) == 6 and set(f.task) == {"task1", "task2", "task3"}
    data_seed, split_seed = s.seeds(0, 0)
    sim = encoders_generator(posterior_drift=1.0, n_tasks=3, n=40, random_state=data_seed)
    direct = enc.compare_methods(*encoders_splitter(sim, split_seed), ["dual", "stl"], random_state=split_seed, **opts)
    ours = f.set_index(["method", "task"])["rmse"].sort_index()
    np.testing.assert_allclose(ours, direct.set_index(["method", "task"])["rmse"].sort_index(), rtol=1e-6)


def test_study_plots(tiny):
    from hetmtl.plotting.studies import coverage_plot, metric_boxplot, metric_curve
    from hetmtl.studies import replicate_frame

    res = load_results(tiny)
    rep = replicate_frame(res, ["score", "mse"])
    fig = metric_boxplot(rep, "score", methods=res.methods)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["mu=0.0", "mu=1.0"]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["a", "b", "sites"]
    summ = summary_table(res)
    line = metric_curve(summ, "mu", "score", methods=res.methods).axes[0].lines[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [7 / 3, 1.0])  # method a at mu = 0, 1
    cov = summ.assign(metric="coverage")
    ax = coverage_plot(cov[cov.method == "a"], "mu").axes[0]
    assert ax.lines[0].get_ydata()[0] == 0.95  # the nominal line
    with pytest.raises(ValueError, match="metric 'nope'"):
        metric_boxplot(rep, "nope")
