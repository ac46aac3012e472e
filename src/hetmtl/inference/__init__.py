"""Inference shared by every estimator.

What to use when:

- :func:`coef_table` / :func:`confint_frame` — the DoubleML-style table
  (``coef, std err, z, P>|z|, 2.5 %, 97.5 %``) and Wald intervals at any level; estimators gain ``summary_frame``,
  ``summary`` (a statsmodels ``Summary``, :func:`make_summary`) and ``confint`` from
  :class:`InferenceMixin`.
- :mod:`hetmtl.inference.joint` — simultaneous intervals over several coefficients (sup-t
  critical values: multiplier bootstrap of scores, Gaussian simulation, bootstrap draws).
- :func:`robust_ebci` / :func:`cva` — robust empirical-Bayes confidence intervals around
  shrinkage estimates (Armstrong, Kolesár & Plagborg-Møller 2022, Econometrica 90(6)) and their
  critical value.
"""
from hetmtl.inference.tables import (  # noqa: F401
    TABLE_COLUMNS,
    EstimatorSummary,
    InferenceMixin,
    _level_names,
    coef_table,
    confint_frame,
    format_table,
    make_summary,
)
from hetmtl.inference.joint import (  # noqa: E402,F401
    draws_critical_value,
    gaussian_critical_value,
    multiplier_critical_value,
)
from hetmtl.inference.ebci import (  # noqa: E402,F401
    CriticalValue,
    EBCIMoments,
    RobustEBCI,
    cva,
    cva_values,
    ebci_moments,
    robust_ebci,
)
