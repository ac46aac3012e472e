"""scikit-learn/statsmodels conventions of the late-fusion family (issues #23 and #25):
parameters validated in fit with errors naming them, one NotFittedError, joblib's n_jobs, one
random_state meaning, verbose progress, statsmodels Summary objects, pickling, cross-fitting
folds, clip=0 and magnitude limits."""
import copy
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import simulate_site
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from statsmodels.iolib.summary import Summary

from hetmtl.data import MultiSiteData
from hetmtl.exceptions import (
    DataValidationError,
    NotFittedError,
    ParameterError,
    SummaryValidationError,
)
from hetmtl.latefusion import (
    LateFusion,
    MultiSiteDML,
    MultiTaskNuisance,
    SiteDML,
    SummaryTable,
    random_effects,
)
from hetmtl.latefusion.simulate import make_latefusion_data

LIN = dict(ml_outcome=LinearRegression(), ml_treatment=LogisticRegression())


@pytest.fixture(scope="module")
def sim():
    return make_latefusion_data(1, n_sites=4, eta=0.2, random_state=3)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(1)
    return SummaryTable.from_estimates(rng.normal(size=6), se=np.full(6, 0.4), n=np.full(6, 120))


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, name", [
    (dict(n_folds=2.5), "n_folds"), (dict(n_folds=1), "n_folds"), (dict(n_rep=1.5), "n_rep"),
    (dict(n_rep=0), "n_rep"), (dict(random_state=-1), "random_state"), (dict(random_state="a"), "random_state"),
    (dict(clip=0.5), "clip"), (dict(clip=float("nan")), "clip"), (dict(model="iv"), "model"),
    (dict(tuning_folds="all"), "tuning_folds"), (dict(verbose=-1), "verbose"), (dict(df_correction=1), "df_correction"),
])
def test_site_dml_parameters_named(rng, params, name):
    y, d, X = simulate_site(rng, n=60)
    with pytest.raises(ParameterError, match=name):
        SiteDML(**{"model": "ate", **LIN, **params}).fit(y, d, X)
    with pytest.raises(ValueError, match=name):  # ParameterError is also a ValueError and a TypeError
        SiteDML(**{"model": "ate", **LIN, **params}).fit(y, d, X)


@pytest.mark.parametrize("params, name", [
    (dict(n_boot=1), "n_boot"), (dict(n_boot=2.5), "n_boot"), (dict(max_iter=10**12), "max_iter"),
    (dict(tol=float("nan")), "tol"), (dict(tol=-1.0), "tol"), (dict(random_state=-1), "random_state"),
    (dict(random_state="x"), "random_state"), (dict(C=-1.0), "C"), (dict(C="auto"), "C"),
    (dict(kappa=0.5), "kappa"), (dict(n_jobs=0), "n_jobs"), (dict(n_jobs=1.5), "n_jobs"),
    (dict(C_grid=[-1.0]), "C_grid"), (dict(verbose="yes"), "verbose"), (dict(ci="wald"), "ci"),
])
def test_latefusion_parameters_named(table, params, name):
    with pytest.raises(ParameterError, match=name):
        LateFusion(**params).fit(table)


def test_multisite_and_nuisance_parameters_named(sim):
    for params, name in [(dict(n_folds=2.5), "n_folds"), (dict(n_jobs=0), "n_jobs"), (dict(random_state=-3), "random_state"),
                         (dict(n_rep=1.5), "n_rep")]:
        with pytest.raises(ParameterError, match=name):
            MultiSiteDML("plr", **params).fit(sim.data)
    X, y, site = sim.data.X, sim.data.y, sim.data.site
    for params, name in [(dict(max_iter=10**12), "max_iter"), (dict(tol=float("nan")), "tol"), (dict(alpha=-1.0), "alpha"),
                         (dict(loss="huber"), "loss"), (dict(C_grid=["a"]), "C_grid"), (dict(random_state=2**40), "random_state")]:
        with pytest.raises(ParameterError, match=name):
            MultiTaskNuisance(C_eta=1.0, **params).fit(X, y, site)


def test_level_validated_everywhere(sim, table):
    fit = LateFusion().fit(table)
    for call in (lambda: fit.summary_frame(level=95), lambda: fit.confint(level=-0.5), lambda: fit.summary(level=1.0)):
        with pytest.raises(ParameterError, match="level"):
            call()
    site = SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=3, n_rep=1).fit(
        sim.data.y[:150], sim.data.d[:150], sim.data.X[:150])
    with pytest.raises(ParameterError, match="did you mean 0.95"):
        site.confint(level=95)
    with pytest.raises(ParameterError, match="joint"):
        site.confint(joint="yes")
    with pytest.raises(ParameterError, match="n_boot"):
        site.confint(joint=True, n_boot=1)


# ----------------------------------------------------------------------------- not fitted
@pytest.mark.parametrize("est, call", [
    (SiteDML(), lambda e: e.summary()), (SiteDML(), lambda e: e.confint()), (SiteDML(), lambda e: e.to_summary()),
    (MultiSiteDML(), lambda e: e.summary()), (MultiSiteDML(), lambda e: e.confint(joint=True)),
    (MultiSiteDML(), lambda e: e.summaries()), (LateFusion(), lambda e: e.summary()), (LateFusion(), lambda e: e.confint()),
    (LateFusion(), lambda e: e.heterogeneity_), (MultiTaskNuisance(), lambda e: e.predict(np.zeros((2, 1)), ["a", "a"])),
])
def test_one_not_fitted_error(est, call):
    from sklearn.exceptions import NotFittedError as SkNotFitted

    with pytest.raises(NotFittedError, match="not fitted yet") as info:
        call(est)
    assert isinstance(info.value, SkNotFitted)


# ----------------------------------------------------------------------------- n_jobs, random_state
def test_latefusion_n_jobs_joblib_semantics(table):
    a = LateFusion(n_jobs=-2).fit(table)
    b = LateFusion(n_jobs=None).fit(table)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-10)
    with pytest.raises(ParameterError, match="n_jobs"):
        LateFusion(n_jobs=0).fit(table)


def test_random_state_meaning(sim, table):
    a = LateFusion(ci="bootstrap", n_boot=50, random_state=4).fit(table)
    b = LateFusion(ci="bootstrap", n_boot=50, random_state=4).fit(table)
    np.testing.assert_array_equal(a.boot_theta_, b.boot_theta_)
    g = LateFusion(ci="bootstrap", n_boot=50, random_state=np.random.default_rng(4)).fit(table)
    assert g.boot_theta_.shape == a.boot_theta_.shape
    c = LateFusion(ci="bootstrap", n_boot=50, random_state=None).fit(table)
    d = LateFusion(ci="bootstrap", n_boot=50, random_state=None).fit(table)
    assert not np.array_equal(c.boot_theta_, d.boot_theta_)  # None = fresh randomness
    kw = dict(model="plr", ml_outcome=LinearRegression(), ml_treatment=LinearRegression(), n_folds=3, n_rep=1,
              tuning_folds=None)
    f1 = MultiSiteDML(**kw, random_state=7).fit(sim.data)
    f2 = MultiSiteDML(**kw, random_state=7).fit(sim.data)
    f3 = MultiSiteDML(**kw, random_state=np.random.default_rng(7)).fit(sim.data)
    pd.testing.assert_frame_equal(f1.summary_frame(), f2.summary_frame())
    assert f3.summary_frame().shape == f1.summary_frame().shape


# ----------------------------------------------------------------------------- verbose
def test_verbose_progress(sim, table, capsys):
    y, d, X = sim.data.y[:200], sim.data.d[:200], sim.data.X[:200]
    SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=3, n_rep=2).fit(y, d, X)
    assert capsys.readouterr().err == ""
    SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=3, n_rep=2, verbose=1).fit(y, d, X)
    err = capsys.readouterr().err
    assert "SiteDML" in err and "6/6" in err
    kw = dict(model="plr", ml_outcome=LinearRegression(), ml_treatment=LinearRegression(), n_folds=3, n_rep=1)
    MultiSiteDML(**kw, verbose=1).fit(sim.data)
    err = capsys.readouterr().err
    assert "MultiSiteDML" in err and f"{3 * sim.data.n_sites}/{3 * sim.data.n_sites}" in err
    MultiSiteDML(**kw, verbose=1, n_jobs=2).fit(sim.data)
    assert f"{3 * sim.data.n_sites}/{3 * sim.data.n_sites}" in capsys.readouterr().err
    LateFusion(ci="bootstrap", n_boot=20, verbose=1, C=1.0).fit(table)
    assert "LateFusion bootstrap" in capsys.readouterr().err
    MultiTaskNuisance(C_grid=[0.1, 1.0], verbose=1).fit(sim.data.X, sim.data.y, sim.data.site)
    assert "MultiTaskNuisance" in capsys.readouterr().err
    sums = MultiSiteDML(**kw).fit(sim.data).summaries()
    capsys.readouterr()
    LateFusion(C="cv", verbose=1).fit(sums)
    err = capsys.readouterr().err
    assert "LateFusion CV" in err and "3/3" in err  # one step per CV round (3 folds)
    LateFusion(C="cv").fit(sums)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- summaries
def test_summaries_are_statsmodels_objects(sim, table):
    fits = [
        SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=3, n_rep=1).fit(
            sim.data.y[:150], sim.data.d[:150], sim.data.X[:150]),
        MultiSiteDML("ate", **LIN, n_folds=3, n_rep=1).fit(sim.data),
        LateFusion().fit(table),
        LateFusion(penalty="squared", ci="conditional", C=1.0).fit(table),
        random_effects(table.theta[:, 0], table.Omega[:, 0, 0] / table.n),
    ]
    for fit in fits:
        s = fit.summary()
        assert isinstance(s, Summary)
        text = s.as_text()
        assert str(s) == text and "<table" in s.as_html() and "\\begin{tabular}" in s.as_latex()
        assert "P>|t|" in text or "P>|z|" in text or "robust EB" in text
        assert "P>|t|" not in text or "Random-effects" in text  # t only where the law is t (HKSJ)
    assert "z and P>|z| from the normal law" in fits[1].summary()
    assert "ATE" in fits[1].summary().as_text()
    for frame in (fits[0].summary_frame(), fits[1].summary_frame(), fits[3].summary_frame()):
        assert isinstance(frame, pd.DataFrame)
        assert "t" not in frame.columns and "P>|t|" not in frame.columns


# ----------------------------------------------------------------------------- pickling
def test_fitted_estimators_pickle_and_deepcopy(sim, table):
    fits = [
        SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=3, n_rep=1).fit(
            sim.data.y[:150], sim.data.d[:150], sim.data.X[:150]),
        MultiSiteDML("ate", **LIN, n_folds=3, n_rep=1).fit(sim.data),
        LateFusion().fit(table),
        LateFusion(C="cv").fit(MultiSiteDML("ate", **LIN, n_folds=3, n_rep=1).fit(sim.data).summaries()),
        MultiTaskNuisance(C_eta=1.0).fit(sim.data.X, sim.data.y, sim.data.site),
        random_effects(np.array([0.1, 0.5, 0.9, 0.3]), np.array([0.04, 0.05, 0.02, 0.03])),
    ]
    for fit in fits:
        for clone_ in (pickle.loads(pickle.dumps(fit)), copy.deepcopy(fit)):
            if isinstance(fit, MultiTaskNuisance):
                np.testing.assert_allclose(clone_.predict(sim.data.X[:5], sim.data.site[:5]),
                                           fit.predict(sim.data.X[:5], sim.data.site[:5]))
            else:
                assert clone_.summary().as_text() == fit.summary().as_text()


def test_simulators_share_random_state_meaning():
    a = make_latefusion_data(1, n_sites=3, random_state=5)
    b = make_latefusion_data(1, n_sites=3, random_state=np.random.default_rng(5))
    np.testing.assert_array_equal(a.data.y, b.data.y)
    for bad in (-1, "seed", 2.5):
        with pytest.raises(ParameterError, match="random_state"):
            make_latefusion_data(1, n_sites=3, random_state=bad)


def test_predict_writes_nothing(sim):
    est = MultiTaskNuisance(C_eta=1.0).fit(sim.data.X, sim.data.y, sim.data.site)
    before = pickle.dumps(est.__dict__)
    est.predict(sim.data.X[:7], sim.data.site[:7])
    est.decision_function(sim.data.X[:7], sim.data.site[:7])
    assert pickle.dumps(est.__dict__) == before
    with pytest.raises(DataValidationError, match="columns"):
        est.predict(sim.data.X[:3, :2], sim.data.site[:3])
    with pytest.raises(DataValidationError, match="complex"):
        est.predict(sim.data.X[:3] + 1j, sim.data.site[:3])


# ----------------------------------------------------------------------------- folds, clip, magnitudes (#25 items 3-5)
def test_folds_without_cross_fitting_refused(rng):
    y, d, X = simulate_site(rng, n=60)
    idx = np.arange(60)
    est = SiteDML("ate", **LIN, n_rep=1)
    overlapping = [[(idx, idx[:30]), (idx[30:], idx[30:])]]
    with pytest.raises(DataValidationError, match="contains rows of its own test set"):
        est.fit(y, d, X, folds=overlapping)
    all_rows = [[(idx, idx[:30]), (idx, idx[30:])]]
    with pytest.raises(DataValidationError, match="own test set"):
        est.fit(y, d, X, folds=all_rows)
    not_partition = [[(idx[30:], idx[:30]), (idx[:20], idx[25:])]]
    with pytest.raises(DataValidationError, match="partition"):
        est.fit(y, d, X, folds=not_partition)
    one_fold = [[(np.array([], dtype=int), idx)]]
    with pytest.raises(DataValidationError, match="at least 2"):
        est.fit(y, d, X, folds=one_fold)
    ok = [[(idx[30:], idx[:30]), (idx[:30], idx[30:])]]
    assert np.isfinite(est.fit(y, d, X, folds=ok).coef_).all()


def test_clip_zero_with_hard_propensities(rng):
    y, d, X = simulate_site(rng, n=120)
    est = SiteDML("ate", LinearRegression(), DecisionTreeClassifier(random_state=0), clip=0.0, n_rep=1, n_folds=3)
    with pytest.raises(DataValidationError, match="clip=0"):
        est.fit(y, d, X)
    with pytest.warns(Warning):  # clip > 0: clipped (and warned), finite
        fit = SiteDML("ate", LinearRegression(), DecisionTreeClassifier(random_state=0), clip=0.01, n_rep=1,
                      n_folds=3).fit(y, d, X)
    assert np.isfinite(fit.coef_).all() and np.isfinite(fit.se_).all()


def test_magnitude_limits(rng):
    y, d, X = simulate_site(rng, n=80)
    with pytest.raises(DataValidationError, match=r"column 'y'.*1e\+40"):
        SiteDML("ate", **LIN).fit(y * 1e154, d, X)
    with pytest.raises(SummaryValidationError, match="standard errors"):
        LateFusion().fit(SummaryTable.from_estimates(np.array([1.0, 2.0, 1e30, 0.5]), se=np.ones(4)))
    with pytest.raises(SummaryValidationError):
        SummaryTable.from_estimates(np.array([1.0, 2.0, 1e308, 0.5]), se=np.ones(4))
    fit = LateFusion(penalty="squared").fit(SummaryTable.from_estimates(np.array([1.0, 2.0, 1e6, 0.5]), se=np.ones(4)))
    assert np.isfinite(fit.summary_frame().select_dtypes(float).to_numpy()).all()


def test_treated_level_shown_in_summaries(sim):
    df = sim.data.to_dataframe()
    df["arm"] = np.where(df["d"] == 1, "active", "placebo")
    data = MultiSiteData.from_dataframe(df.drop(columns="d"), "y", "arm", "site", treated="active")
    fit = MultiSiteDML("ate", **LIN, n_folds=3, n_rep=1, random_state=0).fit(data)
    assert fit.treated_ == "active" and "treated level (D = 1)" in fit.summary() and "active" in fit.summary()
    flipped = MultiSiteData.from_dataframe(df.drop(columns="d"), "y", "arm", "site", treated="placebo")
    fit2 = MultiSiteDML("ate", **LIN, n_folds=3, n_rep=1, random_state=0).fit(flipped)
    assert np.all(np.sign(fit2.summary_frame()["coef"]) == -np.sign(fit.summary_frame()["coef"]))
    one = fit.estimators_[data.sites[0]]
    assert "treated level" in one.summary()
    arrays = data.site_arrays(data.sites[0])
    site = SiteDML("ate", **LIN, n_folds=3, n_rep=1).fit(arrays.y, np.where(arrays.d == 1, "on", "off"), arrays.X,
                                                          treated="on")
    assert site.treated_ == "on"
    with pytest.raises(DataValidationError, match="treated="):
        SiteDML("ate", **LIN).fit(arrays.y, np.where(arrays.d == 1, "on", "off"), arrays.X)


# ----------------------------------------------------------------------------- hostile input (fuzz cases)
@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(theta=[0.1, 0.2, 0.3], se=[0.1] * 3, level=0.0), ParameterError, "level"),
    (dict(theta=[0.1, 0.2, 0.3], se=[0.1] * 3, test="t"), ParameterError, "test"),
    (dict(theta=[], se=[]), DataValidationError, "K >= 2"),
    (dict(theta=[""], se=[]), DataValidationError, "theta"),
    (dict(theta=["a", 0.2, 0.3], se=[0.1] * 3), DataValidationError, "theta"),
    (dict(theta=[1j, 0.2, 0.3], se=[0.1] * 3), DataValidationError, "theta"),
    (dict(theta=[0.1, 0.2, 0.3, 0.4], se=[]), DataValidationError, "se"),
    (dict(theta=[0.1, 0.2, 0.3, 0.4], se=[-421.0] * 4, tau2=1.0, test="knha"), DataValidationError, "se of site 0"),
    (dict(theta=[0.1, 0.2, 0.3], se=[0.1] * 3, tau2="bogus"), ParameterError, "tau2"),
])
def test_random_effects_hostile_input(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        random_effects(**kwargs)


@pytest.mark.parametrize("params, name", [
    (dict(C_grid="0.1"), "C_grid"), (dict(C_grid=[1j, 2.0]), "C_grid"), (dict(C_grid=[10**400]), "C_grid"),
    (dict(lambdas=";\x18"), "lambdas"), (dict(lambdas=[1j] * 6), "lambdas"), (dict(lambdas=[10**400] * 6), "lambdas"),
    (dict(site_covariates="abc"), "site_covariates"), (dict(site_covariates=[1j] * 6), "site_covariates"),
    (dict(site_covariates=[10**400] * 6), "site_covariates"), (dict(n_jobs="2"), "n_jobs"), (dict(n_jobs=2.5), "n_jobs"),
])
def test_latefusion_array_parameters_refused(table, params, name):
    with pytest.raises(ParameterError, match=name):
        LateFusion(penalty="squared", **params).fit(table).robust_eb_frame()


@pytest.mark.parametrize("column, values", [
    ("n", [1 + 1j, 221, 300]), ("n", [10**400, 221, 300]), ("n", [1.5, 221, 300]),
    ("estimate", [1 + 1j, 0.2, 0.3]), ("estimate", [10**400, 0.2, 0.3]), ("se", ["x", 0.1, 0.2]),
])
def test_estimates_frame_hostile_cells(column, values):
    frame = pd.DataFrame({"site": ["a", "b", "c"], "estimate": [0.1, 0.2, 0.3], "se": [0.2] * 3, "n": [100] * 3})
    frame[column] = values
    with pytest.raises(SummaryValidationError, match=f"row 1: {column}"):
        LateFusion(penalty="group").fit(frame)


def test_from_estimates_hostile_arrays():
    with pytest.raises(SummaryValidationError, match="theta is complex"):
        SummaryTable.from_estimates([1j, 0.2, 0.3], se=[0.1] * 3)
    with pytest.raises(SummaryValidationError, match="se"):
        SummaryTable.from_estimates([0.1, 0.2, 0.3], se=["a", 0.1, 0.1])
    with pytest.raises(SummaryValidationError, match="theta"):
        SummaryTable.from_estimates([10**400, 0.2, 0.3], se=[0.1] * 3)
    with pytest.raises(SummaryValidationError, match="n must be"):
        SummaryTable.from_estimates([0.1, 0.2, 0.3], se=[0.1] * 3, n=[1e300, 10, 10])


@pytest.mark.parametrize("param", ["ml_outcome", "ml_treatment"])
def test_site_dml_non_estimator_learner_named(rng, param):
    y, d, X = simulate_site(rng, n=60)
    with pytest.raises(ParameterError, match=param):
        SiteDML(**{"model": "plr", **LIN, param: float("nan")}).fit(y, d, X)


def test_summary_read_cap_at_call_time(rng, tmp_path, monkeypatch):
    import hetmtl.latefusion.summary as summary_module
    from hetmtl.latefusion import SiteSummary

    y, d, X = simulate_site(rng, n=60)
    path = tmp_path / "a.json"
    SiteDML("ate", **LIN, n_rep=1).fit(y, d, X).to_summary("A").to_json(path)
    assert SiteSummary.read_json(path).site == "A"
    monkeypatch.setattr(summary_module, "MAX_FILE_BYTES", 10)
    with pytest.raises(SummaryValidationError, match="10-byte limit"):
        SiteSummary.read_json(path)
    with pytest.raises(SummaryValidationError, match="10-byte limit"):
        SummaryTable.read_json([path])
    monkeypatch.setenv("HETMTL_MAX_FILE_BYTES", "20")
    with pytest.raises(SummaryValidationError, match="20-byte limit"):
        SiteSummary.read_json(path)
    monkeypatch.setenv("HETMTL_MAX_FILE_BYTES", "lots")
    with pytest.raises(SummaryValidationError, match="HETMTL_MAX_FILE_BYTES"):
        SummaryTable.read_json([path])
    monkeypatch.delenv("HETMTL_MAX_FILE_BYTES")
    assert SummaryTable.read_json([path], max_bytes=10**6).sites.tolist() == ["A"]


def test_random_effects_variances_that_underflow_the_weights_are_refused():
    import warnings

    from hetmtl.exceptions import DataValidationError
    from hetmtl.latefusion.meta import random_effects

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(DataValidationError, match="underflows the fixed-effect weights"):
            random_effects([1e100, 1e100, 9.2e18], se=[1e100, 1e100, 9.2e18], tau2="reml")


def test_site_fitted_alone_names_columns_and_rows_not_an_internal_site_label():
    from hetmtl.exceptions import DataValidationError
    from hetmtl.latefusion import SiteDML

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    d = rng.integers(0, 2, 100).astype(float)
    y = X[:, 0] + d + rng.normal(size=100)
    X[5, 1] = np.nan
    with pytest.raises(DataValidationError) as err:
        SiteDML(model="ate").fit(y, d, X)
    assert str(err.value).startswith("column 'x2': 1 non-finite value(s)")
    assert "row(s) 5" in str(err.value) and "site" not in str(err.value)
    with pytest.raises(DataValidationError, match=r"^column 'd': treatment must be binary"):
        SiteDML(model="ate").fit(y, 3 * d, np.nan_to_num(X))


def test_multisite_data_with_one_unlabelled_site():
    from hetmtl.exceptions import DataValidationError

    rng = np.random.default_rng(1)
    X, d = rng.normal(size=(20, 2)), np.tile([0.0, 1.0], 10)
    data = MultiSiteData(X[:, 0], d, X, None)
    assert data.n_sites == 1 and data.n_obs == 20
    with pytest.raises(DataValidationError, match=r"^column 'd': treatment is constant \(1\) in this site$"):
        MultiSiteData(X[:, 0], np.ones(20), X, None)
    with pytest.raises(DataValidationError, match=r"^site 'a', column 'd': treatment is constant"):
        MultiSiteData(X[:, 0], np.ones(20), X, ["a"] * 20)
