"""Competitors and ablations of MTL-HMB (the MTL-HMB paper, arXiv 2505.24413, §4, A.3, A.5.2),
all with the estimator API of :class:`~hetmtl.blockwise.MTLHMB` and the same paired splits.

- :class:`STL` — one MLP per task on its observed blocks ``[x_0, x_t]`` (``features="imputed"``:
  Step 1 + STL, ablation 1, on ``[x_0, x_1, ..., x_T]`` with HBI imputations);
- :class:`HTL` — Bica & van der Schaar's heterogeneous transfer learner as the authors adapted it:
  the Step-2 network with the task encoder on the task's own block only, no imputation, no R_imp,
  gamma = kappa = 1;
- :class:`HPS` — Step 1 + hard parameter sharing (ablation 2): shared trunk, one head per task;
- :func:`naive_step2` — naive imputation + Step 2 (ablation 3);
- :class:`CCLasso` (``method="cc_lasso"`` in the study runner) — the complete-case linear
  baseline: a cross-validated lasso on the rows that observe every block (or per task on the
  task's observed blocks).

The neural baselines choose their configuration with the estimator's ``selection`` rule
(default: the smallest within 0.25 standard errors of the lowest validation loss, see
:func:`~hetmtl.blockwise.selection.select_config`).
MBI (R ``BlockMissingData``) lives in :mod:`hetmtl.blockwise.mbi`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hetmtl.blockwise.hbi import HBImputer
from hetmtl.blockwise.model import BlockwiseRegressor, MTLHMB, Step1Mixin, fit_multitask_grid
from hetmtl.blockwise.nets import HPSNet, Step2Net
from hetmtl._validation import check_array, check_bool, check_int, check_is_fitted
from hetmtl.blockwise.selection import DEFAULT_SELECTION, BlockwiseSplit, htl_grid, mlp_grid
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import DataValidationError, ParameterError


class _MLPBaseline(Step1Mixin, BlockwiseRegressor):
    def __init__(self, grid="small", hbi_grid="small", hbi_rows: str = "all", batch_size: int = 16,
                 max_epochs: int = 25000, patience: int = 30, lr: float = 1e-3, lr_step: int | None = 200,
                 lr_gamma: float = 0.95, hbi_max_epochs: int = 5000, group_by: str = "width", dtype: str = "float32",
                 n_threads: int | None = 1, random_state: Any = None, imputer: HBImputer | None = None,
                 selection: str | float = DEFAULT_SELECTION, verbose: int = 0) -> None:
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
        self.selection = selection
        self.verbose = verbose

    def _seed(self) -> int:
        return self.seed_

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
    random_state : int, numpy Generator or None
        Seed of the split, initialisation and batches (None: fresh randomness, kept in ``seed_``).
    imputer : HBImputer, optional
        A fitted imputer to reuse (e.g. the one of MTL-HMB on the same replicate).
    selection : float or {"min", "1se"}
        Configuration choice (see :class:`~hetmtl.blockwise.MTLHMB`; default 0.25 SE).
    verbose : int
        0 (default) silent; >= 1 progress bars over the grid configurations.
    """

    def __init__(self, grid="small", features: str = "observed", hbi_grid="small", hbi_rows: str = "all",
                 batch_size: int = 16, max_epochs: int = 25000, patience: int = 30, lr: float = 1e-3,
                 lr_step: int | None = 200, lr_gamma: float = 0.95, hbi_max_epochs: int = 5000,
                 group_by: str = "width", dtype: str = "float32", n_threads: int | None = 1,
                 random_state: Any = None, imputer: HBImputer | None = None, selection: str | float = DEFAULT_SELECTION,
                 verbose: int = 0) -> None:
        super().__init__(grid, hbi_grid, hbi_rows, batch_size, max_epochs, patience, lr, lr_step, lr_gamma,
                         hbi_max_epochs, group_by, dtype, n_threads, random_state, imputer, selection, verbose)
        self.features = features

    def _inputs(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        return self._features(t, x0, x_own) if self.features == "imputed" else np.hstack([x0, x_own])

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        configs = mlp_grid(self.grid, (self.batch_size,))
        if self.features == "imputed":
            self.imputer_ = self._fit_imputer(data, split)
        self.fits_, self.members_ = [], []
        for t in range(data.n_tasks):
            xf = self._inputs(t, data.x0(t), data.x_private(t))
            P = xf.shape[1]
            fit = fit_multitask_grid(lambda H, L: HPSNet(P, 1, H, L), configs, {"xf": [xf]}, [data.y(t)],
                                     [split.train[t]], [split.val[t]], self._settings(), self._seed() + 7 * t,
                                     self.group_by, self.selection, self.verbose,
                                     f"STL (task {data.task_names[t]!r})")
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
    random_state : int, numpy Generator or None
        Seed of the split, initialisation and batches (None: fresh randomness, kept in ``seed_``).
    imputer : HBImputer, optional
        A fitted imputer to reuse (e.g. the one of MTL-HMB on the same replicate).
    selection : float or {"min", "1se"}
        Configuration choice (see :class:`~hetmtl.blockwise.MTLHMB`; default 0.25 SE).
    verbose : int
        0 (default) silent; >= 1 progress bars over the grid configurations.
    """

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        configs = mlp_grid(self.grid, (self.batch_size,))
        self.imputer_ = self._fit_imputer(data, split)
        xf = self.imputer_.full_designs(data)
        P, T = xf[0].shape[1], data.n_tasks
        self.fit_ = fit_multitask_grid(lambda H, L: HPSNet(P, T, H, L), configs, {"xf": xf},
                                       [data.y(t) for t in range(T)], split.train, split.val, self._settings(),
                                       self._seed(), self.group_by, self.selection, self.verbose, "HPS")
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
    random_state : int, numpy Generator or None
        Seed of the split, initialisation and batches (None: fresh randomness, kept in ``seed_``).
    engine : {"auto", "native", "torch"}
        As for :class:`~hetmtl.blockwise.MTLHMB` (default ``"auto"``: the C++ kernel in float32).
    selection : float or {"min", "1se"}
        Configuration choice (see :class:`~hetmtl.blockwise.MTLHMB`; default 0.25 SE).
    verbose : int
        0 (default) silent; >= 1 a progress bar over the grid configurations.
    """

    def __init__(self, grid="small", dr_mode: str = "per_task", batch_size: int = 16, max_epochs: int = 25000,
                 patience: int = 30, lr: float = 1e-3, lr_step: int | None = 200, lr_gamma: float = 0.95,
                 group_by: str = "width", dtype: str = "float32", engine: str = "auto", n_threads: int | None = 1,
                 random_state: Any = None, selection: str | float = DEFAULT_SELECTION, verbose: int = 0) -> None:
        self.grid = grid
        self.selection = selection
        self.verbose = verbose
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
        configs = htl_grid(self.grid, (self.batch_size,))
        T, p0 = data.n_tasks, data.source_dims[0]
        own = [data.source_dims[data.private_source[t]] for t in range(T)]
        self.P_ = max(own)
        inputs = {"x0": [data.x0(t) for t in range(T)], "xf": [self._pad(data.x_private(t)) for t in range(T)]}
        zeros = torch.zeros(T, self.P_, dtype=self.dtype_)
        factory = lambda H, L: Step2Net(p0, self.P_, T, zeros, H, L, self.dr_mode, in_true=own)  # noqa: E731
        self.fit_ = fit_multitask_grid(factory, configs, inputs, [data.y(t) for t in range(T)], split.train,
                                       split.val, self._settings(), self._seed(), self.group_by, self.selection,
                                       self.verbose, "HTL")
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


class CCLasso(BlockwiseRegressor):
    """Complete-case baseline: a cross-validated lasso on the rows that observe every block.

    Two inputs, as :class:`~hetmtl.blockwise.MBI`:

    - ``fit(X, y)`` with a design whose missing blocks are NaN (any block-wise layout, e.g. one
      with a complete group): ``per_task=False`` fits one lasso on the complete rows (no NaN);
      ``per_task=True`` one lasso per ``groups`` label on that group's complete rows.
      ``predict(X)`` fills a row's missing columns by least squares on its observed columns,
      fitted on the complete rows (the complete-case analogue of regression imputation), then
      applies the lasso.
    - ``fit(data, split)`` with a :class:`~hetmtl.data.BlockwiseData` (the MTL-HMB layout: each
      task observes the anchor and its own block, so no row observes every block):
      ``per_task=True`` fits a lasso per task on the task's observed columns ``[x_0 | x_task]``,
      on the training and validation rows (the lasso's own cross-validation replaces the
      validation set), and sets ``test_table_`` like the other block-wise estimators.
      ``per_task=False`` raises: there are no complete rows.

    Columns are standardised on the fitting rows; the penalty is chosen by ``cv``-fold
    cross-validation over ``n_alphas`` values (scikit-learn's ``LassoCV``).

    Parameters
    ----------
    per_task : bool
        One lasso per task (or ``groups`` label) instead of one pooled lasso.
    cv : int
        Cross-validation folds (at least 2; fewer when a task has fewer rows).
    n_alphas : int
        Length of the penalty path.
    max_iter : int
        Coordinate-descent iterations per penalty.
    random_state : int, numpy Generator or None
        Seed of the split (``fit(data)`` without a split) and of the fold assignment (None: fresh
        randomness, kept in ``seed_``).

    Attributes
    ----------
    models_ : list of sklearn.pipeline.Pipeline
        The fitted lassos (one, or one per task / group).
    alpha_ : list of float
        The cross-validated penalties.
    n_complete_ : list of int
        Rows each lasso was fitted on.
    """

    def __init__(self, per_task: bool = False, cv: int = 5, n_alphas: int = 100, max_iter: int = 10000,
                 random_state: Any = None) -> None:
        self.per_task = per_task
        self.cv = cv
        self.n_alphas = n_alphas
        self.max_iter = max_iter
        self.random_state = random_state

    # -------------------------------------------------------------------------- fitting
    def _check_params(self) -> None:
        check_bool(self.per_task, "per_task")
        check_int(self.cv, "cv", low=2, high=1000)
        check_int(self.n_alphas, "n_alphas", low=1, high=10**5)
        check_int(self.max_iter, "max_iter", low=1, high=10**7)

    def _lasso(self, X: np.ndarray, y: np.ndarray, seed: int, where: str):
        from sklearn.linear_model import LassoCV
        from sklearn.model_selection import KFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        n = X.shape[0]
        if n < 3:
            raise DataValidationError(f"{where}: {n} complete row(s); the cross-validated lasso needs at least 3")
        folds = KFold(n_splits=min(int(self.cv), n), shuffle=True, random_state=seed)
        # scikit-learn >= 1.7 takes the path length as ``alphas=int`` (``n_alphas`` is deprecated, then gone)
        path = ({"n_alphas": int(self.n_alphas)} if "n_alphas" in LassoCV().get_params()
                else {"alphas": int(self.n_alphas)})
        model = make_pipeline(StandardScaler(), LassoCV(cv=folds, max_iter=int(self.max_iter), **path))
        import warnings

        from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

        from hetmtl.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SkConvergenceWarning)
            model.fit(X, y)
        if any(issubclass(w.category, SkConvergenceWarning) for w in caught):
            warnings.warn(f"{where}: the lasso's coordinate descent did not converge in max_iter={self.max_iter} "
                          "iterations for some penalties", ConvergenceWarning, stacklevel=4)
        return model

    def fit(self, X, y=None, groups=None) -> "CCLasso":
        """Fit on a NaN-coded design, or on block-wise data.

        Parameters
        ----------
        X : array-like or BlockwiseData
            ``(n, p)`` design with NaN in missing blocks, or the block-wise data.
        y : array-like or BlockwiseSplit, optional
            Responses ``(n,)`` with an array ``X``; with a BlockwiseData an optional split
            (default a 60/20/20 split seeded by ``random_state``).
        groups : array-like, optional
            With an array ``X`` and ``per_task=True``: the task (or group) label of every row.

        Returns
        -------
        CCLasso
            The fitted estimator.
        """
        self._check_params()
        if isinstance(X, BlockwiseData):
            if y is not None and not isinstance(y, BlockwiseSplit):
                raise ParameterError(f"with a BlockwiseData, the second argument must be a BlockwiseSplit, "
                                     f"got {type(y).__name__}")
            super().fit(X, y)
            return self
        from hetmtl._validation import seed_from

        self.seed_ = seed_from(self.random_state)
        Xa = check_array(X, "X", allow_nan=True)
        if y is None:
            raise ParameterError("y is required with an array X")
        ya = check_array(y, "y", ndim=1)
        if ya.shape[0] != Xa.shape[0]:
            raise DataValidationError(f"y has {ya.shape[0]} rows, X has {Xa.shape[0]}")
        complete = ~np.isnan(Xa).any(axis=1)
        self.n_features_in_ = Xa.shape[1]
        if self.per_task:
            if groups is None:
                raise ParameterError("per_task=True with an array X needs groups (the task of every row)")
            g = np.asarray(groups)
            if g.shape != (Xa.shape[0],):
                raise DataValidationError(f"groups has shape {g.shape}; expected ({Xa.shape[0]},)")
            self.groups_: list | None = list(dict.fromkeys(g.tolist()))
            keep = [complete & (g == lab) for lab in self.groups_]
            where = [f"group {lab!r}" for lab in self.groups_]
        else:
            if groups is not None:
                raise ParameterError("groups is only used with per_task=True")
            self.groups_ = None
            keep, where = [complete], ["pooled complete-case fit"]
        self.models_, self.n_complete_, self._donors = [], [], []
        for k, (rows, w) in enumerate(zip(keep, where)):
            self.models_.append(self._lasso(Xa[rows], ya[rows], self.seed_ + k, w))
            self.n_complete_.append(int(rows.sum()))
            self._donors.append(Xa[rows])
        self.alpha_ = [float(m[-1].alpha_) for m in self.models_]
        return self

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        if not self.per_task:
            raise DataValidationError(
                "cc_lasso: no row of this BlockwiseData observes every block (each task observes the anchor and "
                "its own block); use per_task=True (a lasso per task on its observed blocks)")
        self.models_, self.n_complete_ = [], []
        for t in range(data.n_tasks):
            rows = np.concatenate([np.asarray(split.train[t]), np.asarray(split.val[t])])
            X = np.hstack([data.x0(t), data.x_private(t)])[rows]
            self.models_.append(self._lasso(X, data.y(t)[rows], self.seed_ + t, f"task {data.task_names[t]!r}"))
            self.n_complete_.append(int(rows.size))
        self.alpha_ = [float(m[-1].alpha_) for m in self.models_]

    # -------------------------------------------------------------------------- prediction
    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        return self.models_[t].predict(np.hstack([x0, x_own]))

    def predict(self, X, task=None) -> np.ndarray:
        """Predictions.

        Parameters
        ----------
        X : array-like
            After ``fit(data)``: the task's observed columns ``[x_0 | x_task]``. After
            ``fit(X, y)``: rows in the training column order, NaN in missing blocks.
        task : str or int, optional
            The task (after ``fit(data)``), or the ``groups`` label (after ``fit(X, y, groups)``
            with ``per_task=True``).

        Returns
        -------
        numpy.ndarray
            Predictions ``(n,)``.
        """
        check_is_fitted(self, "models_")
        if hasattr(self, "task_names_"):
            if task is None:
                raise ParameterError("task is required: the model was fitted on block-wise data")
            return super().predict(X, task)
        Xa = check_array(X, "X", allow_nan=True, n_columns=self.n_features_in_)
        if self.groups_ is None:
            if task is not None:
                raise ParameterError("task is only used with per_task=True")
            k = 0
        else:
            if task not in self.groups_:
                raise ParameterError(f"task must be one of the groups {self.groups_}, got {task!r}")
            k = self.groups_.index(task)
        return self.models_[k].predict(self._fill(Xa, self._donors[k]))

    @staticmethod
    def _fill(X: np.ndarray, donors: np.ndarray) -> np.ndarray:
        """Missing columns of each row by least squares on its observed columns (fitted on ``donors``)."""
        X = X.copy()
        miss = np.isnan(X)
        for key in {tuple(r) for r in miss.tolist()}:
            m = np.array(key)
            if not m.any():
                continue
            rows = np.flatnonzero((miss == m).all(axis=1))
            obs = np.flatnonzero(~m)
            A = np.hstack([np.ones((donors.shape[0], 1)), donors[:, obs]])
            coef, *_ = np.linalg.lstsq(A, donors[:, m], rcond=None)
            X[np.ix_(rows, np.flatnonzero(m))] = np.hstack([np.ones((rows.size, 1)), X[np.ix_(rows, obs)]]) @ coef
        return X

    def evaluate(self, data: BlockwiseData, rows=None):
        """Per-task RMSE and their average (after ``fit(data, split)``), as :func:`~hetmtl.blockwise.rmse_table`."""
        check_is_fitted(self, "task_names_")
        return super().evaluate(data, rows)
