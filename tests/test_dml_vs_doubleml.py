"""Per-site DML agrees with DoubleML (same learners, same folds) to 1e-8 relative."""
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LassoCV, LinearRegression, LogisticRegression

from conftest import doubleml_folds, simulate_site
from hetmtl.latefusion import SiteDML

doubleml = pytest.importorskip("doubleml")


def _dml_data(y, d, X):
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(y=y, d=d)
    return doubleml.DoubleMLData(df, "y", "d")


LEARNERS = {
    "linear": (LinearRegression(), LogisticRegression()),
    "forest": (
        RandomForestRegressor(n_estimators=30, min_samples_leaf=5, random_state=3),
        RandomForestClassifier(n_estimators=30, min_samples_leaf=5, random_state=4),
    ),
}


@pytest.mark.parametrize("learners", LEARNERS)
@pytest.mark.parametrize("n_rep", [1, 3])
def test_plr_matches_doubleml(rng, learners, n_rep):
    y, d, X = simulate_site(rng, n=300)
    ml_l, ml_m = LEARNERS[learners]
    folds = doubleml_folds(300, 5, n_rep, 7)
    ref = doubleml.DoubleMLPLR(_dml_data(y, d, X), ml_l=ml_l, ml_m=ml_m, n_folds=5, n_rep=n_rep)
    ref.set_sample_splitting(folds)
    ref.fit()
    ours = SiteDML("plr", ml_outcome=ml_l, ml_treatment=ml_m, n_folds=5, n_rep=n_rep).fit(y, d, X, folds=folds)
    np.testing.assert_allclose(ours.coef_, ref.coef, rtol=1e-8)
    np.testing.assert_allclose(ours.se_, ref.se, rtol=1e-8)
    np.testing.assert_allclose(ours.all_coef_, ref.all_coef, rtol=1e-8)


@pytest.mark.parametrize("learners", LEARNERS)
def test_irm_ate_matches_doubleml(rng, learners):
    y, d, X = simulate_site(rng, n=300)
    ml_g, ml_m = LEARNERS[learners]
    folds = doubleml_folds(300, 4, 1, 8)
    ref = doubleml.DoubleMLIRM(_dml_data(y, d, X), ml_g=ml_g, ml_m=ml_m, n_folds=4)
    ref.set_sample_splitting(folds)
    ref.fit()
    ours = SiteDML("ate", ml_outcome=ml_g, ml_treatment=ml_m, n_folds=4, clip=0.01).fit(y, d, X, folds=folds)
    np.testing.assert_allclose(ours.coef_, ref.coef, rtol=1e-8)
    np.testing.assert_allclose(ours.se_, ref.se, rtol=1e-8)


def test_linear_cate_matches_doubleml_plr_blp(rng):
    """R-learner linear CATE = DoubleML PLR.cate (OLS of Y~ on D~·basis, HC0)."""
    y, d, X = simulate_site(rng, n=400, cate=True)
    Z = X[:, [0, 2]]
    folds = doubleml_folds(400, 5, 1, 9)
    ml_l, ml_m = LassoCV(cv=3), LogisticRegression()
    ours = SiteDML("cate", ml_outcome=ml_l, ml_treatment=ml_m, n_folds=5).fit(y, d, X, Z, folds=folds)
    ref = doubleml.DoubleMLPLR(_dml_data(y, d, X), ml_l=ml_l, ml_m=ml_m, n_folds=5)
    ref.set_sample_splitting(folds)
    ref.fit()
    basis = pd.DataFrame(np.column_stack([np.ones(400), (Z - Z.mean(0)) / Z.std(0)]), columns=["const", "z1", "z2"])
    blp = ref.cate(basis)
    np.testing.assert_allclose(ours.coef_, blp.coef, rtol=1e-8)
    np.testing.assert_allclose(ours.se_, blp.se, rtol=1e-8)


def test_dr_blp_matches_doubleml_irm_cate(rng):
    y, d, X = simulate_site(rng, n=400, cate=True)
    Z = X[:, [0]]
    folds = doubleml_folds(400, 5, 1, 10)
    ml_g, ml_m = LinearRegression(), LogisticRegression()
    ours = SiteDML("blp", ml_outcome=ml_g, ml_treatment=ml_m, n_folds=5).fit(y, d, X, Z, folds=folds)
    ref = doubleml.DoubleMLIRM(_dml_data(y, d, X), ml_g=ml_g, ml_m=ml_m, n_folds=5)
    ref.set_sample_splitting(folds)
    ref.fit()
    basis = pd.DataFrame(np.column_stack([np.ones(400), (Z - Z.mean(0)) / Z.std(0)]), columns=["const", "z1"])
    blp = ref.cate(basis)
    np.testing.assert_allclose(ours.coef_, blp.coef, rtol=1e-8)
    np.testing.assert_allclose(ours.se_, blp.se, rtol=1e-8)


def test_external_predictions_match_doubleml(rng):
    """Cross-fitted predictions supplied from outside give DoubleML's external_predictions result."""
    y, d, X = simulate_site(rng, n=300)
    folds = doubleml_folds(300, 5, 1, 12)
    ml_g, ml_m = LinearRegression(), LogisticRegression()
    fitted = SiteDML("ate", ml_outcome=ml_g, ml_treatment=ml_m, n_folds=5).fit(y, d, X, folds=folds)
    g0, g1, m = np.zeros(300), np.zeros(300), np.zeros(300)
    for tr, te in folds[0]:
        g0[te] = LinearRegression().fit(X[tr][d[tr] == 0], y[tr][d[tr] == 0]).predict(X[te])
        g1[te] = LinearRegression().fit(X[tr][d[tr] == 1], y[tr][d[tr] == 1]).predict(X[te])
        m[te] = LogisticRegression().fit(X[tr], d[tr]).predict_proba(X[te])[:, 1]
    ours = SiteDML("ate", n_folds=5).fit(y, d, X, folds=folds, predictions={"g0": g0, "g1": g1, "m": m})
    np.testing.assert_allclose(ours.coef_, fitted.coef_, rtol=1e-10)
    ref = doubleml.DoubleMLIRM(_dml_data(y, d, X), ml_g=ml_g, ml_m=ml_m, n_folds=5)
    ref.set_sample_splitting(folds)
    ref.fit(external_predictions={"d": {"ml_g0": g0[:, None], "ml_g1": g1[:, None], "ml_m": m[:, None]}})
    np.testing.assert_allclose(ours.coef_, ref.coef, rtol=1e-8)
    np.testing.assert_allclose(ours.se_, ref.se, rtol=1e-8)
    with pytest.raises(Exception, match="takes external predictions"):
        SiteDML("ate", n_folds=5).fit(y, d, X, folds=folds, predictions={"l": g0})
