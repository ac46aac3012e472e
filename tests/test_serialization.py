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
    with pytest.raises(ModelFormatError, match="model file .*nope.json does not exist"):
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
    with pytest.raises(ModelFormatError, match=r"model JSON: .*declared sizes.*task_weights"):
        DualEncoderMTL.from_json(_retamper(text, drop_task_weight))

    def shrink_encoder(p):
        p["tensors"]["S.w0"] = encode_array(np.ones((3, 4, 5)))
    with pytest.raises(ModelFormatError, match=r"declared sizes.*S.w0"):
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


# ----------------------------------------------------------------------------- hostile files (issue #25)
_RSS_PROBE = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # a regression fails here, not the machine
from hetmtl.{module} import {cls}
from hetmtl.serialization import ModelFormatError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    {cls}.from_json(sys.argv[1])
    print("LOADED")
except ModelFormatError as exc:
    print("REFUSED", exc)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
print("SECONDS", time.perf_counter() - t0)
"""


def _probe(tmp_path, module, cls, text):
    import subprocess
    import sys
    path = tmp_path / "forged.json"
    path.write_text(text)
    from conftest import subprocess_env
    env = subprocess_env()
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE.format(module=module, cls=cls), str(path)],
                         capture_output=True, text=True, timeout=120, env=env)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    return out, lines


def test_forged_dual_encoder_export_is_refused_before_allocating(dual, tmp_path):
    def huge(p):
        p["params"]["hidden"] = [30000, 30000]  # 7.2 GB of float64 weights if built
    text = _retamper(dual[0].to_json(), huge)
    assert len(text) < 8000  # a few kB file
    with pytest.raises(ModelFormatError, match=r"model JSON: .*declared sizes"):
        DualEncoderMTL.from_json(text)
    out, lines = _probe(tmp_path, "encoders", "DualEncoderMTL", text)
    assert "REFUSED" in lines, out.stdout + out.stderr
    assert str(tmp_path / "forged.json") in lines["REFUSED"]  # names the file
    assert int(lines["GROWTH_KB"]) < 200_000  # peak RSS grows by < 200 MB (GBs before)
    assert float(lines["SECONDS"]) < 5


def test_forged_mtlhmb_export_is_refused_before_allocating(hmb, tmp_path):
    def huge(p):
        p["fitted"]["step2"]["net"].update(width=20000, depth=6)  # > 10 GB if built
    text = _retamper(hmb[0].to_json(), huge)
    with pytest.raises(ModelFormatError, match="Step-2 network: the declared width and depth need at least"):
        loads(text, "MTLHMB")
    out, lines = _probe(tmp_path, "blockwise", "MTLHMB", text)
    assert "REFUSED" in lines, out.stdout + out.stderr
    assert int(lines["GROWTH_KB"]) < 200_000

    def huge_imputer(p):
        p["fitted"]["imputer"]["fitted"]["sources"]["1"]["net"].update(width=50000, depth=3)
    with pytest.raises(ModelFormatError, match="imputer network 1"):
        loads(_retamper(hmb[0].to_json(), huge_imputer), "MTLHMB")


def test_byte_counts_do_not_wrap():
    from hetmtl.serialization import nbytes, tensor_shape
    assert nbytes([2**32, 2**32], "float64") == 2**67  # int64 would wrap to 0
    obj = {"dtype": "float64", "shape": [2**31 - 1, 2**31 - 1, 2**31 - 1], "data": ""}
    with pytest.raises(ModelFormatError, match=f"expected {(2**31 - 1) ** 3 * 8}"):
        tensor_shape(obj, "w")
    with pytest.raises(ModelFormatError, match="dimension larger than"):
        decode_array({"dtype": "float64", "shape": [2**32, 2**32, 0], "data": ""}, "w")


def test_shape_checks_for_estimators(dual):
    from hetmtl.serialization import check_elements, check_shapes
    _, _, tensors = loads(dual[0].to_json(), "DualEncoderMTL")
    check_shapes(tensors, {"coef.b": (3,)})
    with pytest.raises(ModelFormatError, match=r"coef.b: stored \[3\], declared \[4\]"):
        check_shapes(tensors, {"coef.b": (4,)}, "coef")
    with pytest.raises(ModelFormatError, match=r"missing tensors \['nope'\]"):
        check_shapes(tensors, {"nope": (1,)})
    n = sum(int(np.prod(decode_array(v).shape)) for k, v in tensors.items() if k.startswith("S."))
    check_elements(tensors, "S.", n)
    with pytest.raises(ModelFormatError, match=f"declared architecture has {10**12} parameters, the file stores {n}"):
        check_elements(tensors, "S.", 10**12)


def test_size_cap_is_configurable_and_names_the_file(dual, tmp_path, monkeypatch):
    import hetmtl.serialization as ser
    path = tmp_path / "m.json"
    text = dual[0].to_json(path)
    with pytest.raises(ModelFormatError, match=f"{path}: {len(text)} bytes, more than the 100-byte limit"):
        loads(path, "DualEncoderMTL", max_bytes=100)
    monkeypatch.setattr(ser, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ModelFormatError, match="1000-byte limit"):
        DualEncoderMTL.from_json(path)
    with pytest.raises(ModelFormatError, match="model JSON: .* more than the 1000-byte limit"):
        DualEncoderMTL.from_json(text)
    monkeypatch.setenv("HETMTL_MAX_FILE_BYTES", str(10**7))
    assert DualEncoderMTL.from_json(path).tasks_ == dual[0].tasks_
    monkeypatch.setenv("HETMTL_MAX_FILE_BYTES", "lots")
    with pytest.raises(ModelFormatError, match="HETMTL_MAX_FILE_BYTES"):
        loads(path, "DualEncoderMTL")


def test_special_files_and_bad_json_are_refused_naming_the_file(dual, tmp_path):
    import os
    import time
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(ModelFormatError, match=f"{fifo}: not a regular file"):
        DualEncoderMTL.from_json(fifo)  # never opened: would block forever
    assert time.perf_counter() - t0 < 2
    with pytest.raises(ModelFormatError, match=f"{tmp_path}: is a directory, not a model file"):
        DualEncoderMTL.from_json(tmp_path)
    text = dual[0].to_json()
    cases = {"nan.json": text.replace('"y_mean": ', '"y_mean": NaN, "x": ', 1),
             "deep.json": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
             "hugeint.json": '{"format": ' + "9" * 5000 + "}",
             "latin1.json": None}
    for name, body in cases.items():
        p = tmp_path / name
        if body is None:
            p.write_bytes(b'{"format": "\xff\xfe"}'.replace(b"\\x", b"\\x") + bytes([0xff]))
        else:
            p.write_text(body)
        with pytest.raises(ModelFormatError, match=f"^{p}: "):
            DualEncoderMTL.from_json(p)
    with pytest.raises(ModelFormatError, match="model JSON: JSON nested deeper than 64 levels"):
        loads('{"a": ' + "[" * 70 + "]" * 70 + "}", "DualEncoderMTL")
    with pytest.raises(ModelFormatError, match="JSON text or a file path"):
        loads(12, "DualEncoderMTL")


def test_require_names_the_file(dual, tmp_path):
    path = tmp_path / "m.json"

    def drop(p):
        del p["fitted"]["tasks"]
    path.write_text(_retamper(dual[0].to_json(), drop))
    with pytest.raises(ModelFormatError, match=f"{path}: fitted: missing entries"):
        DualEncoderMTL.from_json(path)


def test_declared_values_for_estimators(dual, tmp_path):
    from hetmtl.serialization import declared_int, declared_list
    path = tmp_path / "m.json"
    dual[0].to_json(path)
    params, fitted, _ = loads(path, "DualEncoderMTL")
    assert declared_int(fitted, "n_features_in", 1) == 4
    assert declared_list(fitted, "tasks", str) == dual[0].tasks_
    with pytest.raises(ModelFormatError, match=f"{path}: n_shared: must be an integer in \\[3, 9\\], got 2"):
        declared_int(params, "n_shared", 3, 9)
    with pytest.raises(ModelFormatError, match=f"{path}: tasks: must be a list of int"):
        declared_list(fitted, "tasks", int)
    with pytest.raises(ModelFormatError, match="missing entry 'nope'"):
        declared_int(fitted, "nope")
