"""R bridge (hetmtl.rinterop) for the dual encoder and MTL-HMB: plain data in, the same fits out."""
import numpy as np
import pytest

from hetmtl import rinterop as ri
from hetmtl.blockwise import MTLHMB, make_split
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders import DualEncoderMTL
from hetmtl.exceptions import DataValidationError, ParameterError

pytestmark = pytest.mark.filterwarnings("ignore::hetmtl.exceptions.ConvergenceWarning")


def test_dual_encoder_bridge_equals_direct_fit():
    sim = ri.simulate_encoders(n_tasks=3, n=40, d=4, random_state=1, n_test=20)
    d = sim["data"]["data"]
    cols = [c for c in sim["data"]["columns"] if c.startswith("x")]
    flat = [v for c in cols for v in d[c]]  # column-major, as R sends a matrix
    kw = dict(n_shared=2, n_specific=2, hidden=[6], max_epochs=15, random_state=3)
    res = ri.dual_encoder_fit(flat, len(d["y"]), cols, d["y"], d["task"], lambdas=[0.01, 1.0], **kw)
    X = np.column_stack([d[c] for c in cols])
    data = MultiTaskData.from_arrays(X, np.asarray(d["y"]), np.asarray(d["task"], dtype=object), x_cols=cols)
    train, val, test = data.split((0.6, 0.2, 0.2), random_state=3)
    fits = {lam: DualEncoderMTL(**{**kw, "hidden": (6,)}, lam_alpha=lam, lam_beta=lam).fit(train, validation_data=val)
            for lam in (0.01, 1.0)}
    losses = {lam: float(m.score_tasks(val).mse.sum()) for lam, m in fits.items()}
    best = min(losses, key=losses.get)
    assert res["lambda"] == best
    assert res["selection"]["data"]["val_mse_sum"] == [losses[0.01], losses[1.0]]
    np.testing.assert_array_equal(res["beta"], fits[best].coef_.beta.numpy())
    np.testing.assert_array_equal(res["rmse"]["rmse_test"], fits[best].score_tasks(test).rmse.to_numpy())
    pred = ri.dual_encoder_predict(res["model_json"], flat, len(d["y"]), len(cols), d["task"])
    np.testing.assert_array_equal(pred, fits[best].predict(X, np.asarray(d["task"], dtype=object)))
    assert len(sim["test"]["data"]["y"]) == 60 and len(sim["beta"]) == 3


def test_mtl_hmb_bridge_equals_direct_fit_and_checks_newdata():
    sim = ri.simulate_blockwise("D", 100, p0=5, p_private=2, seed=2)
    frame = sim["data"]["data"]
    cols = {c: frame[c] for c in sim["data"]["columns"][2:]}
    grid = {"width": [8.0], "depth": [2.0], "lambda_orth": [0.1], "lambda_imp": [0.1], "lambda_dr": [0.1]}
    hbi = [{"width": 4, "depth": 1, "lambda_orth": 0.0}]
    kw = dict(max_epochs=8, hbi_max_epochs=8, random_state=4)
    res = ri.mtl_hmb_fit(cols, frame["task"], frame["y"], sim["block_map"], "x0", grid=grid, hbi_grid=hbi, **kw)
    data = BlockwiseData.from_dataframe(__import__("pandas").DataFrame({"task": frame["task"], "y": frame["y"], **cols}),
                                        sim["block_map"], "task", "y", anchor="x0")
    direct = MTLHMB(grid=[dict(width=8, depth=2, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)], hbi_grid=hbi,
                    **kw).fit(data, make_split(data, (0.6, 0.2, 0.2), seed=4))
    np.testing.assert_array_equal(res["rmse"]["rmse_test"], direct.test_rmse_.to_numpy())
    assert res["private"] == {"task1": "x1", "task2": "x2"} and res["selected"]["width"] == 8
    pred = ri.mtl_hmb_predict(res["model_json"], cols, frame["task"])
    X1 = np.column_stack([cols[c] for c in sim["block_map"]["x0"] + sim["block_map"]["x1"]])[:100]
    np.testing.assert_array_equal(pred[:100], direct.predict(X1, "task1"))
    # the truth is aligned with the rows
    assert len(sim["mean"]) == 200
    bad = dict(cols)
    bad["x2_1"] = [np.nan] * 200
    with pytest.raises(DataValidationError, match="task 'task2': missing values in column\\(s\\) \\['x2_1'\\]"):
        ri.mtl_hmb_predict(res["model_json"], bad, frame["task"])
    with pytest.raises(DataValidationError, match="unknown task 'task9'"):
        ri.mtl_hmb_predict(res["model_json"], cols, ["task9"] * 200)


def test_mbi_baseline_bridge_equals_direct_fit_on_the_same_split():
    """R's blockwise_baseline(method = "mbi"): native MBI on the paired split (fitted on training +
    validation rows), per-task RMSE of every part equal to a direct fit's; network settings refused."""
    from hetmtl.blockwise import MBI

    sim = ri.simulate_blockwise("linear", True, n=60, p0=6, p_private=3, seed=3)
    frame = sim["data"]["data"]
    cols = {c: frame[c] for c in sim["data"]["columns"][2:]}
    res = ri.blockwise_baseline_fit("mbi", cols, frame["task"], frame["y"], sim["block_map"], "x0",
                                    random_state=5, n_threads=1, nlam=6)
    data = BlockwiseData.from_dataframe(__import__("pandas").DataFrame({"task": frame["task"], "y": frame["y"], **cols}),
                                        sim["block_map"], "task", "y", anchor="x0")
    split = make_split(data, (0.6, 0.2, 0.2), seed=5)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        direct = MBI(nlam=6, random_state=5).fit(data, split)
    np.testing.assert_allclose(res["rmse"]["rmse_test"], direct.test_rmse_.to_numpy(), rtol=1e-12)
    train = direct.evaluate(data, split.train)
    np.testing.assert_allclose(res["rmse"]["rmse_train"], train["rmse"].iloc[:-1].to_numpy(), rtol=1e-12)
    assert res["rmse"]["n_test"] == [len(r) for r in split.test]
    with pytest.raises(ParameterError, match=r'blockwise_baseline\(method = "mbi"\) has no argument\(s\) max_epochs'):
        ri.blockwise_baseline_fit("mbi", cols, frame["task"], frame["y"], sim["block_map"], "x0", max_epochs=5)
    # fitted values for every row, in data order, consistent with the RMSE table
    fitted = np.asarray(res["fitted"])
    part = np.asarray(res["split"])
    task = np.asarray(frame["task"])
    for t, name in enumerate(["task1", "task2"]):
        rows = (part == "test") & (task == name)
        rmse = np.sqrt(np.mean((fitted[rows] - np.asarray(frame["y"])[rows]) ** 2))
        assert rmse == pytest.approx(res["rmse"]["rmse_test"][t], rel=1e-10)


# ---------------------------------------------------------------------------- r_call (conditions for R)
def test_r_call_records_warnings_once_with_category_and_count():
    import warnings

    from hetmtl.exceptions import ConvergenceWarning

    def noisy(n):
        for _ in range(n):
            warnings.warn("stopped early", ConvergenceWarning)
        warnings.warn("old API", DeprecationWarning)  # housekeeping: not forwarded
        warnings.warn("note", UserWarning)
        return n

    ri.noisy = noisy  # type: ignore[attr-defined]
    try:
        res = ri.r_call("noisy", {"n": 3})
    finally:
        del ri.noisy  # type: ignore[attr-defined]
    assert res["value"] == 3 and res["error"] is None
    assert res["warnings"] == [
        {"category": "ConvergenceWarning", "message": "stopped early", "count": 3, "module": "hetmtl.exceptions"},
        {"category": "UserWarning", "message": "note", "count": 1, "module": "builtins"},
    ]


def test_r_call_classifies_errors_for_r():
    from hetmtl.exceptions import TrainingError

    def fail(kind):
        if kind == "input":
            raise DataValidationError("column 'x' is bad")
        if kind == "hetmtl":
            raise TrainingError("no finite loss")
        raise ValueError("plain")

    ri.fail = fail  # type: ignore[attr-defined]
    try:
        out = {k: ri.r_call("fail", {"kind": k})["error"] for k in ("input", "hetmtl", "python")}
    finally:
        del ri.fail  # type: ignore[attr-defined]
    assert out["input"] == {"kind": "input", "type": "DataValidationError", "message": "column 'x' is bad"}
    assert out["hetmtl"] == {"kind": "hetmtl", "type": "TrainingError", "message": "no finite loss"}
    assert out["python"] == {"kind": "python", "type": "ValueError", "message": "plain"}
    assert ri.r_call("_blockwise_frame", {})["error"]["message"] == "no R entry point '_blockwise_frame'"
    # an empty R list() arrives as a Python list: no arguments
    assert ri.r_call("describe_learners", [])["value"]["forest"]["regressor"].startswith("random forest")


def test_dual_encoder_bridge_refuses_unknown_settings_and_gives_linear_coefficients():
    sim = ri.simulate_encoders(n_tasks=2, n=30, d=3, random_state=1)
    d = sim["data"]["data"]
    cols = ["x1", "x2", "x3"]
    flat = [v for c in cols for v in d[c]]
    res = ri.r_call("dual_encoder_fit", dict(x=flat, nrow=60, x_cols=cols, y=d["y"], task=d["task"], foo=1))
    assert res["error"]["kind"] == "input"
    assert res["error"]["message"].startswith("dual_encoder() has no argument(s) foo")
    lin = ri.dual_encoder_fit(flat, 60, cols, d["y"], d["task"], hidden=[], n_shared=1, n_specific=1, max_epochs=3,
                              random_state=2)
    coef = np.asarray(lin["linear_coef"])
    X = np.column_stack([d[c] for c in cols])
    first = np.asarray(d["task"]) == "task1"
    np.testing.assert_allclose(np.asarray(lin["fitted"])[first], coef[0, 0] + X[first] @ coef[0, 1:], rtol=1e-4,
                               atol=1e-5)
    deep = ri.dual_encoder_fit(flat, 60, cols, d["y"], d["task"], hidden=[4], n_shared=1, n_specific=1, max_epochs=3,
                               random_state=2)
    assert deep["linear_coef"] is None and len(deep["fitted"]) == 60


def test_dual_encoder_cv_bridge_equals_direct_fit():
    from hetmtl.encoders import DualEncoderMTLCV

    sim = ri.simulate_encoders(n_tasks=2, n=40, d=3, random_state=1)
    d = sim["data"]["data"]
    cols = ["x1", "x2", "x3"]
    flat = [v for c in cols for v in d[c]]
    grid = {"lam": [0.01, 0.3], "hidden": [[], 4]}  # as R sends list(integer(0), 4L)
    res = ri.dual_encoder_cv_fit(flat, 80, cols, d["y"], d["task"], param_grid=grid, cv=2, random_state=1, max_epochs=5)
    X = np.column_stack([d[c] for c in cols])
    data = MultiTaskData.from_arrays(X, np.asarray(d["y"]), np.asarray(d["task"], dtype=object), x_cols=cols)
    train, test = data.split([0.8, 0.2], random_state=1)[:2]
    direct = DualEncoderMTLCV(param_grid={"lam": [0.01, 0.3], "hidden": [(), (4,)]}, cv=2, random_state=1,
                              base_params={"max_epochs": 5}).fit(train)
    assert res["selection"]["data"]["mean_val_mse_sum"] == direct.cv_results_["mean_val_mse_sum"].tolist()
    np.testing.assert_array_equal(res["fitted"], direct.predict(X, np.asarray(d["task"], dtype=object)))
    np.testing.assert_array_equal(res["rmse"]["rmse_test"], direct.score_tasks(test).rmse.to_numpy())
    assert "params" not in res["selection"]["columns"]


def test_multisite_dml_bridge_takes_learner_names():
    rng = np.random.default_rng(0)
    n = 120
    X = rng.normal(size=(n, 2))
    dd = (X[:, 0] + rng.normal(size=n) > 0).astype(float)
    y = dd + X[:, 1] + rng.normal(size=n)
    flat = list(X[:, 0]) + list(X[:, 1])
    site = ["a"] * 60 + ["b"] * 60
    res = ri.multisite_dml(list(y), list(dd), flat, n, ["x1", "x2"], site, None, None, "y", "d", model="plr",
                           n_folds=2, n_rep=1, random_state=0, ml_outcome="ridge", ml_treatment="logistic")
    assert "RidgeCV" in res["sites"][0]["learners"][0] and "LogisticRegression" in res["sites"][0]["learners"][1]
    out = ri.r_call("multisite_dml", dict(y=list(y), d=list(dd), x=flat, nrow=n, x_cols=["x1", "x2"], site=site, z=None,
                                          z_cols=None, y_col="y", d_col="d", n_folds=2, ml_outcome="logistic"))
    assert out["error"]["kind"] == "input" and "ml_outcome: learner 'logistic' is a classifier" in out["error"]["message"]


def test_r_na_becomes_a_quiet_nan():
    """R's NA_real_ is a signalling NaN (payload 1954): arithmetic on it raises numpy's 'invalid
    value' warning, so every R entry point turns it into a quiet NaN."""
    import warnings

    from hetmtl import rinterop

    r_na = float(np.frombuffer(np.uint64(0x7FF00000000007A2).tobytes(), dtype=np.float64)[0])
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        np.asarray([r_na, 1.0]) - 1.0  # the problem: a signalling NaN
    for values in (rinterop.vector([r_na, 2.0, None]), rinterop.matrix([r_na, 1.0, 2.0, 3.0], 2, 2),
                   rinterop._blockwise_frame({"x": [r_na, 1.0]}, ["a", "a"], [r_na, 0.0])[["x", ".y"]]
                   .to_numpy()):
        with np.errstate(invalid="raise"), warnings.catch_warnings():
            warnings.simplefilter("error")
            shifted = np.asarray(values, dtype=float) - 1.0
        assert np.isnan(shifted).sum() == np.isnan(np.asarray(values, dtype=float)).sum() >= 1
