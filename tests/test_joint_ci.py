"""Joint (simultaneous) confidence intervals: SiteDML / MultiSiteDML by multiplier bootstrap of the
studentised scores (checked against DoubleML), LateFusion by sup-t from bootstrap draws or from
the delta-method covariance; simultaneous coverage by small simulations."""
import numpy as np
import pandas as pd
import pytest
from conftest import doubleml_folds, simulate_site
from sklearn.linear_model import LinearRegression

from hetmtl.data import MultiSiteData
from hetmtl.exceptions import ParameterError
from hetmtl.inference.joint import (
    draws_critical_value,
    gaussian_critical_value,
    multiplier_critical_value,
)
from hetmtl.latefusion import LateFusion, MultiSiteDML, SiteDML, SummaryTable

doubleml = pytest.importorskip("doubleml")


def _doubleml_plr(y, d, X, folds, n_rep):
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(y=y, d=d)
    ref = doubleml.DoubleMLPLR(doubleml.DoubleMLData(df, "y", "d"), ml_l=LinearRegression(),
                               ml_m=LinearRegression(), n_folds=len(folds[0]), n_rep=n_rep)
    ref.set_sample_splitting(folds)
    return ref.fit()


def test_studentised_influence_equals_doubleml_scaled_scores(rng):
    """The bootstrapped quantity T*_j = Σ ξ_i IF_ij/(n se_j) uses exactly DoubleML's per-row terms."""
    y, d, X = simulate_site(rng, n=240)
    d = d + rng.normal(size=240)  # continuous treatment for PLR
    folds = doubleml_folds(240, 4, 2, 3)
    ref = _doubleml_plr(y, d, X, folds, 2)
    ours = SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=4, n_rep=2).fit(y, d, X, folds=folds)
    fw = ref.framework
    for r in range(2):
        theirs = fw.scaled_psi[:, 0, r] / (fw.var_scaling_factors[0] * fw.all_ses[0, r])
        mine = ours.influence_[r][:, 0] / (240 * ours.all_se_[0, r])
        np.testing.assert_allclose(np.abs(mine), np.abs(theirs), rtol=1e-6)


def test_multisite_joint_matches_doubleml_concat(rng):
    """Three equal-size sites: our joint intervals (independent multipliers per site) agree with
    DoubleML's concatenated frameworks (shared multipliers, asymptotically equivalent) to MC error."""
    n, K = 300, 3
    parts = [simulate_site(rng, n=n) for _ in range(K)]
    y = np.concatenate([p[0] for p in parts])
    d = np.concatenate([p[1] + rng.normal(size=n) for p in parts])
    X = np.vstack([p[2] for p in parts])
    site = np.repeat(["a", "b", "c"], n)
    data = MultiSiteData(y, d, X, site)
    folds = {s: doubleml_folds(n, 5, 1, 10 + k) for k, s in enumerate("abc")}
    ours = MultiSiteDML("plr", LinearRegression(), LinearRegression(), n_folds=5, n_rep=1, tuning_folds=None,
                        random_state=0).fit(data, folds=folds)
    refs = [_doubleml_plr(y[site == s], d[site == s], X[site == s], folds[s], 1) for s in "abc"]
    fw = doubleml.concat([r.framework for r in refs])
    fw.bootstrap(n_rep_boot=20000)
    theirs = fw.confint(joint=True, level=0.95).to_numpy()
    mine = ours.confint(joint=True, n_boot=20000, random_state=1).to_numpy()
    pointwise = ours.confint().to_numpy()
    se = ours.summary_frame()["std err"].to_numpy()
    np.testing.assert_allclose(ours.summary_frame()["coef"].to_numpy(), fw.all_thetas[:, 0], rtol=1e-8)
    # critical values: ours vs DoubleML's within MC error (~0.02), both well above 1.96
    c_mine = (mine[:, 1] - mine[:, 0]) / (2 * se)
    c_theirs = (theirs[:, 1] - theirs[:, 0]) / (2 * se)
    assert np.allclose(c_mine, c_mine[0]) and np.allclose(c_theirs, c_theirs[0], rtol=1e-6)
    assert abs(c_mine[0] - c_theirs[0]) < 0.05
    assert 2.2 < c_mine[0] < 2.6  # three independent coefficients: the Šidák value is 2.39
    assert np.all(mine[:, 0] < pointwise[:, 0]) and np.all(mine[:, 1] > pointwise[:, 1])
    assert list(ours.confint(joint=True, n_boot=200, random_state=0).index.names) == ["site", "coef"]


def test_site_joint_repetitions_use_doubleml_median_rule(rng):
    y, d, X = simulate_site(rng, n=300)
    d = d + rng.normal(size=300)
    folds = doubleml_folds(300, 5, 3, 4)
    ref = _doubleml_plr(y, d, X, folds, 3)
    ref.bootstrap(n_rep_boot=20000)
    theirs = ref.confint(joint=True).to_numpy()
    ours = SiteDML("plr", LinearRegression(), LinearRegression(), n_folds=5, n_rep=3).fit(y, d, X, folds=folds)
    mine = ours.confint(joint=True, n_boot=20000, random_state=2).to_numpy()
    np.testing.assert_allclose(mine, theirs, atol=0.03 * ours.se_[0])
    again = ours.confint(joint=True, n_boot=500, random_state=5)
    pd.testing.assert_frame_equal(again, ours.confint(joint=True, n_boot=500, random_state=5))


def test_joint_site_cate_simultaneous_coverage():
    """cate with 4 coefficients, 120 replicates: the joint intervals cover all four together about
    95 % of the time; the pointwise ones clearly less often."""
    rng = np.random.default_rng(20)
    n, reps = 250, 120
    cover_joint = cover_point = 0
    for r in range(reps):
        X = rng.normal(size=(n, 3))
        d = 0.5 * X[:, 0] + rng.normal(size=n)
        tau = 1.0 + 0.5 * X[:, 0] - 0.3 * X[:, 1] + 0.2 * X[:, 2]
        y = d * tau + X @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=n)
        est = SiteDML("cate", LinearRegression(), LinearRegression(), n_folds=3, n_rep=1, random_state=r)
        est.fit(y, d, X, X)
        b = est.basis_
        truth = np.array([1.0 + 0.5 * b["center"][0] - 0.3 * b["center"][1] + 0.2 * b["center"][2],
                          0.5 * b["scale"][0], -0.3 * b["scale"][1], 0.2 * b["scale"][2]])
        j = est.confint(joint=True, n_boot=500, random_state=r).to_numpy()
        p = est.confint().to_numpy()
        cover_joint += bool(np.all((j[:, 0] <= truth) & (truth <= j[:, 1])))
        cover_point += bool(np.all((p[:, 0] <= truth) & (truth <= p[:, 1])))
    assert 0.88 <= cover_joint / reps <= 1.0
    assert cover_point < cover_joint


def test_latefusion_joint_conditional_coverage():
    """Squared penalty with fixed C: simultaneous coverage of E[fused] (sites and centre) given the
    site effects, 300 simulated summary tables of 8 sites."""
    rng = np.random.default_rng(3)
    K = 8
    theta = rng.normal(0.0, 1.0, K)
    se = rng.uniform(0.3, 1.0, K)
    n = rng.integers(50, 200, K)
    fit0 = LateFusion(penalty="squared", C=1.0, ci="conditional").fit(
        SummaryTable.from_estimates(theta, se=se, n=n))
    P, G = fit0.problem_.squared_map(fit0.C_)
    centre_true = np.einsum("kab,kb->a", G, theta[:, None])
    site_true = np.einsum("kab,kb->ka", P, theta[:, None]) + np.einsum("kab,b->ka", np.eye(1) - P, centre_true)
    truth = np.concatenate([site_true.ravel(), centre_true])
    reps, cover_joint, cover_point = 300, 0, 0
    for r in range(reps):
        est = theta + se * rng.normal(size=K)
        fit = LateFusion(penalty="squared", C=1.0, ci="conditional").fit(SummaryTable.from_estimates(est, se=se, n=n))
        j = fit.confint(joint=True, n_boot=1000, random_state=r).to_numpy()[:, 1:]
        p = fit.confint().to_numpy()[:, 1:]
        cover_joint += bool(np.all((j[:, 0] <= truth) & (truth <= j[:, 1])))
        cover_point += bool(np.all((p[:, 0] <= truth) & (truth <= p[:, 1])))
    assert 0.92 <= cover_joint / reps <= 0.98
    assert cover_point < cover_joint and cover_point / reps < 0.92


def test_latefusion_joint_bootstrap_and_robust_eb(rng):
    theta = rng.normal(size=6)
    table = SummaryTable.from_estimates(theta, se=np.full(6, 0.5), n=np.full(6, 100))
    fit = LateFusion(penalty="squared", tau2="reml", ci="bootstrap", n_boot=400, random_state=0).fit(table)
    j = fit.confint(joint=True)
    assert list(j.index.get_level_values("site"))[-1] == "(centre)" and j.shape == (7, 3)
    boot = fit.summary_frame()["boot std err"].to_numpy()
    widths = (j.iloc[:6, 2] - j.iloc[:6, 1]).to_numpy() / (2 * boot)
    assert np.allclose(widths, widths[0]) and widths[0] > 2.0  # one sup-t value, above 1.96
    with pytest.raises(ParameterError, match="average coverage"):
        LateFusion().fit(table).confint(joint=True)


def test_critical_value_helpers():
    rng = np.random.default_rng(0)
    c1 = gaussian_critical_value(np.eye(1), 0.95, 20000, rng)
    assert abs(c1 - 1.96) < 0.04
    c5 = gaussian_critical_value(np.eye(5), 0.95, 20000, rng)
    assert abs(c5 - 2.57) < 0.05  # Šidák: Φ⁻¹((1 + 0.95^(1/5))/2) = 2.57
    assert gaussian_critical_value(np.ones((3, 3)), 0.95, 20000, rng) == pytest.approx(1.96, abs=0.04)
    draws = rng.normal(size=(5000, 4))
    assert draws_critical_value(draws, np.zeros(4), np.ones(4), 0.95) == pytest.approx(2.49, abs=0.06)
    IF = rng.normal(size=(400, 2))
    se = IF.std(axis=0) / np.sqrt(400)
    assert multiplier_critical_value([IF], [se], 0.95, 20000, rng) == pytest.approx(2.24, abs=0.06)
    for method in ("bayes", "wild"):
        assert multiplier_critical_value([IF], [se], 0.95, 5000, rng, method) == pytest.approx(2.24, abs=0.1)
    from hetmtl.inference.joint import check_n_boot

    with pytest.raises(ParameterError, match="n_boot"):
        check_n_boot(1)
