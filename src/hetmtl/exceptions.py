"""Exception types. Every message names the site, task, block or column at fault."""


class DataValidationError(ValueError):
    """Input data that hetmtl refuses (non-finite values, bad shapes, undefined patterns)."""


class SummaryValidationError(ValueError):
    """A site summary (object or file) that is malformed, inconsistent or tampered with."""


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration cap before meeting its tolerance."""


class ClippingWarning(UserWarning):
    """Many cross-fitted propensities were clipped to [clip, 1 − clip] (poor overlap or an
    overfitted propensity model); the message names the site when it is known."""
