"""SiteSummary JSON: round trip, schema and checksum validation, privacy (no row-level values)."""
import json

import numpy as np
import pytest

from conftest import simulate_site
from hetmtl._jsonio import canonical_digest
from hetmtl.exceptions import SummaryValidationError
from hetmtl.latefusion import SiteDML, SiteSummary


@pytest.fixture
def fitted(rng):
    y, d, X = simulate_site(rng, n=200, cate=True)
    from sklearn.linear_model import LinearRegression, LogisticRegression

    est = SiteDML("cate", LinearRegression(), LogisticRegression(), tuning_folds="reuse", random_state=1)
    return est.fit(y, d, X, X[:, :2]), (y, d, X)


def test_round_trip_preserves_everything(fitted, tmp_path):
    est, _ = fitted
    s = est.to_summary("hospital A")
    path = tmp_path / "a.json"
    s.to_json(path)
    back = SiteSummary.read_json(path)
    assert back.site == "hospital A" and back.model == "cate" and back.n == 200
    np.testing.assert_array_equal(back.theta, est.coef_)
    np.testing.assert_allclose(back.vcov, est.vcov_, rtol=1e-12)
    assert len(back.cv_folds) == 5
    for a, b in zip(back.cv_folds, s.cv_folds):
        np.testing.assert_array_equal(a.A, b.A)
        assert a.loss(est.coef_) == pytest.approx(b.loss(est.coef_))
    np.testing.assert_allclose(back.basis["center"], est.basis_["center"])


def test_vcov_is_sandwich():
    J = np.array([[-2.0, 0.3], [0.1, -1.0]])
    Om = np.array([[1.0, 0.2], [0.2, 0.5]])
    s = SiteSummary("s", "cate", ["a", "b"], 40, [1.0, 2.0], J, Om)
    Ji = np.linalg.inv(J)
    np.testing.assert_allclose(s.vcov, Ji @ Om @ Ji.T / 40)


def test_held_out_loss_matches_direct_computation(fitted):
    """Q(θ) on fold v equals mean((Y~ − D~ φ'θ)^2) with nuisances refitted here without fold v."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    est, (y, d, X) = fitted
    train, test = est.folds_[0][2]
    y_res = y[test] - LinearRegression().fit(X[train], y[train]).predict(X[test])
    d_res = d[test] - LogisticRegression().fit(X[train], d[train]).predict_proba(X[test])[:, 1]
    phi = np.column_stack([np.ones(test.size), (X[test, :2] - est.basis_["center"]) / est.basis_["scale"]])
    theta = np.array([0.3, -0.2, 0.1])
    direct = np.mean((y_res - d_res * (phi @ theta)) ** 2)
    assert est.cv_folds_[2].loss(theta) == pytest.approx(direct, rel=1e-10)


def _tamper(path, edit, resign=False):
    obj = json.loads(path.read_text())
    edit(obj)
    if resign:  # a crafted file with a valid checksum: the content checks must still catch it
        obj["sha256"] = canonical_digest(obj["payload"])
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["payload"].__setitem__("theta", [9.0, 0.0, 0.0]), "checksum mismatch"),
        (lambda o: o["payload"].__setitem__("n", -3), "schema at payload/n"),
        (lambda o: o.__setitem__("version", 99), "schema at version"),
        (lambda o: o["payload"].__setitem__("extra", 1), "schema"),
        (lambda o: o["payload"]["Omega"].pop(), "checksum mismatch"),
    ],
)
def test_tampered_or_malformed_file_is_refused(fitted, tmp_path, edit, message):
    est, _ = fitted
    path = tmp_path / "s.json"
    est.to_summary("A").to_json(path)
    _tamper(path, edit)
    with pytest.raises(SummaryValidationError, match=message):
        SiteSummary.read_json(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["payload"]["Omega"].pop(), r"site 'A': Omega has shape \(2, 3\)"),
        (lambda o: o["payload"].__setitem__("Omega", (-np.eye(3)).tolist()), "site 'A': Omega is not positive definite"),
        (lambda o: o["payload"]["cv_folds"][1].__setitem__("theta", [1.0]), "site 'A', cv fold 1: theta must be"),
        (lambda o: o["payload"].__setitem__("model", "probit"), "schema at payload/model"),
    ],
)
def test_crafted_file_with_valid_checksum_is_refused(fitted, tmp_path, edit, message):
    est, _ = fitted
    path = tmp_path / "s.json"
    est.to_summary("A").to_json(path)
    _tamper(path, edit, resign=True)
    with pytest.raises(SummaryValidationError, match=message):
        SiteSummary.read_json(path)


def test_not_json_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(SummaryValidationError, match="not valid JSON"):
        SiteSummary.read_json(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(Omega=[[-1.0]]), "Omega is not positive definite"),
        (dict(J=[[0.0]]), "J is singular"),
        (dict(n=0), "n must be a positive integer"),
        (dict(theta=[np.nan]), "theta must be a finite vector"),
        (dict(coef_names=["a", "b"]), "2 coef_names for 1 coefficients"),
    ],
)
def test_bad_summary_objects(kwargs, message):
    base = dict(site="X", model="plr", coef_names=["theta"], n=50, theta=[1.0], J=[[-1.0]], Omega=[[2.0]])
    with pytest.raises(SummaryValidationError, match=f"site 'X': {message}"):
        SiteSummary(**{**base, **kwargs})


def test_privacy_canary_values_never_exported(rng, tmp_path):
    """Plant distinctive values in individual rows; none may appear in the exported file."""
    y, d, X = simulate_site(rng, n=120)
    canaries = [987654.321, -123456.789, 31415.9265]
    y[[3, 50, 99]] = canaries
    X[7, 2] = 271828.1828
    est = SiteDML("plr", n_folds=3, tuning_folds="reuse", random_state=0).fit(y, d, X)
    text = est.to_summary("canary").to_json(tmp_path / "c.json")
    for value in [*canaries, 271828.1828]:
        for rendering in (repr(value), f"{value:.6g}", f"{value:.3f}", str(int(value))):
            assert rendering not in text
    numbers = np.array(
        [float(t) for t in text.replace("[", " ").replace("]", " ").replace(",", " ").split() if t[0] in "-0123456789"]
    )
    planted = np.array([*canaries, 271828.1828])
    assert not np.any(np.isclose(numbers[:, None], planted[None, :], rtol=1e-6))
