"""Linear path, DualEncoderMTLCV (tuning + refit), strong baselines, and the API/validation fixes
of the dual encoder (issues #23, #25, #26)."""
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from hetmtl.data import MultiTaskData
from hetmtl.encoders import DualEncoderMTL, DualEncoderMTLCV, PerTaskRegressor, PooledMTL, compare_methods
from hetmtl.exceptions import DataValidationError, NotFittedError, ParameterError, TrainingError

FAST = dict(hidden=(8,), n_shared=2, n_specific=0, max_epochs=30, patience=10)


def linear_data(R=3, n=50, d=4, seed=0, same=True):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=d)
    Xs, ys = [], []
    for r in range(R):
        X = rng.normal(size=(n + 10 * r, d)) + 0.3 * r
        slope = g if same else g + rng.normal(size=d)
        Xs.append(X)
        ys.append(0.5 * r + X @ slope + 0.3 * rng.normal(size=len(X)))
    return MultiTaskData(Xs, ys, [f"t{r}" for r in range(R)])


def stacked(data):
    X = np.vstack([t.X for t in data])
    y = np.concatenate([t.y for t in data])
    task = np.concatenate([np.full(t.n, t.task, dtype=object) for t in data])
    return X, y, task


LINEAR_ONLY = dict(n_shared=0, n_specific=0, hidden=(), linear=True, early_stopping="none", max_epochs=400,
                   prox_steps=50, random_state=0)


# ---------------------------------------------------------------- linear path
def test_linear_path_without_encoders_is_per_task_least_squares():
    """hidden=(), no encoders, linear path, lambda = 0: every task's fit is its own OLS."""
    data = linear_data(same=False)
    m = DualEncoderMTL(lam_alpha=0.0, lam_beta=0.0, **LINEAR_ONLY).fit(data)
    for t in data:
        A = np.column_stack([np.ones(t.n), t.X])
        coef, *_ = np.linalg.lstsq(A, t.y, rcond=None)
        np.testing.assert_allclose(m.predict(t.X, t.task), A @ coef, atol=1e-6)


def test_linear_path_huge_lambda_gives_one_shared_slope_vector():
    """lambda -> inf: every task's slopes sit at the centre (per-task intercepts stay free), and
    the fit equals least squares with task intercepts and one common slope vector."""
    data = linear_data(same=False)
    m = DualEncoderMTL(lam_alpha=1e4, lam_beta=1e4, **{**LINEAR_ONLY, "prox_steps": 100, "max_epochs": 600}).fit(data)
    c = m.coef_
    assert torch.equal(c.gamma, c.gamma_center.expand_as(c.gamma))
    R = data.n_tasks
    rows = []
    for r, t in enumerate(data):
        onehot = np.zeros((t.n, R))
        onehot[:, r] = 1
        rows.append(np.column_stack([onehot, t.X]))
    A = np.vstack(rows)
    X, y, _ = stacked(data)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    np.testing.assert_allclose(m.predict(data, None), A @ coef, atol=1e-4)


def test_linear_path_with_encoders_predicts_and_exports():
    data = linear_data()
    m = DualEncoderMTL(linear=True, n_specific=2, random_state=0, **{k: v for k, v in FAST.items() if k != "n_specific"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(data)
    assert m.coef_.gamma.shape == (3, 4)
    back = DualEncoderMTL.from_json(m.to_json())
    np.testing.assert_allclose(back.predict(data, None), m.predict(data, None), atol=1e-12)


# ---------------------------------------------------------------- tuner
def test_cv_huge_lambda_gives_one_shared_head_and_refits_on_all_rows():
    data = linear_data(n=40)
    grid = {"lam": [1e4], "n_shared": [2], "n_specific": [0], "hidden": [(8,)], "linear": [True]}
    cv = DualEncoderMTLCV(grid, cv=3, base_params={"max_epochs": 40, "patience": 10}, random_state=0).fit(data)
    m = cv.best_estimator_
    c = m.coef_
    assert torch.equal(c.beta, c.beta_center.expand_as(c.beta))
    assert torch.equal(c.gamma, c.gamma_center.expand_as(c.gamma))
    # refit: all labelled rows (standardisation over all of them), chosen epoch count, no held-out rows
    X, _, _ = stacked(data)
    np.testing.assert_allclose(m.x_mean_, X.mean(0), atol=1e-12)
    assert m.early_stopping == "none" and m.n_epochs_ == cv.best_n_epochs_
    assert cv.best_params_["lam_alpha"] == cv.best_params_["lam_beta"] == 1e4
    assert {"mean_val_mse_sum", "split0_val_mse_sum", "split2_val_mse_sum", "rank", "mean_best_epoch"} <= set(cv.cv_results_)


def test_cv_prefers_linear_model_on_linear_data_and_beats_nothing_worse():
    data = linear_data(n=60, seed=3)
    grid = [{"n_shared": [0], "n_specific": [0], "hidden": [()], "linear": [True], "lam": [0.01]},
            {"n_shared": [2], "n_specific": [0], "hidden": [(8,)], "linear": [False], "lam": [0.01]}]
    cv = DualEncoderMTLCV(grid, cv=0.25, base_params={"max_epochs": 300, "patience": 30}, random_state=0).fit(*stacked(data))
    assert len(cv.cv_results_) == 2 and cv.best_params_["linear"] is True
    assert cv.tasks_ == ["t0", "t1", "t2"]
    assert cv.score(data) > 0.9


def test_cv_separate_lambdas_and_bad_grids():
    from hetmtl.encoders.tuning import expand_grid

    assert [c["hidden"] for c in expand_grid({"hidden": [[], 4, [8, 8]]})] == [(), (4,), (8, 8)]  # as R/JSON send them
    cands = expand_grid({"lam_alpha": [0.0, 1.0], "lam_beta": [0.1], "n_specific": [2]})
    assert len(cands) == 2 and {c["lam_alpha"] for c in cands} == {0.0, 1.0}
    with pytest.raises(ParameterError, match="either 'lam'"):
        expand_grid({"lam": [0.1], "lam_beta": [0.1]})
    with pytest.raises(ParameterError, match="'depth' is not a DualEncoderMTL parameter"):
        expand_grid({"depth": [1]})
    with pytest.raises(ParameterError, match="cv"):
        DualEncoderMTLCV(cv=1).fit(linear_data())
    with pytest.raises(ParameterError, match="hidden"):
        DualEncoderMTLCV({"hidden": ["32"]}).fit(linear_data())
    with pytest.raises(NotFittedError):
        DualEncoderMTLCV().predict(np.zeros((1, 4)), "t0")


# ---------------------------------------------------------------- API
def test_validation_tuple_task_order_and_pooled_from_arrays():
    data = linear_data()
    tr, va = data.split((0.7, 0.3), random_state=0)
    a = DualEncoderMTL(random_state=0, **FAST)
    b = clone(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(tr, validation_data=va)
        b.fit(tr, validation_data=stacked(va))
    np.testing.assert_allclose(a.predict(data, None), b.predict(data, None))
    # stacked labels: sorted by default, or the given order, recorded in tasks_
    X, y, task = stacked(data)
    perm = np.random.default_rng(0).permutation(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **FAST).fit(X[perm], y[perm], task[perm])
        assert m.tasks_ == ["t0", "t1", "t2"]
        m = DualEncoderMTL(random_state=0, **FAST).fit(X, y, task, task_order=["t2", "t0", "t1"])
        assert m.tasks_ == ["t2", "t0", "t1"]
        with pytest.raises(DataValidationError, match="not in task_order"):
            DualEncoderMTL(**FAST).fit(X, y, task, task_order=["t0", "t1"])
        p = PooledMTL(dict(FAST, random_state=0)).fit(X, y, task, validation_data=stacked(va))
    assert p.tasks_ == ["t0", "t1", "t2"] and np.isfinite(p.predict(X, task)).all()


def test_strong_baselines_in_compare_methods():
    data = linear_data(n=60)
    tr, va, te = data.split(random_state=0)
    table = compare_methods(tr, va, te, ["ridge", "lasso", "gbm", "gbm_pooled"], random_state=0)
    assert set(table.method) == {"ridge", "lasso", "gbm", "gbm_pooled"} and len(table) == 12
    r = table[table.method == "ridge"].rmse.mean()
    assert r < 0.5 and r < table[table.method == "gbm"].rmse.mean()  # linear truth, noise SD 0.3
    pt = PerTaskRegressor().fit(*stacked(tr))
    assert pt.tasks_ == ["t0", "t1", "t2"]
    with pytest.raises(NotFittedError):
        PerTaskRegressor().predict(np.zeros((1, 4)), "t0")
    with pytest.raises(NotFittedError):
        PooledMTL().predict(np.zeros((1, 4)), "t0")


# ---------------------------------------------------------------- hostile input (#25)
@pytest.mark.parametrize("kw,match", [
    ({"hidden": "32"}, "hidden"), ({"lr": float("inf")}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": 0}, "lr"),
    ({"lam_orth": float("inf")}, "lam_orth"), ({"max_epochs": 0}, "max_epochs"), ({"random_state": -1}, "random_state"),
    ({"n_shared": 2.5}, "n_shared"), ({"n_shared": 0, "n_specific": 0}, "linear=True"), ({"verbose": -1}, "verbose"),
])
def test_parameters_are_validated_and_named(kw, match):
    with pytest.raises(ParameterError, match=match):
        DualEncoderMTL(**{**FAST, **kw}).fit(linear_data())


@pytest.mark.parametrize("kw", [{"lr": 1e300}, {"lam_orth": 1e308, "n_specific": 2, "training": "joint"}])
def test_extreme_settings_give_training_error_or_finite_model(kw):
    data = linear_data()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = DualEncoderMTL(**{**FAST, **kw, "random_state": 0}).fit(data)
    except TrainingError as exc:
        assert "no epoch" in str(exc)
    else:  # if it returned, the model must predict finitely
        assert np.isfinite(m.predict(data, None)).all()


def test_no_finite_epoch_raises_training_error(monkeypatch):
    import hetmtl.encoders.estimator as est

    def nan_encode(shared, specific, X):
        S, C = est.encode.__wrapped__(shared, specific, X)
        return S * np.nan, C * np.nan

    nan_encode.__wrapped__ = est.encode  # type: ignore[attr-defined]
    monkeypatch.setattr(est, "encode", nan_encode)
    with pytest.raises(TrainingError, match="no epoch with a finite"):
        DualEncoderMTL(**{**FAST, "random_state": 0}).fit(linear_data())


def test_huge_magnitude_data_gives_finite_predictions():
    data = linear_data()
    big = MultiTaskData([t.X * 1e154 for t in data], [t.y * 1e154 for t in data], data.tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **FAST).fit(big)
    pred = m.predict(big, None)
    assert np.isfinite(pred).all()
    y = np.concatenate([t.y for t in big])
    assert np.corrcoef(pred / 1e154, y / 1e154)[0, 1] > 0.9


def test_forged_export_is_refused_before_allocation(tmp_path):
    from hetmtl import serialization as ser

    data = linear_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **FAST).fit(data)
    obj = json.loads(m.to_json())
    obj["payload"]["params"]["hidden"] = [20000, 20000, 20000, 20000, 20000, 20000]
    obj["sha256"] = ser.canonical_digest(obj["payload"])  # the checksum is unkeyed: anyone can forge it
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ser.ModelFormatError, match=r"forged\.json.*do not match the declared sizes"):
        DualEncoderMTL.from_json(path)
    obj = json.loads(m.to_json())
    obj["payload"]["fitted"]["tasks"] = ["t0"]
    obj["sha256"] = ser.canonical_digest(obj["payload"])
    with pytest.raises(ser.ModelFormatError, match="declared sizes"):
        DualEncoderMTL.from_json(json.dumps(obj))



@pytest.mark.parametrize("key, value", [("best_epoch", "\u00ce\u00bc"), ("best_epoch", None), ("best_epoch", [1.5]),
                                        ("y_mean", "x"), ("y_scale", -1.0), ("y_mean", None)])
def test_forged_fitted_scalars_give_model_format_error_naming_the_file(tmp_path, key, value):
    from hetmtl import serialization as ser

    data = linear_data(R=2, n=20, d=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **{**FAST, "max_epochs": 3}).fit(data)
    obj = json.loads(m.to_json())
    obj["payload"]["fitted"][key] = value
    obj["sha256"] = ser.canonical_digest(obj["payload"])
    path = tmp_path / "forged_scalar.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ser.ModelFormatError, match=rf"forged_scalar\.json.*{key}"):
        DualEncoderMTL.from_json(path)


def test_export_with_half_a_history_is_refused():
    from hetmtl import serialization as ser

    data = linear_data(R=2, n=20, d=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **{**FAST, "max_epochs": 3}).fit(data)
    obj = json.loads(m.to_json())
    tensors = obj["payload"]["tensors"]
    del tensors["history.val_mse_sum"]
    obj["sha256"] = ser.canonical_digest(obj["payload"])
    with pytest.raises(ser.ModelFormatError, match="history.train_mse and history.val_mse_sum"):
        DualEncoderMTL.from_json(json.dumps(obj))


def test_unknown_task_is_unknown_task_error_on_every_path():
    from hetmtl.encoders.estimator import UnknownTaskError

    data = linear_data(R=2, n=20, d=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **{**FAST, "max_epochs": 3}).fit(data)
    X = data["t0"].X
    for task in ("nope", 5, None, float("nan"), ["t0"] * (len(X) - 1) + ["zz"]):
        with pytest.raises(UnknownTaskError) as info:
            m.predict(X, task)
        assert isinstance(info.value, DataValidationError) and isinstance(info.value, KeyError)
        if np.ndim(task) == 0:
            with pytest.raises(UnknownTaskError, match="unknown task"):
                m.encodings(X, task)
    with pytest.raises(UnknownTaskError):
        m.predict(MultiTaskData([X], [data["t0"].y], ["zz"]), None)


def test_predict_writes_nothing_and_not_fitted_error():
    data = linear_data()
    with pytest.raises(NotFittedError, match="not fitted"):
        DualEncoderMTL().predict(np.zeros((2, 4)), "t0")
    with pytest.raises(NotFittedError):
        DualEncoderMTL().score_tasks(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DualEncoderMTL(random_state=0, **FAST).fit(data)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(m).items()}
    m.predict(data, None)
    m.score_tasks(data)
    m.score(*stacked(data))
    assert set(vars(m)) == set(before)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, vars(m)[k])


def test_verbose_reports_progress(capsys):
    DualEncoderMTL(**{**FAST, "max_epochs": 5, "patience": 50, "verbose": 1, "random_state": 0}).fit(linear_data())
    assert "epoch" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DualEncoderMTL(**{**FAST, "max_epochs": 5, "patience": 50, "random_state": 0}).fit(linear_data())
    assert capsys.readouterr().err == ""


def test_staged_training_task_encoders_only_where_they_help():
    """Staged: S_r trained on top of the frozen shared encoder and centres; each
    task keeps its own best epoch, alpha_r = 0 (S_r off) where the task's validation loss never
    improves; the refit replays the per-task epochs."""
    rng = np.random.default_rng(1)
    Xs = [rng.normal(size=(80, 3)) for _ in range(3)]
    ys = [np.tanh(X[:, 0]) + (2 * np.cos(2 * X[:, 1]) if r == 0 else 0) + 0.1 * rng.normal(size=80) for r, X in enumerate(Xs)]
    data = MultiTaskData(Xs, ys, ["own", "b", "c"])
    m = DualEncoderMTL(n_shared=2, n_specific=2, hidden=(16,), lr=1e-2, max_epochs=300, patience=30, random_state=0).fit(data)
    assert m.specific_epochs_.shape == (3,) and (m.specific_epochs_ >= 0).all()
    off = m.specific_epochs_ == 0
    assert (m.coef_.alpha[torch.from_numpy(~off)] != 0).any(dim=1).all()
    assert torch.all(m.coef_.alpha[torch.from_numpy(off)] == 0)
    assert set(m.history_.stage) == {1, 2}
    joint = DualEncoderMTL(n_shared=2, n_specific=2, hidden=(16,), lr=1e-2, max_epochs=300, patience=30, random_state=0,
                           training="joint").fit(data)
    assert joint.specific_epochs_ is None
    refit = DualEncoderMTL(n_shared=2, n_specific=2, hidden=(16,), lr=1e-2, early_stopping="none", max_epochs=m.best_epoch_ + 1,
                           specific_epochs=m.specific_epochs_, random_state=0).fit(data)
    np.testing.assert_array_equal(refit.specific_epochs_, m.specific_epochs_)
    stage1 = DualEncoderMTL(n_shared=2, n_specific=0, hidden=(16,), lr=1e-2, max_epochs=300, patience=30,
                            random_state=0).fit(data)
    assert m.best_epoch_ == stage1.best_epoch_
    assert torch.all(refit.coef_.alpha[torch.from_numpy(off)] == 0)


def test_study_runner_lists_strong_baselines_and_runs_the_tuner(tmp_path):
    from dataclasses import replace

    from hetmtl.studies import MethodSpec, get_study, load_results, run_study
    from hetmtl.studies.builtin import encoder_methods

    names = [m.name for m in encoder_methods("heterogeneity")]
    assert {"dual_tuner", "ridge", "lasso", "gbm", "gbm_pooled"} <= set(names)
    grid = {"lam": [0.03], "n_shared": [2], "n_specific": [0], "hidden": [[8]], "max_epochs": [8], "patience": [3]}
    base = get_study("encoders-imbalance")
    study = replace(base, methods=[MethodSpec("dual_tuner", "encoders-cv", {"param_grid": grid, "cv": 2}),
                                   MethodSpec("ridge", "encoders-fit", {"method": "ridge"})],
                    n_reps=1, fixed={**base.fixed, "n": [30, 40, 30, 30, 40]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(study, tmp_path / "store", progress=False)
    f = load_results(tmp_path / "store").frame
    assert set(f.method) == {"dual_tuner", "ridge"} and len(f) == 10
    assert np.isfinite(f.rmse_truth).all() and (f[f.method == "dual_tuner"].chosen.str.contains("lam_beta")).all()


def test_cv_verbose_and_parallel_give_the_same_choice(capsys):
    data = linear_data(n=30)
    grid = {"lam": [0.01, 1.0], "n_shared": [0], "n_specific": [0], "hidden": [()], "linear": [True]}
    a = DualEncoderMTLCV(grid, cv=2, base_params={"max_epochs": 50}, random_state=0, verbose=1).fit(data)
    assert "tuning fits" in capsys.readouterr().err
    b = DualEncoderMTLCV(grid, cv=2, base_params={"max_epochs": 50}, random_state=0, n_jobs=2).fit(data)
    np.testing.assert_allclose(a.cv_results_.mean_val_mse_sum, b.cv_results_.mean_val_mse_sum)
    np.testing.assert_allclose(a.predict(data, None), b.predict(data, None))


def test_linear_only_model_uses_all_rows_and_converges():
    data = linear_data()
    m = DualEncoderMTL(n_shared=0, n_specific=0, hidden=(), linear=True, lam_beta=0.0, random_state=0).fit(data)
    X, _, _ = stacked(data)
    np.testing.assert_allclose(m.x_mean_, X.mean(0), atol=1e-12)  # no rows held out
    assert m.n_epochs_ < m.max_epochs  # stopped because the coefficients stopped moving
    for t in data:
        A = np.column_stack([np.ones(t.n), t.X])
        coef, *_ = np.linalg.lstsq(A, t.y, rcond=None)
        np.testing.assert_allclose(m.predict(t.X, t.task), A @ coef, atol=1e-5)


def test_fused_flags_single_out_the_unrelated_task():
    from hetmtl.encoders import adaptivity_report

    rng = np.random.default_rng(5)
    g = np.array([1.0, -0.5, 0.8])
    Xs = [rng.normal(size=(80, 3)) for _ in range(4)]
    slopes = [g, g, g, -g]  # the last task is unrelated
    ys = [X @ s + 0.3 * rng.normal(size=80) for X, s in zip(Xs, slopes)]
    data = MultiTaskData(Xs, ys, ["a", "b", "c", "odd"])
    m = DualEncoderMTL(n_shared=0, n_specific=0, hidden=(), linear=True, lam_beta=0.05, random_state=0).fit(data)
    rep = adaptivity_report(m)
    assert rep.fused.tolist() == [True, True, True, False]
    assert rep.dist_linear["odd"] > 1.0 and {"dist_linear", "fused_linear"} <= set(rep.columns)


def test_cv_seed_ensemble_of_refits():
    data = linear_data(n=30)
    grid = {"lam": [0.01], "n_shared": [2], "n_specific": [0], "hidden": [(4,)], "linear": [True]}
    cv = DualEncoderMTLCV(grid, cv=2, n_refits=3, base_params={"max_epochs": 20, "patience": 5}, random_state=0).fit(data)
    assert len(cv.estimators_) == 3 and cv.best_estimator_ is cv.estimators_[0]
    preds = [m.predict(data, None) for m in cv.estimators_]
    assert not np.allclose(preds[0], preds[1])  # different initialisations
    np.testing.assert_allclose(cv.predict(data, None), np.mean(preds, axis=0))
    sc = cv.score_tasks(data)
    np.testing.assert_allclose(sc.loc["t0", "mse"], np.mean((data["t0"].y - cv.predict(data["t0"].X, "t0")) ** 2))
    one = DualEncoderMTLCV(grid, cv=2, n_refits=1, base_params={"max_epochs": 20, "patience": 5}, random_state=0).fit(data)
    assert len(one.estimators_) == 1
    with pytest.raises(ParameterError, match="n_refits"):
        DualEncoderMTLCV(n_refits=0).fit(data)
