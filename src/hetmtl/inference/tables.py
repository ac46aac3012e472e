"""Inference tables shared by every estimator.

Use :func:`coef_table` to turn estimates and a covariance matrix into the DoubleML-style table
(``coef, std err, z, P>|z|, 2.5 %, 97.5 %``: z where the law is normal) and :func:`confint_frame` for intervals at any level.
Estimators gain ``summary_frame``, ``summary`` and ``confint`` by inheriting :class:`InferenceMixin`;
:func:`make_summary` builds the statsmodels :class:`~statsmodels.iolib.summary.Summary` object every
``summary()`` returns (``as_text``/``as_html``/``as_latex``; ``print`` and ``str`` give the text).
"""
from __future__ import annotations

import textwrap
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.iolib.summary import Summary
from statsmodels.iolib.table import SimpleTable

from hetmtl._validation import check_bool, check_is_fitted, check_level
from hetmtl.exceptions import ParameterError

TABLE_COLUMNS = ("coef", "std err", "z", "P>|z|")
#: Key facts longer than this go below the tables (wrapped), so the facts table stays narrow.
MAX_FACT_WIDTH = 70


def _level_names(level: float) -> tuple[str, str]:
    level = check_level(level)
    a = (1.0 - level) / 2.0
    fmt = lambda q: f"{100 * q:.10g} %"  # noqa: E731  (DoubleML/statsmodels style: '2.5 %')
    return fmt(a), fmt(1.0 - a)


def _as_index(index: Sequence) -> pd.Index:
    return index if isinstance(index, pd.Index) else pd.Index(index)


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
    return pd.DataFrame({lo_name: coef - z * se, hi_name: coef + z * se}, index=_as_index(index))


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
    table = pd.DataFrame({"coef": coef, "std err": se, "z": z, "P>|z|": p}, index=_as_index(index))
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


class EstimatorSummary(Summary):
    """A statsmodels :class:`~statsmodels.iolib.summary.Summary` (``as_text``, ``as_html``,
    ``as_latex``, ``as_csv``; ``str``/``print`` give the text) that also answers ``"x" in summary``
    on its text and keeps the tables as DataFrames in ``frames`` (title → DataFrame)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[str, pd.DataFrame] = {}

    def __contains__(self, text: object) -> bool:
        return str(text) in self.as_text()


def _cell(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.4g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def _frame_table(frame: pd.DataFrame, title: str | None) -> SimpleTable:
    """A SimpleTable of ``frame``; the index levels become the leading columns."""
    index = frame.index
    if not isinstance(index, pd.MultiIndex) and len(index) and all(isinstance(k, tuple) for k in index):
        index = pd.MultiIndex.from_tuples(list(index))
    # an index level named like a column (the coefficient level "coef" beside the "coef" column) is the term
    names = ["" if n is None else "term" if str(n) in frame.columns else str(n) for n in index.names]
    rows = []
    for key, row in zip(index, frame.itertuples(index=False)):
        keys = key if isinstance(key, tuple) else (key,)
        rows.append([_cell(k) for k in keys] + [_cell(v) for v in row])
    header = names + [str(c) for c in frame.columns]
    align = "l" * len(names) + "r" * frame.shape[1]
    fmt = {"data_aligns": align, "header_align": "r"}
    return SimpleTable(rows, headers=header, title=title or "", txt_fmt=fmt)


def make_summary(title: str, header: dict[str, object], tables: Sequence[tuple[str | None, pd.DataFrame]],
                 notes: Sequence[str] = ()) -> EstimatorSummary:
    """A statsmodels ``Summary``: a key-facts table under ``title``, then each (title, DataFrame).

    Parameters
    ----------
    title : str
        Title of the first table.
    header : dict
        Key facts, one ``key: value`` row each.
    tables : sequence of (str or None, DataFrame)
        The tables (4 significant digits).
    notes : sequence of str
        Lines printed after the tables.

    Returns
    -------
    EstimatorSummary
        The summary object (``str()`` gives the text).
    """
    out = EstimatorSummary()
    short = {k: _cell(v) for k, v in header.items() if len(_cell(v)) <= MAX_FACT_WIDTH}
    long_ = [f"{k}: {_cell(v)}" for k, v in header.items() if len(_cell(v)) > MAX_FACT_WIDTH]
    facts = [[f"{k}:", v] for k, v in short.items()] or [["", ""]]
    out.tables.append(SimpleTable(facts, title=title, txt_fmt={"data_aligns": "ll"}))
    for i, (name, frame) in enumerate(tables):
        out.tables.append(_frame_table(frame, name))
        out.frames[name or f"table {i}"] = frame
    lines = [w for text in [*long_, *notes] for w in textwrap.wrap(text, 100, subsequent_indent="  ")]
    if lines:
        out.add_extra_txt(lines)
    return out


class InferenceMixin:
    """Adds ``summary_frame``, ``summary`` and ``confint`` to a fitted estimator.

    Subclasses provide ``coef_`` (d,), ``vcov_`` (d, d), ``coef_names_`` and
    ``_summary_header()`` (a dict of key facts for the text summary).
    """

    coef_: np.ndarray
    vcov_: np.ndarray
    coef_names_: list[str]

    def _check_fitted(self) -> None:
        check_is_fitted(self, "coef_")

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

    def confint(self, level: float = 0.95, joint: bool = False, n_boot: int = 1000,
                random_state: Any = None) -> pd.DataFrame:
        """Normal confidence intervals: pointwise, or simultaneous over every coefficient.

        Parameters
        ----------
        level : float
            Confidence level in (0, 1).
        joint : bool
            False: pointwise Wald intervals. True: simultaneous intervals (all coefficients covered
            together with probability ``level``), estimate ± c·se with the sup-t critical value c
            of a multiplier bootstrap of the studentised scores (as DoubleML's
            ``confint(joint=True)``; see the estimator's notes).
        n_boot : int
            Bootstrap replications for ``joint=True`` (at least 100).
        random_state : None, int or numpy Generator
            Source of the bootstrap multipliers (None: fresh randomness).

        Returns
        -------
        pandas.DataFrame
            Lower and upper bounds, one row per coefficient.
        """
        self._check_fitted()
        level = check_level(level)
        if check_bool(joint, "joint"):
            return self._joint_confint(level, n_boot, random_state)
        return confint_frame(self.coef_, self.se_, self.coef_names_, level)

    def _joint_confint(self, level: float, n_boot: Any, random_state: Any) -> pd.DataFrame:
        raise ParameterError(f"{type(self).__name__} has no joint intervals (joint=True)")

    def _summary_header(self) -> dict[str, object]:
        return {}

    def _summary_notes(self) -> list[str]:
        return ["z and P>|z| from the normal law."]

    def summary(self, level: float = 0.95) -> EstimatorSummary:
        """Summary: key facts and the coefficient table (``print(est.summary())`` shows it).

        Parameters
        ----------
        level : float
            Confidence level in (0, 1).

        Returns
        -------
        EstimatorSummary
            A statsmodels ``Summary`` (``as_text``, ``as_html``, ``as_latex``); the table is also
            :meth:`summary_frame`.
        """
        frame = self.summary_frame(level)
        return make_summary(type(self).__name__, self._summary_header(), [("Coefficients", frame)],
                            self._summary_notes())
