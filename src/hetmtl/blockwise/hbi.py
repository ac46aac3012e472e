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

from hetmtl._progress import check_verbose
from hetmtl._validation import check_bool, check_choice, check_float, check_int, check_is_fitted, seed_from
from hetmtl.blockwise._engine import (ENGINES, GridFit, GridJob, GroupFit, TrainSettings, fit_grids, group_key_for,
                                      resolve_engine)
from hetmtl.blockwise._native import hbi_impute
from hetmtl.blockwise.nets import HBINet, HPSNet, Step2Net
from hetmtl.blockwise.selection import check_grid, check_selection, hbi_grid
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import DataValidationError, ParameterError
from hetmtl.training import check_trained, seed_all, split_indices, torch_threads


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
    random_state : int, numpy Generator or None
        Seed of the split and the initialisations (None: fresh randomness; the seed used is kept
        in ``seed_``).
    verbose : int
        0 (default) silent; >= 1 a progress bar over the grid configurations.
    """

    def __init__(self, grid="small", heterogeneous: bool = True, orth_power: int = 1, val_fraction: float = 0.1,
                 max_epochs: int = 5000, patience: int = 30, lr: float = 1e-3, group_by: str = "depth",
                 dtype: str = "float32", engine: str = "auto", n_threads: int | None = 1,
                 random_state: Any = None, verbose: int = 0) -> None:
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
        self.verbose = verbose

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
        check_choice(self.orth_power, "orth_power", (1, 2))
        check_bool(self.heterogeneous, "heterogeneous")
        check_float(self.val_fraction, "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
        max_epochs = check_int(self.max_epochs, "max_epochs", low=1, high=10**7)
        patience = check_int(self.patience, "patience", low=1, high=10**7)
        lr = check_float(self.lr, "lr", low=0.0, low_open=True, high=10.0)
        check_choice(self.group_by, "group_by", ("depth", "config"))
        check_choice(str(self.dtype).replace("torch.", ""), "dtype", ("float32", "float64"))
        check_choice(self.engine, "engine", ENGINES)
        check_int(self.n_threads, "n_threads", low=1, high=1024, allow_none=True)
        verbose = check_verbose(self.verbose)
        dtype = _dtype(self.dtype)
        configs = hbi_grid(self.grid, data.n_tasks)
        settings = TrainSettings(max_epochs=max_epochs, patience=patience, lr=lr, lr_step=None,  # type: ignore[arg-type]
                                 batch_size=None, dtype=dtype, engine=self.engine)
        seed = self.seed_ = seed_from(self.random_state)
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
            if len(tr) < 1 or len(va) < 1:
                raise DataValidationError(f"task {data.task_names[t]!r}: too few rows ({x0t.shape[0]}) to hold out "
                                          f"a validation share of {self.val_fraction} for HBI")
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
            fits = fit_grids(jobs, verbose, "HBI (Step 1)")
        for s, fit in zip(sources, fits):
            check_trained(fit.val_loss, [str(c) for c in configs], f"HBImputer (block {data.source_names[s]!r})")
            self.fits_[s] = fit
            self.members_[s] = fit.member()
        self.n_tasks_ = data.n_tasks
        self.source_dims_ = data.source_dims
        self.private_source_ = data.private_source
        self.dtype_ = dtype
        return self

    def _check(self):
        check_is_fitted(self, "members_")

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
            if "n_threads" in vars(imp):
                check_int(imp.n_threads, "n_threads", low=1, high=1024, allow_none=True)
            dtype = _dtype(imp.dtype)
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelFormatError(f"HBImputer: invalid hyperparameters ({exc})") from None
        require(fitted, ("n_tasks", "source_dims", "private_source", "sources"), "imputer")
        imp.fits_, imp.members_ = {}, {}
        try:
            if not isinstance(fitted["sources"], dict):
                raise TypeError(f"sources must be a mapping, got {type(fitted['sources']).__name__}")
            for key, info in fitted["sources"].items():
                s = int(key)
                if not isinstance(info, dict) or not isinstance(info.get("net"), dict):
                    raise TypeError(f"source {key!r} must hold a mapping with a 'net' mapping")
                net = HBINet(**info["net"])
                imp.fits_[s] = import_grid(info, tensors, f"{prefix}{s}.", net, dtype)
                imp.members_[s] = imp.fits_[s].member()
            imp.n_tasks_ = int(fitted["n_tasks"])
            imp.source_dims_ = [int(v) for v in fitted["source_dims"]]
            imp.private_source_ = [int(v) for v in fitted["private_source"]]
        except ModelFormatError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, RuntimeError, OverflowError) as exc:
            raise ModelFormatError(f"HBImputer: malformed fitted imputer ({type(exc).__name__}: {exc})") from None
        imp.dtype_ = dtype
        return imp


def export_grid(fit: GridFit, prefix: str, net_args: dict) -> tuple[dict, dict]:
    """A fitted grid for export: every configuration's validation loss and epoch, and the
    selected configuration's network (constructor ``net_args``, parameters, configuration tensors)."""
    _, params, cfg = fit.member()
    info = {"configs": fit.configs, "selected": fit.selected, "net": net_args, "seconds": fit.seconds, "rule": fit.rule}
    tensors = {f"{prefix}val_loss": fit.val_loss, f"{prefix}best_epoch": fit.best_epoch,
               **{f"{prefix}param.{k}": v for k, v in params.items()}, **{f"{prefix}cfg.{k}": v for k, v in cfg.items()}}
    if fit.val_se is not None:
        tensors[f"{prefix}val_se"] = fit.val_se
    return info, tensors


def _declared_sizes(net, params: dict, where: str) -> None:
    """Compare a network's declared width and depth with the stored parameter shapes before the
    network is built (a forged file must not make us allocate what its arrays do not hold)."""
    from hetmtl.serialization import ModelFormatError

    first = {Step2Net: "c", HPSNet: "s", HBINet: "Ec"}.get(type(net))
    if first is None:
        return
    layers = sum(1 for k in params if k.startswith(first) and k[len(first):-2].isdigit() and k.endswith(".W"))
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in params.items()}
    W0 = shapes.get(f"{first}0.W")
    if W0 is None or len(W0) < 3:
        raise ModelFormatError(f"{where}: the stored network has no first layer {first}0.W")
    if layers != int(net.depth) or W0[-1] != int(net.width):
        raise ModelFormatError(f"{where}: network parameters do not match the declared network (declared width "
                               f"{net.width}, depth {net.depth}; stored width {W0[-1]}, {layers} layer(s))")
    H = int(net.width)
    if isinstance(net, Step2Net):
        want = {"c0.W": (1, int(net.p0), H), "u0.W": (1, int(net.T), int(net.P), H)}
    elif isinstance(net, HPSNet):
        want = {"s0.W": (1, int(net.P), H), "head.W": (1, int(net.T), H, 1)}
    else:
        want = {"Ec0.W": (1, int(net.p0), H), f"G{net.depth - 1}.W": (1, H, int(net.ps))}
    for k, shape in want.items():
        if shapes.get(k) != shape:
            raise ModelFormatError(f"{where}: network parameters do not match the declared sizes ({k}: declared "
                                   f"{shape}, stored {shapes.get(k)})")


def import_grid(info: dict, tensors: dict, prefix: str, net, dtype: torch.dtype) -> GridFit:
    """Inverse of :func:`export_grid`: a :class:`GridFit` holding only the selected network;
    parameter shapes are checked against ``net``'s architecture."""
    from hetmtl.serialization import ModelFormatError, require

    where = prefix.rstrip(".")
    require(info, ("configs", "selected", "net"), where)
    require(tensors, (f"{prefix}val_loss", f"{prefix}best_epoch"), "tensors")
    sel = int(info["selected"])
    params = {k[len(prefix) + 6:]: v for k, v in tensors.items() if k.startswith(prefix + "param.")}
    cfg = {k[len(prefix) + 4:]: v for k, v in tensors.items() if k.startswith(prefix + "cfg.")}
    try:
        configs = check_grid(list(info["configs"]), f"{where}.configs")
    except (ParameterError, TypeError) as exc:
        raise ModelFormatError(f"{where}: invalid grid configurations ({exc})") from None
    if not 0 <= sel < len(configs):
        raise ModelFormatError(f"{where}: selected configuration {sel} of {len(configs)}")
    c = configs[sel]
    if int(c["width"]) > int(net.width) or int(c["depth"]) > int(net.depth):
        raise ModelFormatError(f"{where}: selected configuration {c} exceeds the declared network "
                               f"(width {net.width}, depth {net.depth})")
    _declared_sizes(net, params, prefix)
    try:
        want = {k: tuple(v.shape) for k, v in net.init([configs[sel]], [sel], 0, dtype)[0].items()}
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{prefix}: configuration {sel} does not fit the stored network ({exc})") from None
    got = {k: tuple(v.shape) for k, v in params.items()}
    if want != got or any(v.dtype != dtype for v in params.values()):
        raise ModelFormatError(f"{prefix}: network parameters {got} do not match the architecture {want} ({dtype})")
    try:
        rule = check_selection(info.get("rule", "min"), f"{where}.rule")
    except ParameterError as exc:
        raise ModelFormatError(str(exc)) from None
    se = tensors.get(f"{prefix}val_se")
    if rule != "min" and se is None:
        raise ModelFormatError(f"{where}: the selection rule {rule!r} needs the stored standard errors {prefix}val_se")
    fit = GridFit(configs, tensors[f"{prefix}val_loss"].numpy(), tensors[f"{prefix}best_epoch"].numpy(),
                  [GroupFit(net, [sel], params, cfg)], float(info.get("seconds", 0.0)),
                  None if se is None else se.numpy(), rule)
    if fit.selected != sel:
        raise ModelFormatError(f"{prefix}: the stored validation losses select configuration {fit.selected}, not {sel}")
    return fit
