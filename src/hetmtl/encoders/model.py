"""Torch pieces of the dual-encoder model: batched MLP encoders, padded task tensors, losses and
the coefficient (proximal-gradient) and centre steps. The user-facing estimator is
:class:`hetmtl.encoders.DualEncoderMTL`.

Every task's encoder is one slice of a stacked weight tensor, so all R task-specific encoders
(and the shared one) run as single batched matrix products; there are no per-sample loops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from hetmtl import _core
from hetmtl.encoders.proximal import prox_to_center_torch, update_center

DTYPE = torch.float64


class BatchedMLP(torch.nn.Module):
    """``n_models`` ReLU MLPs ``d_in -> hidden... -> d_out`` with stacked weights.

    ``forward(X)`` takes ``(n_models, n, d_in)`` and returns ``(n_models, n, d_out)``. The output
    layer is linear, optionally followed by an affine-free normalisation over the latent
    coordinates (``"rms"``: divide by the root mean square; ``"layer"``: LayerNorm without
    affine parameters), which fixes the scale between encodings and coefficients.
    """

    def __init__(self, n_models: int, d_in: int, hidden: tuple[int, ...], d_out: int, normalize: str | None,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.normalize = normalize
        dims = [d_in, *hidden, d_out]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(a)  # PyTorch's default nn.Linear initialisation range
            w = (torch.rand(n_models, a, b, generator=generator, dtype=DTYPE) * 2 - 1) * bound
            c = (torch.rand(n_models, 1, b, generator=generator, dtype=DTYPE) * 2 - 1) * bound
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(c))

    def _normalise(self, h: torch.Tensor) -> torch.Tensor:
        if self.normalize == "rms":
            return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-8)
        if self.normalize == "layer":
            h = h - h.mean(-1, keepdim=True)
            return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-8)
        return h

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = X
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return self._normalise(h)

    def forward_one(self, k: int, X: torch.Tensor) -> torch.Tensor:
        """Model ``k`` on ``X`` of shape ``(n, d_in)``."""
        h = X
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.addmm(b[k], h, w[k])
            if i < last:
                h = torch.relu(h)
        return self._normalise(h)

    def stacked_state(self) -> dict[str, torch.Tensor]:
        return {f"w{i}": w for i, w in enumerate(self.weights)} | {f"b{i}": b for i, b in enumerate(self.biases)}

    def load_stacked(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, w in enumerate(self.weights):
                w.copy_(state[f"w{i}"])
            for i, b in enumerate(self.biases):
                b.copy_(state[f"b{i}"])

    def append_models(self, other: "BatchedMLP") -> None:
        """Concatenate another stack's models (same architecture) after this stack's."""
        with torch.no_grad():
            for i in range(len(self.weights)):
                self.weights[i] = torch.nn.Parameter(torch.cat([self.weights[i], other.weights[i]]))
                self.biases[i] = torch.nn.Parameter(torch.cat([self.biases[i], other.biases[i]]))


@dataclass
class Padded:
    """Tasks stacked with zero padding: X (R, n_max, d), y (R, n_max), mask (R, n_max), sizes n_r."""

    X: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    n: torch.Tensor

    @classmethod
    def from_lists(cls, Xs: list[np.ndarray], ys: list[np.ndarray]) -> "Padded":
        R, n_max, d = len(Xs), max(x.shape[0] for x in Xs), Xs[0].shape[1]
        X = torch.zeros(R, n_max, d, dtype=DTYPE)
        y = torch.zeros(R, n_max, dtype=DTYPE)
        mask = torch.zeros(R, n_max, dtype=DTYPE)
        for r, (Xr, yr) in enumerate(zip(Xs, ys)):
            X[r, : len(yr)] = torch.from_numpy(np.asarray(Xr, float))
            y[r, : len(yr)] = torch.from_numpy(np.asarray(yr, float))
            mask[r, : len(yr)] = 1.0
        return cls(X, y, mask, mask.sum(1))


@dataclass
class Coefficients:
    """Per-task heads and centres: alpha (R, q), beta (R, p), b (R,), centres (q,), (p,), and the
    linear path's gamma (R, d_lin) with its centre (d_lin,) (``d_lin = 0`` without it)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    b: torch.Tensor
    alpha_center: torch.Tensor
    beta_center: torch.Tensor
    gamma: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=DTYPE))
    gamma_center: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=DTYPE))

    def __post_init__(self) -> None:
        if self.gamma.shape[0] != self.b.shape[0] and self.gamma.numel() == 0:  # no linear path
            self.gamma = self.b.new_zeros(self.b.shape[0], 0)

    def state(self) -> dict[str, torch.Tensor]:
        return {"alpha": self.alpha, "beta": self.beta, "b": self.b, "gamma": self.gamma}


def encode(shared: BatchedMLP | None, specific: BatchedMLP | None, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encodings of stacked inputs ``X`` (R, n, d): ``S`` (R, n, q) and ``C`` (R, n, p)."""
    R, n, _ = X.shape
    S = specific(X) if specific is not None else X.new_zeros(R, n, 0)
    C = shared(X.reshape(1, R * n, -1)).reshape(R, n, -1) if shared is not None else X.new_zeros(R, n, 0)
    return S, C


def linear_part(X: torch.Tensor, linear: bool) -> torch.Tensor:
    """The linear path's inputs: the (standardised) covariates themselves, or an empty block."""
    return X if linear else X[..., :0]


def predict_stacked(S: torch.Tensor, C: torch.Tensor, coef: Coefficients, L: torch.Tensor | None = None) -> torch.Tensor:
    out = torch.einsum("rnq,rq->rn", S, coef.alpha) + torch.einsum("rnp,rp->rn", C, coef.beta) + coef.b[:, None]
    if L is not None and L.shape[-1]:
        out = out + torch.einsum("rnd,rd->rn", L, coef.gamma)
    return out


def orthogonality(S: torch.Tensor, C: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-task ``||S_bar' C_bar||_F^2`` with column-centred, Frobenius-normalised encodings."""
    if S.shape[-1] == 0 or C.shape[-1] == 0:
        return S.new_zeros(S.shape[0])
    m = mask.unsqueeze(-1)
    n = mask.sum(1).clamp(min=1.0).view(-1, 1, 1)

    def bar(E: torch.Tensor) -> torch.Tensor:
        E = (E - (E * m).sum(1, keepdim=True) / n) * m
        return E / torch.sqrt(E.pow(2).sum((1, 2), keepdim=True) + 1e-12)

    return torch.einsum("rnq,rnp->rqp", bar(S), bar(C)).pow(2).sum((1, 2))


def design(S: torch.Tensor, C: torch.Tensor, mask: torch.Tensor, L: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task design ``[1, S_r, C_r, L_r]`` with padding rows zeroed: (R, n, 1 + q + p + d_lin)."""
    parts = [torch.ones_like(mask).unsqueeze(-1), S, C] + ([L] if L is not None else [])
    return torch.cat(parts, dim=-1) * mask.unsqueeze(-1)


def ridge_init(S: torch.Tensor, C: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, ridge: float = 1e-2,
               L: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task ridge fit of y on [1, S, C, L] (intercept unpenalised): theta (R, 1 + q + p + d_lin)."""
    Phi = design(S, C, mask, L)
    G = Phi.transpose(1, 2) @ Phi
    pen = torch.full((G.shape[-1],), ridge, dtype=G.dtype)
    pen[0] = 1e-10
    G = G + torch.diag(pen) * mask.sum(1).view(-1, 1, 1)
    return torch.linalg.solve(G, (Phi.transpose(1, 2) @ (y * mask).unsqueeze(-1))).squeeze(-1)


def coefficient_step(S, C, y, mask, coef: Coefficients, *, n_total: float, lam_alpha: torch.Tensor, lam_beta: torch.Tensor,
                     penalty: str, n_steps: int, backend: str, update_centers: bool, center: str,
                     center_alpha: bool, center_weights: tuple[np.ndarray, ...],
                     center_step: str = "joint", L: torch.Tensor | None = None,
                     lam_gamma: torch.Tensor | None = None) -> Coefficients:
    """``n_steps`` proximal-gradient iterations on the heads with encodings fixed, then the exact
    centre update (``center``: geometric/coordinate median or mean; ``center_weights`` are the
    (alpha, beta[, gamma]) task weights).

    Loss (1/N) sum_r ||y_r - Phi_r theta_r||^2 with theta_r = (b_r, alpha_r, beta_r, gamma_r) and
    Phi_r = [1, S_r, C_r, L_r] (``L``: the linear path's covariates, penalised towards their own
    centre with ``lam_gamma``, default ``lam_beta``); Lipschitz constants
    l_r = (2/N) lambda_max(Phi_r' Phi_r) (largest eigenvalues from the C++ core).

    - ``center_step="block"`` (the dual-encoder paper's Algorithm 1, literally): prox-gradient on theta_r with step
      1/l_r and the centres fixed; the centres move only in the exact centre update.
    - ``center_step="joint"`` (default): write theta_r = c + delta_r and take prox-gradient steps
      on (c, delta_1..R) together (block-diagonal majoriser: step 1/(2 l_r) for delta_r, 1/(2 sum l_r)
      for c; the prox shrinks delta_r towards 0). A cluster of tasks fused to the centre can then
      move as a whole; with "block" it cannot (block-coordinate descent stalls there), so "block"
      may stop short of the optimum of this convex sub-problem (see tests/test_encoders_coef.py).
    With frozen centres (``update_centers=False``) both reduce to the per-task prox step.
    """
    if center_step not in ("joint", "block"):
        raise ValueError(f"center_step must be 'joint' or 'block', got {center_step!r}")
    if L is None:
        L = S.new_zeros(*S.shape[:2], 0)
    if lam_gamma is None:
        lam_gamma = lam_beta
    q, p, dl = S.shape[-1], C.shape[-1], L.shape[-1]
    Phi = design(S, C, mask, L)
    G = Phi.transpose(1, 2) @ Phi
    h = (Phi.transpose(1, 2) @ (y * mask).unsqueeze(-1)).squeeze(-1)
    m = G.shape[-1]
    centred_a = bool(q and center_alpha)
    # blocks: (slice in theta, lam per task, centre, is penalised towards a centre)
    blocks: list[tuple[slice, torch.Tensor, torch.Tensor, bool]] = [
              (slice(1, 1 + q), lam_alpha, coef.alpha_center, centred_a),
              (slice(1 + q, 1 + q + p), lam_beta, coef.beta_center, bool(p)),
              (slice(1 + q + p, m), lam_gamma, coef.gamma_center, bool(dl))]
    weights = tuple(center_weights) + (center_weights[1],) * (3 - len(center_weights))
    theta0 = torch.cat([coef.b[:, None], coef.alpha, coef.beta, coef.gamma], dim=1)
    if backend == "cpp":
        groups = np.full(m, -1, dtype=np.int32)
        for g, (sl, _, _, on) in enumerate(blocks):
            if on:
                groups[sl] = g
        lam = np.column_stack([blk[1].numpy() for blk in blocks])
        c0 = np.zeros(m)
        for sl, _, cen, on in blocks:
            if on:
                c0[sl] = cen.numpy()
        theta_np, c, _, _ = _core.prox_grad_center_quadratic(
            np.ascontiguousarray(G.reshape(-1, m).numpy()), np.ascontiguousarray(h.numpy()),
            np.ascontiguousarray(theta0.numpy()), c0, groups, np.ascontiguousarray(lam), 1.0 / n_total, penalty,
            update_centers and center_step == "joint", "none", int(n_steps), 0.0)
        theta = torch.from_numpy(theta_np)
        centres = [torch.from_numpy(c[sl].copy()) if on else cen for sl, _, cen, on in blocks]
    else:
        theta, centres = _coefficient_step_torch(G, h, theta0, blocks, n_total, penalty, n_steps,
                                                 update_centers and center_step == "joint")
    if update_centers:  # exact centre step, weights as given (the blocks may differ)
        for g, (sl, _, _, on) in enumerate(blocks):
            if on:
                centres[g] = torch.from_numpy(update_center(theta[:, sl].numpy(), weights[g], penalty, center))
    return Coefficients(theta[:, 1 : 1 + q].contiguous(), theta[:, 1 + q : 1 + q + p].contiguous(), theta[:, 0].contiguous(),
                        centres[0], centres[1], theta[:, 1 + q + p :].contiguous(), centres[2])


def _coefficient_step_torch(G, h, theta, blocks, n_total, penalty, n_steps, joint):
    """The torch path of :func:`coefficient_step` (same iterations as the C++ core)."""
    m = G.shape[-1]
    lip = 2.0 / n_total * torch.from_numpy(_core.batched_max_eigenvalue(np.ascontiguousarray(G.reshape(-1, m).numpy()), m))
    lip = lip.clamp(min=1e-12)

    def grad_of(th: torch.Tensor) -> torch.Tensor:
        return 2.0 / n_total * ((G @ th.unsqueeze(-1)).squeeze(-1) - h)

    # a block whose lambda is 0 for every task is unpenalised: its centre plays no role, and
    # moving it jointly would only couple otherwise independent tasks
    moving = [on and bool((lam > 0).any()) for _, lam, _, on in blocks]
    centres = [cen for _, _, cen, _ in blocks]
    if joint and any(moving):
        cmask = torch.zeros(m, dtype=theta.dtype)
        c = torch.zeros(m, dtype=theta.dtype)
        for (sl, _, cen, _), mv in zip(blocks, moving):
            if mv:
                cmask[sl] = 1.0
                c[sl] = cen
        delta = theta - c
        eta_d, eta_c = 0.5 / lip, 0.5 / lip.sum()
        for _ in range(n_steps):
            grad = grad_of(c + delta)
            c = c - eta_c * grad.sum(0) * cmask
            z = delta - eta_d[:, None] * grad
            for sl, lam, _, on in blocks:
                if on and sl.stop > sl.start:
                    z[:, sl] = prox_to_center_torch(z[:, sl], z.new_zeros(sl.stop - sl.start), eta_d * lam, penalty)
            delta = z
        theta = c + delta
        centres = [c[sl].clone() if mv else cen for (sl, _, cen, _), mv in zip(blocks, moving)]
    else:
        eta = 1.0 / lip
        for _ in range(n_steps):
            z = theta - eta[:, None] * grad_of(theta)
            for sl, lam, cen, on in blocks:
                if on and sl.stop > sl.start:
                    z[:, sl] = prox_to_center_torch(z[:, sl], cen, eta * lam, penalty)
            theta = z
    return theta, centres
