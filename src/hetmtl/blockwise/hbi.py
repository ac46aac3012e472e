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

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from hetmtl.blockwise._engine import (GridFit, GridJob, GroupFit, TrainSettings, fit_grids, group_key_for,
                                      resolve_engine)
from hetmtl.blockwise._native import hbi_impute
from hetmtl.blockwise.nets import HBINet
from hetmtl.blockwise.selection import hbi_grid
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import DataValidationError
from hetmtl.training import seed_all, split_indices, torch_threads


class _FullBatch:
    """Training stream of one full batch per epoch (HBI trains full-batch)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def epoch(self, rng) -> list[dict[str, torch.Tensor]]:
        return [self.batch]


def _dtype(name) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[str(name).replace("torch.", "")]


class HBImputer(BaseEstimator):
    """Heterogeneous block-wise imputation.

    Parameters
    ----------
    grid : {"small", "code", "paper"} or list of dict
        Grid of ``{width, depth, lambda_orth}`` configurations.
    heterogeneous : bool
        False for naive imputation (ablation 3).
    orth_power : {1, 2}
        1: the authors' unsquared Frobenius norm; 2: squared.
    val_fraction : float
        Held-out share of the observing task's rows for early stopping (authors' code: 0.1).
    max_epochs, patience : int
        Full-batch Adam epoch cap and early-stopping patience (authors' code: 5000, 30).
    lr : float
        Adam learning rate (authors' code: 1e-3).
    group_by : {"depth", "config"}
        ``"depth"``: batched, configurations of equal depth trained together; ``"config"``: one
        by one.
    dtype : {"float32", "float64"}
        Floating-point type of training.
    engine : {"auto", "native", "torch"}
        The C++ kernel (float32) or torch; see :class:`~hetmtl.blockwise.MTLHMB`.
    n_threads : int or None
        Threads shared by the grids of every source.
    random_state : int or None
        Seed of the split and the initialisations.
    """

    def __init__(self, grid="small", heterogeneous: bool = True, orth_power: int = 1, val_fraction: float = 0.1,
                 max_epochs: int = 5000, patience: int = 30, lr: float = 1e-3, group_by: str = "depth",
                 dtype: str = "float32", engine: str = "auto", n_threads: int | None = 1,
                 random_state: int | None = None) -> None:
        self.grid = grid
        self.heterogeneous = heterogeneous
        self.orth_power = orth_power
        self.val_fraction = val_fraction
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.group_by = group_by
        self.dtype = dtype
        self.engine = engine
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, data: BlockwiseData) -> "HBImputer":
        """Fit one imputation network per private source (features only, never responses).

        Parameters
        ----------
        data : BlockwiseData
            The tasks whose missing blocks will be imputed.

        Returns
        -------
        HBImputer
            The fitted imputer.
        """
        if not isinstance(data, BlockwiseData):
            raise TypeError(f"data must be a BlockwiseData, got {type(data).__name__}")
        if self.orth_power not in (1, 2):
            raise ValueError(f"orth_power must be 1 or 2, got {self.orth_power}")
        dtype = _dtype(self.dtype)
        configs = hbi_grid(self.grid, data.n_tasks)
        settings = TrainSettings(max_epochs=self.max_epochs, patience=self.patience, lr=self.lr, lr_step=None,
                                 batch_size=None, dtype=dtype, engine=self.engine)
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = seed_all(seed)
        p0 = data.source_dims[0]
        self.fits_: dict[int, GridFit] = {}
        self.members_: dict[int, tuple] = {}
        key = group_key_for(self.group_by) if self.group_by == "config" else (lambda i, c: c["depth"])
        jobs, sources = [], []
        for t in range(data.n_tasks):
            s = data.private_source[t]
            x0t, xst = data.x0(t), data.x_private(t)
            tr, va = split_indices(x0t.shape[0], (1 - self.val_fraction, self.val_fraction), rng)
            others = [r for r in range(data.n_tasks) if r != t]
            x0m = np.vstack([data.x0(r) for r in others])
            to = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
            train = {"x0t": to(x0t[tr]), "xst": to(xst[tr]), "x0m": to(x0m)}
            val = {"x0t": to(x0t[va]), "xst": to(xst[va])}

            def make_model(cfgs, idx, ps=data.source_dims[s], s=s):
                net = HBINet(p0, ps, int(cfgs[0]["depth"]), max(int(c["width"]) for c in cfgs),
                             self.heterogeneous, self.orth_power)
                if any(int(c["depth"]) != net.depth for c in cfgs):
                    raise ValueError("an HBI group must share the depth")
                params, cfg = net.init(cfgs, idx, seed + 101 * (s + 1), dtype)
                return net, params, cfg

            jobs.append(GridJob(make_model, configs, lambda c, train=train: _FullBatch(train),  # type: ignore[misc]
                                val, settings, seed + s, key))
            sources.append(s)
        with torch_threads(self.n_threads):  # the groups of every source share the threads
            fits = fit_grids(jobs)
        for s, fit in zip(sources, fits):
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
        """A private block imputed from anchor rows with the selected G(E_c(.)).

        Parameters
        ----------
        x0 : array-like
            Anchor rows, ``(n, p_0)``.
        source : int
            The private source to impute.

        Returns
        -------
        numpy.ndarray
            ``(n, p_source)``.
        """
        self._check()
        if source not in self.members_:
            raise DataValidationError(f"block {source} is not a private block of the fitted data")
        x0 = np.array(x0, dtype=float)  # a writable copy (torch refuses read-only views)
        if x0.ndim != 2 or x0.shape[1] != self.source_dims_[0]:
            raise DataValidationError(f"anchor rows must have {self.source_dims_[0]} columns, got shape {x0.shape}")
        net, params, _ = self.members_[source]
        if resolve_engine(self.engine, self.dtype_) == "native":
            return hbi_impute(net, params, x0).astype(float)
        with torch.no_grad():
            out = net.impute(params, torch.as_tensor(x0, dtype=self.dtype_))[0]
        return out.numpy().astype(float)

    def transform(self, data: BlockwiseData) -> list[dict[int, np.ndarray]]:
        """Imputed blocks of every task.

        Parameters
        ----------
        data : BlockwiseData
            Data with the fitted blocks.

        Returns
        -------
        list of dict
            For every task, ``{source: imputed block}`` for each of its missing blocks.
        """
        self._check()
        out = []
        for t in range(data.n_tasks):
            miss = {s: self.impute_block(data.x0(t), s) for s in range(1, data.n_sources) if data.block(t, s) is None}
            out.append(miss)
        return out

    def full_designs(self, data: BlockwiseData) -> list[np.ndarray]:
        """``[x_0 | x_1 | ... | x_T]`` of every task with its missing blocks imputed.

        Parameters
        ----------
        data : BlockwiseData
            Data with the fitted blocks.

        Returns
        -------
        list of numpy.ndarray
            One full design per task.
        """
        imp = self.transform(data)
        return [data.full_design(t, imp[t]) for t in range(data.n_tasks)]

    def selection_table(self) -> pd.DataFrame:
        """Grid with each configuration's held-out L_pre, for every private source.

        Returns
        -------
        pandas.DataFrame
            One row per source and configuration.
        """
        self._check()
        frames = []
        for s, fit in self.fits_.items():
            df = fit.table()
            df.insert(0, "source", s)
            df["selected"] = np.arange(len(df)) == fit.selected
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ export (no pickles)
    def _export(self, prefix: str = "") -> tuple[dict, dict, dict]:
        """(params, fitted, tensors) of the fitted imputer for :mod:`hetmtl.serialization`."""
        self._check()
        fitted: dict[str, Any] = {"n_tasks": self.n_tasks_, "source_dims": self.source_dims_, "private_source": self.private_source_,
                  "sources": {}}
        tensors: dict = {}
        for s, fit in self.fits_.items():
            net = fit.member()[0]
            args = dict(p0=net.p0, ps=net.ps, depth=net.depth, width=net.width, heterogeneous=net.heterogeneous,
                        orth_power=net.orth_power)
            fitted["sources"][str(s)], tens = export_grid(fit, f"{prefix}{s}.", args)
            tensors |= tens
        return self.get_params(), fitted, tensors

    @classmethod
    def _import(cls, params: dict, fitted: dict, tensors: dict, prefix: str = "") -> "HBImputer":
        """Inverse of :meth:`_export` (tensors decoded)."""
        from hetmtl.serialization import ModelFormatError, require

        try:
            imp = cls(**params)
            dtype = _dtype(imp.dtype)
        except (TypeError, KeyError) as exc:
            raise ModelFormatError(f"HBImputer: invalid hyperparameters ({exc})") from None
        require(fitted, ("n_tasks", "source_dims", "private_source", "sources"), "imputer")
        imp.fits_, imp.members_ = {}, {}
        for key, info in fitted["sources"].items():
            s = int(key)
            net = HBINet(**info["net"])
            imp.fits_[s] = import_grid(info, tensors, f"{prefix}{s}.", net, dtype)
            imp.members_[s] = imp.fits_[s].member()
        imp.n_tasks_ = int(fitted["n_tasks"])
        imp.source_dims_ = [int(v) for v in fitted["source_dims"]]
        imp.private_source_ = [int(v) for v in fitted["private_source"]]
        imp.dtype_ = dtype
        return imp


def export_grid(fit: GridFit, prefix: str, net_args: dict) -> tuple[dict, dict]:
    """A fitted grid for export: every configuration's validation loss and epoch, and the
    selected configuration's network (constructor ``net_args``, parameters, configuration tensors)."""
    _, params, cfg = fit.member()
    info = {"configs": fit.configs, "selected": fit.selected, "net": net_args, "seconds": fit.seconds}
    tensors = {f"{prefix}val_loss": fit.val_loss, f"{prefix}best_epoch": fit.best_epoch,
               **{f"{prefix}param.{k}": v for k, v in params.items()}, **{f"{prefix}cfg.{k}": v for k, v in cfg.items()}}
    return info, tensors


def import_grid(info: dict, tensors: dict, prefix: str, net, dtype: torch.dtype) -> GridFit:
    """Inverse of :func:`export_grid`: a :class:`GridFit` holding only the selected network;
    parameter shapes are checked against ``net``'s architecture."""
    from hetmtl.serialization import ModelFormatError, require

    require(info, ("configs", "selected", "net"), prefix.rstrip("."))
    require(tensors, (f"{prefix}val_loss", f"{prefix}best_epoch"), "tensors")
    sel = int(info["selected"])
    params = {k[len(prefix) + 6:]: v for k, v in tensors.items() if k.startswith(prefix + "param.")}
    cfg = {k[len(prefix) + 4:]: v for k, v in tensors.items() if k.startswith(prefix + "cfg.")}
    configs = [dict(c) for c in info["configs"]]
    if not 0 <= sel < len(configs):
        raise ModelFormatError(f"{prefix}: selected configuration {sel} of {len(configs)}")
    try:
        want = {k: tuple(v.shape) for k, v in net.init([configs[sel]], [sel], 0, dtype)[0].items()}
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{prefix}: configuration {sel} does not fit the stored network ({exc})") from None
    got = {k: tuple(v.shape) for k, v in params.items()}
    if want != got or any(v.dtype != dtype for v in params.values()):
        raise ModelFormatError(f"{prefix}: network parameters {got} do not match the architecture {want} ({dtype})")
    fit = GridFit(configs, tensors[f"{prefix}val_loss"].numpy(), tensors[f"{prefix}best_epoch"].numpy(),
                  [GroupFit(net, [sel], params, cfg)], float(info.get("seconds", 0.0)))
    if fit.selected != sel:
        raise ModelFormatError(f"{prefix}: the stored validation losses select configuration {fit.selected}, not {sel}")
    return fit
