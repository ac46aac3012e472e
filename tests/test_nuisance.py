"""Multi-task nuisance estimation (latefusion spec §4, Option A): limits, cvxpy optimum,
cross-fitting hygiene and the gain when nuisances are identical across sites."""
import numpy as np
import pytest
from sklearn.preprocessing import SplineTransformer

from hetmtl.data.multisite import MultiSiteData
from hetmtl.exceptions import DataValidationError
from hetmtl.latefusion import MultiSiteDML
from hetmtl.latefusion.nuisance import (MultiTaskNuisance, fit_multitask_dml, make_site_folds,
                                        multitask_predictions)
from hetmtl.latefusion.simulate import make_latefusion_data


def _toy(seed=0, K=4, n=(30, 60), p=2, logistic=False):
    rng = np.random.default_rng(seed)
    X, y, s = [], [], []
    for k in range(K):
        nk = int(rng.integers(*n))
        x = rng.normal(size=(nk, p))
        f = np.sin(x[:, 0]) + 0.3 * k * x[:, -1] + 0.2 * k
        X.append(x)
        y.append((rng.random(nk) < 1 / (1 + np.exp(-f))).astype(float) if logistic else f + rng.normal(size=nk))
        s += [f"s{k}"] * nk
    return np.vstack(X), np.concatenate(y), np.array(s, dtype=object)


def _ridge_fit(B, t, alpha, logistic, n_total=None):
    """Reference: argmin (1/n) Σ loss + (α/2)‖β[1:]‖² by closed form / Newton (numpy only)."""
    n = B.shape[0]
    R = np.eye(B.shape[1])
    R[0, 0] = 0.0
    if not logistic:
        return np.linalg.solve(B.T @ B / n + alpha * R, B.T @ t / n)
    beta = np.zeros(B.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-B @ beta))
        g = B.T @ (p - t) / n + alpha * R @ beta
        H = (B * (p * (1 - p))[:, None]).T @ B / n + alpha * R
        step = np.linalg.solve(H, g)
        beta -= step
        if np.max(np.abs(step)) < 1e-14:
            break
    return beta


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_infinite_C_is_pooled_sieve_fit(loss):
    X, y, s = _toy(1, logistic=loss == "logistic")
    est = MultiTaskNuisance(loss=loss, C_eta=np.inf, alpha=0.05, tol=1e-11).fit(X, y, s)
    B = est._design(X, est.spline_, est.mean_, est.W_)
    t = (y - est.y_center_) / est.y_scale_
    ref = _ridge_fit(B, t, 0.05, loss == "logistic")
    for site, coef in est.coef_.items():
        np.testing.assert_allclose(coef, ref, atol=1e-7)
    np.testing.assert_allclose(est.center_, ref, atol=1e-7)
    assert all(est.fused_.values())
    # the design is the pooled-whitened spline basis: B'B/N = I
    np.testing.assert_allclose(B.T @ B / B.shape[0], np.eye(B.shape[1]), atol=1e-8)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_zero_C_is_per_site_sieve_fits(loss):
    X, y, s = _toy(2, logistic=loss == "logistic")
    est = MultiTaskNuisance(loss=loss, C_eta=0.0, alpha=0.05, tol=1e-11).fit(X, y, s)
    B = est._design(X, est.spline_, est.mean_, est.W_)
    t = (y - est.y_center_) / est.y_scale_
    for site, coef in est.coef_.items():
        rows = s == site
        ref = _ridge_fit(B[rows], t[rows], 0.05, loss == "logistic")
        np.testing.assert_allclose(coef, ref, atol=1e-7)
    # and predictions equal an sklearn-free per-site linear fit on the same basis
    pred = est.predict(X, s)
    assert pred.shape == y.shape and np.all(np.isfinite(pred))


@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("site_intercept", [False, True])
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_optimum_matches_cvxpy(loss, site_intercept):
    cp = pytest.importorskip("cvxpy")
    X, y, s = _toy(3, K=3, n=(20, 35), p=1, logistic=loss == "logistic")
    basis = SplineTransformer(n_knots=3, degree=2, include_bias=False)
    C, alpha = 0.3, 0.02
    est = MultiTaskNuisance(loss=loss, C_eta=C, basis=basis, alpha=alpha, site_intercept=site_intercept,
                            tol=1e-12, max_iter=200000).fit(X, y, s)
    B = est._design(X, est.spline_, est.mean_, est.W_)
    t = (y - est.y_center_) / est.y_scale_
    sites = sorted(set(s))
    K, q, N = len(sites), B.shape[1], B.shape[0]
    beta = cp.Variable((K, q))
    b0 = cp.Variable(q)
    obj = 0
    start = 1 if site_intercept else 0
    for k, site in enumerate(sites):
        rows = s == site
        nk = rows.sum()
        eta = B[rows] @ beta[k]
        if loss == "squared":
            lk = 0.5 * cp.sum_squares(t[rows] - eta) / nk
        else:
            lk = cp.sum(cp.logistic(eta) - cp.multiply(t[rows], eta)) / nk
        lam = C * np.sqrt(q / nk)
        obj += nk / N * (lk + alpha / 2 * cp.sum_squares(beta[k, 1:]) + lam * cp.norm(beta[k, start:] - b0[start:], 2))
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    ours = np.stack([est.coef_[site] for site in sites])
    np.testing.assert_allclose(est.solver_info_["objective"], prob.value, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours, beta.value, atol=2e-5)


def test_cross_fitting_never_uses_the_rows_fold():
    sim = make_latefusion_data(scenario=4, n_sites=4, nuisance_shift=0.5, random_state=5)
    data = sim.data
    folds = make_site_folds(data, n_folds=3, random_state=1)
    opts = dict(C_grid=[0.1, 1.0, np.inf], n_inner=1)
    base, _ = multitask_predictions(data, "ate", folds, **opts)
    # scramble the outcomes and treatments of fold 1 at every site
    y, d = data.y.copy(), data.d.copy()
    rng = np.random.default_rng(0)
    in_fold = np.zeros(data.n_obs, bool)
    for s in data.sites:
        rows = data.site_rows(s)
        in_fold[rows[folds[s][0] == 1]] = True
    y[in_fold] = rng.normal(10.0, 5.0, in_fold.sum())
    d[in_fold] = 1.0 - d[in_fold]
    changed = MultiSiteData(y, d, data.X, data.site, x_cols=data.x_cols)
    new, _ = multitask_predictions(changed, "ate", folds, **opts)
    for s in data.sites:
        f1 = folds[s][0] == 1
        for key in ("g0", "g1", "m"):
            np.testing.assert_array_equal(new[s][key][f1], base[s][key][f1])  # fold 1 never saw fold 1
            assert np.max(np.abs(new[s][key][~f1] - base[s][key][~f1])) > 1e-3  # other folds did


def test_multitask_beats_per_site_when_nuisances_are_identical():
    sim = make_latefusion_data(scenario=4, n_sites=10, nuisance_shift=0.0, random_state=11)
    data = sim.data
    folds = make_site_folds(data, n_folds=5, random_state=2)
    mt, info = multitask_predictions(data, "plr", folds, n_inner=2)
    ps, _ = multitask_predictions(data, "plr", folds, C_eta=0.0)
    mse = {}
    for name, pred in (("mt", mt), ("ps", ps)):
        err_l = np.concatenate([data.site_arrays(s).y - pred[s]["l"][:, 0] for s in data.sites])
        err_m = np.concatenate([data.site_arrays(s).d - pred[s]["m"][:, 0] for s in data.sites])
        mse[name] = (np.mean(err_l**2), np.mean(err_m**2))
    assert mse["mt"][0] < 0.8 * mse["ps"][0], mse
    # the propensity (default ridge α = 1 for the logistic loss) is nearly flat: no loss from sharing
    assert mse["mt"][1] <= 1.02 * mse["ps"][1], mse
    assert min(info["l"]) > 0.0  # tuning chose to borrow strength


def test_fit_multitask_dml_end_to_end():
    sim = make_latefusion_data(scenario=1, n_sites=5, eta=0.0, random_state=3)
    est = fit_multitask_dml(sim.data, model="ate", n_folds=3, random_state=0,
                            nuisance_options=dict(C_grid=[0.3, 3.0, np.inf], n_inner=1))
    tab = est.summary_frame()
    assert tab.shape[0] == 5 and np.all(np.isfinite(tab["coef"])) and np.all(tab["std err"] > 0)
    # same folds and the same predictions through MultiSiteDML directly give the same estimates
    preds, _ = multitask_predictions(sim.data, "ate", est.multitask_folds_,
                                     C_grid=[0.3, 3.0, np.inf], n_inner=1)
    direct = MultiSiteDML(model="ate", n_folds=3).fit(
        sim.data, folds={s: f[0] for s, f in est.multitask_folds_.items()}, predictions=preds)
    np.testing.assert_allclose(direct.summary_frame()["coef"], tab["coef"], rtol=1e-12)
    assert len(est.summaries()) == 5


def test_bad_input_is_named():
    X, y, s = _toy(4)
    with pytest.raises(DataValidationError, match="0/1"):
        MultiTaskNuisance(loss="logistic", C_eta=1.0).fit(X, y, s)
    with pytest.raises(ValueError, match="loss"):
        MultiTaskNuisance(loss="hinge").fit(X, y, s)
    Xn = X.copy()
    Xn[3, 0] = np.nan
    with pytest.raises(DataValidationError, match="X column 0 at site 's0'"):
        MultiTaskNuisance(C_eta=1.0).fit(Xn, y, s)
    sim = make_latefusion_data(scenario=1, n_sites=3, random_state=0)
    folds = make_site_folds(sim.data, 3, random_state=0)
    folds.pop(sim.data.sites[1])
    with pytest.raises(DataValidationError, match="site"):
        multitask_predictions(sim.data, "ate", folds)


def test_kernel_rejects_bad_input():
    from hetmtl import _core

    B = np.ones((4, 2))
    args = dict(penalized=np.ones(2), ridge_mask=np.ones(2), alpha=0.1, beta0=np.zeros((2, 2)), center0=np.zeros(2))
    with pytest.raises(ValueError, match="site indices"):
        _core.sieve_mtl_fit(B, np.zeros(4), np.array([0, 1, 2, 0], np.int32), np.ones(2), loss="squared", **args)
    with pytest.raises(ValueError, match="0/1"):
        _core.sieve_mtl_fit(B, np.array([0, 2.0, 1, 0]), np.array([0, 1, 1, 0], np.int32), np.ones(2),
                            loss="logistic", **args)
    with pytest.raises(ValueError, match="every site"):
        _core.sieve_mtl_fit(B, np.zeros(4), np.array([0, 0, 0, 0], np.int32), np.ones(2), loss="squared", **args)


@pytest.mark.parametrize("C", [0.0, np.inf])
def test_unridged_limits_equal_sklearn_on_raw_splines(C):
    """Independent of the whitening: with α = 0 the limits are plain least squares on the spline
    features, which sklearn's LinearRegression fits directly (pooled for C = ∞, per site for C = 0)."""
    from sklearn.linear_model import LinearRegression

    X, y, s = _toy(6, K=3, n=(40, 70))
    basis = SplineTransformer(n_knots=3, degree=2, include_bias=False)
    est = MultiTaskNuisance(C_eta=C, basis=basis, alpha=0.0, tol=1e-12, max_iter=500000).fit(X, y, s)
    Xnew = np.random.default_rng(1).normal(size=(25, 2))
    snew = np.array(["s0", "s1", "s2", "s1", "s0"] * 5, dtype=object)
    S, Snew = basis.fit(X).transform(X), basis.transform(Xnew)
    if np.isinf(C):
        ref = LinearRegression().fit(S, y).predict(Snew)
    else:
        ref = np.empty(len(snew))
        for site in ("s0", "s1", "s2"):
            ref[snew == site] = LinearRegression().fit(S[s == site], y[s == site]).predict(Snew[snew == site])
    np.testing.assert_allclose(est.predict(Xnew, snew), ref, atol=1e-7)


def test_repeated_cross_fitting():
    sim = make_latefusion_data(scenario=1, n_sites=3, eta=0.0, random_state=8)
    est = fit_multitask_dml(sim.data, model="plr", n_folds=2, n_rep=2, random_state=1,
                            nuisance_options=dict(C_eta=1.0))
    first = next(iter(est.estimators_.values()))
    assert first.all_coef_.shape == (1, 2)
    assert not np.allclose(first.all_coef_[:, 0], first.all_coef_[:, 1])  # different splits per repetition
    assert all(f.shape[0] == 2 for f in est.multitask_folds_.values())
    assert len(est.multitask_C_eta_["l"]) == 4  # 2 repetitions x 2 folds
