"""Step 1 of MTL-HMB: heterogeneous block-wise imputation (HBI, paper §3.1, Eq. 1).

Use :class:`HBImputer` to fill the missing blocks of a :class:`~hetmtl.data.BlockwiseData`. For
each private source s (observed by task t only) it fits, over a grid, a shared encoder E_c, one
task-specific encoder for task t and one for the other tasks pooled, a decoder D reconstructing
x_0 and a predictor G, on L_pre + L_recon (+ the authors' optional orthogonality term), full batch
with Adam (lr 1e-3), early stopping with patience 30 on L_pre of a held-out 10% of task t's rows.
The configuration with the lowest held-out L_pre is kept and x_s of every other task is imputed as
G(E_c(x_0)). ``heterogeneous=False`` is the naive imputation of ablation 3 (G(E_c(.)) fitted on
task t alone). Only features are used, never responses.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from hetmtl.blockwise._engine import GridFit, TaskBatches, TrainSettings, fit_grid, group_key_for
from hetmtl.blockwise.nets import HBINet
from hetmtl.blockwise.selection import hbi_grid
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import DataValidationError
from hetmtl.training import seed_all, split_indices, torch_threads


def _dtype(name) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[str(name).replace("torch.", "")]


class HBImputer(BaseEstimator):
    """Heterogeneous block-wise imputation.

    Parameters
    ----------
    grid : "small" | "code" | "paper" or a list of ``{width, depth, lambda_orth}`` dicts.
    heterogeneous : False for naive imputation (ablation 3).
    orth_power : 1 (the authors' unsquared Frobenius norm) or 2.
    val_fraction : held-out share of the observing task's rows for early stopping (code: 0.1).
    max_epochs, patience, lr : full-batch Adam settings (code: 5000, 30, 1e-3).
    group_by : "depth" (batched; configurations of equal depth trained together) or "config".
    random_state : seed of the split and the initialisations.
    """

    def __init__(self, grid="small", heterogeneous: bool = True, orth_power: int = 1, val_fraction: float = 0.1,
                 max_epochs: int = 5000, patience: int = 30, lr: float = 1e-3, group_by: str = "depth",
                 dtype: str = "float32", n_threads: int | None = 1, random_state: int | None = None) -> None:
        self.grid = grid
        self.heterogeneous = heterogeneous
        self.orth_power = orth_power
        self.val_fraction = val_fraction
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.group_by = group_by
        self.dtype = dtype
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, data: BlockwiseData) -> "HBImputer":
        if not isinstance(data, BlockwiseData):
            raise TypeError(f"data must be a BlockwiseData, got {type(data).__name__}")
        if self.orth_power not in (1, 2):
            raise ValueError(f"orth_power must be 1 or 2, got {self.orth_power}")
        dtype = _dtype(self.dtype)
        configs = hbi_grid(self.grid, data.n_tasks)
        settings = TrainSettings(max_epochs=self.max_epochs, patience=self.patience, lr=self.lr, lr_step=None,
                                 batch_size=None, dtype=dtype)
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = seed_all(seed)
        p0 = data.source_dims[0]
        self.fits_: dict[int, GridFit] = {}
        self.members_: dict[int, tuple] = {}
        key = group_key_for(self.group_by) if self.group_by == "config" else (lambda i, c: c["depth"])
        with torch_threads(self.n_threads):
            for t in range(data.n_tasks):
                s = data.private_source[t]
                x0t, xst = data.x0(t), data.x_private(t)
                tr, va = split_indices(x0t.shape[0], (1 - self.val_fraction, self.val_fraction), rng)
                others = [r for r in range(data.n_tasks) if r != t]
                x0m = np.vstack([data.x0(r) for r in others])
                to = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
                train = {"x0t": to(x0t[tr]), "xst": to(xst[tr]), "x0m": to(x0m)}
                val = {"x0t": to(x0t[va]), "xst": to(xst[va])}

                class _Stream:  # one full batch per epoch
                    def epoch(self, rng):
                        return [train]

                ps = data.source_dims[s]

                def make_model(cfgs, idx, ps=ps):
                    net = HBINet(p0, ps, int(cfgs[0]["depth"]), max(int(c["width"]) for c in cfgs),
                                 self.heterogeneous, self.orth_power)
                    if any(int(c["depth"]) != net.depth for c in cfgs):
                        raise ValueError("an HBI group must share the depth")
                    params, cfg = net.init(cfgs, idx, seed + 101 * (s + 1), dtype)
                    return net, params, cfg

                fit = fit_grid(make_model, configs, lambda c: _Stream(), val, settings, seed + s, key)
                self.fits_[s] = fit
                self.members_[s] = fit.member()
        self.n_tasks_ = data.n_tasks
        self.source_dims_ = data.source_dims
        self.private_source_ = data.private_source
        self.dtype_ = dtype
        return self

    def _check(self):
        if not hasattr(self, "members_"):
            raise RuntimeError("HBImputer is not fitted; call fit(data) first")

    def impute_block(self, x0: np.ndarray, source: int) -> np.ndarray:
        """x_source imputed from anchor rows ``x0`` with the selected G(E_c(.))."""
        self._check()
        if source not in self.members_:
            raise DataValidationError(f"block {source} is not a private block of the fitted data")
        x0 = np.asarray(x0, float)
        if x0.ndim != 2 or x0.shape[1] != self.source_dims_[0]:
            raise DataValidationError(f"anchor rows must have {self.source_dims_[0]} columns, got shape {x0.shape}")
        net, params, _ = self.members_[source]
        with torch.no_grad():
            out = net.impute(params, torch.as_tensor(x0, dtype=self.dtype_))[0]
        return out.numpy().astype(float)

    def transform(self, data: BlockwiseData) -> list[dict[int, np.ndarray]]:
        """For every task, ``{source: imputed block}`` for each of its missing blocks."""
        self._check()
        out = []
        for t in range(data.n_tasks):
            miss = {s: self.impute_block(data.x0(t), s) for s in range(1, data.n_sources) if data.block(t, s) is None}
            out.append(miss)
        return out

    def full_designs(self, data: BlockwiseData) -> list[np.ndarray]:
        """``[x_0 | x_1 | ... | x_T]`` of every task with its missing blocks imputed."""
        imp = self.transform(data)
        return [data.full_design(t, imp[t]) for t in range(data.n_tasks)]

    def selection_table(self) -> pd.DataFrame:
        """Grid with each configuration's held-out L_pre, for every private source."""
        self._check()
        frames = []
        for s, fit in self.fits_.items():
            df = fit.table()
            df.insert(0, "source", s)
            df["selected"] = np.arange(len(df)) == fit.selected
            frames.append(df)
        return pd.concat(frames, ignore_index=True)
