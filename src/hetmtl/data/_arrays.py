"""Array coercion shared by the data containers."""
from __future__ import annotations

import numpy as np

from hetmtl.exceptions import DataValidationError


def as_float_array(a, ndim: int, where: str) -> np.ndarray:
    """``a`` as a float array with ``ndim`` dimensions (a column vector and a 1-D array are
    reshaped as needed); ``where`` names the input in error messages."""
    try:
        arr = np.asarray(a, dtype=float)
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
