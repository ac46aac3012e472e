"""Dual-encoder MTL estimator: data validation, reproducibility, backends, ablation switches, adaptation."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from hetmtl.data import MultiTaskData
from hetmtl.encoders import DualEncoderMTL
from hetmtl.encoders.model import encode, orthogonality
from hetmtl.exceptions import DataValidationError, NotFittedError

FAST = dict(hidden=(8,), n_shared=3, n_specific=2, max_epochs=40, patience=10)


def make_data(R=3, n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    Xs = [rng.normal(size=(n, d)) for _ in range(R)]
    ys = [np.tanh(X[:, 0]) + (1 + 0.2 * r) * X[:, 1] + 0.1 * rng.normal(size=n) for r, X in enumerate(Xs)]
    return MultiTaskData(Xs, ys, [f"t{r}" for r in range(R)])


# ---------------------------------------------------------------- container
def test_container_validation_messages():
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(5, 3)), rng.normal(size=(6, 2))
    with pytest.raises(DataValidationError, match=r"task 'b' has 2 features but task 'a' has 3"):
        MultiTaskData([X1, X2], [np.zeros(5), np.zeros(6)], ["a", "b"])
    with pytest.raises(DataValidationError, match=r"task 'b' is empty"):
        MultiTaskData([X1, np.zeros((0, 3))], [np.zeros(5), np.zeros(0)], ["a", "b"])
    Xn = X1.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(DataValidationError, match=r"task 'a', column 'x2'.*row\(s\) 2"):
        MultiTaskData([Xn], [np.zeros(5)], ["a"])
    with pytest.raises(DataValidationError, match=r"task 'a', column 'y'"):
        MultiTaskData([X1], [np.array([0, 1, np.nan, 0, 0])], ["a"])
    with pytest.raises(DataValidationError, match=r"task 'a': X has 5 rows but 'y' has 4"):
        MultiTaskData([X1], [np.zeros(4)], ["a"])
    df = pd.DataFrame({"g": ["u", "u", "v"], "x": [1.0, np.nan, 2.0], "out": [1.0, 2.0, 3.0]})
    with pytest.raises(DataValidationError, match=r"task 'u', column 'x'"):
        MultiTaskData.from_dataframe(df, y_col="out", task_col="g")
    with pytest.raises(DataValidationError, match="not in the data frame"):
        MultiTaskData.from_dataframe(df, y_col="zz", task_col="g")


def test_container_roundtrip_and_split():
    data = make_data(R=3, n=30)
    df = data.to_dataframe()
    back = MultiTaskData.from_dataframe(df, y_col="y", task_col="task")
    assert back.tasks == data.tasks and np.array_equal(back.sizes, data.sizes)
    np.testing.assert_array_equal(back["t1"].X, data["t1"].X)
    tr, va, te = data.split(random_state=0)
    assert np.array_equal(tr.sizes + va.sizes + te.sizes, data.sizes)
    stacked = MultiTaskData.from_arrays(df[data.x_cols].to_numpy(), df["y"].to_numpy(), df["task"].to_numpy())
    assert stacked.tasks == data.tasks
    assert data.pooled().n_tasks == 1 and data.pooled().n_total == data.n_total


# ---------------------------------------------------------------- estimator
def test_reproducible_under_seed_and_seed_matters():
    data = make_data()
    a = DualEncoderMTL(random_state=3, **FAST).fit(data)
    b = DualEncoderMTL(random_state=3, **FAST).fit(data)
    c = DualEncoderMTL(random_state=4, **FAST).fit(data)
    X = data["t0"].X
    np.testing.assert_array_equal(a.predict(X, "t0"), b.predict(X, "t0"))
    assert not np.allclose(a.predict(X, "t0"), c.predict(X, "t0"))
    # mini-batch path is reproducible too
    m1 = DualEncoderMTL(random_state=1, batch_size=8, **FAST).fit(data)
    m2 = DualEncoderMTL(random_state=1, batch_size=8, **FAST).fit(data)
    np.testing.assert_array_equal(m1.predict(X, "t0"), m2.predict(X, "t0"))


@pytest.mark.parametrize("penalty", ["group_l2", "l1"])
def test_cpp_and_torch_prox_paths_give_the_same_fit(penalty):
    data = make_data()
    kw = dict(FAST, lam_alpha=0.05, lam_beta=0.05, penalty=penalty, random_state=0)
    a = DualEncoderMTL(prox_backend="cpp", **kw).fit(data)
    b = DualEncoderMTL(prox_backend="torch", **kw).fit(data)
    assert a.n_epochs_ == b.n_epochs_
    torch.testing.assert_close(a.coef_.beta, b.coef_.beta, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(a.predict(data["t2"].X, "t2"), b.predict(data["t2"].X, "t2"), rtol=1e-9, atol=1e-10)


def test_fits_better_than_mean_and_predict_api():
    data = make_data(n=60)
    tr, va, te = data.split(random_state=0)
    m = DualEncoderMTL(random_state=0, hidden=(16,), max_epochs=300).fit(tr, validation_data=va)
    scores = m.score_tasks(te)
    assert (scores.r2 > 0.7).all(), scores
    X = np.vstack([t.X for t in te])
    labels = np.repeat(te.tasks, te.sizes)
    np.testing.assert_allclose(m.predict(X, labels), m.predict(te, None))
    assert m.score(X, np.concatenate([t.y for t in te]), labels) > 0.7
    with pytest.raises(KeyError, match="unknown task 'zz'"):
        m.predict(X, "zz")
    with pytest.raises(DataValidationError, match=r"expected \(n, 4\)"):
        m.predict(X[:, :3], "t0")
    with pytest.raises(DataValidationError, match="non-finite"):
        m.predict(np.full((2, 4), np.nan), "t0")
    assert clone(m).get_params()["hidden"] == (16,)


def test_ablation_switches():
    data = make_data()
    shared_only = DualEncoderMTL(n_specific=0, random_state=0, **{k: v for k, v in FAST.items() if k != "n_specific"}).fit(data)
    assert shared_only.specific_ is None and shared_only.coef_.alpha.shape == (3, 0)
    specific_only = DualEncoderMTL(n_shared=0, random_state=0, **{k: v for k, v in FAST.items() if k != "n_shared"}).fit(data)
    assert specific_only.shared_ is None and specific_only.coef_.beta.shape == (3, 0)
    # integration: a huge lambda fuses every task to the centre exactly; lambda = 0 fuses none
    fused = DualEncoderMTL(lam_alpha=1e3, lam_beta=1e3, center_alpha=True, random_state=0, **FAST).fit(data)
    assert torch.equal(fused.coef_.beta, fused.coef_.beta_center.expand_as(fused.coef_.beta))
    assert torch.equal(fused.coef_.alpha, fused.coef_.alpha_center.expand_as(fused.coef_.alpha))
    free = DualEncoderMTL(lam_alpha=0.0, lam_beta=0.0, random_state=0, **FAST).fit(data)
    assert (torch.linalg.norm(free.coef_.beta - free.coef_.beta_center, dim=1) > 1e-6).all()
    # center_alpha=False leaves alpha unpenalised even with a huge lambda
    nca = DualEncoderMTL(lam_alpha=1e3, lam_beta=0.0, center_alpha=False, random_state=0, **FAST).fit(data)
    assert (torch.linalg.norm(nca.coef_.alpha - nca.coef_.alpha.mean(0), dim=1) > 1e-6).all()
    # orthogonality: a strong penalty gives less overlap between S_r and C than none
    kw = dict(FAST, max_epochs=80, patience=80)
    orth = DualEncoderMTL(lam_orth=5.0, random_state=0, **kw).fit(data)
    none = DualEncoderMTL(lam_orth=0.0, random_state=0, **kw).fit(data)

    def overlap(m):

        pad = m._padded(data)
        with torch.no_grad():
            S, C = encode(m.shared_, m.specific_, pad.X)
            return float(orthogonality(S, C, pad.mask).mean())

    assert overlap(orth) < 0.5 * overlap(none)


def test_stl_per_task_early_stopping_equals_separate_fits():
    """Task-specific-only, lambda = 0, per-task stopping is STL: each task's fit is unaffected by the others."""
    data = make_data(R=2, n=30)
    kw = dict(n_shared=0, n_specific=2, hidden=(6,), lam_alpha=0.0, lam_orth=0.0, early_stopping="per_task",
              max_epochs=60, patience=15, random_state=0, standardize=False)
    tr, va = data.split((0.7, 0.3), random_state=2)
    joint = DualEncoderMTL(**kw).fit(tr, validation_data=va)
    # task t0's fitted model must not depend on task t1's outcomes (Adam is element-wise and the
    # stacked task encoders share no parameter)
    tr2 = MultiTaskData([tr["t0"].X, tr["t1"].X], [tr["t0"].y, tr["t1"].y * -3 + 5], tr.tasks)
    va2 = MultiTaskData([va["t0"].X, va["t1"].X], [va["t0"].y, va["t1"].y * -3 + 5], va.tasks)
    other = DualEncoderMTL(**kw).fit(tr2, validation_data=va2)
    np.testing.assert_allclose(joint.predict(data["t0"].X, "t0"), other.predict(data["t0"].X, "t0"), rtol=1e-10)
    with pytest.raises(ValueError, match="per_task"):
        DualEncoderMTL(early_stopping="per_task").fit(data)


def test_adapt_new_task_keeps_shared_encoder_and_centres():
    data = make_data(R=3, n=40)
    m = DualEncoderMTL(random_state=0, lam_beta=0.05, **FAST).fit(data)
    C_before = [w.detach().clone() for w in m.shared_.parameters()]
    centre_before = m.coef_.beta_center.clone()
    pred_before = m.predict(data["t1"].X, "t1")
    rng = np.random.default_rng(9)
    Xn = rng.normal(size=(50, 4))
    yn = np.tanh(Xn[:, 0]) + 1.1 * Xn[:, 1]
    m.adapt(Xn, yn, "new")
    assert m.tasks_[-1] == "new" and m.coef_.beta.shape[0] == 4
    for a, b in zip(C_before, m.shared_.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(centre_before, m.coef_.beta_center)
    np.testing.assert_array_equal(pred_before, m.predict(data["t1"].X, "t1"))
    assert np.corrcoef(m.predict(Xn, "new"), yn)[0, 1] > 0.8
    with pytest.raises(ValueError, match="already fitted"):
        m.adapt(Xn, yn, "new")


def test_bad_inputs():
    data = make_data()
    with pytest.raises(ValueError, match="penalty"):
        DualEncoderMTL(penalty="ridge").fit(data)
    with pytest.raises(ValueError, match="lam_beta"):
        DualEncoderMTL(lam_beta=[0.1, 0.2]).fit(data)
    with pytest.raises(DataValidationError, match="fewer than 4 rows"):
        DualEncoderMTL().fit(MultiTaskData([np.zeros((3, 2)), np.ones((9, 2))], [np.zeros(3), np.ones(9)], ["s", "l"]))
    with pytest.raises(DataValidationError, match="validation_data tasks"):
        DualEncoderMTL(**FAST).fit(data, validation_data=make_data(R=2))
    with pytest.raises(NotFittedError, match="not fitted"):
        DualEncoderMTL().predict(np.zeros((2, 4)), "t0")


def test_per_task_lambda_vector():
    """lam_beta = [0, big, big]: task t0 keeps its own beta, t1 and t2 are fused to the centre."""
    data = make_data()
    m = DualEncoderMTL(lam_alpha=0.0, lam_beta=[0.0, 1e3, 1e3], random_state=0, **FAST).fit(data)
    dist = torch.linalg.norm(m.coef_.beta - m.coef_.beta_center, dim=1)
    assert dist[0] > 1e-6 and dist[1] == 0 and dist[2] == 0


@pytest.mark.parametrize("penalty,center", [("group_l2", "mean"), ("l1", "median"), ("group_l2", "median")])
def test_fitted_centres_are_the_requested_centre_of_the_coefficients(penalty, center):
    from hetmtl.encoders.proximal import update_center

    data = make_data(R=4)
    m = DualEncoderMTL(penalty=penalty, center=center, lam_beta=0.02, lam_alpha=0.02, random_state=0, **FAST).fit(data)
    beta = m.coef_.beta.numpy()
    np.testing.assert_allclose(m.coef_.beta_center.numpy(), update_center(beta, 1.0, penalty, center), atol=1e-8)
    if center == "mean":
        np.testing.assert_allclose(m.coef_.beta_center.numpy(), beta.mean(0), atol=1e-12)
    if penalty == "l1":
        np.testing.assert_allclose(m.coef_.beta_center.numpy(), np.sort(beta, axis=0)[1], atol=1e-12)  # lower median of 4
