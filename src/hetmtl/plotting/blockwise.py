"""Plots of the block-wise (MTL-HMB) family.

- :func:`rmse_boxplot` — average test RMSE by method across the rows of a setting (paper Figure 5);
- :func:`latent_tsne` — t-SNE of the shared and task-specific representations of a fitted
  :class:`~hetmtl.blockwise.MTLHMB` (paper Figure 7).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: The paper's colours: orange STL, green HTL, blue MTL-HMB.
METHOD_COLORS = {"STL": "tab:orange", "HTL": "tab:green", "MTL-HMB": "tab:blue", "MBI": "tab:gray",
                 "Step1+STL": "tab:purple", "Step1+HPS": "tab:brown", "Naive+Step2": "tab:pink"}


def rmse_boxplot(results: pd.DataFrame, x: str = "value", method: str = "method", y: str = "rmse_avg",
                 methods: Sequence[str] | None = None, title: str | None = None, xlabel: str | None = None) -> Figure:
    """Grouped boxplots of ``y`` by ``x`` (setting value) and ``method`` (one row per replicate).

    Parameters
    ----------
    results : pandas.DataFrame
        One row per replicate and method.
    x : str
        Column of the setting value (the x axis).
    method : str
        Column of the method name.
    y : str
        Column of the metric.
    methods : sequence of str, optional
        Methods to show, in order (default all, in order of appearance).
    title, xlabel : str, optional
        Axis title and x label.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    missing = [c for c in (x, method, y) if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks column(s) {missing}")
    methods = list(methods) if methods is not None else list(pd.unique(results[method]))
    xs = list(pd.unique(results[x]))
    try:
        xs = sorted(xs, key=float)
    except (TypeError, ValueError):
        pass
    fig = Figure(figsize=(1.2 + 0.9 * len(xs) * max(1, len(methods)) / 2, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    handles = []
    for k, m in enumerate(methods):
        data = [results.loc[(results[x] == v) & (results[method] == m), y].to_numpy() for v in xs]
        pos = np.arange(len(xs)) + (k - (len(methods) - 1) / 2) * width
        bp = ax.boxplot([d if d.size else [np.nan] for d in data], positions=pos, widths=width * 0.9,
                        patch_artist=True, showfliers=True)
        color = METHOD_COLORS.get(m, f"C{k}")
        for box in bp["boxes"]:
            box.set_facecolor(color)
            box.set_alpha(0.7)
        handles.append(bp["boxes"][0])
    ax.set_xticks(np.arange(len(xs)))
    ax.set_xticklabels([str(v) for v in xs])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("average test RMSE")
    ax.legend(handles, methods, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def latent_tsne(estimator, data, rows: Sequence[np.ndarray] | None = None, perplexity: float = 30.0,
                random_state: int = 0, **tsne_kwargs) -> Figure:
    """t-SNE of the shared and task-specific representations of a fitted MTL-HMB model.

    phi_c(x_0) (shared, circles) and phi_p^t(x) (task-specific, crosses) per task.

    Parameters
    ----------
    estimator : MTLHMB
        A fitted :class:`~hetmtl.blockwise.MTLHMB`.
    data : BlockwiseData
        The data whose rows are embedded.
    rows : sequence of numpy.ndarray, optional
        Rows of each task to embed (default all).
    perplexity : float
        t-SNE perplexity (capped for small samples).
    random_state : int
        Seed of t-SNE.
    **tsne_kwargs
        Further arguments of :class:`sklearn.manifold.TSNE` (e.g. ``max_iter``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    from sklearn.manifold import TSNE

    blocks, labels = [], []
    for t, name in enumerate(data.task_names):
        r = np.arange(data.n_per_task[t]) if rows is None else np.asarray(rows[t])
        rep = estimator.transform(np.hstack([data.x0(t)[r], data.x_private(t)[r]]), t)
        for kind in ("shared", "specific"):
            blocks.append(rep[kind])
            labels += [(name, kind)] * len(r)
    Z = np.vstack(blocks)
    perplexity = min(perplexity, max(2.0, (Z.shape[0] - 1) / 3))
    emb = TSNE(n_components=2, perplexity=perplexity, random_state=random_state, init="pca",
               **tsne_kwargs).fit_transform(Z)
    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot()
    lab = np.array([f"{a}|{b}" for a, b in labels])
    for k, name in enumerate(data.task_names):
        for kind, marker in (("shared", "o"), ("specific", "x")):
            sel = lab == f"{name}|{kind}"
            ax.scatter(emb[sel, 0], emb[sel, 1], s=10, marker=marker, color=f"C{k}", alpha=0.7,
                       label=f"{name}, {kind}")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
