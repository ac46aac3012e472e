"""Nuisance learners by name (hetmtl.learners), shared by Python and R."""
import numpy as np
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from hetmtl.exceptions import ParameterError
from hetmtl.learners import (
    LEARNER_NAMES,
    describe_learners,
    make_learner,
    resolve_learner,
)


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X[:, 0] - X[:, 1] + rng.normal(size=n)
    d = (X[:, 2] + rng.normal(size=n) > 0).astype(int)
    return X, y, d


def test_names_and_descriptions():
    assert LEARNER_NAMES == ("default", "forest", "lasso", "ridge", "boosting", "logistic")
    desc = describe_learners()
    assert list(desc) == list(LEARNER_NAMES)
    assert all(set(v) == {"regressor", "classifier"} for v in desc.values())


@pytest.mark.parametrize("name", ["forest", "lasso", "ridge", "boosting"])
def test_every_name_builds_a_working_regressor_and_classifier(name):
    X, y, d = _data()
    reg = make_learner(name, "regressor", random_state=1)
    clf = make_learner(name, "classifier", random_state=1)
    assert is_regressor(reg) and is_classifier(clf)
    assert reg.fit(X, y).predict(X).shape == (80,)
    p = clf.fit(X, d).predict_proba(X)[:, 1]
    assert np.all((p >= 0) & (p <= 1))
    # seeded: the same name and seed give the same fit
    again = make_learner(name, "regressor", random_state=1).fit(X, y).predict(X)
    np.testing.assert_array_equal(again, reg.predict(X))


def test_default_is_none_and_names_are_case_insensitive():
    assert make_learner("default") is None
    assert make_learner("Default", "classifier") is None
    assert is_regressor(make_learner(" Forest "))


def test_logistic_is_classifier_only():
    assert is_classifier(make_learner("logistic", "classifier"))
    with pytest.raises(ParameterError, match="'logistic' is a classifier"):
        make_learner("logistic", "regressor")


def test_refusals_name_the_parameter():
    with pytest.raises(ParameterError, match="unknown learner 'svm'; the names are default, forest"):
        make_learner("svm")
    with pytest.raises(ParameterError, match="kind must be 'regressor' or 'classifier'"):
        make_learner("forest", "ranker")
    with pytest.raises(ParameterError, match="ml_outcome: unknown learner 'svm'"):
        resolve_learner("svm", "regressor", name="ml_outcome")
    with pytest.raises(ParameterError, match="ml_outcome must be a regressor, got the classifier LogisticRegression"):
        resolve_learner(LogisticRegression(), "regressor", name="ml_outcome")
    with pytest.raises(ParameterError, match="ml_treatment must be a classifier here"):
        resolve_learner(LinearRegression(), "classifier", name="ml_treatment")
    with pytest.raises(ParameterError, match="must be a learner name"):
        resolve_learner(3, "regressor")


def test_objects_pass_through_unchanged():
    lr = LinearRegression()
    assert resolve_learner(lr, "regressor") is lr
    assert resolve_learner(None, "classifier") is None


def test_names_work_in_multisite_dml():
    from hetmtl.data import MultiSiteData
    from hetmtl.latefusion import MultiSiteDML

    X, y, d = _data(n=120, seed=3)
    site = np.repeat(["a", "b"], 60)
    data = MultiSiteData.from_arrays(y, d.astype(float), X, site)
    fit = MultiSiteDML(model="plr", n_folds=2, n_rep=1, random_state=0,
                       ml_outcome=make_learner("lasso", random_state=0),
                       ml_treatment=make_learner("logistic", "classifier")).fit(data)
    assert "LassoCV" in fit.estimators_["a"].learners_[0]
    assert "LogisticRegression" in fit.estimators_["a"].learners_[1]


def test_site_dml_takes_learner_names():
    """ml_outcome="ridge" by name equals the same learner passed as an object."""
    import numpy as np

    from hetmtl.latefusion import SiteDML
    from hetmtl.learners import make_learner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    d = rng.binomial(1, 0.5, size=200).astype(float)
    y = X[:, 0] + 0.5 * d + rng.normal(size=200)
    by_name = SiteDML("ate", ml_outcome="ridge", ml_treatment="logistic", n_rep=1, random_state=0).fit(y, d, X)
    by_obj = SiteDML("ate", ml_outcome=make_learner("ridge"), ml_treatment=make_learner("logistic", "classifier"),
                     n_rep=1, random_state=0).fit(y, d, X)
    assert np.allclose(by_name.coef_, by_obj.coef_)
    with pytest.raises(ValueError, match="unknown learner 'bogus'"):
        SiteDML("ate", ml_outcome="bogus", n_rep=1).fit(y, d, X)
