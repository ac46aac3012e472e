"""Per-site DML: truth recovery and CI coverage by simulation, API contract, input errors."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression

from conftest import simulate_site
from hetmtl.datasets import load_ihdp
from hetmtl.exceptions import DataValidationError
from hetmtl.latefusion import MultiSiteDML, SiteDML
from hetmtl.latefusion.simulate import make_latefusion_data


def linear_site(rng, n, theta=1.0, slope=0.0):
    X = rng.normal(size=(n, 3))
    d = (rng.random(n) < 1 / (1 + np.exp(-0.8 * X[:, 0]))).astype(float)
    y = (theta + slope * X[:, 1]) * d + 2.0 * X[:, 0] - X[:, 2] + rng.normal(size=n)
    return y, d, X


@pytest.mark.parametrize("model", ["plr", "ate"])
def test_ci_coverage_with_known_truth(model):
    """95% CIs cover θ = 1 in about 95% of 200 simulated sites (binomial 99.9% band)."""
    rng = np.random.default_rng(5)
    covered, estimates = [], []
    for _ in range(200):
        y, d, X = linear_site(rng, 300)
        est = SiteDML(model, LinearRegression(), LogisticRegression(), n_folds=3, n_rep=1,
                      random_state=int(rng.integers(1e9)))
        ci = est.fit(y, d, X).confint(0.95).to_numpy()[0]
        covered.append(ci[0] <= 1.0 <= ci[1])
        estimates.append(est.coef_[0])
    assert 0.89 <= np.mean(covered) <= 0.99
    assert abs(np.mean(estimates) - 1.0) < 3 * np.std(estimates) / np.sqrt(200)


def test_linear_cate_recovers_slope():
    rng = np.random.default_rng(6)
    y, d, X = linear_site(rng, 4000, theta=1.0, slope=0.8)
    est = SiteDML("cate", LinearRegression(), LogisticRegression(), basis_center=[0.0], basis_scale=[1.0])
    est.fit(y, d, X, X[:, [1]])
    table = est.summary_frame()
    assert list(table.index) == ["const", "z1"]
    for truth, (lo, hi) in zip([1.0, 0.8], est.confint(0.999).to_numpy()):
        assert lo <= truth <= hi
    assert table.loc["z1", "std err"] < 0.1


def test_repetitions_median_and_seeds(rng):
    y, d, X = simulate_site(rng, n=150)
    a = SiteDML("plr", n_folds=3, n_rep=5, random_state=11).fit(y, d, X)
    b = SiteDML("plr", n_folds=3, n_rep=5, random_state=11).fit(y, d, X)
    c = SiteDML("plr", n_folds=3, n_rep=5, random_state=12).fit(y, d, X)
    assert a.all_coef_.shape == (1, 5) and a.all_se_.shape == (1, 5)
    np.testing.assert_array_equal(a.all_coef_, b.all_coef_)
    assert not np.array_equal(a.all_coef_, c.all_coef_)
    assert a.coef_[0] == np.median(a.all_coef_)
    # DoubleML's rule: the median upper bound fixes the SE
    upper = np.median(a.all_coef_ + 1.96 * a.all_se_)
    assert a.se_[0] == pytest.approx((upper - a.coef_[0]) / 1.96)
    # the summary's J and Omega reproduce the aggregated variance
    np.testing.assert_allclose(a.to_summary().vcov, a.vcov_, rtol=1e-10)


def test_summary_text_and_params(rng):
    y, d, X = simulate_site(rng, n=100)
    est = SiteDML("ate", n_folds=2, random_state=0)
    with pytest.raises(NotFittedError):
        est.summary()
    assert clone(est).get_params()["model"] == "ate"
    text = est.fit(y, d, X).summary(level=0.9)
    assert "ATE" in text and "5 %" in text and "95 %" in text and "LogisticRidgeALO" in text


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        ("ate", dict(d_values=[0, 1, 2]), "treatment must be binary"),
        ("cate", dict(), "needs effect modifiers"),
        ("plr", dict(Z=True), "takes no effect modifiers"),
        ("plr", dict(classifier_continuous=True), "classifier but the treatment is not binary"),
        ("plr", dict(bad_folds=True), "partition the site's rows"),
        ("plr", dict(nan=True), "column 'x2'.*non-finite"),
    ],
)
def test_input_errors(rng, model, kwargs, message):
    y, d, X = simulate_site(rng, n=60)
    Z, folds, learner = None, None, None
    if "d_values" in kwargs:
        d = np.resize(np.array(kwargs["d_values"], float), 60)
    if kwargs.get("Z"):
        Z = X[:, :1]
    if kwargs.get("classifier_continuous"):
        d = rng.normal(size=60)
        learner = LogisticRegression()
    if kwargs.get("bad_folds"):
        folds = [[(np.arange(30, 60), np.arange(30)), (np.arange(30), np.arange(31, 60))]]
    if kwargs.get("nan"):
        X[4, 1] = np.nan
    with pytest.raises(DataValidationError, match=message):
        SiteDML(model, ml_treatment=learner, n_folds=3).fit(y, d, X, Z, folds=folds)


def test_multisite_pooled_basis_and_summaries():
    sim = make_latefusion_data(2, n_sites=4, eta=0.2, random_state=3)
    fit = MultiSiteDML("cate", LinearRegression(), LogisticRegression(), n_folds=3, random_state=0).fit(sim.data)
    table = fit.summary_frame()
    assert table.index.names == ["site", "coef"]
    assert table.shape[0] == 4 * 6
    summaries = fit.summaries()
    centers = np.array([s.basis["center"] for s in summaries])
    assert np.all(centers == centers[0])  # one common (pooled) transform
    np.testing.assert_allclose(centers[0], sim.data.Z.mean(axis=0))
    assert all(len(s.cv_folds) == 3 for s in summaries)
    assert summaries[0].coef_names == ["const", "x1", "x2", "x3", "x4", "x5"]


def test_nested_tuning_folds_are_close_to_reused(rng):
    y, d, X = linear_site(rng, 400)
    fits = {
        mode: SiteDML("ate", LinearRegression(), LogisticRegression(), n_folds=4, tuning_folds=mode, random_state=2).fit(
            y, d, X
        )
        for mode in ("reuse", "nested")
    }
    for a, b in zip(fits["reuse"].cv_folds_, fits["nested"].cv_folds_):
        assert a.n_train == b.n_train == 300
        np.testing.assert_array_equal(a.A, b.A)  # the held-out loss is the same object
        assert abs(a.theta[0] - b.theta[0]) < 3 * np.sqrt(a.vcov[0, 0])


def test_ihdp_loader():
    data = load_ihdp(modifiers=["bw"])
    assert data.n_sites == 8 and data.n_obs == 908
    assert "ncdctt" not in data.x_cols and "dose400" not in data.x_cols
    assert "dropped 77 children" in data.notes[0]
    with pytest.raises(DataValidationError, match="77 children have no outcome"):
        load_ihdp(missing_outcome="raise")
    with pytest.raises(DataValidationError, match=r"no usable .* \['dose400'\]"):
        load_ihdp(modifiers=["dose400"])


@pytest.mark.parametrize("model", ["ate", "cate"])
def test_df_correction_scales_score_variance_exactly(model):
    """df_correction=True multiplies Ω̂ and V̂ by n/(n − d) (HC1-type), leaves θ̂ unchanged, and
    carries into the site summary and the fusion step's per-site DML columns."""
    rng = np.random.default_rng(21)
    n = 60
    y, d, X = linear_site(rng, n, slope=0.5)
    Z = X[:, 1:2] if model == "cate" else None
    kw = dict(ml_outcome=LinearRegression(), ml_treatment=LogisticRegression(), n_folds=3, n_rep=1, random_state=4)
    base = SiteDML(model, **kw).fit(y, d, X, Z)
    corr = SiteDML(model, df_correction=True, **kw).fit(y, d, X, Z)
    k = len(base.coef_)
    np.testing.assert_allclose(corr.coef_, base.coef_)
    np.testing.assert_allclose(corr.Omega_, base.Omega_ * n / (n - k), rtol=1e-12)
    np.testing.assert_allclose(corr.vcov_, base.vcov_ * n / (n - k), rtol=1e-12)
    np.testing.assert_allclose(corr.to_summary().vcov, corr.vcov_, rtol=1e-10)
    # ... and through MultiSiteDML (its default stays uncorrected, i.e. DoubleML's variance)
    assert MultiSiteDML().df_correction is False and SiteDML().df_correction is False


def test_df_correction_reaches_fusion_tables():
    from hetmtl.latefusion import LateFusion

    sim = make_latefusion_data(scenario=1, n_sites=3, eta=0.0, random_state=2)
    kw = dict(model="ate", ml_outcome=LinearRegression(), ml_treatment=LogisticRegression(), n_folds=3, n_rep=1,
              tuning_folds=None, random_state=1)
    tables = []
    for corr in (False, True):
        sums = MultiSiteDML(df_correction=corr, **kw).fit(sim.data).summaries()
        tables.append(LateFusion(C=1.0, n_boot=0).fit(sums).summary_frame())
    n = np.array([s.n for s in sums], float)
    np.testing.assert_allclose(tables[1]["dml std err"], tables[0]["dml std err"] * np.sqrt(n / (n - 1)), rtol=1e-10)
