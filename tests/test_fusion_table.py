"""Columnar summaries (SummaryTable): identical fits to the object path, validation at scale,
published-estimates input (metafor's BCG random-effects analysis), the CLI's --estimates."""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fusion_testdata import make_summaries

from hetmtl.cli import main
from hetmtl.exceptions import SummaryValidationError
from hetmtl.latefusion import LateFusion, SiteSummary
from hetmtl.latefusion.fusion import eb_tau2
from hetmtl.latefusion.table import SummaryTable

BCG = json.loads((Path(__file__).parent / "data" / "ebci" / "metafor_bcg.json").read_text())


@pytest.mark.parametrize("params", [dict(), dict(penalty="squared", tau2="reml"), dict(penalty="group", metric="euclidean"),
                                    dict(penalty="squared", C=None)])
def test_table_and_object_paths_give_identical_fits(params):
    rng = np.random.default_rng(3)
    sums, _ = make_summaries(rng, K=9, d=2, eta=0.3, outliers=1)
    a = LateFusion(**params).fit(sums)
    b = LateFusion(**params).fit(SummaryTable.from_summaries(sums))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.centre_, b.centre_)
    assert a.C_ == b.C_
    pd.testing.assert_frame_equal(a.summary_frame(), b.summary_frame())
    if "cv_results_" in a.__dict__:
        pd.testing.assert_frame_equal(a.cv_results_, b.cv_results_)


def test_json_files_round_trip_through_the_table(tmp_path):
    rng = np.random.default_rng(4)
    sums, _ = make_summaries(rng, K=5, d=2)
    paths = []
    for s in sums:
        paths.append(tmp_path / f"{s.site}.json")
        s.to_json(paths[-1])
    t = SummaryTable.read_json(paths)
    np.testing.assert_array_equal(t.theta, np.stack([s.theta for s in sums]))
    assert [s.to_json() for s in t.to_summaries()] == [s.to_json() for s in sums]
    fits = [LateFusion(C=0.5).fit(x) for x in (paths, t, sums)]
    for f in fits[1:]:
        np.testing.assert_array_equal(f.coef_, fits[0].coef_)


def _big_table(K, d=2, **edit):
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(K, d))
    Omega = np.broadcast_to(np.eye(d), (K, d, d)).copy()
    sites = [f"site{k}" for k in range(K)]
    J = -np.broadcast_to(np.eye(d), (K, d, d)).copy()
    n = np.full(K, 100)
    for key, fn in edit.items():
        fn(locals()[key])
    return SummaryTable(sites, "ate", [f"c{j}" for j in range(d)], n, theta, J, Omega)


def test_validation_at_scale_names_the_site():
    K = 20_000
    t = _big_table(K)  # a valid table of 20,000 sites validates (vectorised)
    assert t.K == K and not t.theta.flags.writeable
    with pytest.raises(SummaryValidationError, match=r"duplicate site names: \['site7'\]"):
        _big_table(K, sites=lambda s: s.__setitem__(12_345, "site7"))
    with pytest.raises(SummaryValidationError, match="site 'site15000'.*Omega is not positive definite"):
        _big_table(K, Omega=lambda O: O.__setitem__((15_000, 0, 0), -1.0))
    with pytest.raises(SummaryValidationError, match="site 'site9'.*theta must be finite"):
        _big_table(K, theta=lambda T: T.__setitem__((9, 1), np.nan))
    with pytest.raises(SummaryValidationError, match="site 'site3'.*J is singular"):
        _big_table(K, J=lambda J: J.__setitem__((3, 1, 1), 0.0))
    with pytest.raises(SummaryValidationError, match="site 'site11'.*within"):
        _big_table(K, theta=lambda T: T.__setitem__((11, 0), 1e300))


def test_folds_must_add_up_to_n():
    rng = np.random.default_rng(5)
    sums, _ = make_summaries(rng, K=3, d=1)
    s = sums[1]
    with pytest.raises(SummaryValidationError, match="n_train \\+ n_test"):
        SiteSummary(site=s.site, model=s.model, coef_names=s.coef_names, n=s.n + 1, theta=s.theta, J=s.J,
                    Omega=s.Omega, cv_folds=s.cv_folds)


# ----------------------------------------------------------------------------- published estimates
@pytest.mark.parametrize("method", ["REML", "DL", "PM"])
def test_bcg_estimates_give_metafors_random_effects_analysis(method):
    yi, vi = np.array(BCG["yi"]), np.array(BCG["vi"])
    ref = BCG[method]
    table = SummaryTable.from_estimates(yi, se=np.sqrt(vi), sites=[f"trial {i + 1}" for i in range(13)])
    assert not table.n_given and table.model == "estimates"
    fit = LateFusion(penalty="squared", tau2=method.lower(), centre_ci="wald").fit(table)
    if method == "PM":  # metafor's PM root has uniroot's default tolerance (eps^0.25); ours is exact
        assert abs(fit.tau2_ - ref["tau2"]) <= np.finfo(float).eps ** 0.25
        fit = LateFusion(penalty="squared", tau2=ref["tau2"], centre_ci="wald").fit(table)
    assert fit.tau2_ == pytest.approx(ref["tau2"], rel=1e-6)
    c = fit.centre_frame()
    assert c["coef"].iloc[0] == pytest.approx(ref["est"], abs=1e-6)
    assert c["std err"].iloc[0] == pytest.approx(ref["se"], abs=1e-6)
    np.testing.assert_allclose(c[["2.5 %", "97.5 %"]].to_numpy()[0], ref["ci"], atol=1e-6)
    np.testing.assert_allclose(fit.coef_[:, 0], ref["blup"], atol=1e-6)
    # the conditional SE (within-study only) is smaller and labelled as such
    assert c["conditional std err"].iloc[0] < 0.6 * ref["se"]
    knha = LateFusion(penalty="squared", tau2=fit.tau2_).fit(table).centre_frame()
    assert knha["std err"].iloc[0] == pytest.approx(ref["knha_se"], abs=1e-6)
    np.testing.assert_allclose(knha[["2.5 %", "97.5 %"]].to_numpy()[0], ref["knha_ci"], atol=1e-6)


def test_estimates_default_to_the_random_effects_model_and_say_so():
    yi, vi = np.array(BCG["yi"]), np.array(BCG["vi"])
    frame = pd.DataFrame({"site": [f"t{i}" for i in range(13)], "estimate": yi, "se": np.sqrt(vi)})
    fit = LateFusion(penalty="squared").fit(frame)
    assert fit.tau2_ == pytest.approx(eb_tau2(np.array(BCG["yi"])[:, None], np.array(BCG["vi"])[:, None, None]))
    assert 0 < fit.tau2_ < 1
    text = fit.summary()
    assert "random-effects model" in text and "published estimates" in text and "robust empirical Bayes" in text
    with pytest.warns(UserWarning, match="no cv_folds"):
        LateFusion().fit(frame)  # group penalty: fixed fallback C, said in a warning
    with pytest.raises(ValueError, match="needs the sites' n"):
        LateFusion(metric="euclidean").fit(frame)


def test_site_summary_from_estimates_round_trips_without_n(tmp_path):
    s = SiteSummary.from_estimates(0.3, se=0.1, site="study A")
    assert s.n is None and s.vcov[0, 0] == pytest.approx(0.01)
    back = SiteSummary.from_json(s.to_json())
    assert back == s or (back.n is None and np.allclose(back.theta, s.theta))
    s2 = SiteSummary.from_estimates([0.3, 0.1], vcov=[[0.01, 0.002], [0.002, 0.04]], n=120, site="B",
                                    coef_names=["a", "b"])
    np.testing.assert_allclose(s2.vcov, [[0.01, 0.002], [0.002, 0.04]])
    with pytest.raises(SummaryValidationError, match="n is required"):
        SiteSummary(site="x", model="ate", coef_names=["ATE"], n=None, theta=[0.0], J=[[1.0]], Omega=[[1.0]])


def test_estimates_table_errors_name_row_and_column():
    good = pd.DataFrame({"site": ["a", "b", "c"], "estimate": [0.1, 0.2, 0.3], "se": [0.1, 0.1, 0.2]})
    with pytest.raises(SummaryValidationError, match=r"missing column\(s\) \['se'\]"):
        SummaryTable.from_frame(good.drop(columns="se"))
    with pytest.raises(SummaryValidationError, match="row 2: estimate 'x'"):
        SummaryTable.from_frame(good.assign(estimate=["0.1", "x", "0.3"]))
    with pytest.raises(SummaryValidationError, match="site 'b': se must be positive"):
        SummaryTable.from_frame(good.assign(se=[0.1, -1.0, 0.2]))
    with pytest.raises(SummaryValidationError, match="appears twice"):
        SummaryTable.from_frame(pd.concat([good, good.iloc[[0]]]))
    with pytest.raises(SummaryValidationError, match="unknown column"):
        SummaryTable.from_frame(good.assign(weight=1.0))


def test_cli_fuse_estimates_and_option_errors(tmp_path, capsys):
    yi, vi = np.array(BCG["yi"]), np.array(BCG["vi"])
    csv = tmp_path / "bcg.csv"
    pd.DataFrame({"site": [f"t{i}" for i in range(13)], "estimate": yi, "se": np.sqrt(vi)}).to_csv(csv, index=False)
    out = tmp_path / "fused.csv"
    assert main(["fuse", "--estimates", str(csv), "--option", "penalty=squared", "--out", str(out)]) == 0
    assert "published estimates" in capsys.readouterr().out
    assert pd.read_csv(out).shape[0] == 13
    assert main(["fuse", "--estimates", str(csv), "--option", "bogus=1"]) == 1
    err = capsys.readouterr().err
    assert "'bogus' is not a LateFusion option" in err and "penalty" in err
    assert main(["fuse", "--estimates", str(csv), "--level", "95"]) == 1
    err = capsys.readouterr().err
    assert "--level" in err and "0.95" in err  # refused before fitting, the value named


def test_reading_refuses_special_and_oversized_files(tmp_path):
    with pytest.raises(SummaryValidationError, match="is a directory, not a summary file"):
        SiteSummary.read_json(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(" " * 2048)
    with pytest.raises(SummaryValidationError, match="big.json: 2048 bytes, more than the 1024-byte limit"):
        SiteSummary.read_json(big, max_bytes=1024)
    nan = tmp_path / "nan.json"
    nan.write_text('{"format": NaN}')
    with pytest.raises(SummaryValidationError, match="nan.json: not valid JSON"):
        SiteSummary.read_json(nan)


def test_estimates_without_warning_noise():
    frame = pd.DataFrame({"site": ["a", "b", "c", "d"], "estimate": [0.1, 0.4, 0.2, 0.9], "se": [0.1, 0.2, 0.15, 0.3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LateFusion(penalty="squared").fit(frame)


def test_robust_eb_routes_agree_with_their_definitions():
    from hetmtl.inference import robust_ebci

    rng = np.random.default_rng(11)
    K = 25
    se = rng.uniform(0.3, 0.9, K)
    x = rng.normal(size=K)
    y = 0.4 + 0.5 * x + 0.6 * rng.normal(size=K) + se * rng.normal(size=K)
    table = SummaryTable.from_estimates(y, se=se)
    # shrinking toward a regression on site covariates is R's ebci on (y, se, [1, x]), coefficient by coefficient
    fit = LateFusion(penalty="squared", site_covariates=x).fit(table)
    ref = robust_ebci(y, se, X=np.column_stack([np.ones(K), x]))
    got = fit.summary_frame()
    np.testing.assert_allclose(got["robust EB coef"], ref.frame["th_eb"], rtol=1e-12)
    np.testing.assert_allclose(got["robust EB 97.5 %"] - got["robust EB coef"], ref.frame["len_eb"], rtol=1e-10)
    opt = fit.robust_eb_frame(wopt=True)
    ref_opt = robust_ebci(y, se, X=np.column_stack([np.ones(K), x]), wopt=True)
    np.testing.assert_allclose(opt["estimate"], ref_opt.frame["th_op"], rtol=1e-6)  # w_opt solved to ~1e-8
    assert (ref_opt.frame["len_op"] <= ref_opt.frame["len_eb"] + 1e-12).all()
    # the group penalty reports the squared (tau2 = "eb") fit's robust EB intervals beside its own estimates
    grp = LateFusion(C=0.5).fit(table)
    sq = LateFusion(penalty="squared", tau2="eb").fit(table)
    np.testing.assert_allclose(grp.summary_frame()["robust EB coef"], sq.coef_[:, 0], rtol=1e-12)
    np.testing.assert_allclose(grp.confint().iloc[:K]["2.5 %"], sq.confint().iloc[:K]["2.5 %"], rtol=1e-12)
    # no fusion (tau2 huge): the robust EB interval is the per-site Wald interval
    none = LateFusion(penalty="squared", tau2=1e12).fit(table).summary_frame()
    np.testing.assert_allclose(none["2.5 %"], none["dml 2.5 %"], atol=1e-6)
    # a contrast is the coefficient itself when d = 1
    pd.testing.assert_frame_equal(sq.robust_eb_frame(contrast=[1.0]).reset_index(drop=True),
                                  sq.robust_eb_frame().reset_index(drop=True))


def test_fitted_late_fusion_pickles_and_deep_copies():
    import copy
    import pickle

    rng = np.random.default_rng(8)
    sums, _ = make_summaries(rng, K=6, d=2)
    for params in (dict(), dict(penalty="squared", tau2="reml"), dict(ci="bootstrap", n_boot=50, random_state=1)):
        fit = LateFusion(C=0.5 if "tau2" not in params else None, **params).fit(sums)
        frame = fit.summary_frame()
        for back in (pickle.loads(pickle.dumps(fit)), copy.deepcopy(fit)):
            pd.testing.assert_frame_equal(back.summary_frame(), frame)
            np.testing.assert_array_equal(back.path([0.1, 1.0])["theta"], fit.path([0.1, 1.0])["theta"])
