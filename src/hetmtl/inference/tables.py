"""Inference tables shared by every estimator.

Use :func:`coef_table` to turn estimates and a covariance matrix into the DoubleML-style table
(``coef, std err, z, P>|z|, 2.5 %, 97.5 %``: z where the law is normal) and :func:`confint_frame` for intervals at any level.
Estimators gain ``summary_frame``, ``summary`` and ``confint`` by inheriting :class:`InferenceMixin`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

TABLE_COLUMNS = ("coef", "std err", "z", "P>|z|")


def _level_names(level: float) -> tuple[str, str]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = (1.0 - level) / 2.0
    fmt = lambda q: f"{100 * q:.10g} %"  # noqa: E731  (DoubleML/statsmodels style: '2.5 %')
    return fmt(a), fmt(1.0 - a)


def confint_frame(coef: np.ndarray, se: np.ndarray, index: Sequence, level: float = 0.95) -> pd.DataFrame:
    """Normal (Wald) confidence intervals as a DataFrame with ``'2.5 %'``-style columns.

    Parameters
    ----------
    coef : array-like
        Estimates, shape (d,).
    se : array-like
        Standard errors, shape (d,).
    index : sequence
        Row labels (e.g. coefficient names).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    pandas.DataFrame
        Lower and upper bounds, one row per coefficient.
    """
    lo_name, hi_name = _level_names(level)
    z = stats.norm.ppf(0.5 + level / 2.0)
    coef, se = np.asarray(coef, float), np.asarray(se, float)
    return pd.DataFrame({lo_name: coef - z * se, hi_name: coef + z * se}, index=pd.Index(index))


def coef_table(coef: np.ndarray, se: np.ndarray, index: Sequence, level: float = 0.95) -> pd.DataFrame:
    """DoubleML-style table: ``coef, std err, z, P>|z|`` (two-sided normal) and the CI columns.

    Parameters
    ----------
    coef : array-like
        Estimates, shape (d,).
    se : array-like
        Standard errors, shape (d,).
    index : sequence
        Row labels (e.g. coefficient names).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per coefficient.
    """
    coef, se = np.asarray(coef, float).ravel(), np.asarray(se, float).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = coef / se
    p = 2.0 * stats.norm.sf(np.abs(z))
    table = pd.DataFrame({"coef": coef, "std err": se, "z": z, "P>|z|": p}, index=pd.Index(index))
    return pd.concat([table, confint_frame(coef, se, index, level)], axis=1)


def format_table(title: str, header: dict[str, object], table: pd.DataFrame) -> str:
    """A readable text block: a title, ``key: value`` lines, then the table.

    Parameters
    ----------
    title : str
        First line.
    header : dict
        Key facts, one ``key: value`` line each.
    table : pandas.DataFrame
        The table (4 significant digits).

    Returns
    -------
    str
        The text block.
    """
    width = max(60, len(title) + 4)
    lines = ["=" * width, title, "=" * width]
    lines += [f"{k}: {v}" for k, v in header.items()]
    lines += ["-" * width, table.to_string(float_format=lambda v: f"{v:.4g}"), "=" * width]
    return "\n".join(lines)


class InferenceMixin:
    """Adds ``summary_frame``, ``summary`` and ``confint`` to a fitted estimator.

    Subclasses provide ``coef_`` (d,), ``vcov_`` (d, d), ``coef_names_`` and
    ``_summary_header()`` (a dict of key facts for the text summary).
    """

    coef_: np.ndarray
    vcov_: np.ndarray
    coef_names_: list[str]

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first.")

    @property
    def se_(self) -> np.ndarray:
        """Standard errors, the square roots of the diagonal of ``vcov_``."""
        self._check_fitted()
        return np.sqrt(np.diag(self.vcov_))

    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Table with columns ``coef, std err, z, P>|z|`` and the CI bounds.

        Parameters
        ----------
        level : float
            Confidence level in (0, 1).

        Returns
        -------
        pandas.DataFrame
            One row per coefficient.
        """
        self._check_fitted()
        return coef_table(self.coef_, self.se_, self.coef_names_, level)

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Pointwise normal confidence intervals.

        Parameters
        ----------
        level : float
            Confidence level in (0, 1).

        Returns
        -------
        pandas.DataFrame
            Lower and upper bounds, one row per coefficient.
        """
        self._check_fitted()
        return confint_frame(self.coef_, self.se_, self.coef_names_, level)

    def _summary_header(self) -> dict[str, object]:
        return {}

    def summary(self, level: float = 0.95) -> str:
        """Readable text summary (also what ``print(est.summary())`` shows).

        Parameters
        ----------
        level : float
            Confidence level in (0, 1).

        Returns
        -------
        str
            Title, key facts and the :meth:`summary_frame` table.
        """
        return format_table(type(self).__name__, self._summary_header(), self.summary_frame(level))
