"""Exception and warning types.

Every error hetmtl raises for a user's input is a :class:`HetmtlError`; those about the input
itself (data, summaries, parameters, files) are also :class:`InputError`. Each also derives from
the built-in type callers already catch (``ValueError``, ``TypeError``, ``RuntimeError``), and
:class:`NotFittedError` from scikit-learn's. The R front end maps them to the R condition
classes ``hetmtl_input_error`` and ``hetmtl_error``. Every message names the parameter, site,
task, block, column or file at fault.
"""
from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class HetmtlError(Exception):
    """Base class of every error hetmtl raises on purpose."""


class InputError(HetmtlError, ValueError):
    """The user's input (data, summary, parameter or file) is refused."""


class DataValidationError(InputError):
    """Input data that hetmtl refuses (non-finite values, bad shapes, undefined patterns)."""


class SummaryValidationError(InputError):
    """A site summary (object or file) that is malformed, inconsistent or tampered with."""


class ParameterError(InputError, TypeError):
    """An estimator or function parameter of the wrong type, outside its range or not finite."""


class NotFittedError(HetmtlError, _SklearnNotFittedError):
    """A fitted attribute or method was used before ``fit`` (scikit-learn's exception type)."""


class TrainingError(HetmtlError, RuntimeError):
    """Training produced no usable model (no epoch with a finite validation loss, divergence)."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration cap before meeting its tolerance."""


class ClippingWarning(UserWarning):
    """Many cross-fitted propensities were clipped to [clip, 1 − clip] (poor overlap or an
    overfitted propensity model); the message names the site when it is known."""
