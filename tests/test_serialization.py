"""Model export as validated JSON (hetmtl.serialization): exact round trips, refusal of bad input."""
import json
import numpy as np
import pytest
import torch

from hetmtl._jsonio import canonical_digest
from hetmtl.blockwise import MTLHMB, simulate_blockwise
from hetmtl.encoders import DualEncoderMTL, simulate_latent
from hetmtl.serialization import ModelFormatError, decode_array, encode_array, loads

pytestmark = pytest.mark.filterwarnings("ignore::hetmtl.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def dual():
    sim = simulate_latent(n_tasks=3, n=40, d=4, posterior_drift=0.5, random_state=0)
    train, val, test = sim.data.split((0.6, 0.2, 0.2), random_state=0)
    model = DualEncoderMTL(n_shared=2, n_specific=2, hidden=(8,), lam_alpha=[0.01, 0.02, 0.03], max_epochs=25,
                           random_state=0).fit(train, validation_data=val)
    return model, test


@pytest.fixture(scope="module")
def hmb():
    sim = simulate_blockwise(n=50, p0=5, p_private=3, seed=1)
    grid = [dict(width=8, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.01),
            dict(width=12, depth=3, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)]
    hbi = [dict(width=4, depth=1, lambda_orth=0.0), dict(width=6, depth=2, lambda_orth=0.0)]
    model = MTLHMB(grid=grid, hbi_grid=hbi, max_epochs=15, hbi_max_epochs=15, random_state=1).fit(sim.data)
    return model, sim.data


def _retamper(text: str, edit) -> str:
    """Edit the payload and recompute the checksum (a consistent but wrong file)."""
    obj = json.loads(text)
    edit(obj["payload"])
    obj["sha256"] = canonical_digest(obj["payload"])
    return json.dumps(obj)


@pytest.mark.parametrize("arr", [np.array([1.5, np.nan, -np.inf, 1e-310]), np.arange(6, dtype=np.int32).reshape(2, 3),
                                 np.array([[True, False]]), torch.tensor([0.1, 0.2], dtype=torch.float32),
                                 np.zeros((0, 3))])
def test_arrays_round_trip_bit_exactly(arr):
    back = decode_array(json.loads(json.dumps(encode_array(arr))))
    ref = arr.numpy() if isinstance(arr, torch.Tensor) else arr
    assert back.shape == ref.shape
    assert back.tobytes() == ref.astype(back.dtype).tobytes()
    if ref.dtype.kind == "f":
        assert back.dtype == ref.dtype  # float32 stays float32


def test_array_bytes_must_match_shape():
    obj = encode_array(np.ones(3))
    obj["shape"] = [4]
    with pytest.raises(ModelFormatError, match="24 bytes for shape \\[4\\] float64"):
        decode_array(obj, "w")
    obj = encode_array(np.ones(3))
    obj["data"] = "not base64!"
    with pytest.raises(ModelFormatError, match="not valid base64"):
        decode_array(obj, "w")


def test_dual_encoder_round_trip_predicts_identically(dual, tmp_path):
    model, test = dual
    path = tmp_path / "dual.json"
    text = model.to_json(path)
    assert path.read_text() == text
    for source in (text, path, str(path)):
        back = DualEncoderMTL.from_json(source)
        for t in test:
            np.testing.assert_allclose(back.predict(t.X, t.task), model.predict(t.X, t.task), rtol=0, atol=1e-12)
    assert back.get_params() == {**model.get_params(), "lam_alpha": [0.01, 0.02, 0.03]}
    assert back.tasks_ == model.tasks_ and back.best_epoch_ == model.best_epoch_
    np.testing.assert_array_equal(back.history_.val_mse_sum, model.history_.val_mse_sum)
    np.testing.assert_array_equal(back.coef_.beta_center.numpy(), model.coef_.beta_center.numpy())
    S0, C0 = model.encodings(test["task2"].X, "task2")
    S1, C1 = back.encodings(test["task2"].X, "task2")
    np.testing.assert_array_equal(S0, S1)
    np.testing.assert_array_equal(C0, C1)


def test_dual_encoder_after_adapt_and_without_shared_encoder(dual):
    model, test = dual
    sim = simulate_latent(n_tasks=1, n=30, d=4, random_state=5)
    X, y = sim.data["task1"].X, sim.data["task1"].y
    adapted = DualEncoderMTL(**model.get_params()).set_params(max_epochs=10)
    adapted.fit(simulate_latent(n_tasks=3, n=40, d=4, random_state=0).data)
    adapted.adapt(X, y, "new")
    back = DualEncoderMTL.from_json(adapted.to_json())
    np.testing.assert_array_equal(back.predict(X, "new"), adapted.predict(X, "new"))
    stl = DualEncoderMTL(n_shared=0, n_specific=3, hidden=(4,), lam_alpha=0, lam_beta=0, early_stopping="per_task",
                         max_epochs=10, random_state=2).fit(simulate_latent(n_tasks=2, n=30, d=4, random_state=1).data)
    back = DualEncoderMTL.from_json(stl.to_json())
    assert back.shared_ is None and isinstance(back.best_epoch_, np.ndarray)
    np.testing.assert_array_equal(back.predict(X, "task2"), stl.predict(X, "task2"))


def test_mtlhmb_round_trip_predicts_identically(hmb, tmp_path):
    model, data = hmb
    back = MTLHMB.from_json(model.to_json(tmp_path / "m.json"))
    back2 = MTLHMB.from_json(tmp_path / "m.json")
    for t in range(data.n_tasks):
        X = np.hstack([data.x0(t), data.x_private(t)])
        np.testing.assert_allclose(back.predict(X, t), model.predict(X, t), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(back2.predict(X, data.task_names[t]), model.predict(X, t))
        np.testing.assert_array_equal(back.transform(X, t)["shared"], model.transform(X, t)["shared"])
        # the fitted HBI imputer is restored too
        for s in range(1, data.n_sources):
            if s != data.private_source[t]:
                np.testing.assert_array_equal(back.imputer_.impute_block(data.x0(t), s),
                                              model.imputer_.impute_block(data.x0(t), s))
    assert back.selected_config_ == model.selected_config_
    assert back.selection_table().equals(model.selection_table().drop(columns=[]))
    assert back.test_table_.equals(model.test_table_)
    np.testing.assert_array_equal(back.split_.test[1], model.split_.test[1])
    assert back.imputer_.selection_table()["val_loss"].tolist() == model.imputer_.selection_table()["val_loss"].tolist()
    assert back.dtype_ == torch.float32


def test_tampered_or_malformed_input_is_refused(dual, hmb, tmp_path):
    text = dual[0].to_json()
    obj = json.loads(text)
    obj["payload"]["fitted"]["y_mean"] += 1.0
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        DualEncoderMTL.from_json(json.dumps(obj))
    with pytest.raises(ModelFormatError, match="holds a DualEncoderMTL model, not a MTLHMB"):
        MTLHMB.from_json(text)
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        DualEncoderMTL.from_json("{ broken")
    with pytest.raises(ModelFormatError, match="model file not found"):
        DualEncoderMTL.from_json(tmp_path / "nope.json")
    obj = json.loads(text)
    obj["version"] = 99
    with pytest.raises(ModelFormatError, match="schema at version"):
        DualEncoderMTL.from_json(json.dumps(obj))
    obj = json.loads(text)
    del obj["payload"]["tensors"]["coef.alpha"]["dtype"]
    with pytest.raises(ModelFormatError, match="schema at payload/tensors/coef.alpha"):
        DualEncoderMTL.from_json(json.dumps(obj))

    def drop_task_weight(p):
        p["tensors"]["task_weights"] = encode_array(np.ones(2))
    with pytest.raises(ModelFormatError, match="wrong shapes .*task_weights"):
        DualEncoderMTL.from_json(_retamper(text, drop_task_weight))

    def shrink_encoder(p):
        p["tensors"]["S.w0"] = encode_array(np.ones((3, 4, 5)))
    with pytest.raises(ModelFormatError, match="encoder S tensors"):
        DualEncoderMTL.from_json(_retamper(text, shrink_encoder))

    def bad_param(p):
        p["params"]["penalty"] = "lasso"
    with pytest.raises(ModelFormatError, match="invalid hyperparameters"):
        DualEncoderMTL.from_json(_retamper(text, bad_param))

    def drop_fitted(p):
        del p["fitted"]["tasks"]
    with pytest.raises(ModelFormatError, match="missing entries \\['tasks'\\]"):
        DualEncoderMTL.from_json(_retamper(text, drop_fitted))

    htext = hmb[0].to_json()

    def widen(p):
        p["tensors"]["step2.param.c0.W"] = encode_array(np.ones((1, 5, 99), dtype=np.float32))
    with pytest.raises(ModelFormatError, match="step2.: network parameters"):
        MTLHMB.from_json(_retamper(htext, widen))

    def reselect(p):
        p["fitted"]["step2"]["selected"] = 1 - p["fitted"]["step2"]["selected"]
    with pytest.raises(ModelFormatError):
        MTLHMB.from_json(_retamper(htext, reselect))
    params, fitted, tensors = loads(htext, "MTLHMB")
    assert params["imputer"] is None and "imputer.1.param.Ec0.W" in tensors
