"""Random-effects inference (hetmtl.latefusion.meta) against metafor: a stored BCG fixture, a live
Rscript comparison on simulated data, d > 1 identities and a small coverage simulation."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetmtl.latefusion.meta import (_re_pieces, _reml_nll, _reml_score, estimate_tau2, heterogeneity, random_effects)

DATA = Path(__file__).resolve().parent / "data" / "ebci" / "metafor_bcg.json"
BCG = json.loads(DATA.read_text())
BCG_Y, BCG_V = np.array(BCG["yi"]), np.array(BCG["vi"])
UNIROOT_TOL = np.finfo(float).eps ** 0.25  # metafor's default tolerance of the PM root (uniroot)


def close(actual, expected, tol=1e-6):
    """|actual − expected| ≤ tol·max(1, |expected|) elementwise (relative for large values)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    assert np.all(err <= tol), f"max scaled error {err.max():.3g} > {tol:g}\n{actual}\n{expected}"


def check_against(res, ref: dict, tol=1e-6, tau2=True):
    if tau2:
        close(res.tau2, ref["tau2"], tol)
    close(res.mu, [ref["est"]], tol)
    close(res.se, [ref["se"]], tol)
    close(res.ci, [ref["ci"]], tol)
    close(res.se_knha, [ref["knha_se"]], tol)
    close(res.ci_knha, [ref["knha_ci"]], tol)
    close(res.pi, [ref["pi"]], tol)
    close(res.blup[:, 0], ref["blup"], tol)
    close(res.blup_se[:, 0], ref["blup_se"], tol)
    close(res.blup_ci[:, 0], ref["blup_ci"], tol)


# ----------------------------------------------------------------------------- BCG fixture
@pytest.mark.parametrize("method", ["REML", "DL"])
def test_bcg_fixture(method):
    check_against(random_effects(BCG_Y, BCG_V, tau2=method.lower()), BCG[method])


def test_bcg_fixture_pm():
    """The fixture's PM τ² comes from metafor's default root tolerance (≈1.2e-4); our root is exact
    (Q(τ̂²) = K − 1), and every other quantity agrees to 1e-6 at the fixture's τ²."""
    res = random_effects(BCG_Y, BCG_V, tau2="pm")
    assert abs(res.tau2 - BCG["PM"]["tau2"]) <= UNIROOT_TOL
    K = len(BCG_Y)
    assert _re_pieces(BCG_Y[:, None], BCG_V[:, None, None], res.tau2)[3] == pytest.approx(K - 1, rel=1e-12)
    check_against(random_effects(BCG_Y, BCG_V, tau2=BCG["PM"]["tau2"]), BCG["PM"])


def test_bcg_fixed_effect_and_se_keyword():
    res = random_effects(BCG_Y, se=np.sqrt(BCG_V))
    close(res.mu_fe, [BCG["FE"]["est"]])
    close(res.se_fe, [BCG["FE"]["se"]])
    check_against(res, BCG["REML"])
    assert res.tau2_method == "reml" and res.K == 13 and res.d == 1
    # the within-study (conditional) SE this module replaces in LateFusion is much smaller
    w = 1.0 / (BCG_V + res.tau2)
    assert np.sqrt((w**2 * BCG_V).sum()) / w.sum() == pytest.approx(0.0794, abs=1e-4)


def test_tables_and_summary():
    res = random_effects(BCG_Y, BCG_V, test="knha", sites=[f"s{k}" for k in range(13)])
    z = res.summary_frame(test="z")
    assert list(z.columns) == ["coef", "std err", "z", "P>|z|", "2.5 %", "97.5 %"]
    close(z.iloc[0, [0, 1]].to_numpy(float), [BCG["REML"]["est"], BCG["REML"]["se"]])
    t = res.summary_frame()
    assert list(t.columns) == ["coef", "std err", "t", "P>|t|", "2.5 %", "97.5 %"]
    close(t[["2.5 %", "97.5 %"]].to_numpy(), [BCG["REML"]["knha_ci"]])
    close(t["P>|t|"].to_numpy(), res.pvalue_knha)
    assert list(res.summary_frame(level=0.9).columns[-2:]) == ["5 %", "95 %"]
    b = res.blup_frame(test="z")
    assert list(b.index) == [f"s{k}" for k in range(13)] and b.index.name == "site"
    close(b["blup"].to_numpy(), BCG["REML"]["blup"])
    close(b[["2.5 %", "97.5 %"]].to_numpy(), BCG["REML"]["blup_ci"])
    close(b["shrinkage"].to_numpy(), res.tau2 / (res.tau2 + BCG_V))
    close(res.blup_frame()["std err"].to_numpy(), res.blup_se_knha[:, 0])
    p = res.prediction_frame(test="z")
    close(p[["pi.lb", "pi.ub"]].to_numpy(), [BCG["REML"]["pi"]])
    f = res.fe_frame()
    close(f[["coef", "std err"]].to_numpy(), [[BCG["FE"]["est"], BCG["FE"]["se"]]])
    summ = res.summary()
    from statsmodels.iolib.summary import Summary

    assert isinstance(summ, Summary)
    text = str(summ)
    assert text == summ.as_text() and "tau^2:" in text and "0.3132 (Q-profile" in text
    assert "Q(12)" in text and "Knapp-Hartung" in text and "P>|t|" in text
    assert "<table" in summ.as_html() and "tabular" in summ.as_latex()
    assert repr(res).startswith("RandomEffects(K=13, d=1, tau2=0.313243 (reml)")
    with pytest.raises(ValueError):
        res.mu[0] = 1.0  # read-only


# ----------------------------------------------------------------------------- validation
def test_validation_messages():
    y, v = BCG_Y.copy(), BCG_V.copy()
    y[4] = np.nan
    with pytest.raises(ValueError, match=r"theta of site 4 .*not finite"):
        random_effects(y, v)
    v[7] = 0.0
    with pytest.raises(ValueError, match=r"V of site 7 .*> 0"):
        random_effects(BCG_Y, v)
    with pytest.raises(ValueError, match=r"se of site 2 \('c'\)"):
        random_effects(BCG_Y[:4], se=[1.0, 1.0, -1.0, 1.0], sites=list("abcd"))
    V = np.stack([np.eye(2)] * 5)
    V[3] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match=r"V of site 3 is not positive definite"):
        random_effects(np.zeros((5, 2)), V)
    V[3] = [[1.0, 0.5], [0.4, 1.0]]
    with pytest.raises(ValueError, match=r"V of site 3 is not symmetric"):
        random_effects(np.zeros((5, 2)), V)
    with pytest.raises(ValueError, match="K >= 2"):
        random_effects([0.1], [0.1], tau2=0.0)
    with pytest.raises(ValueError, match="K >= 3"):
        random_effects([0.1, 0.3], [0.1, 0.2])
    assert random_effects([0.1, 0.3], [0.1, 0.2], tau2=0.05).tau2 == 0.05
    with pytest.raises(ValueError, match="exactly one of V"):
        random_effects(BCG_Y, BCG_V, se=BCG_V)
    with pytest.raises(ValueError, match="V must have shape"):
        random_effects(BCG_Y, BCG_V[:5])
    with pytest.raises(ValueError, match="tau2"):
        random_effects(BCG_Y, BCG_V, tau2="ml")
    with pytest.raises(ValueError, match="tau2"):
        random_effects(BCG_Y, BCG_V, tau2=-1.0)
    with pytest.raises(ValueError, match="test"):
        random_effects(BCG_Y, BCG_V, test="t")
    with pytest.raises(ValueError, match="level"):
        random_effects(BCG_Y, BCG_V, level=95)
    with pytest.raises(ValueError, match="tau2 method"):
        estimate_tau2(BCG_Y[:, None], BCG_V[:, None, None], "hs")


# ----------------------------------------------------------------------------- d > 1
def _random_V(rng, K, d):
    A = rng.normal(size=(K, d, d)) * rng.uniform(0.1, 0.6, size=(K, 1, 1))
    return A @ A.transpose(0, 2, 1) + 0.01 * np.eye(d)


def test_block_diagonal_matches_scalar_path():
    """d = 3 with diagonal V_k and τ² fixed: every coordinate is the scalar analysis; the pooled
    HKSJ scale is the mean of the scalar ones, Q is their sum."""
    rng = np.random.default_rng(7)
    K, d, t2 = 9, 3, 0.2
    theta = rng.normal(size=(K, d)) + [0.0, 1.0, -2.0]
    var = rng.uniform(0.02, 0.5, size=(K, d))
    full = random_effects(theta, np.einsum("kj,ij->kij", var, np.eye(d)), tau2=t2)
    diag = random_effects(theta, var, tau2=t2)  # (K, d) variances
    scal = [random_effects(theta[:, j], var[:, j], tau2=t2) for j in range(d)]
    for res in (full, diag):
        for j, s in enumerate(scal):
            for name in ("mu", "se", "ci", "pi", "mu_fe", "se_fe"):
                close(getattr(res, name)[j], getattr(s, name)[0], 1e-12)
            for name in ("blup", "blup_se", "blup_ci"):
                close(getattr(res, name)[:, j], getattr(s, name)[:, 0], 1e-12)
        close(res.vcov, np.diag([s.vcov[0, 0] for s in scal]), 1e-12)
        close(res.knha_scale, np.mean([s.knha_scale for s in scal]), 1e-12)
        close(res.Q, sum(s.Q for s in scal), 1e-12)
        assert res.Q_df == d * (K - 1) and res.knha_df == K - 1
        # Q-profile bounds: the summed generalised Q hits the χ²_{d(K−1)} quantiles
        qsum = lambda t: sum(_re_pieces(theta[:, [j]], var[:, j, None, None], t)[3] for j in range(d))  # noqa: E731
        close(qsum(res.tau2_ci[0]), stats.chi2.isf(0.025, d * (K - 1)), 1e-9)
        close(qsum(res.tau2_ci[1]), stats.chi2.ppf(0.025, d * (K - 1)), 1e-9)
    assert list(full.blup_frame().index.names) == ["site", "coef"]
    assert full.blup_frame().shape[0] == K * d


def test_limits_tau2_zero_and_infinite():
    rng = np.random.default_rng(3)
    K, d = 8, 2
    theta, V = rng.normal(size=(K, d)), _random_V(rng, K, d)
    fe = random_effects(theta, V, tau2=0.0)
    close(fe.mu, fe.mu_fe, 1e-12)
    close(fe.vcov, fe.vcov_fe, 1e-12)
    close(fe.blup, np.tile(fe.mu, (K, 1)), 1e-12)  # complete shrinkage
    close(fe.blup_vcov, np.tile(fe.vcov, (K, 1, 1)), 1e-12)
    big = 1e9
    inf = random_effects(theta, V, tau2=big)
    close(inf.mu, theta.mean(0), 1e-7)  # unweighted mean
    close(inf.vcov * K / big, np.eye(d), 1e-7)
    close(inf.blup, theta, 1e-7)  # no shrinkage
    close(inf.blup_vcov, V, 1e-6)
    assert not np.allclose(fe.mu, inf.mu, atol=1e-3)  # the limits differ on this data


@pytest.mark.parametrize("method", ["dl", "pm", "reml"])
def test_rotation_invariance_and_estimating_equations(method):
    """The τ²·I model is invariant under θ → Rθ, V → RVR' (R orthogonal); the estimators solve
    their defining equations for d = 2."""
    rng = np.random.default_rng(11)
    K, d = 12, 2
    V = _random_V(rng, K, d)
    theta = 0.5 * rng.normal(size=(K, d)) + np.einsum("kij,kj->ki", np.linalg.cholesky(V), rng.normal(size=(K, d)))
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    a = random_effects(theta, V, tau2=method)
    b = random_effects(theta @ R.T, R @ V @ R.T, tau2=method)
    assert a.tau2 > 0
    close(b.tau2, a.tau2, 1e-8)
    close(b.mu, R @ a.mu, 1e-8)
    close(b.vcov, R @ a.vcov @ R.T, 1e-8)
    close(b.tau2_ci, a.tau2_ci, 1e-8)
    df = d * (K - 1)
    if method == "pm":
        close(_re_pieces(theta, V, a.tau2)[3], df, 1e-10)
    elif method == "reml":
        assert abs(_reml_score(theta, V, a.tau2)) < 1e-8 * np.trace(np.linalg.inv(V), axis1=1, axis2=2).sum()
        for t in (0.0, 0.9 * a.tau2, 1.1 * a.tau2, 3 * a.tau2):
            assert _reml_nll(theta, V, t) > _reml_nll(theta, V, a.tau2)
    else:
        # DL: E[Q(0)] = d(K−1) + τ²·denominator; check the denominator against tr(P₀) of the stacked model
        W0 = np.linalg.inv(V)
        Wb = np.zeros((K * d, K * d))
        for k in range(K):
            Wb[k * d:(k + 1) * d, k * d:(k + 1) * d] = W0[k]
        X = np.tile(np.eye(d), (K, 1))
        P = Wb - Wb @ X @ np.linalg.solve(X.T @ Wb @ X, X.T @ Wb)
        h = heterogeneity(theta, V)
        close(a.tau2, max(0.0, (h["Q"] - df) / np.trace(P)), 1e-10)


def test_hksj_pooled_scale_d2():
    rng = np.random.default_rng(5)
    K, d = 10, 2
    theta, V = rng.normal(size=(K, d)), _random_V(rng, K, d)
    res = random_effects(theta, V, tau2="dl", test="knha")
    W, S, mu, Q = _re_pieces(theta, V, res.tau2)
    close(res.knha_scale, Q / (d * (K - 1)), 1e-12)
    close(res.vcov_knha, res.knha_scale * np.linalg.inv(S), 1e-12)
    tq = stats.t.isf(0.025, K - 1)
    close(res.ci_knha[:, 1] - res.mu, tq * res.se_knha, 1e-12)
    close(res.pi_knha[:, 1] - res.mu, tq * np.sqrt(res.se_knha**2 + res.tau2), 1e-12)


# ----------------------------------------------------------------------------- coverage
def test_coverage_simulation_k10():
    """2000 replicates (MC SE ≈ 0.005), K = 10, BCG variances, μ = −0.71, τ² = 0.31, normal site
    effects, REML τ² (the benchmark's 5200-replicate HKSJ coverage at this point is about 0.94)."""
    rng = np.random.default_rng(20260507)
    mu, tau2, K, reps = -0.71, 0.31, 10, 2000
    hit = {"hksj": 0, "wald": 0, "within": 0}
    for _ in range(reps):
        v = rng.choice(BCG_V, size=K)
        y = mu + np.sqrt(tau2) * rng.normal(size=K) + np.sqrt(v) * rng.normal(size=K)
        res = random_effects(y, v)
        hit["hksj"] += res.ci_knha[0, 0] <= mu <= res.ci_knha[0, 1]
        hit["wald"] += res.ci[0, 0] <= mu <= res.ci[0, 1]
        w = 1.0 / (v + res.tau2)
        se_within = np.sqrt((w**2 * v).sum()) / w.sum()
        hit["within"] += abs(res.mu[0] - mu) <= 1.959964 * se_within
    cov = {k: h / reps for k, h in hit.items()}
    print(cov)
    assert 0.92 <= cov["hksj"] <= 0.98
    assert cov["hksj"] >= cov["wald"] - 0.01
    assert min(cov["hksj"], cov["wald"]) >= cov["within"] + 0.2
    assert cov["within"] < 0.8


# ----------------------------------------------------------------------------- live metafor
def _metafor_available() -> str | None:
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    rc = subprocess.run(["Rscript", "-e", "quit(status = !requireNamespace('metafor', quietly = TRUE))"],
                        capture_output=True, timeout=120).returncode
    return None if rc == 0 else "R package metafor not installed"


R_SCRIPT = r"""
suppressMessages(library(metafor))
args <- commandArgs(TRUE)
dat <- read.csv(args[1])
out <- character(0)
put <- function(key, x) out <<- c(out, paste0(key, ",", paste(sprintf("%.17g", as.numeric(x)), collapse = ";")))
ctl <- list(threshold = 1e-13, tol = 1e-13, maxiter = 10000)
for (s in unique(dat$set)) {
  d <- dat[dat$set == s, ]
  for (m in c("REML", "DL", "PM")) {
    for (tst in c("z", "knha")) {
      f <- rma(d$y, d$v, method = m, test = tst, control = ctl)
      key <- paste(s, m, tst, sep = ".")
      p <- predict(f); b <- blup(f)
      put(paste0(key, ".tau2"), f$tau2); put(paste0(key, ".est"), f$beta); put(paste0(key, ".se"), f$se)
      put(paste0(key, ".ci"), c(f$ci.lb, f$ci.ub)); put(paste0(key, ".pval"), f$pval)
      put(paste0(key, ".pi"), c(p$pi.lb, p$pi.ub)); put(paste0(key, ".blup"), b$pred)
      put(paste0(key, ".blup_se"), b$se); put(paste0(key, ".blup_lb"), b$pi.lb); put(paste0(key, ".blup_ub"), b$pi.ub)
      put(paste0(key, ".I2"), f$I2 / 100); put(paste0(key, ".H2"), f$H2)
      put(paste0(key, ".Q"), c(f$QE, f$QEp))
      if (tst == "z") {
        ci <- confint(f, control = list(tol = 1e-13))$random
        put(paste0(key, ".tau2_ci"), ci["tau^2", 2:3]); put(paste0(key, ".I2_ci"), ci["I^2(%)", 2:3] / 100)
      }
    }
  }
  fe <- rma(d$y, d$v, method = "FE")
  put(paste0(s, ".FE"), c(fe$beta, fe$se))
}
mv <- read.csv(args[2])
for (s in unique(mv$set)) {
  d <- mv[mv$set == s, ]
  V <- bldiag(lapply(split(d, d$site), function(g) matrix(c(g$v11[1], g$v12[1], g$v12[1], g$v22[1]), 2)))
  d$row <- seq_len(nrow(d))
  f <- rma.mv(y, V, mods = ~ 0 + factor(coord), random = ~ 1 | row, data = d, method = "REML",
              control = list(optimizer = "BFGS", reltol = 1e-15))
  put(paste0("mv", s, ".tau2"), f$sigma2); put(paste0("mv", s, ".est"), f$beta); put(paste0("mv", s, ".se"), f$se)
}
writeLines(out, args[3])
"""


@pytest.mark.r
def test_live_metafor(tmp_path):
    reason = _metafor_available()
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(2026)
    sets, rows = {}, []
    for s, (K, tau2) in enumerate([(5, 0.3), (7, 0.0), (10, 0.05), (12, 1.0), (20, 0.2), (30, 0.5), (8, 0.02)]):
        v = rng.uniform(0.005, 0.6, size=K)
        y = 0.4 + np.sqrt(tau2) * rng.normal(size=K) + np.sqrt(v) * rng.normal(size=K)
        sets[s] = (y, v)
    sets[len(sets)] = (np.array([0.10, 0.11, 0.10, 0.12, 0.105]), np.array([0.2, 0.3, 0.25, 0.4, 0.1]))  # Q(0) tiny
    for s, (y, v) in sets.items():
        rows += [{"set": s, "y": yi, "v": vi} for yi, vi in zip(y, v)]
    pd.DataFrame(rows).to_csv(tmp_path / "uni.csv", index=False)
    mv_sets, mv_rows = {}, []
    for s, K in enumerate([6, 15]):
        V = _random_V(rng, K, 2)
        theta = [0.2, -0.5] + 0.4 * rng.normal(size=(K, 2)) + np.einsum("kij,kj->ki", np.linalg.cholesky(V),
                                                                         rng.normal(size=(K, 2)))
        mv_sets[s] = (theta, V)
        for k in range(K):
            for j in range(2):
                mv_rows.append({"set": s, "site": k, "coord": j, "y": theta[k, j], "v11": V[k, 0, 0],
                                "v12": V[k, 0, 1], "v22": V[k, 1, 1]})
    pd.DataFrame(mv_rows).to_csv(tmp_path / "mv.csv", index=False)
    (tmp_path / "run.R").write_text(R_SCRIPT)
    proc = subprocess.run(["Rscript", str(tmp_path / "run.R"), str(tmp_path / "uni.csv"), str(tmp_path / "mv.csv"),
                           str(tmp_path / "out.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ref = {}
    for line in (tmp_path / "out.csv").read_text().splitlines():
        key, vals = line.split(",")
        ref[key] = np.array([float(x) for x in vals.split(";")])

    n_checked = 0
    for s, (y, v) in sets.items():
        close([ref[f"{s}.FE"][0]], random_effects(y, v, tau2=0.0).mu_fe)
        close([ref[f"{s}.FE"][1]], random_effects(y, v, tau2=0.0).se_fe)
        for m in ("REML", "DL", "PM"):
            for tst in ("z", "knha"):
                key = f"{s}.{m}.{tst}"
                res = random_effects(y, v, tau2=m.lower(), test=tst)
                close(res.tau2, ref[key + ".tau2"][0], 1e-8)
                close(res.Q, ref[key + ".Q"][0])
                close(res.Q_pvalue, ref[key + ".Q"][1])
                close(res.I2, ref[key + ".I2"][0])
                close(res.H2, ref[key + ".H2"][0])
                knha = tst == "knha"
                se = res.se_knha if knha else res.se
                close(res.mu, ref[key + ".est"])
                close(se, ref[key + ".se"])
                close((res.ci_knha if knha else res.ci)[0], ref[key + ".ci"])
                close((res.pvalue_knha if knha else res.pvalue), ref[key + ".pval"])
                close((res.pi_knha if knha else res.pi)[0], ref[key + ".pi"])
                close(res.blup[:, 0], ref[key + ".blup"])
                close((res.blup_se_knha if knha else res.blup_se)[:, 0], ref[key + ".blup_se"])
                bci = (res.blup_ci_knha if knha else res.blup_ci)[:, 0]
                close(bci[:, 0], ref[key + ".blup_lb"])
                close(bci[:, 1], ref[key + ".blup_ub"])
                table = res.summary_frame()
                close(table.iloc[0, -2:].to_numpy(float), ref[key + ".ci"])
                if not knha:
                    close(res.tau2_ci, ref[key + ".tau2_ci"])
                    close(res.I2_ci, ref[key + ".I2_ci"])
                n_checked += 1
    assert n_checked == 6 * len(sets)
    assert np.all(ref[f"{len(sets) - 1}.REML.z.tau2_ci"] == 0.0)  # the crafted homogeneous set: both bounds 0
    for s, (theta, V) in mv_sets.items():
        res = random_effects(theta, V, tau2="reml")
        # rma.mv's general-purpose optimisers stop ~1e-7 (relative) from the optimum; ours solves the score
        close(res.tau2, ref[f"mv{s}.tau2"][0], 1e-5)
        assert _reml_nll(theta, V, res.tau2) <= _reml_nll(theta, V, ref[f"mv{s}.tau2"][0]) + 1e-12
        close(res.mu, ref[f"mv{s}.est"])
        close(res.se, ref[f"mv{s}.se"])
