"""One parameter-validation layer for every public estimator, function and the CLI.

Each check returns the value in canonical form (a Python ``int``/``float``, a tuple, a numpy
array) or raises :class:`~hetmtl.exceptions.ParameterError` (or
:class:`~hetmtl.exceptions.DataValidationError` for arrays) naming the parameter. Conventions
follow scikit-learn:

- integers: Python/numpy integers or integral floats (R passes ``5`` as a double); ``2.5``,
  booleans, strings and non-finite values are refused; C++-bound integers are capped at 2**31 − 1;
- ``n_jobs``: joblib's meaning (None → 1, −1 → all cores, −2 → all but one, 0 refused);
- ``random_state``: None → fresh entropy, an int in [0, 2**32) → that seed, or a numpy
  ``Generator``/``RandomState``; the same meaning in every estimator;
- arrays: real numbers only (complex, datetime and text refused, never truncated).
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable, Sequence

import numpy as np

from hetmtl.exceptions import DataValidationError, NotFittedError, ParameterError

INT_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1
MAX_JOBS_PER_CORE = 4  # n_jobs above this many workers per core is refused (process bombs)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = INT_MAX,
              allow_none: bool = False) -> int | None:
    """``value`` as a Python int in [low, high]; integral floats accepted, 2.5/bool/str refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, numbers.Real)):
        raise ParameterError(f"{name} must be an integer, got {_describe(value)}")
    if not isinstance(value, numbers.Integral):
        v = float(value)
        if not np.isfinite(v) or v != int(v):
            raise ParameterError(f"{name} must be an integer, got {_describe(value)}")
        value = int(v)
    value = int(value)
    if low is not None and value < low:
        raise ParameterError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be <= {high}, got {value}")
    return value


def check_float(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                allow_inf: bool = False) -> float | None:
    """``value`` as a finite Python float in the interval (``allow_inf`` admits +inf/−inf)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {_describe(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise ParameterError(f"{name} must be a finite number, got {_describe(value)}") from None
    if np.isnan(v) or (np.isinf(v) and not allow_inf):
        raise ParameterError(f"{name} must be a finite number, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ParameterError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ParameterError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def _same(value: Any, choice: Any) -> bool:
    if choice is None or isinstance(choice, bool):
        return value is choice
    if isinstance(choice, str) or isinstance(value, str):
        return isinstance(value, str) and isinstance(choice, str) and value == choice
    try:
        return bool(value == choice)
    except Exception:  # noqa: BLE001  (arrays and odd objects compare badly: not a choice)
        return False


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared by equality, strings case-sensitive)."""
    choices = tuple(choices)
    if not any(_same(value, c) for c in choices):
        raise ParameterError(f"{name} must be one of {list(choices)}, got {_describe(value)}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a Python bool (True/False only; 0/1 and strings are refused).

    Parameters
    ----------
    value : bool
        The value to check.
    name : str
        The parameter name used in the error message.

    Returns
    -------
    bool
        The value.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {_describe(value)}")
    return bool(value)


def check_level(level: Any, name: str = "level") -> float:
    """A confidence level strictly inside (0, 1) (0.95, not 95).

    Parameters
    ----------
    level : float
        The level to check.
    name : str
        The parameter name used in the error message.

    Returns
    -------
    float
        The level.
    """
    v = check_float(level, name)
    if not 0.0 < v < 1.0:  # type: ignore[operator]
        hint = f" (did you mean {v / 100:g}?)" if 1.0 < v < 100.0 else ""  # type: ignore[operator]
        raise ParameterError(f"{name} must be in (0, 1), got {v}{hint}")
    return v  # type: ignore[return-value]


def check_n_jobs(n_jobs: Any, name: str = "n_jobs") -> int:
    """Worker count by joblib's convention: None → 1, k ≥ 1 → k, −1 → all cores, −k → cores + 1 − k;
    more than ``MAX_JOBS_PER_CORE`` workers per core are refused."""
    if n_jobs is None:
        return 1
    n = check_int(n_jobs, name, high=None)
    if n == 0:
        raise ParameterError(f"{name} must be None, a positive integer or a negative one counted from "
                             "the number of cores (-1: all), got 0")
    cores = os.cpu_count() or 1
    if n > 0:  # type: ignore[operator]
        if n > MAX_JOBS_PER_CORE * cores:  # type: ignore[operator]
            raise ParameterError(f"{name}={n} is more than {MAX_JOBS_PER_CORE} workers per core on this machine "
                                 f"({cores} cores); each worker is a process or thread")
        return n  # type: ignore[return-value]
    resolved = cores + 1 + n  # type: ignore[operator]
    if resolved < 1:
        raise ParameterError(f"{name}={n} leaves no worker on this machine ({cores} cores)")
    return resolved


def check_random_state(random_state: Any, name: str = "random_state") -> np.random.Generator:
    """A numpy Generator: None → fresh entropy, int in [0, 2**32) → seeded, Generator → itself,
    RandomState → a Generator seeded from it."""
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, SEED_MAX, dtype=np.int64))
    seed = check_int(random_state, name, low=0, high=SEED_MAX)
    return np.random.default_rng(seed)


def seed_from(random_state: Any, name: str = "random_state") -> int:
    """An int seed for torch/C++: the int itself, else one drawn from the generator (None → fresh)."""
    if random_state is not None and not isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return check_int(random_state, name, low=0, high=SEED_MAX)  # type: ignore[return-value]
    return int(check_random_state(random_state, name).integers(0, INT_MAX))


def check_hidden(hidden: Any, name: str = "hidden") -> tuple[int, ...]:
    """Hidden-layer widths: a sequence of positive ints (``()`` for none); a string is refused."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) and not isinstance(hidden, np.ndarray):
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        else:
            raise ParameterError(f"{name} must be a tuple of positive layer widths, got {_describe(hidden)}")
    return tuple(check_int(h, f"{name}[{i}]", low=1, high=1 << 20) for i, h in enumerate(hidden))  # type: ignore[misc]


def refuse_non_real_dtype(arr: np.ndarray, at: str) -> None:
    """Refuse complex and date/time arrays (never truncated, never turned into day counts)."""
    kind = arr.dtype.kind
    if kind == "c":
        raise DataValidationError(f"{at} is complex; only real numbers are accepted")
    if kind in "mM":
        raise DataValidationError(f"{at} holds dates/times; convert them to numbers explicitly")


def check_array(X: Any, name: str, *, ndim: int | tuple[int, ...] = 2, n_columns: int | None = None,
                allow_nan: bool = False, min_rows: int = 1, where: str = "") -> np.ndarray:
    """A float64 array of real numbers with the stated dimensions.

    Complex, datetime, timedelta, text and object arrays that are not numbers are refused (never
    truncated); NaN/inf refused unless ``allow_nan`` (then inf is still refused). ``where`` names
    the site/task/block for the message."""
    at = f"{name}{' (' + where + ')' if where else ''}"
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001  (ragged lists and the like)
        raise DataValidationError(f"{at} is not an array of numbers: {exc}") from None
    refuse_non_real_dtype(arr, at)
    if arr.dtype.kind in "OUSV":
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError, OverflowError):
            raise DataValidationError(f"{at} contains values that are not real numbers") from None
    arr = np.asarray(arr, dtype=float)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        raise DataValidationError(f"{at} must have {' or '.join(map(str, dims))} dimension(s), got shape {arr.shape}")
    if arr.ndim >= 1 and arr.shape[0] < min_rows:
        raise DataValidationError(f"{at} has {arr.shape[0]} rows; at least {min_rows} needed")
    if n_columns is not None and arr.ndim == 2 and arr.shape[1] != n_columns:
        raise DataValidationError(f"{at} has {arr.shape[1]} columns; expected {n_columns}")
    if allow_nan:
        if np.isinf(arr).any():
            raise DataValidationError(f"{at} contains infinite values")
    elif not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataValidationError(f"{at} contains non-finite values (NaN/inf), first at index {tuple(int(i) for i in bad)}")
    return arr


def check_is_fitted(estimator: Any, attributes: str | Sequence[str]) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has every fitted attribute."""
    names = (attributes,) if isinstance(attributes, str) else tuple(attributes)
    if not all(name in vars(estimator) for name in names):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet; call fit first.")
