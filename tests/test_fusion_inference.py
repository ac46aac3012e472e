"""Coverage of LateFusion's intervals at the summary level (fixed seeds, small): robust EB site
intervals, the random-effects centre, and the limits that tie them to per-site DML.

The full study (500 replicates per point, DML nuisances too) is
``benchmarks/bench_fusion_inference.py`` → ``benchmarks/results/fusion_inference.md``."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetmtl.latefusion import LateFusion
from hetmtl.latefusion.table import CENTRE, SummaryTable

K = 30
N_REPS = 100
SE = 0.4 + 0.6 * (np.arange(K) + 0.5) / K  # fixed design: the U(0.4, 1) quantiles, mean 0.7
THETA0 = 1.0
Z = stats.norm.ppf(0.975)


def draw(rng, eta: float):
    """Oracle summaries θ̂_k ~ N(θ_k, se_k²) with θ_k = θ_0 + η·0.7·N(0, 1)."""
    theta = THETA0 + eta * SE.mean() * rng.normal(size=K)
    return theta, theta + SE * rng.normal(size=K)


def run(eta: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    site_cov, len_ratio, centre_cov, cond_vs_re = [], [], [], []
    for _ in range(N_REPS):
        theta, theta_hat = draw(rng, eta)
        fit = LateFusion(penalty="squared").fit(SummaryTable.from_estimates(theta_hat, se=SE))
        ci = fit.confint(0.95)
        sites = ci.drop(index=CENTRE, level="site")
        lo, hi = sites["2.5 %"].to_numpy(), sites["97.5 %"].to_numpy()
        site_cov.append(np.mean((lo <= theta) & (theta <= hi)))
        len_ratio.append(np.mean((hi - lo) / (2 * Z * SE)))
        c = ci.xs(CENTRE, level="site").iloc[0]
        centre_cov.append(c["2.5 %"] <= THETA0 <= c["97.5 %"])
        if fit.tau2_ > 0:
            cf = fit.centre_frame(0.95)
            cond_vs_re.append((float(cf["conditional std err"].iloc[0]), float(fit.random_effects_.se[0])))
    return {"site": np.mean(site_cov), "len": np.mean(len_ratio), "centre": np.mean(centre_cov),
            "cond_vs_re": np.array(cond_vs_re)}


@pytest.fixture(scope="module", params=[0.0, 0.5], ids=["eta0", "eta0.5"])
def coverage(request):
    return request.param, run(request.param, seed=20261205 + int(10 * request.param))


def test_robust_eb_average_coverage_and_shorter_than_dml(coverage):
    eta, r = coverage
    assert r["site"] >= 0.92, f"eta={eta}: robust EB average coverage {r['site']:.3f}"
    assert r["len"] < 1.0, f"eta={eta}: robust EB intervals not shorter than DML's on average ({r['len']:.3f})"


def test_centre_hksj_covers_the_mean_effect(coverage):
    eta, r = coverage
    assert r["centre"] >= 0.9, f"eta={eta}: centre HKSJ coverage {r['centre']:.3f}"


def test_conditional_centre_se_below_random_effects_se(coverage):
    eta, r = coverage
    pairs = r["cond_vs_re"]
    assert len(pairs) > 0.5 * N_REPS  # the "eb" tau2 is positive (finite-sample floor) in most replicates
    assert np.all(pairs[:, 0] < pairs[:, 1]), "conditional SE of the centre should be below the random-effects SE"


def test_robust_eb_tends_to_dml_wald_as_tau2_grows():
    rng = np.random.default_rng(7)
    _, theta_hat = draw(rng, 0.5)
    fit = LateFusion(penalty="squared", tau2=1e8).fit(SummaryTable.from_estimates(theta_hat, se=SE))
    t = fit.summary_frame(0.95)
    np.testing.assert_allclose(t["2.5 %"], t["dml 2.5 %"], atol=1e-6)
    np.testing.assert_allclose(t["97.5 %"], t["dml 97.5 %"], atol=1e-6)
    np.testing.assert_allclose(t["2.5 %"], theta_hat - Z * SE, atol=1e-6)
    ci = fit.confint(0.95).drop(index=CENTRE, level="site")
    np.testing.assert_allclose(ci["97.5 %"], theta_hat + Z * SE, atol=1e-6)


@pytest.mark.parametrize("penalty", ["squared", "group"])
def test_contrast_of_the_only_coefficient_is_the_coefficient_table(penalty):
    rng = np.random.default_rng(8)
    _, theta_hat = draw(rng, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # group without CV statistics: C = 1 fallback warning
        fit = LateFusion(penalty=penalty).fit(SummaryTable.from_estimates(theta_hat, se=SE))
    coef = fit.robust_eb_frame(0.95)
    con = fit.robust_eb_frame(0.95, contrast=[1.0])
    assert list(con.index.get_level_values("coef").unique()) == ["contrast"]
    cols = ["estimate", "std err", "cva", "2.5 %", "97.5 %"]
    pd.testing.assert_frame_equal(con[cols].reset_index(drop=True), coef[cols].reset_index(drop=True),
                                  check_exact=False, rtol=1e-12, atol=1e-12)
    sites = fit.confint(0.95).drop(index=CENTRE, level="site")
    np.testing.assert_allclose(sites["2.5 %"], con["2.5 %"], rtol=1e-12)


def test_group_post_fusion_interval_covers_the_fused_sites_not_the_mean_effect():
    """The group penalty's centre interval is conditional on the fused set S: it covers the
    precision-weighted mean of the fused sites' true effects, not θ_0 once sites differ."""
    rng = np.random.default_rng(77)
    cover_s, cover_0 = [], []
    for _ in range(120):
        theta, theta_hat = draw(rng, 1.5)
        fit = LateFusion(penalty="group", C=1.0).fit(SummaryTable.from_estimates(theta_hat, se=SE))
        S = np.asarray(fit.fused_, bool)
        c = fit.centre_frame(0.95).iloc[0]
        lo, hi = c["post-fusion 2.5 %"], c["post-fusion 97.5 %"]
        w = 1.0 / SE[S] ** 2
        target = float(np.sum(w * theta[S]) / np.sum(w))
        cover_s.append(lo <= target <= hi)
        cover_0.append(lo <= THETA0 <= hi)
    assert np.mean(cover_s) >= 0.88
    assert np.mean(cover_0) < np.mean(cover_s) - 0.05
