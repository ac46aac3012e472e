"""Figures of comparison studies (inputs: the tables of :mod:`hetmtl.studies.report`).

What to use when:

- spread of a metric over replicates per method and setting (the source papers' RMSE boxplots):
  :func:`metric_boxplot` on :func:`~hetmtl.studies.report.replicate_frame`;
- a metric's mean ± 1.96 SE against a numeric grid parameter (MSE vs η): :func:`metric_curve`;
- CI coverage against the nominal level with its Monte Carlo band: :func:`coverage_plot`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hetmtl.exceptions import InputError


def _methods(df: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(df["method"].astype(str)))
    return [m for m in methods if m in present] if methods else present


def metric_boxplot(rep: pd.DataFrame, metric: str, methods: Sequence[str] | None = None, ncols: int = 4) -> Figure:
    """One panel per setting, one box per method (values: one per replicate).

    Parameters
    ----------
    rep : pandas.DataFrame
        Replicate table (:func:`~hetmtl.studies.replicate_frame`).
    metric : str
        The metric column.
    methods : sequence of str, optional
        Methods to show, in order (default all).
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    if metric not in rep.columns:
        raise InputError(f"metric {metric!r} not in the replicate table (columns: {list(rep.columns)})")
    methods = _methods(rep, methods)
    settings = list(dict.fromkeys(rep.sort_values("setting_index")["setting"]))
    ncols = max(1, min(ncols, len(settings)))
    nrows = int(np.ceil(len(settings) / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, s in zip(axes, settings):
        block = rep[rep["setting"] == s]
        data = [block.loc[block["method"] == m, metric].dropna().to_numpy() for m in methods]
        ax.boxplot(data, tick_labels=methods)
        ax.set_title(s, fontsize=9)
        ax.set_ylabel(f"{metric} per replicate")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    for ax in axes[len(settings):]:
        ax.set_visible(False)
    return fig


def _x_values(summary: pd.DataFrame, x: str) -> pd.Series:
    vals = pd.to_numeric(summary[x], errors="coerce")
    if vals.isna().any():
        raise InputError(f"grid parameter {x!r} is not numeric; choose a numeric x")
    return vals


def metric_curve(summary: pd.DataFrame, x: str, metric: str, methods: Sequence[str] | None = None) -> Figure:
    """Mean ± 1.96 SE of a metric against a numeric grid parameter, one line per method.

    One line per method and per combination of the other grid parameters, if any vary.

    Parameters
    ----------
    summary : pandas.DataFrame
        Summary table (:func:`~hetmtl.studies.summary_table`).
    x : str
        The numeric grid parameter.
    metric : str
        The metric.
    methods : sequence of str, optional
        Methods to show, in order (default all).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    s = summary[summary["metric"] == metric].copy()
    if s.empty:
        raise InputError(f"metric {metric!r} not in the summary table")
    s["_x"] = _x_values(s, x)
    others = [c for c in s.columns if c not in {"setting_index", "setting", "method", "metric", "n_reps", "mean", "sd",
                                                 "se", "_x", x}]
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for m in _methods(s, methods):
        bm = s[s["method"] == m]
        groups = bm.groupby(others, sort=True) if others else [((), bm)]
        for key, g in groups:
            g = g.sort_values("_x")
            label = m if not others else f"{m} ({', '.join(f'{k}={v}' for k, v in zip(others, np.atleast_1d(key)))})"
            ax.errorbar(g["_x"], g["mean"], yerr=1.96 * g["se"].fillna(0.0), marker="o", capsize=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (mean ± 1.96 SE)" if s["se"].notna().any() else metric)
    ax.legend(fontsize=8)
    return fig


def coverage_plot(summary: pd.DataFrame, x: str, methods: Sequence[str] | None = None, nominal: float = 0.95) -> Figure:
    """Mean CI coverage against a grid parameter per method, with the nominal level.

    The ±1.96 Monte Carlo band of a coverage estimate is drawn for the smallest number of
    replicates in the table.

    Parameters
    ----------
    summary : pandas.DataFrame
        Summary table (:func:`~hetmtl.studies.summary_table`) with a ``coverage`` metric.
    x : str
        The numeric grid parameter.
    methods : sequence of str, optional
        Methods to show, in order (default all).
    nominal : float
        Nominal coverage.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    s = summary[summary["metric"] == "coverage"].copy()
    if s.empty:
        raise InputError("the summary table has no 'coverage' metric")
    s["_x"] = _x_values(s, x)
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    xs = np.sort(s["_x"].unique())
    n = int(s["n_reps"].min())
    half = 1.96 * np.sqrt(nominal * (1 - nominal) / max(n, 1))
    ax.axhline(nominal, color="k", lw=1, ls="--", label=f"nominal {nominal:g}")
    ax.fill_between(xs, nominal - half, nominal + half, color="0.85", label=f"MC band (R={n})")
    for m in _methods(s, methods):
        g = s[s["method"] == m].groupby("_x")["mean"].mean()
        ax.plot(g.index, g.to_numpy(), marker="o", label=m)
    ax.set_xlabel(x)
    ax.set_ylabel("CI coverage")
    ax.set_ylim(max(0.0, min(ax.get_ylim()[0], nominal - 2 * half)), 1.0)
    ax.legend(fontsize=8)
    return fig
