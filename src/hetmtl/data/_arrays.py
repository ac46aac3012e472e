"""Array coercion shared by the data containers."""
from __future__ import annotations

from typing import Sequence

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
