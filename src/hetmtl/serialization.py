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

Hostile files. Exports are data from outside: :func:`loads` refuses files larger than
:data:`MAX_FILE_BYTES` (or the ``HETMTL_MAX_FILE_BYTES`` environment variable, or its
``max_bytes`` argument) before reading them, directories, FIFOs and other special files without
opening them, NaN literals, deep nesting and huge integers, and it checks every array's declared
shape against its stored bytes with Python integers (no int64 wrap-around) before decoding
anything. The SHA-256 is unkeyed (it detects corruption, not forgery), so an estimator's
``from_json`` must also compare the sizes its hyperparameters declare with the stored arrays
*before* it builds a network: :func:`check_shapes` and :func:`check_elements` do that from the
metadata alone, allocating nothing. Every error is a :class:`ModelFormatError` that names the file.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jsonschema
import numpy as np

from hetmtl._optional import require_torch

from hetmtl._jsonio import canonical_digest, read_text_capped, write_atomic
from hetmtl.exceptions import InputError

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch("hetmtl.serialization (model exports of the neural families)")

FORMAT = "hetmtl.model"
VERSION = 1
DTYPES = ("float64", "float32", "int64", "bool")
#: Largest model export read (bytes); ``HETMTL_MAX_FILE_BYTES`` in the environment overrides it.
MAX_FILE_BYTES = 256 * 2**20
#: Largest nesting depth of a model export's JSON (exports nest a few levels).
MAX_DEPTH = 64
_MAX_DIM = 2**31 - 1
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ITEMSIZE = {"float64": 8, "float32": 4, "int64": 8, "bool": 1}

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


class ModelFormatError(InputError):
    """A model file or text that is malformed, of another estimator, forged or tampered with
    (an :class:`~hetmtl.exceptions.InputError`, hence also a ``ValueError``)."""


class _Section(dict):
    """A dict read from a model export that remembers its file (``source``), so that
    :func:`require` and the shape checks name the file in their errors."""

    source: str = ""


def _where(obj: Any, name: str) -> str:
    source = getattr(obj, "source", "")
    return f"{source}: {name}" if source else name


def max_file_bytes(max_bytes: int | None = None) -> int:
    """The size cap in force: ``max_bytes`` if given, else ``HETMTL_MAX_FILE_BYTES`` from the
    environment, else :data:`MAX_FILE_BYTES` (read at call time, so it can be changed)."""
    if max_bytes is None:
        env = os.environ.get("HETMTL_MAX_FILE_BYTES")
        if env is None:
            return int(MAX_FILE_BYTES)
        try:
            max_bytes = int(env)
        except ValueError:
            raise ModelFormatError(f"HETMTL_MAX_FILE_BYTES must be a whole number of bytes, got {env!r}") from None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ModelFormatError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return max_bytes


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


def nbytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (a :data:`DTYPES` name), in Python integers:
    no overflow however large the declared sizes."""
    return math.prod(int(s) for s in shape) * _ITEMSIZE[dtype]


def _base64_length(n: int) -> int:
    return 4 * ((n + 2) // 3)


def tensor_shape(obj: Mapping[str, Any], name: str = "tensor") -> tuple[int, ...]:
    """The declared shape of an encoded array, checked against its stored bytes without decoding
    (sizes in Python integers); the array then decodes to exactly this shape."""
    try:
        jsonschema.validate(obj, _TENSOR)
    except jsonschema.ValidationError as exc:
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: {exc.message}") from None
    shape = tuple(int(s) for s in obj["shape"])
    if any(s > _MAX_DIM for s in shape):
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: dimension larger than {_MAX_DIM} "
                               f"in shape {list(shape)}")
    expected = nbytes(shape, obj["dtype"])
    data = obj["data"]
    if _BASE64.fullmatch(data) is None or len(data) % 4:
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: data is not valid base64")
    if len(data) != _base64_length(expected):
        stored = len(data) * 3 // 4 - data[-2:].count("=")
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: {stored} bytes for shape {list(shape)} "
                               f"{obj['dtype']} (expected {expected})")
    return shape


def decode_array(obj: dict[str, Any], name: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array` (a writable NumPy array); the bytes are checked against
    shape and dtype (overflow-safe) before anything is decoded."""
    shape = tensor_shape(obj, name)
    dtype = np.dtype({"float64": "<f8", "float32": "<f4", "int64": "<i8", "bool": "?"}[obj["dtype"]])
    try:
        raw = base64.b64decode(obj["data"].encode(), validate=True)
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: data is not valid base64 ({exc})") from None
    expected = nbytes(shape, obj["dtype"])
    if len(raw) != expected:
        raise ModelFormatError(f"{_where(obj, 'tensor')} {name!r}: {len(raw)} bytes for shape {list(shape)} "
                               f"{obj['dtype']} (expected {expected})")
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


def read_source(source: str | Path, max_bytes: int | None = None) -> tuple[str, str]:
    """(text, description) of JSON text or a file path.

    A path must name a regular file of at most :func:`max_file_bytes` bytes; it is checked with
    ``os.stat`` before it is opened, so directories, FIFOs and devices are refused without
    blocking. JSON text is held to the same cap."""
    cap = max_file_bytes(max_bytes)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        if len(source) > cap:
            raise ModelFormatError(f"model JSON: {len(source)} characters, more than the {cap}-byte limit "
                                   f"(hetmtl.serialization.MAX_FILE_BYTES / HETMTL_MAX_FILE_BYTES)")
        return source, "model JSON"
    if not isinstance(source, (str, Path, os.PathLike)):
        raise ModelFormatError(f"a model source must be JSON text or a file path, got {type(source).__name__}")
    path = Path(source)
    return read_text_capped(path, "model file", cap, ModelFormatError), str(path)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(obj: Any) -> int:
    """Nesting depth, iteratively (no recursion limit)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in node)
    return deepest


def loads(source: str | Path, estimator: str, max_bytes: int | None = None) -> tuple[dict, dict, dict[str, dict]]:
    """Validate model JSON (text or path) of ``estimator``; returns ``(params, fitted, tensors)``
    with the tensors still encoded (decode them with :func:`decode_tensor`).

    Every array's declared shape has been checked against its stored bytes (no decoding yet);
    call :func:`check_shapes` / :func:`check_elements` with the sizes your hyperparameters
    declare *before* building anything from them. The returned dicts remember the file, so
    :func:`require` and the checks name it.

    Parameters
    ----------
    source : str or pathlib.Path
        JSON text or the path of a regular file.
    estimator : str
        The estimator class name the export must hold.
    max_bytes : int, optional
        Size cap (default :func:`max_file_bytes`).

    Returns
    -------
    tuple of dict
        ``(params, fitted, tensors)``.
    """
    text, where = read_source(source, max_bytes)

    def hook(pairs: list) -> _Section:
        sec = _Section(pairs)
        sec.source = where
        return sec

    try:
        obj = json.loads(text, object_pairs_hook=hook, parse_constant=_refuse_constant)
    except RecursionError:
        raise ModelFormatError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity literals, integers too long to convert
        raise ModelFormatError(f"{where}: not valid JSON ({str(exc)[:200]})") from None
    if _depth(obj) > MAX_DEPTH:
        raise ModelFormatError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        jsonschema.validate(obj, SCHEMA)
    except jsonschema.ValidationError as exc:
        at = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise ModelFormatError(f"{where}: does not match the hetmtl model schema at {at}: "
                               f"{exc.message[:300]}") from None
    if obj["estimator"] != estimator:
        raise ModelFormatError(f"{where}: holds a {obj['estimator']} model, not a {estimator}")
    payload = obj["payload"]
    try:
        digest = canonical_digest(payload)
    except (ValueError, OverflowError) as exc:
        raise ModelFormatError(f"{where}: payload cannot be checksummed ({exc})") from None
    if digest != obj["sha256"]:
        raise ModelFormatError(f"{where}: checksum mismatch - the model was edited or corrupted after export")
    for name, enc in payload["tensors"].items():
        tensor_shape(enc, name)  # declared shape vs stored bytes, before anything is decoded
    check = _PRECHECKS.get(estimator)
    if check is not None:
        check(payload["params"], payload["fitted"], payload["tensors"])
    return payload["params"], payload["fitted"], payload["tensors"]


# ---------------------------------------------------------------------------- declared sizes
def declared_int(mapping: Mapping, key: str, low: int = 0, high: int | None = None) -> int:
    """A declared integer of a model export (a size, a count, an index): a JSON integer in
    [low, high]; floats, booleans, strings, lists and a missing key are refused with a
    :class:`ModelFormatError` naming the file and the entry.

    Parameters
    ----------
    mapping : mapping
        A section returned by :func:`loads` (or a dict nested in one).
    key : str
        The entry.
    low, high : int
        Bounds (``high=None``: none).

    Returns
    -------
    int
        The value.
    """
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ModelFormatError(f"{_where(mapping, key)}: missing entry {key!r}")
    v = mapping[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ModelFormatError(f"{_where(mapping, key)}: must be an integer {bound}, got {v!r:.60}")
    return v


def declared_list(mapping: Mapping, key: str, item: type | tuple[type, ...] | None = None) -> list:
    """A declared list of a model export (task names, source dimensions...), optionally of
    items of type ``item`` (booleans never count as integers); refused with a
    :class:`ModelFormatError` naming the file and the entry.

    Parameters
    ----------
    mapping : mapping
        A section returned by :func:`loads`.
    key : str
        The entry.
    item : type or tuple of types, optional
        Required type of every item.

    Returns
    -------
    list
        The value.
    """
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ModelFormatError(f"{_where(mapping, key)}: missing entry {key!r}")
    v = mapping[key]
    types = () if item is None else item if isinstance(item, tuple) else (item,)

    def ok(x: Any) -> bool:
        return isinstance(x, types) and (bool in types or not isinstance(x, bool))

    if not isinstance(v, list) or (item is not None and not all(ok(x) for x in v)):
        of = f" of {getattr(item, '__name__', item)}" if item is not None else ""
        raise ModelFormatError(f"{_where(mapping, key)}: must be a list{of}, got {v!r:.60}")
    return v


_size = declared_int


def _mlp_floor(info: Mapping, what: str) -> int:
    """A lower bound on the parameters of the exported block-wise network (``info`` as written by
    ``export_grid``): its (depth - 1) hidden layers of the declared width hold at least
    width x width weights each; the selected configuration's own width and depth count too."""
    if not isinstance(info, Mapping):
        raise ModelFormatError(f"{_where(info, what)}: must be an object, got {type(info).__name__}")
    net, configs = info.get("net"), info.get("configs")
    if not isinstance(net, Mapping):
        raise ModelFormatError(f"{_where(info, what)}: the network description must be an object, "
                               f"got {type(net).__name__}")
    width, depth = _size(net, "width", 1), _size(net, "depth", 1)
    if not isinstance(configs, list) or not all(isinstance(c, Mapping) for c in configs):
        raise ModelFormatError(f"{_where(info, what)}: the configurations must be a list of objects")
    sel = _size(info, "selected", 0, len(configs) - 1) if configs else None
    if sel is not None:
        c = configs[sel]
        width = max(width, _size(c, "width", 1) if "width" in c else 1)
        depth = max(depth, _size(c, "depth", 1) if "depth" in c else 1)
    return (depth - 1) * width * width + width


def _at_least(tensors: Mapping, prefix: str, floor: int, what: str) -> None:
    stored = sum(math.prod(tensor_shape(v, k)) for k, v in tensors.items() if k.startswith(prefix))
    if floor > stored:
        raise ModelFormatError(f"{_where(tensors, what)}: the declared width and depth need at least {floor} "
                               f"parameters, the file stores {stored}")


def _mtlhmb_sizes(params: Mapping, fitted: Mapping, tensors: Mapping) -> None:
    """MTLHMB: the declared Step-2 and HBI network sizes must fit the stored parameters."""
    def section(obj: Any, key: str, where: str) -> Any:
        if not isinstance(obj, Mapping) or key not in obj:
            raise ModelFormatError(f"{_where(fitted, where)}: missing or malformed entry {key!r}")
        return obj[key]

    step2 = section(fitted, "step2", "fitted")
    _at_least(tensors, "step2.param.", _mlp_floor(step2, "step2"), "MTLHMB Step-2 network")
    sources = section(section(section(fitted, "imputer", "fitted"), "fitted", "imputer"), "sources", "imputer")
    if not isinstance(sources, Mapping):
        raise ModelFormatError(f"{_where(fitted, 'imputer')}: sources must be an object")
    for key, info in sources.items():
        if not isinstance(info, Mapping):
            raise ModelFormatError(f"{_where(sources, key)}: imputer source {key} must be an object")
        _at_least(tensors, f"imputer.{key}.param.", _mlp_floor(info, f"imputer source {key}"),
                  f"MTLHMB imputer network {key}")


#: Size checks run by :func:`loads` before an estimator's ``from_json`` builds anything (a
#: defence in depth: each ``from_json`` compares every declared shape itself, e.g. with
#: :func:`check_shapes`); MTL-HMB's lower bound catches a huge declared width x depth.
_PRECHECKS = {"MTLHMB": _mtlhmb_sizes}


def check_shapes(tensors: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Sequence[int]],
                 what: str = "tensors") -> None:
    """Refuse an export whose stored arrays do not have the shapes its hyperparameters declare.

    Call it in ``from_json`` *before* building a network or any array from the declared sizes:
    it reads only the arrays' metadata (checked against their bytes) and compares Python
    integers, so a forged export declaring a huge architecture is refused without allocating.

    Parameters
    ----------
    tensors : mapping
        The encoded tensors returned by :func:`loads`.
    expected : mapping
        ``{tensor name: shape}`` computed from the declared hyperparameters.
    what : str
        What is being checked, for the message (e.g. ``"encoder S"``).
    """
    got = {k: tensor_shape(tensors[k], k) for k in expected if k in tensors}
    want = {k: tuple(int(s) for s in v) for k, v in expected.items()}
    bad = {k: (list(got[k]), list(want[k])) for k in got if got[k] != want[k]}
    if bad:
        shown = "; ".join(f"{k}: stored {g}, declared {w}" for k, (g, w) in list(bad.items())[:5])
        raise ModelFormatError(f"{_where(tensors, what)}: stored arrays do not match the declared sizes ({shown})")
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ModelFormatError(f"{_where(tensors, what)}: missing tensors {missing[:10]} that the declared sizes need")


def check_elements(tensors: Mapping[str, Mapping[str, Any]], prefix: str, declared: int,
                   what: str | None = None) -> None:
    """Refuse an export whose declared parameter count (``declared``, computed with Python
    integers from the hyperparameters) differs from the number of values stored under
    ``prefix``; call it before building the network the hyperparameters describe.

    Parameters
    ----------
    tensors : mapping
        The encoded tensors returned by :func:`loads`.
    prefix : str
        Name prefix of the network's tensors (e.g. ``"step2.param."``).
    declared : int
        Parameter count implied by the declared architecture.
    what : str, optional
        What is being checked, for the message (default ``prefix``).
    """
    stored = sum(math.prod(tensor_shape(v, k)) for k, v in tensors.items() if k.startswith(prefix))
    if int(declared) != stored:
        raise ModelFormatError(f"{_where(tensors, what or prefix)}: the declared architecture has {int(declared)} "
                               f"parameters, the file stores {stored}")


def require(mapping: dict, keys, where: str) -> None:
    """Refuse a payload section that lacks any of ``keys`` (names them)."""
    if not isinstance(mapping, Mapping):
        raise ModelFormatError(f"{_where(mapping, where)}: expected an object, got {type(mapping).__name__}")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ModelFormatError(f"{_where(mapping, where)}: missing entries {missing}")
