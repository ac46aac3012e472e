"""Proximal maps and centre updates for the "coefficients near a centre" penalty.

What to use when:

- :func:`prox_to_center` — one proximal-gradient step's prox for K tasks at once
  (``backend="cpp"``: the C++ core, float64 numpy; ``backend="torch"``: the same map in torch,
  differentiable-free, any dtype). Both paths agree to rounding (tested).
- :func:`update_center` — the centre minimising ``sum_k w_k ||v_k - c||``: ``"median"``
  (geometric median for group-l2; coordinate-wise median for l1) or ``"mean"`` (fast).

The penalty is ``sum_k lam_k w_k ||v_k - c||`` with ``||.||`` the Euclidean norm
(``"group_l2"``, block soft-thresholding, can fuse a whole task to the centre) or the l1 norm
(``"l1"``, element-wise soft-thresholding).
"""
from __future__ import annotations

import numpy as np
import torch

from hetmtl import _core

PENALTIES = ("group_l2", "l1")
CENTERS = ("median", "mean")


def _check_penalty(penalty: str) -> None:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def _per_task(value, K: int, name: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (K,)) if np.ndim(value) == 0 else np.asarray(value, float)
    if arr.shape != (K,):
        raise ValueError(f"{name} must be a scalar or have one entry per task ({K}), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def prox_to_center_torch(Z: torch.Tensor, center: torch.Tensor, thresholds: torch.Tensor, penalty: str = "group_l2") -> torch.Tensor:
    """Torch path of :func:`prox_to_center` with per-task thresholds.

    Parameters
    ----------
    Z : torch.Tensor
        Points, shape (K, m).
    center : torch.Tensor
        Centre, shape (m,).
    thresholds : torch.Tensor
        Per-task thresholds ``t_k``, shape (K,).
    penalty : {"group_l2", "l1"}
        Norm of the penalty.

    Returns
    -------
    torch.Tensor
        The prox, shape (K, m).
    """
    _check_penalty(penalty)
    diff = Z - center.unsqueeze(0)
    t = thresholds.unsqueeze(1)
    if penalty == "group_l2":
        norm = diff.norm(dim=1, keepdim=True)
        shrink = torch.where(norm > t, 1.0 - t / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm))
        return center.unsqueeze(0) + shrink * diff
    return center.unsqueeze(0) + torch.sign(diff) * torch.clamp(diff.abs() - t, min=0.0)


def prox_to_center(Z, center, lam, step=1.0, weights=1.0, penalty: str = "group_l2", backend: str = "cpp"):
    """Row-wise prox of ``t_k ||v - center||`` at ``Z``, with ``t_k = step_k * lam_k * weights_k``.

    Parameters
    ----------
    Z : array-like or torch.Tensor
        Points, shape (K, m).
    center : array-like
        Centre, shape (m,).
    lam, step, weights : float or array-like
        Scalars or length-K vectors whose product is the threshold.
    penalty : {"group_l2", "l1"}
        Euclidean norm (block soft-thresholding) or l1 norm (element-wise soft-thresholding).
    backend : {"cpp", "torch"}
        C++ core (float64 numpy) or torch.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The prox, shape (K, m), of the input kind (numpy for ``"cpp"``, a tensor for ``"torch"``).
    """
    _check_penalty(penalty)
    if backend == "cpp":
        Z = np.ascontiguousarray(np.asarray(Z, dtype=float))
        K = Z.shape[0]
        return _core.prox_to_center(
            Z, np.asarray(center, float), _per_task(lam, K, "lam"), _per_task(step, K, "step"),
            _per_task(weights, K, "weights"), penalty,
        )
    if backend == "torch":
        Z = torch.as_tensor(Z)
        K = Z.shape[0]
        t = _per_task(lam, K, "lam") * _per_task(step, K, "step") * _per_task(weights, K, "weights")
        return prox_to_center_torch(Z, torch.as_tensor(center, dtype=Z.dtype), torch.as_tensor(t, dtype=Z.dtype), penalty)
    raise ValueError(f"backend must be 'cpp' or 'torch', got {backend!r}")


def update_center(V, weights=1.0, penalty: str = "group_l2", center: str = "median", max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Centre of the rows of ``V`` for the given penalty.

    Parameters
    ----------
    V : array-like
        Points, shape (K, m).
    weights : float or array-like
        Weights w_k (scalar or length K).
    penalty : {"group_l2", "l1"}
        Norm of the penalty.
    center : {"median", "mean"}
        ``"median"``: geometric median (group-l2) or coordinate-wise weighted median (l1), the
        exact minimiser of ``sum_k w_k ||v_k - c||``; ``"mean"``: the weighted mean.
    max_iter : int
        Iteration limit of the geometric median.
    tol : float
        Tolerance of the geometric median.

    Returns
    -------
    numpy.ndarray
        The centre, shape (m,).
    """
    _check_penalty(penalty)
    V = np.ascontiguousarray(np.asarray(V, dtype=float))
    w = _per_task(weights, V.shape[0], "weights")
    if center == "mean":
        return _core.weighted_mean(V, w)
    if center != "median":
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    if penalty == "l1":
        return _core.coordinate_median(V, w)
    c, _, _ = _core.geometric_median(V, w, int(max_iter), float(tol))
    return c
