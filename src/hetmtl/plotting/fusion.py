"""Plots for late fusion (:class:`hetmtl.latefusion.LateFusion`).

What to use when:

- :func:`forest_plot` — per-site DML intervals next to the fused intervals, the fused centre with
  its interval, and which sites were fused: the main figure of a late-fusion analysis;
- :func:`shrinkage_path` — fused estimates θ̃_k against the tuning constant C (and the CV curve
  when C was cross-validated): how strongly each site is pulled to the centre.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hetmtl._validation import check_bool, check_level
from hetmtl.exceptions import ParameterError
from hetmtl.inference import _level_names
from hetmtl.latefusion.table import CENTRE


def _coefs(lf, coefs: Sequence[str] | None) -> list[str]:
    lf._check_fitted()
    names = list(lf.coef_names_) if coefs is None else list(coefs)
    unknown = [c for c in names if c not in lf.coef_names_]
    if unknown:
        raise ParameterError(f"unknown coefficient(s) {unknown}; the fit has {lf.coef_names_}")
    return names


def forest_plot(lf, level: float = 0.95, coefs: Sequence[str] | None = None, figsize=None,
                joint: bool = False) -> Figure:
    """Forest plot of a late-fusion fit: per-site DML intervals beside the fused ones.

    Per-site DML CI (grey) beside the interval the fit reports (``lf.confint``: robust EB by
    default, around the estimate it belongs to; blue filled marker: site fused with the centre,
    orange open marker: not fused), the group or fused estimate as a small cross where it differs,
    and the centre with its interval as a band. One panel per coefficient; long site names get
    the margin they need.

    Parameters
    ----------
    lf : LateFusion
        A fitted :class:`~hetmtl.latefusion.LateFusion`.
    level : float
        Confidence level of the intervals.
    coefs : sequence of str, optional
        Coefficients to plot (default all).
    figsize : tuple of float, optional
        Figure size in inches (default from the number of sites and panels).
    joint : bool
        Draw the simultaneous intervals of ``lf.confint(joint=True)`` (ci="bootstrap" or
        "conditional") instead of the pointwise ones.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    names = _coefs(lf, coefs)
    level = check_level(level)
    joint = check_bool(joint, "joint")
    K = len(lf.sites_)
    table = lf.summary_frame(level)
    ci = lf.confint(level, joint=joint, random_state=0) if joint else lf.confint(level)
    lo, hi = _level_names(level)
    width = max(len(str(s)) for s in lf.sites_)
    fig = Figure(figsize=figsize or (4.2 * len(names) + 0.07 * width, 0.45 * K + 1.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    y = np.arange(K)[::-1].astype(float)
    for ax, name in zip(axes, names):
        t = table.xs(name, level="coef").loc[lf.sites_]
        c_site = ci.xs(name, level="coef").loc[lf.sites_]
        c = ci.loc[(CENTRE, name)]
        if np.isfinite(c[lo]):
            ax.axvspan(c[lo], c[hi], color="0.85", zorder=0, label=f"centre {100 * level:g}% CI")
        ax.axvline(lf.centre_[lf.coef_names_.index(name)], color="k", lw=1, ls="--", label="centre")
        ax.hlines(y + 0.15, t[f"dml {lo}"], t[f"dml {hi}"], color="0.5", lw=1.5)
        ax.plot(t["dml coef"], y + 0.15, "s", color="0.5", ms=4, label="site DML")
        fused = t["fused"].to_numpy(bool)
        colors = np.where(fused, "tab:blue", "tab:orange")
        est = c_site["estimate"].to_numpy()
        ax.hlines(y - 0.15, c_site[lo], c_site[hi], colors=colors, lw=2)
        ax.scatter(est[fused], (y - 0.15)[fused], color="tab:blue", zorder=3, s=22, label="fused")
        ax.scatter(est[~fused], (y - 0.15)[~fused], facecolors="white", edgecolors="tab:orange", zorder=3,
                   s=22, label="not fused")
        moved = ~np.isclose(est, t["coef"].to_numpy())
        if moved.any():
            ax.plot(t["coef"].to_numpy()[moved], (y - 0.15)[moved], "x", color="k", ms=5, label=f"{lf.penalty} estimate")
        ax.set_yticks(y)
        ax.set_yticklabels(lf.sites_)
        ax.set_title(name)
        ax.set_xlabel("estimate")
    axes[0].legend(loc="best", fontsize="small", frameon=False)
    method = {"robust_eb": "robust empirical Bayes", "bootstrap": "parametric bootstrap (approximate)",
              "conditional": "delta method, conditional"}[lf.ci]
    kind = "simultaneous" if joint else "site"
    fig.suptitle(f"Late fusion ({lf.penalty}, C = {lf.C_:.3g}); {kind} intervals: {method}", fontsize="medium")
    fig.tight_layout()
    return fig


def shrinkage_path(lf, C_grid: Sequence[float] | None = None, coefs: Sequence[str] | None = None,
                   figsize=None) -> Figure:
    """Shrinkage path: fused estimates θ̃_k against the tuning constant C.

    θ̃_k(C) for every site (lines; C = 0 is each site's own estimate, shown at the left edge),
    the centre θ̃_0(C) (dashed), the chosen C (vertical line) and, when C was cross-validated,
    the CV curve in an extra panel.

    Parameters
    ----------
    lf : LateFusion
        A fitted :class:`~hetmtl.latefusion.LateFusion`.
    C_grid : sequence of float, optional
        Values of C (default 60 geometric points from 0.02 to 50, plus the chosen C).
    coefs : sequence of str, optional
        Coefficients to plot (default all).
    figsize : tuple of float, optional
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not shown; save it with ``savefig``).
    """
    names = _coefs(lf, coefs)
    grid = np.asarray(C_grid if C_grid is not None else np.geomspace(0.02, 50.0, 60), float)
    grid = np.unique(np.concatenate([grid[grid > 0], [lf.C_] if 0 < lf.C_ < np.inf else []]))
    path = lf.path(grid)
    has_cv = getattr(lf, "cv_results_", None) is not None
    ncol = len(names) + int(has_cv)
    fig = Figure(figsize=figsize or (4.2 * ncol, 3.6))
    axes = fig.subplots(1, ncol, squeeze=False)[0]
    for j, (ax, name) in enumerate(zip(axes, names)):
        i = lf.coef_names_.index(name)
        for k, site in enumerate(lf.sites_):
            line, = ax.plot(grid, path["theta"][:, k, i], lw=1)
            ax.plot(grid[0], lf.dml_coef_[k, i], "o", color=line.get_color(), ms=3)
        ax.plot(grid, path["centre"][:, i], "k--", lw=1.5, label="centre")
        if 0 < lf.C_ < np.inf:
            ax.axvline(lf.C_, color="0.4", lw=1, ls=":", label=f"chosen C = {lf.C_:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("C")
        ax.set_ylabel(f"fused estimate ({name})")
        ax.set_title(name)
    axes[0].legend(loc="best", fontsize="small", frameon=False)
    if has_cv:
        ax = axes[-1]
        cv = lf.cv_results_
        pos = cv["C"] > 0
        ax.errorbar(cv["C"][pos], cv["cv_loss"][pos], yerr=cv["cv_se"][pos], fmt="o-", ms=3, lw=1, capsize=2)
        if (~pos).any():
            ax.axhline(cv["cv_loss"][~pos].iloc[0], color="0.5", ls=":", lw=1, label="C = 0 (no fusion)")
            ax.legend(fontsize="small", frameon=False)
        ax.set_xscale("log")
        ax.set_xlabel("C")
        ax.set_ylabel("CV held-out loss")
        ax.set_title("cross-validation")
    fig.tight_layout()
    return fig
