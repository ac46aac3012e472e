"""Plots for the dual-encoder family (matplotlib; every function returns the Figure).

- :func:`plot_adaptivity` — distance of each task's coefficients to the centre (fused tasks marked);
- :func:`plot_method_comparison` — per-method RMSE distribution from a comparison table;
- :func:`plot_training_history` — training and summed validation MSE per epoch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_adaptivity(report: pd.DataFrame) -> Figure:
    """Bar chart of each task's coefficient distance to the centre; fused tasks are annotated.

    Parameters
    ----------
    report : pandas.DataFrame
        Output of :func:`~hetmtl.encoders.adaptivity_report` (columns ``dist_alpha``,
        ``dist_beta``, ``fused_alpha``, ``fused_beta``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    x = np.arange(len(report))
    width = 0.38
    for i, (col, fused) in enumerate([("dist_alpha", "fused_alpha"), ("dist_beta", "fused_beta")]):
        vals = report[col].fillna(0.0).to_numpy()
        bars = ax.bar(x + (i - 0.5) * width, vals, width, label=col.replace("dist_", "||coef - centre||, "))
        for b, f in zip(bars, report[fused].to_numpy()):
            if f:
                ax.annotate("fused", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [str(t) for t in report.index])
    ax.set_ylabel("distance to centre")
    ax.set_title("Adaptive integration: coefficient distance to centre")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_method_comparison(results: pd.DataFrame, value: str = "rmse", order: list | None = None) -> Figure:
    """Box plot of the task-averaged metric per method over splits or replicates.

    Parameters
    ----------
    results : pandas.DataFrame
        Columns ``method``, ``task``, ``value`` and optionally ``split`` or ``rep`` (e.g. from
        :func:`~hetmtl.encoders.paired_comparison`).
    value : str
        The metric column.
    order : list of str, optional
        Order of the methods (default: by mean, best first).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    rep_col = "split" if "split" in results.columns else ("rep" if "rep" in results.columns else None)
    keys = ["method"] + ([rep_col] if rep_col else [])
    per = results.groupby(keys)[value].mean().reset_index()
    order = order or per.groupby("method")[value].mean().sort_values().index.tolist()
    fig = Figure(figsize=(max(5, 0.8 * len(order)), 3.5))
    ax = fig.add_subplot()
    ax.boxplot([per.loc[per.method == m, value].to_numpy() for m in order])
    ax.set_xticks(np.arange(1, len(order) + 1), order, rotation=30, ha="right")
    ax.set_ylabel(f"task-averaged {value}")
    fig.tight_layout()
    return fig


def plot_training_history(model) -> Figure:
    """Training MSE (pooled) and summed validation MSE per epoch; the kept epoch is marked.

    Parameters
    ----------
    model : DualEncoderMTL
        A fitted :class:`~hetmtl.encoders.DualEncoderMTL`.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    from hetmtl._validation import check_is_fitted

    model = getattr(model, "best_estimator_", model)  # a DualEncoderMTLCV: its refitted model
    check_is_fitted(model, ("history_",))
    h = model.history_
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    x = np.arange(len(h))  # staged training: stage 2 follows stage 1 on one axis
    ax.plot(x, h.train_mse, label="train MSE (pooled, standardised y)")
    ax.plot(x, h.val_mse_sum, label="validation MSE summed over tasks")
    if np.ndim(model.best_epoch_) == 0:
        ax.axvline(int(model.best_epoch_), color="grey", ls="--", lw=1, label="kept epoch (stage 1)")
    if "stage" in h:
        n1 = int((h.stage == 1).sum())
        ax.axvline(n1 - 0.5, color="black", ls=":", lw=1, label="stage 2: task encoders")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
