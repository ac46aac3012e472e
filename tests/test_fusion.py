"""LateFusion front end: random-effects identities (statsmodels), pooled limits, CV from
summaries, inference outputs and validation of bad summaries."""
import warnings

import numpy as np
import pandas as pd
import pytest
from fusion_testdata import make_site, make_summaries
from sklearn.base import clone

from hetmtl import _core
from hetmtl.exceptions import SummaryValidationError
from hetmtl.latefusion import LateFusion, SiteSummary
from hetmtl.latefusion.fusion import estimate_tau2, heterogeneity

meta = pytest.importorskip("statsmodels.stats.meta_analysis")


def summaries_from_estimates(theta, V, n):
    """Summaries whose sandwich covariance is exactly V (J = −I, Ω = n V)."""
    d = theta.shape[1]
    return [
        SiteSummary(site=f"s{k}", model="ate" if d == 1 else "blp", coef_names=[f"c{j}" for j in range(d)],
                    n=int(n[k]), theta=theta[k], J=-np.eye(d), Omega=n[k] * V[k])
        for k in range(len(n))
    ]


@pytest.fixture
def meta_d1():
    rng = np.random.default_rng(21)
    K = 9
    v = rng.uniform(0.02, 0.2, K)
    theta = (0.4 + rng.normal(0, 0.3, K) + rng.normal(0, np.sqrt(v)))[:, None]
    n = rng.integers(40, 81, K)
    return theta, v[:, None, None], n


@pytest.mark.parametrize("method", ["dl", "pm"])
def test_squared_equals_random_effects_blup_statsmodels(meta_d1, method):
    theta, V, n = meta_d1
    res = meta.combine_effects(theta[:, 0], V[:, 0, 0], method_re={"dl": "chi2", "pm": "iterated"}[method])
    tau2 = estimate_tau2(theta, V, method)
    assert tau2 == pytest.approx(res.tau2, rel=1e-6)
    lf = LateFusion(penalty="squared", tau2=method).fit(summaries_from_estimates(theta, V, n))
    assert lf.tau2_ == pytest.approx(res.tau2, rel=1e-6)  # statsmodels iterates PM to its own tolerance
    # at statsmodels' tau2 the fused centre and estimates are the RE mean and the BLUPs
    lf2 = LateFusion(penalty="squared", tau2=float(res.tau2)).fit(summaries_from_estimates(theta, V, n))
    assert lf2.centre_[0] == pytest.approx(res.mean_effect_re, abs=1e-10)
    v = V[:, 0, 0]
    blup = (theta[:, 0] / v + res.mean_effect_re / res.tau2) / (1 / v + 1 / res.tau2)
    np.testing.assert_allclose(lf2.coef_[:, 0], blup, atol=1e-10)
    np.testing.assert_allclose(lf.coef_, lf2.coef_, atol=1e-6)
    # heterogeneity statistics match statsmodels' Q and I^2
    h = lf.heterogeneity_
    assert h["Q"] == pytest.approx(res.q, rel=1e-10)
    assert h["I2"] == pytest.approx(res.i2, rel=1e-8)


def test_multivariate_blup_identity_and_reml_score():
    rng = np.random.default_rng(4)
    K, d = 8, 2
    V = np.stack([np.cov(rng.normal(size=(5, d)).T) * 0.05 + 0.01 * np.eye(d) for _ in range(K)])
    theta = np.array([1.0, 0.0]) + 0.3 * rng.normal(size=(K, d))
    n = rng.integers(40, 81, K)
    tau2 = 0.07
    lf = LateFusion(penalty="squared", tau2=tau2).fit(summaries_from_estimates(theta, V, n))
    W = np.linalg.inv(V + tau2 * np.eye(d))
    mu = np.linalg.solve(W.sum(0), np.einsum("kij,kj->i", W, theta))
    np.testing.assert_allclose(lf.centre_, mu, atol=1e-10)
    Vi = np.linalg.inv(V)
    blup = np.linalg.solve(Vi + np.eye(d) / tau2, (np.einsum("kij,kj->ki", Vi, theta) + mu / tau2)[..., None])[..., 0]
    np.testing.assert_allclose(lf.coef_, blup, atol=1e-10)
    # REML (d = 1): the estimate solves the REML score equation (fixed-point form)
    theta1, V1 = theta[:, :1], V[:, :1, :1]
    t = estimate_tau2(theta1, V1, "reml")
    w = 1 / (V1[:, 0, 0] + t)
    m = np.sum(w * theta1[:, 0]) / w.sum()
    fixed_point = np.sum(w**2 * ((theta1[:, 0] - m) ** 2 - V1[:, 0, 0])) / np.sum(w**2) + 1 / w.sum()
    assert t == pytest.approx(max(fixed_point, 0.0), abs=1e-6)


def test_prediction_interval_matches_random_effects_monte_carlo():
    rng = np.random.default_rng(9)
    K, d = 6, 2
    V = np.stack([np.diag(rng.uniform(0.02, 0.1, d)) for _ in range(K)])
    n = rng.integers(40, 81, K)
    tau2, mu = 0.05, np.array([0.5, -0.2])
    base = LateFusion(penalty="squared", tau2=tau2).fit(summaries_from_estimates(np.zeros((K, d)), V, n))
    P, G = base.problem_.squared_map(base.C_)
    errs = []
    for _ in range(6000):  # theta_k ~ N(mu, tau2 I), theta_hat_k ~ N(theta_k, V_k); the map is linear
        true = mu + np.sqrt(tau2) * rng.normal(size=(K, d))
        est = true + np.einsum("kij,kj->ki", np.sqrt(V), rng.normal(size=(K, d)))
        c0 = np.einsum("kij,kj->i", G, est)
        errs.append(c0 + np.einsum("kij,kj->ki", P, est - c0) - true)
    emp_sd = np.std(np.array(errs), axis=0)
    pred_se = base.prediction_interval()["pred se"].to_numpy().reshape(K, d)
    np.testing.assert_allclose(pred_se, emp_sd, rtol=0.05)


def test_pooled_limits_vcov_gls_and_jacobian_pooled_dml():
    rng = np.random.default_rng(12)
    sums, raw = [], []
    for k in range(6):
        n = int(rng.integers(40, 81))
        phi = np.column_stack([np.ones(n), rng.normal(size=n)])
        gamma = phi @ np.array([1.0 + 0.3 * k, 0.5]) + rng.normal(size=n) * (1 + 0.3 * np.abs(phi[:, 1]))
        m = _core.linear_score_moments(phi, gamma, np.ones(n))
        sums.append(SiteSummary(site=f"s{k}", model="blp", coef_names=["const", "x"], n=n, theta=m["theta"], J=m["J"], Omega=m["Omega"]))
        raw.append((phi, gamma))
    pooled = _core.linear_score_moments(np.vstack([r[0] for r in raw]), np.concatenate([r[1] for r in raw]), np.ones(sum(s.n for s in sums)))
    for penalty in ("group", "squared"):
        jac = LateFusion(penalty=penalty, loss_matrix="jacobian", C=1e10, n_boot=0).fit(sums)
        np.testing.assert_allclose(jac.centre_, pooled["theta"], atol=1e-8)
        np.testing.assert_allclose(jac.coef_, np.tile(pooled["theta"], (6, 1)), atol=1e-8)
        gls_lf = LateFusion(penalty=penalty, C=1e10, n_boot=0).fit(sums)
        Vi = np.linalg.inv(np.stack([s.vcov for s in sums]))
        gls = np.linalg.solve(Vi.sum(0), np.einsum("kij,kj->i", Vi, np.stack([s.theta for s in sums])))
        np.testing.assert_allclose(gls_lf.centre_, gls, atol=1e-8)
        itl = LateFusion(penalty=penalty, C=1e-10, n_boot=0).fit(sums)
        np.testing.assert_allclose(itl.coef_, np.stack([s.theta for s in sums]), atol=1e-8)
        if penalty == "group":  # post-fusion SE with every site fused = the FE-GLS standard error
            assert gls_lf.fused_.all()
            np.testing.assert_allclose(gls_lf.postfusion_vcov_, np.linalg.inv(Vi.sum(0)), rtol=1e-8)


def direct_cv(sums, grid, penalty, metric):
    """CV(C) computed independently: per fold, build the problem in numpy and evaluate CVFold.loss."""
    d = sums[0].d
    n = np.array([s.n for s in sums], float)
    w = n / n.sum()
    R = max(len(s.cv_folds) for s in sums)
    total = np.zeros(len(grid))
    for r in range(R):
        folds = [s.cv_folds[r % len(s.cv_folds)] for s in sums]
        n_tr = np.array([f.n_train for f in folds], float)
        H = np.stack([np.linalg.inv(f.vcov * f.n_train) for f in folds])
        prob = _core.FusionProblem(np.stack([f.theta for f in folds]), H, n_tr / n_tr.sum(), np.sqrt(d / n_tr))
        for i, C in enumerate(grid):
            th = prob.solve(C, penalty, metric)["theta"]
            for k, (s, f) in enumerate(zip(sums, folds)):
                uses = np.sum(np.arange(R) % len(s.cv_folds) == r % len(s.cv_folds))
                share = f.n_test / sum(g.n_test for g in s.cv_folds) / uses
                total[i] += w[k] * share * f.loss(th[k])
    return total


@pytest.mark.parametrize("penalty,metric", [("group", "matched"), ("group", "euclidean"), ("squared", "matched")])
def test_cv_curve_matches_direct_computation(penalty, metric):
    rng = np.random.default_rng(31)
    sums, _ = make_summaries(rng, K=6, d=2, eta=0.2, outliers=1)
    sums[2] = make_site(rng, sums[2].theta, 45, "s2", n_folds=2)  # a site with fewer folds
    grid = [0.0, 0.1, 0.5, 1.0, 2.0, 5.0]
    lf = LateFusion(penalty=penalty, metric=metric, C="cv", C_grid=grid, n_boot=0).fit(sums)
    np.testing.assert_allclose(lf.cv_results_["cv_loss"], direct_cv(sums, grid, penalty, metric), rtol=1e-10)
    assert lf.C_ == grid[int(np.argmin(lf.cv_results_["cv_loss"]))]
    assert list(lf.cv_results_.columns) == ["C", "cv_loss", "cv_se"]
    one_se = clone(lf).set_params(cv_rule="1se").fit(sums)
    assert one_se.C_ >= lf.C_


def test_cv_prefers_fusion_when_sites_are_identical():
    rng = np.random.default_rng(2)
    sums, _ = make_summaries(rng, K=10, d=1, eta=0.0, n_range=(40, 60))
    lf = LateFusion(n_boot=0).fit(sums)
    assert lf.C_ > 0.5
    assert lf.cv_results_["cv_loss"].iloc[0] > lf.cv_results_["cv_loss"].min()


def test_group_inference_tables_and_reproducibility(tmp_path):
    rng = np.random.default_rng(5)
    sums, _ = make_summaries(rng, K=8, d=2, eta=0.1, outliers=1)
    lf = LateFusion(C=1.0, ci="bootstrap", n_boot=300, random_state=3).fit(sums)
    table = lf.summary_frame()
    assert table.index.names == ["site", "coef"] and len(table) == 16
    for col in ("coef", "boot std err", "boot 2.5 %", "boot 97.5 %", "fused", "boot fused share", "dml coef",
                "dml std err", "dml 2.5 %", "dml 97.5 %"):
        assert col in table.columns
    assert "z" not in table.columns and "P>|z|" not in table.columns  # no test statistic for a shrunk estimate
    assert (table["boot std err"] > 0).all()
    np.testing.assert_allclose(table["dml coef"].to_numpy(), np.stack([s.theta for s in sums]).ravel())
    ci90 = lf.confint(0.9)
    assert list(ci90.columns) == ["estimate", "5 %", "95 %"] and ci90.index[-1] == ("(centre)", "x1")
    assert (ci90["5 %"] < ci90["95 %"]).all()
    # the post-fusion SE of the centre is the GLS SE over the fused set
    S = lf.fused_
    assert S.sum() >= 2
    Vi = np.linalg.inv(np.stack([s.vcov for s in sums])[S])
    np.testing.assert_allclose(lf.centre_frame()["post-fusion std err"], np.sqrt(np.diag(np.linalg.inv(Vi.sum(0)))), rtol=1e-8)
    same = LateFusion(C=1.0, ci="bootstrap", n_boot=300, random_state=3).fit(sums)
    pd.testing.assert_frame_equal(same.summary_frame(), table)
    # file paths work and give the same fit
    paths = []
    for s in sums:
        p = tmp_path / f"{s.site}.json"
        s.to_json(p)
        paths.append(p)
    from_files = LateFusion(C=1.0, ci="bootstrap", n_boot=300, random_state=3).fit(paths)
    pd.testing.assert_frame_equal(from_files.summary_frame(), table)
    text = lf.summary()
    assert "parametric bootstrap" in text and "Fused centre" in text and "I2" in text
    # squared: Wald intervals from the delta method
    sq = LateFusion(penalty="squared", C=1.0, ci="conditional").fit(sums)
    se = np.sqrt(np.einsum("kii->ki", sq.vcov_)).ravel()
    np.testing.assert_allclose(sq.summary_frame()["conditional std err"], se)


def test_no_cv_folds_falls_back_to_C1_with_warning():
    rng = np.random.default_rng(1)
    sums, _ = make_summaries(rng, K=4, d=1, n_folds=0)
    with pytest.warns(UserWarning, match="C = 1"):
        lf = LateFusion(n_boot=0).fit(sums)
    assert lf.C_ == 1.0
    with_folds, _ = make_summaries(rng, K=3, d=1)
    with pytest.raises(SummaryValidationError, match=r"\['s0', 's1', 's2', 's3'\] have no cv_folds"):
        LateFusion(n_boot=0).fit(sums + [SiteSummary(**{**s.__dict__, "site": s.site + "b"}) for s in with_folds])


def test_bad_summaries_give_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    sums, _ = make_summaries(rng, K=4, d=2, n_folds=0)
    good = sums[1]
    base = dict(site="bad", model="blp", coef_names=["const", "x1"], n=50, theta=good.theta, J=good.J, Omega=good.Omega)
    # non-PD Omega, NaN, n <= 0: refused at construction, naming the site
    with pytest.raises(SummaryValidationError, match="site 'bad'.*Omega is not positive definite"):
        SiteSummary(**{**base, "Omega": -good.Omega})
    with pytest.raises(SummaryValidationError, match="site 'bad'.*theta"):
        SiteSummary(**{**base, "theta": np.array([np.nan, 1.0])})
    with pytest.raises(SummaryValidationError, match="site 'bad'.*n must be a positive"):
        SiteSummary(**{**base, "n": 0})
    # an object altered after construction is re-validated by fit
    tampered = SiteSummary(**base)
    object.__setattr__(tampered, "n", -3)
    with pytest.raises(SummaryValidationError, match="site 'bad'"):
        LateFusion(C=1.0, n_boot=0).fit(sums + [tampered])
    # mismatched d / names / model / duplicates
    one = SiteSummary(site="bad", model="blp", coef_names=["const"], n=50, theta=[1.0], J=[[-1.0]], Omega=[[2.0]])
    with pytest.raises(SummaryValidationError, match="site 'bad': coef_names \\['const'\\] differ from site 's0''s"):
        LateFusion(C=1.0).fit(sums + [one])
    with pytest.raises(SummaryValidationError, match="site 'bad': coef_names"):
        LateFusion(C=1.0).fit(sums + [SiteSummary(**{**base, "coef_names": ["const", "x9"]})])
    with pytest.raises(SummaryValidationError, match="site 'bad': model 'cate'"):
        LateFusion(C=1.0).fit(sums + [SiteSummary(**{**base, "model": "cate"})])
    with pytest.raises(SummaryValidationError, match="duplicate site names"):
        LateFusion(C=1.0).fit(sums + [sums[0]])
    with pytest.raises(SummaryValidationError, match="at least 2 sites"):
        LateFusion(C=1.0).fit(sums[:1])
    # jacobian loss needs -sym(J) positive definite
    with pytest.raises(SummaryValidationError, match="site 'bad': the loss matrix H is not positive definite"):
        LateFusion(C=1.0, loss_matrix="jacobian").fit(sums + [SiteSummary(**{**base, "J": -good.J})])
    # a tampered file names the file
    p = tmp_path / "s.json"
    good.to_json(p)
    p.write_text(p.read_text().replace('"n": ', '"n": 1'))
    with pytest.raises(SummaryValidationError, match="s.json"):
        LateFusion(C=1.0).fit([p] + sums)
    with pytest.raises(TypeError, match=r"summaries\[1\]"):
        LateFusion(C=1.0).fit([sums[0], {"theta": 1}])
    with pytest.raises(ValueError, match="penalty"):
        LateFusion(penalty="lasso").fit(sums)
    with pytest.raises(ValueError, match="tau2 applies"):
        LateFusion(tau2=0.1).fit(sums)


def test_sklearn_conventions():
    lf = LateFusion(penalty="squared", C=2.0)
    assert clone(lf).get_params()["C"] == 2.0
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        lf.summary_frame()
    with pytest.raises(ValueError, match="n_jobs"):
        LateFusion(n_jobs=0).fit(make_summaries(np.random.default_rng(0), K=3, d=1)[0])


def test_n_jobs_gives_the_same_fit_and_cv_curve():
    """Few sites: n_jobs only sets the C++ thread count, so the fit is identical."""
    sums, _ = make_summaries(np.random.default_rng(5), K=8, d=2, eta=0.2, outliers=1)
    a = LateFusion(penalty="group", metric="euclidean", n_boot=50, random_state=1).fit(sums)
    b = LateFusion(penalty="group", metric="euclidean", n_boot=50, random_state=1, n_jobs=-1).fit(sums)
    assert np.array_equal(a.coef_, b.coef_) and a.C_ == b.C_
    assert np.array_equal(a.cv_results_["cv_loss"], b.cv_results_["cv_loss"])
    assert np.array_equal(a.boot_theta_, b.boot_theta_)


def test_heterogeneity_q_is_zero_for_identical_estimates():
    V = np.stack([np.eye(2) * 0.1] * 4)
    h = heterogeneity(np.ones((4, 2)), V)
    assert h["Q"] == pytest.approx(0.0, abs=1e-12) and h["tau2"] == 0.0 and h["df"] == 6.0


def test_end_to_end_from_site_dml():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from hetmtl.latefusion import MultiSiteDML
    from hetmtl.latefusion.simulate import make_latefusion_data

    sim = make_latefusion_data(scenario=1, n_sites=6, eta=0.25, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dml = MultiSiteDML(model="plr", ml_outcome=LinearRegression(), ml_treatment=LogisticRegression(), n_folds=4,
                           random_state=1).fit(sim.data)
    sums = dml.summaries()
    assert all(s.cv_folds for s in sums)
    lf = LateFusion(n_boot=200, random_state=0).fit(sums)
    assert lf.coef_.shape == (6, 1) and np.isfinite(lf.cv_results_["cv_loss"]).all()
    assert lf.C_ in set(lf.cv_results_["C"])
    # fused estimates lie between the site estimate and the centre (shrinkage), per site
    t = lf.dml_coef_[:, 0]
    f = lf.coef_[:, 0]
    assert np.all((f - lf.centre_[0]) * (t - lf.centre_[0]) >= -1e-12)
    assert np.all(np.abs(f - lf.centre_[0]) <= np.abs(t - lf.centre_[0]) + 1e-12)
