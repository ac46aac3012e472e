"""Parameter checks of the late-fusion family on top of :mod:`hetmtl._validation`."""
from __future__ import annotations

from typing import Any

import numpy as np

from hetmtl._validation import check_array
from hetmtl.exceptions import DataValidationError, ParameterError


def array_param(value: Any, name: str, ndim: int | tuple[int, ...] = 1) -> np.ndarray:
    """A finite float array parameter via :func:`~hetmtl._validation.check_array`; text, complex,
    ragged input and integers too large for a float raise ParameterError naming ``name``."""
    if isinstance(value, (str, bytes)):
        raise ParameterError(f"{name} must be an array of numbers, got the string {value!r}")
    try:
        return check_array(value, name, ndim=ndim, min_rows=0)
    except DataValidationError as exc:
        raise ParameterError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} is not an array of numbers: {exc}") from None
