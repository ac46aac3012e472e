"""Competitors and ablations of MTL-HMB (the MTL-HMB paper, arXiv 2505.24413, §4, A.3, A.5.2),
all with the estimator API of :class:`~hetmtl.blockwise.MTLHMB` and the same paired splits.

- :class:`STL` — one MLP per task on its observed blocks ``[x_0, x_t]`` (``features="imputed"``:
  Step 1 + STL, ablation 1, on ``[x_0, x_1, ..., x_T]`` with HBI imputations);
- :class:`HTL` — Bica & van der Schaar's heterogeneous transfer learner as the authors adapted it:
  the Step-2 network with the task encoder on the task's own block only, no imputation, no R_imp,
  gamma = kappa = 1;
- :class:`HPS` — Step 1 + hard parameter sharing (ablation 2): shared trunk, one head per task;
- :func:`naive_step2` — naive imputation + Step 2 (ablation 3).

MBI (R ``BlockMissingData``) lives in :mod:`hetmtl.blockwise.mbi`.
"""
from __future__ import annotations

import numpy as np
import torch

from hetmtl.blockwise.hbi import HBImputer
from hetmtl.blockwise.model import BlockwiseRegressor, MTLHMB, Step1Mixin, fit_multitask_grid
from hetmtl.blockwise.nets import HPSNet, Step2Net
from hetmtl.blockwise.selection import BlockwiseSplit, htl_grid, mlp_grid
from hetmtl.data.blockwise import BlockwiseData


class _MLPBaseline(Step1Mixin, BlockwiseRegressor):
    def __init__(self, grid="small", hbi_grid="small", hbi_rows: str = "all", batch_size: int = 16,
                 max_epochs: int = 25000, patience: int = 30, lr: float = 1e-3, lr_step: int | None = 200,
                 lr_gamma: float = 0.95, hbi_max_epochs: int = 5000, group_by: str = "width", dtype: str = "float32",
                 n_threads: int | None = 1, random_state: int | None = None, imputer: HBImputer | None = None) -> None:
        self.grid = grid
        self.hbi_grid = hbi_grid
        self.hbi_rows = hbi_rows
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.hbi_max_epochs = hbi_max_epochs
        self.group_by = group_by
        self.dtype = dtype
        self.n_threads = n_threads
        self.random_state = random_state
        self.imputer = imputer

    def _seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    @staticmethod
    def _run(net, params, cfg, xf: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return net.forward(params, cfg, xf)


class STL(_MLPBaseline):
    """Single-task MLPs, L x [Linear(h) -> ReLU] + Linear(h -> 1), one grid search per task.

    Parameters
    ----------
    grid : {"small", "code", "paper"} or list of dict
        An :func:`~hetmtl.blockwise.mlp_grid` name or list of ``{width, depth}`` dicts.
    features : {"observed", "imputed"}
        ``"observed"`` (STL) uses ``[x_0, x_t]``; ``"imputed"`` (Step 1 + STL, ablation 1) uses
        all blocks with the missing ones imputed by HBI.
    hbi_grid : {"small", "code", "paper"} or list of dict
        HBI (Step 1) grid, when Step 1 is used.
    hbi_rows : {"all", "train"}
        Rows HBI learns from (see :class:`~hetmtl.blockwise.MTLHMB`).
    hbi_max_epochs : int
        Epoch cap of Step 1.
    batch_size, max_epochs, patience : int
        Mini-batch size, epoch cap and early-stopping patience.
    lr, lr_step, lr_gamma : float, int or None, float
        Adam learning rate and its StepLR schedule (``lr_step=None``: constant).
    group_by : {"width", "all", "depth", "config"}
        How configurations are batched by the torch engine.
    dtype : {"float32", "float64"}
        Floating-point type of training.
    n_threads : int or None
        Torch threads.
    random_state : int or None
        Seed of the split, initialisation and batches.
    imputer : HBImputer, optional
        A fitted imputer to reuse (e.g. the one of MTL-HMB on the same replicate).
    """

    def __init__(self, grid="small", features: str = "observed", hbi_grid="small", hbi_rows: str = "all",
                 batch_size: int = 16, max_epochs: int = 25000, patience: int = 30, lr: float = 1e-3,
                 lr_step: int | None = 200, lr_gamma: float = 0.95, hbi_max_epochs: int = 5000,
                 group_by: str = "width", dtype: str = "float32", n_threads: int | None = 1,
                 random_state: int | None = None, imputer: HBImputer | None = None) -> None:
        super().__init__(grid, hbi_grid, hbi_rows, batch_size, max_epochs, patience, lr, lr_step, lr_gamma,
                         hbi_max_epochs, group_by, dtype, n_threads, random_state, imputer)
        self.features = features

    def _inputs(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        return self._features(t, x0, x_own) if self.features == "imputed" else np.hstack([x0, x_own])

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        if self.features not in ("observed", "imputed"):
            raise ValueError(f"features must be 'observed' or 'imputed', got {self.features!r}")
        if self.features == "imputed":
            self.imputer_ = self._fit_imputer(data, split)
        configs = mlp_grid(self.grid, (self.batch_size,))
        self.fits_, self.members_ = [], []
        for t in range(data.n_tasks):
            xf = self._inputs(t, data.x0(t), data.x_private(t))
            P = xf.shape[1]
            fit = fit_multitask_grid(lambda H, L: HPSNet(P, 1, H, L), configs, {"xf": [xf]}, [data.y(t)],
                                     [split.train[t]], [split.val[t]], self._settings(), self._seed() + 7 * t,
                                     self.group_by)
            self.fits_.append(fit)
            self.members_.append(fit.member())
        self.selected_config_ = [f.selected_config for f in self.fits_]

    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        net, params, cfg = self.members_[t]
        xf = torch.as_tensor(self._inputs(t, x0, x_own)[None], dtype=self.dtype_)
        return self._run(net, params, cfg, xf)[0, 0].numpy().astype(float)


class HPS(_MLPBaseline):
    """Step 1 + hard parameter sharing (ablation 2).

    A trunk of L x [Linear(h) -> ReLU] shared by all tasks on the imputed full features, one
    linear head per task, loss sum_t MSE_t.

    Parameters
    ----------
    grid : {"small", "code", "paper"} or list of dict
        An :func:`~hetmtl.blockwise.mlp_grid` name or list of ``{width, depth}`` dicts.
    hbi_grid : {"small", "code", "paper"} or list of dict
        HBI (Step 1) grid, when Step 1 is used.
    hbi_rows : {"all", "train"}
        Rows HBI learns from (see :class:`~hetmtl.blockwise.MTLHMB`).
    hbi_max_epochs : int
        Epoch cap of Step 1.
    batch_size, max_epochs, patience : int
        Mini-batch size, epoch cap and early-stopping patience.
    lr, lr_step, lr_gamma : float, int or None, float
        Adam learning rate and its StepLR schedule (``lr_step=None``: constant).
    group_by : {"width", "all", "depth", "config"}
        How configurations are batched by the torch engine.
    dtype : {"float32", "float64"}
        Floating-point type of training.
    n_threads : int or None
        Torch threads.
    random_state : int or None
        Seed of the split, initialisation and batches.
    imputer : HBImputer, optional
        A fitted imputer to reuse (e.g. the one of MTL-HMB on the same replicate).
    """

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        self.imputer_ = self._fit_imputer(data, split)
        xf = self.imputer_.full_designs(data)
        P, T = xf[0].shape[1], data.n_tasks
        configs = mlp_grid(self.grid, (self.batch_size,))
        self.fit_ = fit_multitask_grid(lambda H, L: HPSNet(P, T, H, L), configs, {"xf": xf},
                                       [data.y(t) for t in range(T)], split.train, split.val, self._settings(),
                                       self._seed(), self.group_by)
        self.selected_config_ = self.fit_.selected_config
        self.member_ = self.fit_.member()

    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        net, params, cfg = self.member_
        xf = self._features(t, x0, x_own)
        xf_t = torch.as_tensor(np.broadcast_to(xf, (self.n_tasks_, *xf.shape)).copy(), dtype=self.dtype_)
        return self._run(net, params, cfg, xf_t)[0, t].numpy().astype(float)


class HTL(_MLPBaseline):
    """HTL (Bica & van der Schaar's heterogeneous transfer learner) as adapted by the MTL-HMB authors.

    Shared encoder on x_0, task encoder on the task's own block only (no imputation), shared and
    task-specific pathways, L_integ + R_orth + R_dr (weights 1).

    Parameters
    ----------
    grid : {"small", "code", "paper"} or list of dict
        An :func:`~hetmtl.blockwise.htl_grid` name or list of configurations.
    dr_mode : {"per_task", "sum_inside"}
        Form of R_dr (see :class:`~hetmtl.blockwise.MTLHMB`).
    batch_size, max_epochs, patience : int
        Mini-batch size, epoch cap and early-stopping patience.
    lr, lr_step, lr_gamma : float, int or None, float
        Adam learning rate and its StepLR schedule (``lr_step=None``: constant).
    group_by : {"width", "all", "depth", "config"}
        How configurations are batched by the torch engine.
    dtype : {"float32", "float64"}
        Floating-point type of training.
    n_threads : int or None
        Torch threads.
    random_state : int or None
        Seed of the split, initialisation and batches.
    engine : {"auto", "native", "torch"}
        As for :class:`~hetmtl.blockwise.MTLHMB` (default ``"auto"``: the C++ kernel in float32).
    """

    def __init__(self, grid="small", dr_mode: str = "per_task", batch_size: int = 16, max_epochs: int = 25000,
                 patience: int = 30, lr: float = 1e-3, lr_step: int | None = 200, lr_gamma: float = 0.95,
                 group_by: str = "width", dtype: str = "float32", engine: str = "auto", n_threads: int | None = 1,
                 random_state: int | None = None) -> None:
        self.grid = grid
        self.dr_mode = dr_mode
        self.engine = engine
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.lr_step = lr_step
        self.lr_gamma = lr_gamma
        self.group_by = group_by
        self.dtype = dtype
        self.n_threads = n_threads
        self.random_state = random_state

    def _pad(self, x_own: np.ndarray) -> np.ndarray:
        out = np.zeros((x_own.shape[0], self.P_))
        out[:, : x_own.shape[1]] = x_own
        return out

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        T, p0 = data.n_tasks, data.source_dims[0]
        own = [data.source_dims[data.private_source[t]] for t in range(T)]
        self.P_ = max(own)
        inputs = {"x0": [data.x0(t) for t in range(T)], "xf": [self._pad(data.x_private(t)) for t in range(T)]}
        configs = htl_grid(self.grid, (self.batch_size,))
        zeros = torch.zeros(T, self.P_, dtype=self.dtype_)
        factory = lambda H, L: Step2Net(p0, self.P_, T, zeros, H, L, self.dr_mode, in_true=own)  # noqa: E731
        self.fit_ = fit_multitask_grid(factory, configs, inputs, [data.y(t) for t in range(T)], split.train,
                                       split.val, self._settings(), self._seed(), self.group_by)
        self.selected_config_ = self.fit_.selected_config
        self.member_ = self.fit_.member()

    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        net, params, cfg = self.member_
        T = self.n_tasks_
        x0_t = torch.as_tensor(np.broadcast_to(x0, (T, *x0.shape)).copy(), dtype=self.dtype_)
        xo = self._pad(x_own)
        xf_t = torch.as_tensor(np.broadcast_to(xo, (T, *xo.shape)).copy(), dtype=self.dtype_)
        with torch.no_grad():
            return net.forward(params, cfg, x0_t, xf_t)[0][0, t].numpy().astype(float)


def naive_step2(**kwargs) -> MTLHMB:
    """Naive imputation + Step 2 (ablation 3): :class:`MTLHMB` with ``imputation="naive"``.

    Parameters
    ----------
    **kwargs
        Other parameters of :class:`MTLHMB`.

    Returns
    -------
    MTLHMB
        The unfitted estimator.
    """
    return MTLHMB(imputation="naive", **kwargs)
