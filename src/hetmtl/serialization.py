"""Model export without pickles: fitted torch-based estimators as validated, checksummed JSON.

What to use when: to keep a fitted :class:`~hetmtl.encoders.DualEncoderMTL` or
:class:`~hetmtl.blockwise.MTLHMB` and predict later (another process, the R front end, another
machine), call ``model.to_json(path)`` and ``Estimator.from_json(path_or_text)``; the reloaded
model predicts bit-identically. Never exchange pickles: a pickle runs code when it is loaded,
this format only carries numbers.

Format (version 1)::

    {"format": "hetmtl.model", "version": 1, "estimator": "DualEncoderMTL",
     "payload": {"params": {...}, "fitted": {...}, "tensors": {name: tensor, ...}},
     "sha256": "<hex digest of the canonical payload>"}

``params`` are the constructor's hyperparameters, ``fitted`` the fitted scalars, labels and
small tables (JSON values), and every array (torch tensors and NumPy arrays alike) is stored as
``{"dtype": "float64" | "float32" | "int64" | "bool", "shape": [...], "data": base64}`` of its
little-endian bytes, so values survive exactly (also NaN and inf). :func:`loads` refuses text
that is not JSON, does not match the schema, was edited after export (checksum), belongs to
another estimator, or has arrays whose bytes do not match their shape and dtype.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np

from hetmtl._optional import require_torch

from hetmtl._jsonio import canonical_digest, write_atomic

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch("hetmtl.serialization (model exports of the neural families)")

FORMAT = "hetmtl.model"
VERSION = 1
DTYPES = ("float64", "float32", "int64", "bool")

_TENSOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dtype", "shape", "data"],
    "properties": {
        "dtype": {"enum": list(DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "string"},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "version", "estimator", "payload", "sha256"],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "estimator": {"type": "string", "minLength": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "payload": {
            "type": "object",
            "additionalProperties": False,
            "required": ["params", "fitted", "tensors"],
            "properties": {
                "params": {"type": "object"},
                "fitted": {"type": "object"},
                "tensors": {"type": "object", "additionalProperties": _TENSOR},
            },
        },
    },
}


class ModelFormatError(ValueError):
    """A model file or text that is malformed, of another estimator, or tampered with."""


# ---------------------------------------------------------------------------- arrays
def encode_array(a) -> dict[str, Any]:
    """A tensor or array as ``{dtype, shape, data}`` (base64 of its little-endian bytes)."""
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.dtype.kind == "f":
        arr = arr.astype("<f4" if arr.dtype.itemsize == 4 else "<f8", copy=False)
    elif arr.dtype.kind in "iu":
        arr = arr.astype("<i8", copy=False)
    elif arr.dtype.kind != "b":
        raise TypeError(f"cannot export an array of dtype {arr.dtype}")
    name = {"f4": "float32", "f8": "float64", "i8": "int64", "b1": "bool"}[f"{arr.dtype.kind}{arr.dtype.itemsize}"]
    return {"dtype": name, "shape": list(arr.shape), "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()}


def decode_array(obj: dict[str, Any], name: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array` (a writable NumPy array); checks bytes against shape/dtype."""
    try:
        jsonschema.validate(obj, _TENSOR)
    except jsonschema.ValidationError as exc:
        raise ModelFormatError(f"tensor {name!r}: {exc.message}") from None
    dtype = np.dtype({"float64": "<f8", "float32": "<f4", "int64": "<i8", "bool": "?"}[obj["dtype"]])
    try:
        raw = base64.b64decode(obj["data"].encode(), validate=True)
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"tensor {name!r}: data is not valid base64 ({exc})") from None
    shape = tuple(int(s) for s in obj["shape"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ModelFormatError(f"tensor {name!r}: {len(raw)} bytes for shape {list(shape)} {obj['dtype']} "
                               f"(expected {expected})")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def decode_tensor(obj: dict[str, Any], name: str = "tensor") -> torch.Tensor:
    return torch.from_numpy(decode_array(obj, name))


# ---------------------------------------------------------------------------- envelope
def jsonable(value: Any) -> Any:
    """Hyperparameters and fitted labels as JSON values (tuples become lists, NumPy scalars Python)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"non-finite scalar {value} cannot be stored as a JSON value; store it as an array")
        return value
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot export a value of type {type(value).__name__}")


def dumps(estimator: str, params: dict, fitted: dict, tensors: dict, path: str | Path | None = None) -> str:
    """The model JSON text (written atomically to ``path`` when given)."""
    payload = {"params": jsonable(params), "fitted": jsonable(fitted),
               "tensors": {str(k): encode_array(v) for k, v in tensors.items()}}
    text = json.dumps({"format": FORMAT, "version": VERSION, "estimator": estimator, "payload": payload,
                       "sha256": canonical_digest(payload)}, allow_nan=False)
    if path is not None:
        write_atomic(path, text)
    return text


def read_source(source: str | Path) -> tuple[str, str]:
    """(text, description) of JSON text or a file path."""
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return source, "model JSON"
    path = Path(source)
    if not path.is_file():
        raise ModelFormatError(f"model file not found: {path}")
    return path.read_text(), str(path)


def loads(source: str | Path, estimator: str) -> tuple[dict, dict, dict[str, dict]]:
    """Validate model JSON (text or path) of ``estimator``; returns ``(params, fitted, tensors)``
    with the tensors still encoded (decode them with :func:`decode_tensor`)."""
    text, where = read_source(source)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{where}: not valid JSON ({exc})") from None
    try:
        jsonschema.validate(obj, SCHEMA)
    except jsonschema.ValidationError as exc:
        at = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise ModelFormatError(f"{where}: does not match the hetmtl model schema at {at}: {exc.message}") from None
    if obj["estimator"] != estimator:
        raise ModelFormatError(f"{where}: holds a {obj['estimator']} model, not a {estimator}")
    payload = obj["payload"]
    if canonical_digest(payload) != obj["sha256"]:
        raise ModelFormatError(f"{where}: checksum mismatch - the model was edited or corrupted after export")
    return payload["params"], payload["fitted"], payload["tensors"]


def require(mapping: dict, keys, where: str) -> None:
    """Refuse a payload section that lacks any of ``keys`` (names them)."""
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ModelFormatError(f"{where}: missing entries {missing}")
