"""Adaptivity diagnostics for a fitted :class:`~hetmtl.encoders.DualEncoderMTL`.

What to use when: after a fit, :func:`adaptivity_report` says which tasks were integrated
(coefficients fused to the centre), how far each task sits from the centre, and whether a task's
S_r and C encodings are redundant (high correlation: raise ``lam_orth``);
:func:`negative_transfer` compares per-task validation MSE with a single-task fit and warns
when the multi-task fit is worse (raise the integration penalty, or report it).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hetmtl.data.multitask import MultiTaskData


class NegativeTransferWarning(UserWarning):
    """The multi-task fit predicts a task worse than its single-task fit on validation rows."""


def _max_abs_corr(S: np.ndarray, C: np.ndarray) -> float:
    if S.shape[1] == 0 or C.shape[1] == 0 or S.shape[0] < 3:
        return float("nan")
    Sc, Cc = S - S.mean(0), C - C.mean(0)
    sd_s, sd_c = np.sqrt((Sc**2).sum(0)), np.sqrt((Cc**2).sum(0))
    ok_s, ok_c = sd_s > 1e-12, sd_c > 1e-12
    if not ok_s.any() or not ok_c.any():
        return float("nan")
    corr = (Sc[:, ok_s] / sd_s[ok_s]).T @ (Cc[:, ok_c] / sd_c[ok_c])
    return float(np.abs(corr).max())


def adaptivity_report(model, data: MultiTaskData | None = None) -> pd.DataFrame:
    """Which tasks were integrated, and how far each task sits from the centre.

    Parameters
    ----------
    model : DualEncoderMTL or DualEncoderMTLCV
        A fitted model (a tuner's refitted ``best_estimator_`` is used).
    data : MultiTaskData, optional
        Rows on which to measure the redundancy of S_r and C.

    Returns
    -------
    pandas.DataFrame
        Per task: distance of alpha_r, beta_r and the linear path's gamma_r to their centres
        (``dist_alpha``, ``dist_beta``, ``dist_linear``), whether each is fused (distance below
        ``model.fuse_tol``), ``fused`` (beta_r and gamma_r both at their centres: the task is
        integrated) and, given
        ``data``, the largest absolute correlation between an S_r coordinate and a C coordinate
        on the task's rows (``max_abs_corr_SC``; high: raise ``lam_orth``).
    """
    from hetmtl._validation import check_is_fitted

    model = getattr(model, "best_estimator_", model)
    check_is_fitted(model, ("coef_", "tasks_"))
    c = model.coef_
    R = len(model.tasks_)

    def dist(v, centre):
        return np.linalg.norm((v - centre).numpy(), axis=1) if v.shape[1] else np.full(R, np.nan)

    dist_a, dist_b, dist_g = dist(c.alpha, c.alpha_center), dist(c.beta, c.beta_center), dist(c.gamma, c.gamma_center)
    tol = model.fuse_tol
    fused_b = dist_b <= tol if c.beta.shape[1] else np.ones(R, bool)
    fused_g = dist_g <= tol if c.gamma.shape[1] else np.ones(R, bool)
    out = pd.DataFrame({
        "dist_alpha": dist_a,
        "dist_beta": dist_b,
        "dist_linear": dist_g,
        "fused_alpha": dist_a <= tol if c.alpha.shape[1] and model.center_alpha else np.zeros(R, bool),
        "fused_beta": dist_b <= tol if c.beta.shape[1] else np.zeros(R, bool),
        "fused_linear": dist_g <= tol if c.gamma.shape[1] else np.zeros(R, bool),
        # the task's shared-head and linear coefficients both at their centres (integrated)
        "fused": fused_b & fused_g & bool(c.beta.shape[1] or c.gamma.shape[1]),
    }, index=pd.Index(model.tasks_, name="task"))
    if data is not None:
        corr = {}
        for t in data:
            S, C = model.encodings(t.X, t.task)
            corr[t.task] = _max_abs_corr(S, C)
        out["max_abs_corr_SC"] = pd.Series(corr)
    return out


def negative_transfer(model, stl_model, validation: MultiTaskData, tolerance: float = 0.0, warn: bool = True) -> pd.DataFrame:
    """Compare per-task validation MSE of a multi-task fit with a single-task fit.

    Parameters
    ----------
    model : DualEncoderMTL
        The fitted multi-task model.
    stl_model : estimator
        A fitted single-task model (e.g. ``make_method("stl", ...)``).
    validation : MultiTaskData
        Validation rows.
    tolerance : float
        Relative excess of the multi-task MSE tolerated before flagging a task.
    warn : bool
        Emit a :class:`NegativeTransferWarning` naming the flagged tasks.

    Returns
    -------
    pandas.DataFrame
        Per task ``mtl_val_mse``, ``stl_val_mse``, their ``ratio`` and ``negative_transfer``.
    """
    mtl = model.score_tasks(validation).mse
    stl = stl_model.score_tasks(validation).mse
    out = pd.DataFrame({"mtl_val_mse": mtl, "stl_val_mse": stl})
    out["ratio"] = out.mtl_val_mse / out.stl_val_mse
    out["negative_transfer"] = out.ratio > 1.0 + tolerance
    if warn and out.negative_transfer.any():
        bad = out.index[out.negative_transfer].tolist()
        warnings.warn(f"negative transfer: multi-task validation MSE exceeds single-task MSE for task(s) {bad}; "
                      "consider a larger integration penalty or single-task fits for them", NegativeTransferWarning, stacklevel=2)
    return out
