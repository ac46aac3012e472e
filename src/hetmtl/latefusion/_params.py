"""Parameter checks of the late-fusion family on top of :mod:`hetmtl._validation`."""
from __future__ import annotations

from typing import Any

from hetmtl._validation import check_float
from hetmtl.exceptions import ParameterError


def float_param(value: Any, name: str, **kwargs: Any) -> float | None:
    """:func:`~hetmtl._validation.check_float` that also refuses, by name, integers too large for
    a float (``10**400`` raises OverflowError in ``float()``)."""
    try:
        return check_float(value, name, **kwargs)
    except OverflowError:
        raise ParameterError(f"{name} must be a finite number, got an integer too large for a float") from None
