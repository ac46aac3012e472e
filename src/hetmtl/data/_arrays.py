"""Array coercion shared by the data containers."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from hetmtl._validation import refuse_non_real_dtype
from hetmtl.exceptions import DataValidationError

#: Largest magnitude accepted in the data of the late-fusion family (outcomes, treatments,
#: covariates): score variances grow with the square of the values, and a summary's entries are
#: bounded by ``summary.MAX_ABS_VALUE`` (1e100). Rescale larger data.
MAX_ABS_DATA = 1e40


def _raw(a: Any) -> np.ndarray:
    """``a`` as a numpy array without dtype coercion (pandas extension types to numpy)."""
    if isinstance(a, (pd.Series, pd.DataFrame)):
        kinds = [a.dtype] if isinstance(a, pd.Series) else list(a.dtypes)
        if any(isinstance(k, pd.CategoricalDtype) for k in kinds):
            return np.asarray(a, dtype=object)
        if any(pd.api.types.is_datetime64_any_dtype(k) or pd.api.types.is_timedelta64_dtype(k) for k in kinds):
            return a.to_numpy()
        try:
            return a.to_numpy(dtype=float, na_value=np.nan) if not any(
                pd.api.types.is_complex_dtype(k) for k in kinds) else a.to_numpy()
        except (TypeError, ValueError):
            return a.to_numpy()
    return np.asarray(a)


def as_float_array(a, ndim: int, where: str) -> np.ndarray:
    """``a`` as a float array with ``ndim`` dimensions (a column vector and a 1-D array are
    reshaped as needed); ``where`` names the input in error messages. Complex numbers, dates and
    times, and text are refused (never truncated, never turned into day counts)."""
    try:
        raw = _raw(a)
    except Exception as exc:  # noqa: BLE001  (ragged lists and the like)
        raise DataValidationError(f"{where} must be numeric: {exc}") from None
    refuse_non_real_dtype(raw, where)
    kind = raw.dtype.kind
    if kind in "O":
        flat = raw.ravel()
        bad = [v for v in flat[:10_000] if isinstance(v, (complex, np.complexfloating, np.datetime64, np.timedelta64,
                                                            pd.Timestamp, pd.Timedelta, str, bytes))]
        if bad:
            raise DataValidationError(f"{where} contains values that are not real numbers (e.g. {bad[0]!r})")
    if kind in "USV":
        raise DataValidationError(f"{where} contains text; only real numbers are accepted")
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{where} must be numeric: {exc}") from None
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if ndim == 2 and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != ndim:
        raise DataValidationError(f"{where} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr


def format_rows(idx: np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` row indices for an error message ("3, 7, 9, ...")."""
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (", ..." if idx.size > limit else "")


def split_indices(
    n: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), rng: np.random.Generator | int | None = None
) -> tuple[np.ndarray, ...]:
    """Random disjoint index sets with the given fractions (rounded; the last gets the rest)."""
    fr = np.asarray(fractions, float)
    if np.any(fr <= 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {fr.tolist()}")
    rng = np.random.default_rng(rng)
    perm = rng.permutation(n)
    cuts = np.floor(np.cumsum(fr)[:-1] * n).astype(int)
    parts = tuple(np.sort(p) for p in np.split(perm, cuts))
    if any(p.size == 0 for p in parts):
        raise ValueError(f"{n} rows are too few to split into fractions {fr.tolist()}")
    return parts
