"""Stacked (configuration-batched) networks of the MTL-HMB family.

- :class:`HBINet` — Step 1, heterogeneous block-wise imputation for one private source (Eq. 1):
  shared encoder E_c, encoders E_t / E_-t, decoder D, predictor G.
- :class:`Step2Net` — Step 2, heterogeneous MTL (Eqs. 3-8): shared encoder on x_0, task encoders on
  the full (observed + imputed) features, shared and task-specific pathways, and the loss
  L_integ + gamma R_orth + delta R_imp + kappa R_dr. With task inputs restricted to the task's own
  block and R_imp off it is the HTL baseline.
- :class:`HPSNet` — hard parameter sharing: shared trunk, one linear head per task; with one task
  it is the single-task MLP (STL).

Every parameter has a leading configuration axis G; weights are stored ``(in, out)``. Every
``loss``/``val_loss`` returns one value per configuration.
"""
from __future__ import annotations

from typing import Sequence

import torch

from hetmtl.blockwise._engine import ParamStack, Params, config_generator

relu = torch.relu


def _wmse(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-task weighted mean squared error: pred (G, T, B), y and w (T, B) -> (G, T)."""
    return ((pred - y) ** 2 * w).sum(-1) / w.sum(-1)


def _active(cfg: dict, layer: int, ndim: int) -> torch.Tensor | None:
    """Mask of configurations that use hidden layer ``layer`` (None when all of them do)."""
    act = cfg["depth"] > layer
    if bool(act.all()):
        return None
    return act.view(-1, *([1] * (ndim - 1)))


def _keep(act: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if act is None else torch.where(act, new, old)


def _prefix(cfg: dict, layer: int) -> int | None:
    """Number k of configurations using hidden layer ``layer`` when they are the first k of the
    group (the engine orders a group by decreasing depth), else None."""
    act = cfg["depth"] > layer
    k = int(act.sum())
    return k if bool(act[:k].all()) else None


def _rows(p: torch.Tensor, s: slice) -> torch.Tensor:
    """Rows ``s`` (all, or the first k) of a stacked parameter; a parameter that already holds just
    those rows (a training leaf, see :meth:`Step2Net.param_rows`) is used as it is, so autograd does
    not scatter its gradient into a zero-filled full-size buffer."""
    return p if s.stop is None or p.shape[0] == s.stop else p[s]


def _layer_params(params: Params, layer: int):
    """Accessors ``W(name, rows)`` and ``b(name, rows)`` of hidden layer ``layer``'s parameters."""
    return (lambda name, s: _rows(params[f"{name}{layer}.W"], s),
            lambda name, s: _rows(params[f"{name}{layer}.b"], s))


def _prefix_rows(cfg: dict, depth: int, names: Sequence[str]) -> dict[str, int]:
    """Rows of each hidden-layer parameter ``<name><l>.W/.b`` (l >= 1) that configurations use."""
    G = int(cfg["depth"].shape[0])
    rows = {}
    for l in range(1, depth):
        k = _prefix(cfg, l)
        for name in names:
            for suffix in (".W", ".b"):
                rows[f"{name}{l}{suffix}"] = G if k is None else k
    return rows


def _layer(k: int | None, cfg: dict, layer: int, ndim: int, old: torch.Tensor, fn) -> torch.Tensor:
    """Apply hidden layer ``fn(rows)`` only where configurations use it; others keep ``old``
    (an exact identity on post-ReLU activations). With a prefix of k users the layer is computed
    on those k configurations only; otherwise on all, masked."""
    G = old.shape[0]
    if k == G:
        return fn(slice(None))
    if k is not None:
        return old if k == 0 else torch.cat([fn(slice(0, k)), old[k:]], 0)
    return _keep(_active(cfg, layer, ndim), fn(slice(None)), old)


# ============================================================================ Step 1: HBI
class HBINet:
    """HBI for one private source. A group shares the depth (MLP convention of the authors:
    depth 1 = one linear layer; depth k = (k-1) x [Linear -> ReLU] + Linear); widths are padded.

    ``heterogeneous=False`` gives the naive imputation of ablation 3 (G(E_c(x_0)) fitted on the
    observing task only; no task-specific encoders, no reconstruction).
    """

    def __init__(self, p0: int, ps: int, depth: int, width: int, heterogeneous: bool = True,
                 orth_power: int = 1) -> None:
        self.p0, self.ps, self.depth, self.width = p0, ps, depth, width
        self.heterogeneous = heterogeneous
        self.orth_power = orth_power

    def _mlp_spec(self, name: str, w: int):
        """(name, [(in_true_segments, in_pad_segments, out_true, out_pad), ...]) of each MLP."""
        p0, W = self.p0, self.width
        if name in ("Ec", "Et", "Em"):
            ins, hid, out = ([p0], [p0]), (w, W), (w, W)
        elif name == "D":
            ins, hid, out = ([w, w], [W, W]), (p0, p0), (p0, p0)
        else:  # G
            ins, hid, out = ([w], [W]), (w, W), (self.ps, self.ps)
        layers = []
        cur = ins
        for k in range(self.depth - 1):
            layers.append((cur[0], cur[1], hid[0], hid[1]))
            cur = ([hid[0]], [hid[1]])
        layers.append((cur[0], cur[1], out[0], out[1]))
        return layers

    def modules(self) -> list[str]:
        return ["Ec", "Et", "Em", "D", "G"] if self.heterogeneous else ["Ec", "G"]

    def init(self, configs: list[dict], indices: list[int], seed: int, dtype) -> tuple[Params, dict]:
        stack = ParamStack(len(configs))
        for g, (c, i) in enumerate(zip(configs, indices)):
            gen = config_generator(seed, i)
            for m in self.modules():
                for k, (a, A, o, O) in enumerate(self._mlp_spec(m, int(c["width"]))):
                    stack.linear(f"{m}{k}", g, gen, a, A, o, O)
        cfg = {"lambda_orth": torch.tensor([float(c.get("lambda_orth", 0.0)) for c in configs], dtype=dtype)}
        return stack.done(dtype), cfg

    def mlp(self, params: Params, name: str, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.depth):
            x = torch.matmul(x, params[f"{name}{k}.W"]) + params[f"{name}{k}.b"]
            if k < self.depth - 1:
                x = relu(x)
        return x

    def impute(self, params: Params, x0: torch.Tensor) -> torch.Tensor:
        """G(E_c(x_0)) for every configuration: (G, n, p_s)."""
        return self.mlp(params, "G", self.mlp(params, "Ec", x0))

    def terms(self, params: Params, batch: dict) -> dict[str, torch.Tensor]:
        """Per-configuration loss terms on full batches ``x0t, xst`` (observing task) and ``x0m``
        (the other tasks pooled)."""
        x0t, xst = batch["x0t"], batch["xst"]
        if not self.heterogeneous:
            return {"pre": ((self.mlp(params, "G", self.mlp(params, "Ec", x0t)) - xst) ** 2).mean((-2, -1))}
        # E_c and D act on both row sets: one pass over the stacked rows (row-wise, the same values)
        x0m = batch["x0m"]
        nt = x0t.shape[0]
        x0 = torch.cat([x0t, x0m], 0)
        fc = self.mlp(params, "Ec", x0)
        fc_t, fc_m = fc[:, :nt], fc[:, nt:]
        f_t = self.mlp(params, "Et", x0t)
        f_m = self.mlp(params, "Em", x0m)
        rec = self.mlp(params, "D", torch.cat([fc, torch.cat([f_t, f_m], 1)], -1))
        o_t = (torch.matmul(fc_t.transpose(-1, -2), f_t) ** 2).sum((-2, -1))
        o_m = (torch.matmul(fc_m.transpose(-1, -2), f_m) ** 2).sum((-2, -1))
        if self.orth_power == 1:
            o_t, o_m = torch.sqrt(o_t + 1e-12), torch.sqrt(o_m + 1e-12)
        return {"pre": ((self.mlp(params, "G", fc_t) - xst) ** 2).mean((-2, -1)),
                "recon": ((rec[:, :nt] - x0t) ** 2).mean((-2, -1)) + ((rec[:, nt:] - x0m) ** 2).mean((-2, -1)),
                "orth": o_t + o_m}

    def loss(self, params: Params, cfg: dict, batch: dict) -> torch.Tensor:
        t = self.terms(params, batch)
        if not self.heterogeneous:
            return t["pre"]
        return t["pre"] + t["recon"] + cfg["lambda_orth"] * t["orth"]

    def val_loss(self, params: Params, cfg: dict, val: dict) -> torch.Tensor:
        return ((self.impute(params, val["x0t"]) - val["xst"]) ** 2).mean((-2, -1))


# ============================================================================ Step 2
class Step2Net:
    """Heterogeneous MTL network (paper Eqs. 3-8).

    Parameters: ``p0`` anchor width, ``P`` task-encoder input width (padded over tasks),
    ``imputed`` a (T, P) 0/1 tensor marking imputed input columns (R_imp), ``width``/``depth`` the
    group's padded sizes, ``dr_mode`` ``"per_task"`` (paper Eq. 8) or ``"sum_inside"`` (code).
    """

    def __init__(self, p0: int, P: int, T: int, imputed: torch.Tensor, width: int, depth: int,
                 dr_mode: str = "per_task", in_true: list[int] | None = None) -> None:
        if dr_mode not in ("per_task", "sum_inside"):
            raise ValueError(f"dr_mode must be 'per_task' or 'sum_inside', got {dr_mode!r}")
        self.p0, self.P, self.T = p0, P, T
        self.imputed = imputed
        self._imputed_rows = torch.nonzero(imputed.reshape(-1) != 0).view(-1)  # into the (T * P) input rows
        self.width, self.depth = width, depth
        self.dr_mode = dr_mode
        self.in_true = in_true or [P] * T

    def init(self, configs: list[dict], indices: list[int], seed: int, dtype) -> tuple[Params, dict]:
        G, H, Lmax, T = len(configs), self.width, self.depth, self.T
        st = ParamStack(G)
        for g, (c, i) in enumerate(zip(configs, indices)):
            gen = config_generator(seed, i)
            h, L = int(c["width"]), int(c["depth"])
            for l in range(Lmax):
                use = gen if l < L else None
                st.linear(f"c{l}", g, use, [self.p0] if l == 0 else [h], [self.p0] if l == 0 else [H], h, H)
            for t in range(T):
                for l in range(Lmax):
                    use = gen if l < L else None
                    a, A = ([self.in_true[t]], [self.P]) if l == 0 else ([h], [H])
                    st.linear(f"u{l}", g, use, a, A, h, H, lead=(T,), lead_index=(t,))
            for l in range(Lmax):
                use = gen if l < L else None
                a, A = ([h, h], [H, H]) if l == 0 else ([h], [H])
                st.linear(f"g{l}", g, use, a, A, h, H)
            st.linear("gout", g, gen, [h], [H], 1, 1)
            for t in range(T):
                for l in range(Lmax):
                    use = gen if l < L else None
                    # hidden layers: weights on the task's own activations (r) and on the shared ones (rs)
                    parts = (f"r{l}", f"rs{l}") if l > 0 else None
                    st.linear(f"r{l}", g, use, [h, h], [H, H], h, H, lead=(T,), lead_index=(t,), weight_parts=parts)
                st.linear("rout", g, gen, [h, h], [H, H], 1, 1, lead=(T,), lead_index=(t,))
        cfg = {
            "depth": torch.tensor([int(c["depth"]) for c in configs]),
            "lambda_orth": torch.tensor([float(c.get("lambda_orth", 0.0)) for c in configs], dtype=dtype),
            "lambda_imp": torch.tensor([float(c.get("lambda_imp", 0.0)) for c in configs], dtype=dtype),
            "lambda_dr": torch.tensor([float(c.get("lambda_dr", 0.0)) for c in configs], dtype=dtype),
        }
        return st.done(dtype), cfg

    def param_rows(self, cfg: dict) -> dict[str, int]:
        """Rows (leading configurations) of each hidden-layer parameter that the group uses."""
        rows = _prefix_rows(cfg, self.depth, ["c", "u", "g", "r"])
        rows.update({f"rs{l}.W": rows[f"r{l}.W"] for l in range(1, self.depth)})
        return rows

    def encode(self, params: Params, cfg: dict, x0: torch.Tensor, xf: torch.Tensor):
        """Shared codes f_c = E_c(x_0) and task codes f_u = E_r(x_full): each (G, T, B, H)."""
        T, B = x0.shape[0], x0.shape[1]
        fc = relu(torch.matmul(x0.reshape(T * B, -1), params["c0.W"]) + params["c0.b"])
        fu = relu(torch.matmul(xf.unsqueeze(0), params["u0.W"]) + params["u0.b"])
        for l in range(1, self.depth):
            k = _prefix(cfg, l)
            W, b = _layer_params(params, l)
            fc = _layer(k, cfg, l, 3, fc, lambda s: relu(torch.baddbmm(b("c", s), fc[s], W("c", s))))
            fu = _layer(k, cfg, l, 4, fu, lambda s: relu(torch.matmul(fu[s], W("u", s)) + b("u", s)))
        fc = fc.view(fc.shape[0], T, B, -1)
        return fc, fu

    def forward(self, params: Params, cfg: dict, x0: torch.Tensor, xf: torch.Tensor):
        fc, fu = self.encode(params, cfg, x0, xf)
        G, T, B, H = fc.shape
        z = torch.cat([fu, fc], -1)  # (G, T, B, 2H)
        z3 = z.view(G, T * B, 2 * H)
        # shared pathway: one weight for all tasks -> 3-D batched matmul over (G, T*B rows)
        h_o = relu(torch.baddbmm(params["g0.b"], z3, params["g0.W"]))
        h_r = relu(torch.matmul(z, params["r0.W"]) + params["r0.b"])
        for l in range(1, self.depth):
            k = _prefix(cfg, l)
            h_o4 = h_o.view(G, T, B, H)
            W, b = _layer_params(params, l)
            h_r = _layer(k, cfg, l, 4, h_r, lambda s: relu(
                torch.matmul(h_r[s], W("r", s)) + torch.matmul(h_o4[s], W("rs", s)) + b("r", s)))
            h_o = _layer(k, cfg, l, 3, h_o, lambda s: relu(torch.baddbmm(b("g", s), h_o[s], W("g", s))))
        y = (torch.matmul(torch.cat([h_r, h_o.view(G, T, B, H)], -1), params["rout.W"]) + params["rout.b"]).squeeze(-1)
        y = y + torch.baddbmm(params["gout.b"], h_o, params["gout.W"]).view(G, T, B)
        return y, fc, fu

    # regularisers --------------------------------------------------------------------------
    def r_orth(self, fc: torch.Tensor, fu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """sum_r ||F_c,r^T F_u,r||_F^2 over the (weighted) batch rows.

        Computed through the batch side: ||F_c' diag(w) F_u||_F^2 = <diag(w) F_c F_c' diag(w), F_u F_u'>_F
        (two B x B Gram matrices, O(B^2 h) instead of O(B h^2) for B = 16 rows and h up to 128)."""
        fcw = fc * w.unsqueeze(-1)
        Kc = torch.matmul(fcw, fcw.transpose(-1, -2))
        Ku = torch.matmul(fu, fu.transpose(-1, -2))
        return (Kc * Ku).sum((1, 2, 3))

    def r_imp(self, params: Params) -> torch.Tensor:
        """sum_r sum_{j imputed in r} ||first-layer weights of E_r on column j||^2."""
        W = params["u0.W"]
        rows = W.reshape(W.shape[0], -1, W.shape[-1]).index_select(1, self._imputed_rows)
        return (rows**2).sum((1, 2))

    def r_dr(self, params: Params, cfg: dict) -> torch.Tensor:
        """Disentanglement of pathway weights: hidden layers 1..L-1 and the output layer."""
        H, G = self.width, params["g0.W"].shape[0]
        total: float | torch.Tensor = 0.0
        for l in range(1, self.depth):
            k = _prefix(cfg, l)
            if k == 0:
                continue
            W, _ = _layer_params(params, l)
            s = slice(None) if k is None else slice(0, k)
            # (k, T, H, H): shared weights W_g' times the task weights on the shared activations
            prod = torch.matmul(W("g", s).transpose(-1, -2).unsqueeze(1), W("rs", s))
            val = (prod**2).sum((1, 2, 3)) if self.dr_mode == "per_task" else (prod.sum(1) ** 2).sum((1, 2))
            if k is None:
                act = _active(cfg, l, 1)
                assert act is not None  # k is None: not every configuration uses layer l
                val = val * act.to(val.dtype)
            elif k < G:
                val = torch.cat([val, val.new_zeros(G - k)])
            total = total + val
        ip = (params["rout.W"][:, :, H:, 0] * params["gout.W"][:, None, :, 0]).sum(-1)  # (G, T)
        total = total + ((ip**2).sum(1) if self.dr_mode == "per_task" else ip.sum(1) ** 2)
        return total

    def terms(self, params: Params, cfg: dict, batch: dict) -> dict[str, torch.Tensor]:
        yhat, fc, fu = self.forward(params, cfg, batch["x0"], batch["xf"])
        return {
            "integ": _wmse(yhat, batch["y"], batch["w"]).sum(1),
            "orth": self.r_orth(fc, fu, batch["w"]),
            "imp": self.r_imp(params),
            "dr": self.r_dr(params, cfg),
        }

    def loss(self, params: Params, cfg: dict, batch: dict) -> torch.Tensor:
        t = self.terms(params, cfg, batch)
        return t["integ"] + cfg["lambda_orth"] * t["orth"] + cfg["lambda_imp"] * t["imp"] + cfg["lambda_dr"] * t["dr"]

    def val_loss(self, params: Params, cfg: dict, val: dict) -> torch.Tensor:
        yhat, _, _ = self.forward(params, cfg, val["x0"], val["xf"])
        return _wmse(yhat, val["y"], val["w"]).sum(1)

    def row_errors(self, params: Params, cfg: dict, val: dict) -> torch.Tensor:
        """Squared prediction error of every validation row: (G, T, n)."""
        yhat, _, _ = self.forward(params, cfg, val["x0"], val["xf"])
        return (yhat - val["y"]) ** 2


# ============================================================================ HPS / STL
class HPSNet:
    """Shared trunk depth x [Linear(width) -> ReLU] on the task inputs, one linear head per task."""

    def __init__(self, P: int, T: int, width: int, depth: int, in_true: list[int] | None = None) -> None:
        self.P, self.T, self.width, self.depth = P, T, width, depth
        self.in_true = in_true or [P] * T

    def init(self, configs: list[dict], indices: list[int], seed: int, dtype) -> tuple[Params, dict]:
        G, H = len(configs), self.width
        st = ParamStack(G)
        for g, (c, i) in enumerate(zip(configs, indices)):
            gen = config_generator(seed, i)
            h, L = int(c["width"]), int(c["depth"])
            for l in range(self.depth):
                use = gen if l < L else None
                a, A = ([max(self.in_true)], [self.P]) if l == 0 else ([h], [H])
                st.linear(f"s{l}", g, use, a, A, h, H)
            for t in range(self.T):
                st.linear("head", g, gen, [h], [H], 1, 1, lead=(self.T,), lead_index=(t,))
        return st.done(dtype), {"depth": torch.tensor([int(c["depth"]) for c in configs])}

    def param_rows(self, cfg: dict) -> dict[str, int]:
        """Rows (leading configurations) of each hidden-layer parameter that the group uses."""
        return _prefix_rows(cfg, self.depth, ["s"])

    def forward(self, params: Params, cfg: dict, xf: torch.Tensor) -> torch.Tensor:
        T, B = xf.shape[0], xf.shape[1]
        h = relu(torch.matmul(xf.reshape(1, T * B, -1), params["s0.W"]) + params["s0.b"])
        for l in range(1, self.depth):
            W, b = _layer_params(params, l)
            h = _layer(_prefix(cfg, l), cfg, l, 3, h, lambda s: relu(torch.matmul(h[s], W("s", s)) + b("s", s)))
        h = h.view(h.shape[0], T, B, -1)
        return (torch.matmul(h, params["head.W"]) + params["head.b"]).squeeze(-1)

    def loss(self, params: Params, cfg: dict, batch: dict) -> torch.Tensor:
        return _wmse(self.forward(params, cfg, batch["xf"]), batch["y"], batch["w"]).sum(1)

    val_loss = loss

    def row_errors(self, params: Params, cfg: dict, val: dict) -> torch.Tensor:
        """Squared prediction error of every validation row: (G, T, n)."""
        return (self.forward(params, cfg, val["xf"]) - val["y"]) ** 2
