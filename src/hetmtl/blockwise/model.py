"""MTL-HMB estimator (Step 1 HBI + Step 2 heterogeneous MTL) and the shared estimator base.

Use :class:`MTLHMB` for prediction with block-wise missing multi-source data where tasks differ in
their feature distributions (covariate shift) and in P(y | x) (posterior drift). ``fit(data)``
takes a :class:`~hetmtl.data.BlockwiseData`, splits every task 60/20/20 (or uses a given
:class:`~hetmtl.blockwise.selection.BlockwiseSplit`, so several methods can share one split),
imputes the missing blocks (HBI), trains the whole Step-2 grid in batched form with per-
configuration early stopping, and keeps a configuration by the selection rule (default: the
smallest configuration within 0.25 standard errors of the lowest float64 validation loss, so that
losses tied up to rounding choose the same; ``"min"``: the lowest loss, the authors' rule; see
:func:`~hetmtl.blockwise.selection.select_config`).
``predict(X, task=...)`` takes the task's observed columns ``[x_0 | x_task]``;
``test_rmse_`` holds the per-task test RMSE and ``test_rmse_avg_`` the paper's average RMSE.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from hetmtl._progress import check_verbose
from hetmtl._validation import check_choice, check_float, check_int, check_is_fitted, seed_from
from hetmtl.blockwise._engine import (ENGINES, GridFit, TaskBatches, TrainSettings, fit_grid, group_key_for,
                                      score_grid)
from hetmtl.blockwise.hbi import HBImputer, _dtype, export_grid, import_grid
from hetmtl.blockwise.nets import Step2Net
from hetmtl.blockwise.selection import (DEFAULT_SELECTION, BlockwiseSplit, check_selection, make_split, rmse_table,
                                        step2_grid)
from hetmtl.data._arrays import MAX_ABS_DATA
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import ConvergenceWarning, DataValidationError, ParameterError
from hetmtl.training import check_trained, torch_threads

GROUP_BY = ("width", "all", "depth", "config", "arch")
#: upper bounds of the integer training parameters (beyond them a fit cannot finish)
MAX_EPOCHS = 10**7


def check_training_params(est: Any) -> None:
    """Validate the training parameters an estimator has (errors name the parameter).

    Parameters
    ----------
    est : estimator
        A block-wise estimator; attributes it lacks are skipped.

    Raises
    ------
    ParameterError
        Naming the parameter.
    """
    checks = {
        "max_epochs": lambda v: check_int(v, "max_epochs", low=1, high=MAX_EPOCHS),
        "hbi_max_epochs": lambda v: check_int(v, "hbi_max_epochs", low=1, high=MAX_EPOCHS),
        "patience": lambda v: check_int(v, "patience", low=1, high=MAX_EPOCHS),
        "lr": lambda v: check_float(v, "lr", low=0.0, low_open=True, high=10.0),
        "lr_step": lambda v: check_int(v, "lr_step", low=1, high=MAX_EPOCHS, allow_none=True),
        "lr_gamma": lambda v: check_float(v, "lr_gamma", low=0.0, low_open=True, high=1.0),
        "batch_size": lambda v: check_int(v, "batch_size", low=1, high=1 << 16, allow_none=True),
        "dtype": lambda v: check_choice(str(v).replace("torch.", ""), "dtype", ("float32", "float64")),
        "engine": lambda v: check_choice(v, "engine", ENGINES),
        "group_by": lambda v: check_choice(v, "group_by", GROUP_BY),
        "n_threads": lambda v: check_int(v, "n_threads", low=1, high=1024, allow_none=True),
        "dr_mode": lambda v: check_choice(v, "dr_mode", ("per_task", "sum_inside")),
        "imputation": lambda v: check_choice(v, "imputation", ("hbi", "naive")),
        "hbi_rows": lambda v: check_choice(v, "hbi_rows", ("all", "train")),
        "hbi_orth_power": lambda v: check_choice(v, "hbi_orth_power", (1, 2)),
        "features": lambda v: check_choice(v, "features", ("observed", "imputed")),
        "selection": check_selection,
        "verbose": check_verbose,
    }
    for name, check in checks.items():
        if name in vars(est):
            check(getattr(est, name))


class BlockwiseRegressor(BaseEstimator):
    """Shared fit / predict / evaluate logic of the block-wise estimators.

    After :meth:`fit`, ``test_table_`` (per-task test RMSE, :func:`rmse_table`), ``test_rmse_``
    and ``test_rmse_avg_`` (the paper's average RMSE) hold the test-set results when the split
    has test rows.
    """

    def fit(self, data: BlockwiseData, split: BlockwiseSplit | None = None) -> "BlockwiseRegressor":
        """Fit on block-wise data.

        Parameters
        ----------
        data : BlockwiseData
            All tasks.
        split : BlockwiseSplit, optional
            Train / validation / test rows per task (default: a 60/20/20 split seeded by
            ``random_state``); pass one split to several methods for paired comparisons.

        Returns
        -------
        BlockwiseRegressor
            The fitted estimator.
        """
        if not isinstance(data, BlockwiseData):
            raise TypeError(f"data must be a BlockwiseData, got {type(data).__name__}")
        check_training_params(self)
        self.seed_ = seed_from(self.random_state)  # None: fresh randomness, recorded here
        split = make_split(data, seed=self.seed_) if split is None else split
        if not isinstance(split, BlockwiseSplit):
            raise ParameterError(f"split must be a BlockwiseSplit, got {type(split).__name__}")
        split.check(data)
        self.task_names_ = list(data.task_names)
        self.source_dims_ = data.source_dims
        self.private_source_ = data.private_source
        self.source_names_ = list(data.source_names)
        self.source_columns_ = data.source_columns
        self.n_tasks_ = data.n_tasks
        self.split_ = split
        self.dtype_ = _dtype(getattr(self, "dtype", "float64"))
        with torch_threads(getattr(self, "n_threads", 1)):
            self._fit(data, split)
        if all(len(r) > 0 for r in split.test):
            table = self.evaluate(data, split.test)
            self.test_table_ = table
            self.test_rmse_ = table["rmse"].iloc[:-1]
            self.test_rmse_avg_ = float(table["rmse"].iloc[-1])
        return self

    # hooks ------------------------------------------------------------------------------
    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # public API ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        check_is_fitted(self, "task_names_")

    def _task(self, task) -> int:
        self._check_fitted()
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if not 0 <= int(task) < self.n_tasks_:
                raise DataValidationError(f"task index {task} out of range for {self.n_tasks_} tasks")
            return int(task)
        if str(task) not in self.task_names_:
            raise DataValidationError(f"unknown task {task!r}; tasks are {self.task_names_}")
        return self.task_names_.index(str(task))

    def _split_X(self, X, t: int) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, float)
        p0, pt = self.source_dims_[0], self.source_dims_[self.private_source_[t]]
        if X.ndim != 2 or X.shape[1] != p0 + pt:
            raise DataValidationError(
                f"task {self.task_names_[t]!r}: X must have the task's observed columns [x0 | own block] "
                f"= {p0} + {pt} = {p0 + pt}, got shape {X.shape}"
            )
        if X.shape[0] == 0:
            raise DataValidationError(f"task {self.task_names_[t]!r}: X has 0 rows; pass at least one row")
        if not np.all(np.isfinite(X)):
            raise DataValidationError(f"task {self.task_names_[t]!r}: X has non-finite values")
        if np.abs(X).max() > MAX_ABS_DATA:
            raise DataValidationError(f"task {self.task_names_[t]!r}: X has values beyond ±{MAX_ABS_DATA:g} "
                                      f"(largest {np.abs(X).max():.3g}); rescale the data")
        return X[:, :p0], X[:, p0:]

    def predict(self, X, task) -> np.ndarray:
        """Predictions for rows of one task.

        Parameters
        ----------
        X : array-like
            Rows ``[x_0 | x_task]``: the task's observed columns, anchor first.
        task : str or int
            A task name or its position.

        Returns
        -------
        numpy.ndarray
            Predictions, ``(n,)``.
        """
        t = self._task(task)
        x0, xo = self._split_X(X, t)
        with torch_threads(getattr(self, "n_threads", 1)):
            return self._predict_task(t, x0, xo)

    def score(self, X, y, task) -> float:
        """R^2 of the predictions for one task (scikit-learn regressor convention).

        Parameters
        ----------
        X : array-like
            Rows ``[x_0 | x_task]``: the task's observed columns, anchor first.
        y : array-like
            Responses, ``(n,)``.
        task : str or int
            A task name or its position.

        Returns
        -------
        float
            Coefficient of determination.
        """
        y = np.asarray(y, float)
        pred = self.predict(X, task)
        return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))

    def evaluate(self, data: BlockwiseData, rows=None) -> pd.DataFrame:
        """Per-task RMSE and their average.

        Parameters
        ----------
        data : BlockwiseData
            Data with the fitted tasks and blocks.
        rows : sequence of numpy.ndarray, optional
            ``rows[t]``: rows of task t to evaluate (default all).

        Returns
        -------
        pandas.DataFrame
            As :func:`rmse_table`.
        """
        self._check_fitted()
        ys, preds = [], []
        for t in range(data.n_tasks):
            r = np.arange(data.n_per_task[t]) if rows is None else np.asarray(rows[t])
            X = np.hstack([data.x0(t)[r], data.x_private(t)[r]])
            preds.append(self.predict(X, t))
            ys.append(data.y(t)[r])
        return rmse_table(ys, preds, data.task_names)


def _task_streams(inputs: dict[str, list[np.ndarray]], y: list[np.ndarray], rows, batch_size, dtype) -> TaskBatches:
    arrays: dict[str, Sequence[np.ndarray]] = {k: [a[np.asarray(r)] for a, r in zip(v, rows)]
                                               for k, v in inputs.items()}
    arrays["y"] = [a[np.asarray(r)] for a, r in zip(y, rows)]
    return TaskBatches(arrays, batch_size, dtype)


def fit_multitask_grid(net_factory, configs: list[dict], inputs: dict[str, list[np.ndarray]], ys: list[np.ndarray],
                       train_rows, val_rows, settings: TrainSettings, seed: int, group_by: str,
                       selection: str | float = "min",
                       verbose: int = 0, what: str = "grid") -> GridFit:
    """Train a stacked multi-task network over a grid of configurations.

    Early stopping uses the summed per-task validation MSE on ``val_rows``; the selection
    recomputes it in float64 with its standard error (:func:`~hetmtl.blockwise._engine.score_grid`)
    and applies ``selection``. Configurations for which no epoch gave a finite validation loss are
    left out with a :class:`~hetmtl.exceptions.ConvergenceWarning` naming them;
    :class:`~hetmtl.exceptions.TrainingError` when that is every configuration.

    Parameters
    ----------
    net_factory : callable
        ``net_factory(width, depth)``: the network of a group of configurations.
    configs : list of dict
        The grid.
    inputs : dict
        ``inputs[name][t]``: input arrays of task t.
    ys : list of numpy.ndarray
        Responses per task.
    train_rows, val_rows : sequence of numpy.ndarray
        Training and validation rows per task.
    settings : TrainSettings
        Optimisation settings.
    seed : int
        Seed of initialisation and batches.
    group_by : str
        How configurations are stacked (torch engine).
    selection : float or {"min", "1se"}
        Selection rule (:func:`~hetmtl.blockwise.selection.select_config`).
    verbose : int
        Progress bar over the configurations when >= 1.
    what : str
        The fit, named in progress and errors (e.g. ``"MTLHMB Step 2"``).

    Returns
    -------
    GridFit
        Every configuration's fit and the selected one.
    """
    val = _task_streams(inputs, ys, val_rows, None, settings.dtype).full()

    def make_stream(c):
        return _task_streams(inputs, ys, train_rows, c.get("batch_size", settings.batch_size), settings.dtype)

    def make_model(cfgs, idx):
        net = net_factory(max(int(c["width"]) for c in cfgs), max(int(c["depth"]) for c in cfgs))
        params, cfg = net.init(cfgs, idx, seed, settings.dtype)
        return net, params, cfg

    fit = fit_grid(make_model, configs, make_stream, val, settings, seed, group_key_for(group_by), verbose, what)
    labels = [_label(c) for c in configs]
    ok = check_trained(fit.val_loss, labels, what)
    if not ok.all():
        bad = [labels[i] for i in np.flatnonzero(~ok)]
        warnings.warn(f"{what}: {len(bad)} configuration(s) produced no finite validation loss and are left out "
                      f"of the selection: {', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}", ConvergenceWarning,
                      stacklevel=3)
    score_grid(fit, val, selection)
    check_trained(fit.val_loss, labels, what)
    return fit


def _label(c: dict) -> str:
    """A configuration in words, for messages."""
    return "{" + ", ".join(f"{k}={v}" for k, v in c.items()) + "}"


class Step1Mixin:
    """Settings and Step-1 (HBI) plumbing shared by MTL-HMB and the Step-1 baselines."""

    # provided by the estimators that use the mixin (their parameters and fitted attributes)
    max_epochs: int
    patience: int
    lr: float
    lr_step: int | None
    lr_gamma: float
    batch_size: int
    dtype: str
    dtype_: torch.dtype
    hbi_rows: str
    hbi_grid: str
    hbi_max_epochs: int
    group_by: str
    n_threads: int | None
    random_state: Any
    seed_: int
    selection: str | float
    verbose: int
    source_dims_: list[int]
    private_source_: list[int]
    imputer_: HBImputer

    def _settings(self) -> TrainSettings:
        return TrainSettings(max_epochs=int(self.max_epochs), patience=int(self.patience), lr=float(self.lr),
                             lr_step=None if self.lr_step is None else int(self.lr_step),
                             lr_gamma=float(self.lr_gamma),
                             batch_size=None if self.batch_size is None else int(self.batch_size), dtype=self.dtype_,
                             engine=getattr(self, "engine", "torch"))  # STL / HPS: torch

    def _fit_imputer(self, data: BlockwiseData, split: BlockwiseSplit) -> HBImputer:
        given = getattr(self, "imputer", None)
        if given is not None:  # a fitted HBImputer shared between methods of one replicate
            if not isinstance(given, HBImputer) or not hasattr(given, "members_"):
                raise ParameterError("imputer must be a fitted HBImputer")
            if given.source_dims_ != data.source_dims or given.private_source_ != data.private_source:
                raise DataValidationError("the given imputer was fitted on data with other blocks")
            return given
        imputation = getattr(self, "imputation", "hbi")
        src = data if self.hbi_rows == "all" else data.subset(
            [np.concatenate([a, b]) for a, b in zip(split.train, split.val)])
        imp = HBImputer(grid=self.hbi_grid, heterogeneous=imputation == "hbi", orth_power=getattr(self, "hbi_orth_power", 1),
                        max_epochs=self.hbi_max_epochs, patience=self.patience, lr=self.lr,
                        group_by="config" if self.group_by == "config" else "depth", dtype=self.dtype,
                        engine=getattr(self, "engine", "torch"),
                        n_threads=self.n_threads, random_state=self.seed_, verbose=getattr(self, "verbose", 0))
        return imp.fit(src)

    def _features(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        parts = []
        for s in range(len(self.source_dims_)):
            if s == 0:
                parts.append(x0)
            elif s == self.private_source_[t]:
                parts.append(x_own)
            else:
                parts.append(self.imputer_.impute_block(x0, s))
        return np.hstack(parts)


class MTLHMB(Step1Mixin, BlockwiseRegressor):
    """MTL-HMB: heterogeneous block-wise imputation + heterogeneous multi-task learning.

    Parameters
    ----------
    grid : {"small", "code", "paper"} or list of dict
        Step-2 grid: ``"small"`` (default, 8 configurations), ``"code"`` (the authors' 72),
        ``"paper"`` (243) or dicts with ``width, depth, lambda_orth, lambda_imp, lambda_dr``.
    hbi_grid : {"small", "code", "paper"} or list of dict
        HBI (Step 1) grid.
    imputation : {"hbi", "naive"}
        ``"hbi"`` (Step 1) or ``"naive"`` (ablation 3: G(E_c(.)) fitted on the observing task).
    hbi_rows : {"all", "train"}
        Rows HBI learns from: ``"all"`` (features of every row, as the authors; no responses are
        used) or ``"train"`` (training and validation rows only).
    hbi_orth_power : {1, 2}
        1: the authors' unsquared orthogonality norm; 2: squared.
    dr_mode : {"per_task", "sum_inside"}
        Form of R_dr: ``"per_task"`` (paper Eq. 8) or ``"sum_inside"`` (authors' code).
    batch_size, max_epochs, patience : int
        Step-2 mini-batch size, epoch cap and early-stopping patience.
    lr, lr_step, lr_gamma : float, int or None, float
        Adam learning rate and its StepLR schedule (``lr_step=None``: constant).
    hbi_max_epochs : int
        Epoch cap of Step 1.
    group_by : {"width", "all", "depth", "config"}
        How the torch engine batches configurations (``"config"``: one by one; the batched fits
        reproduce it exactly in float64, up to rounding in float32).
    dtype : {"float32", "float64"}
        Floating-point type of training.
    engine : {"auto", "native", "torch"}
        ``"auto"`` (default): ``"native"`` in float32, ``"torch"`` in float64. ``"native"``: the
        C++ kernel, each configuration trained alone in float32, the grid spread over
        ``n_threads``; bit for bit the fits of training one by one, about twice as fast as torch
        (``group_by`` is ignored but for ``"config"``). ``"torch"``: configurations stacked,
        autograd, float32 or float64. Step 1 (HBI) uses the same engine.
    n_threads : int or None
        Threads (native grid workers, or torch threads).
    random_state : int, numpy Generator or None
        Seed of the split, initialisation and batches (None: fresh randomness; the seed drawn is
        kept in ``seed_``).
    imputer : HBImputer, optional
        A fitted imputer to reuse (e.g. shared with the Step-1 baselines).
    selection : float or {"min", "1se"}
        How the Step-2 configuration is chosen from the float64 validation losses: a number k
        (default 0.25) keeps the smallest configuration within k standard errors (over validation
        rows) of the lowest loss, so that losses tied up to rounding choose the same; ``"1se"`` is
        k = 1, ``"min"`` the lowest loss (the authors' rule). See
        :func:`~hetmtl.blockwise.selection.select_config` for the measured choice of 0.25 and why
        no rule makes float32 native fits CPU-independent.
    verbose : int
        0 (default) silent; >= 1 progress bars over the grid configurations of Step 1 and Step 2.

    Attributes
    ----------
    imputer_ : HBImputer
        The fitted Step-1 imputer.
    selected_config_ : dict
        The selected Step-2 configuration.
    seed_ : int
        The seed used (``random_state``, or drawn when it is None).
    test_rmse_ : pandas.Series
        Per-task test RMSE.
    test_rmse_avg_ : float
        The paper's average test RMSE.
    """

    def __init__(self, grid="small", hbi_grid="small", imputation: str = "hbi", hbi_rows: str = "all",
                 hbi_orth_power: int = 1, dr_mode: str = "per_task", batch_size: int = 16, max_epochs: int = 25000,
                 patience: int = 30, lr: float = 1e-3, lr_step: int | None = 200, lr_gamma: float = 0.95,
                 hbi_max_epochs: int = 5000, group_by: str = "width", dtype: str = "float32", engine: str = "auto",
                 n_threads: int | None = 1, random_state: Any = None, imputer: HBImputer | None = None,
                 selection: str | float = DEFAULT_SELECTION, verbose: int = 0) -> None:
        self.grid = grid
        self.hbi_grid = hbi_grid
        self.imputation = imputation
        self.selection = selection
        self.verbose = verbose
        self.engine = engine
        self.imputer = imputer
        self.hbi_rows = hbi_rows
        self.hbi_orth_power = hbi_orth_power
        self.dr_mode = dr_mode
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

    def _imputed_mask(self) -> torch.Tensor:
        dims = self.source_dims_
        starts = np.concatenate([[0], np.cumsum(dims)])
        mask = np.zeros((self.n_tasks_, int(starts[-1])))
        for t in range(self.n_tasks_):
            for s in range(1, len(dims)):
                if s != self.private_source_[t]:
                    mask[t, starts[s]:starts[s + 1]] = 1.0
        return torch.as_tensor(mask, dtype=self.dtype_)

    def _fit(self, data: BlockwiseData, split: BlockwiseSplit) -> None:
        seed = self.seed_
        configs = step2_grid(self.grid, (self.batch_size,))
        self.imputer_ = self._fit_imputer(data, split)
        xf = self.imputer_.full_designs(data)
        inputs = {"x0": [data.x0(t) for t in range(data.n_tasks)], "xf": xf}
        p0, P, T = data.source_dims[0], xf[0].shape[1], data.n_tasks
        mask = self._imputed_mask()
        for c in configs:
            c.setdefault("batch_size", self.batch_size)
        factory = lambda H, L: Step2Net(p0, P, T, mask, H, L, self.dr_mode)  # noqa: E731
        ys = [data.y(t) for t in range(T)]
        self.fit_ = fit_multitask_grid(factory, configs, inputs, ys, split.train, split.val, self._settings(), seed,
                                       self.group_by, self.selection, self.verbose, "MTLHMB Step 2")
        self.selected_config_ = self.fit_.selected_config
        self.member_ = self.fit_.member()

    def _forward_task(self, t: int, x0: np.ndarray, x_own: np.ndarray):
        net, params, cfg = self.member_
        xf = self._features(t, x0, x_own)
        T = self.n_tasks_
        x0_t = torch.as_tensor(np.broadcast_to(x0, (T, *x0.shape)).copy(), dtype=self.dtype_)
        xf_t = torch.as_tensor(np.broadcast_to(xf, (T, *xf.shape)).copy(), dtype=self.dtype_)
        with torch.no_grad():
            y, fc, fu = net.forward(params, cfg, x0_t, xf_t)
        h = int(self.selected_config_["width"])
        return y[0, t].numpy().astype(float), fc[0, t, :, :h].numpy(), fu[0, t, :, :h].numpy()

    def _predict_task(self, t: int, x0: np.ndarray, x_own: np.ndarray) -> np.ndarray:
        return self._forward_task(t, x0, x_own)[0]

    def transform(self, X, task) -> dict[str, np.ndarray]:
        """Latent representations of rows of one task for the selected configuration.

        Parameters
        ----------
        X : array-like
            Rows ``[x_0 | x_task]``: the task's observed columns, anchor first.
        task : str or int
            A task name or its position.

        Returns
        -------
        dict
            ``shared`` = phi_c(x_0) and ``specific`` = phi_p^task(full features), each ``(n, h)``.
        """
        t = self._task(task)
        x0, xo = self._split_X(X, t)
        _, fc, fu = self._forward_task(t, x0, xo)
        return {"shared": fc, "specific": fu}

    def selection_table(self) -> pd.DataFrame:
        """Step-2 grid with each configuration's best validation loss and epoch.

        Returns
        -------
        pandas.DataFrame
            One row per configuration; ``selected`` marks the kept one.
        """
        self._check_fitted()
        df = self.fit_.table()
        df["selected"] = np.arange(len(df)) == self.fit_.selected
        return df

    # export (no pickles) -------------------------------------------------------------------
    def to_json(self, path=None) -> str:
        """The fitted model as validated, checksummed JSON (:mod:`hetmtl.serialization`).

        Holds the Step-2 network, the fitted HBI imputer, the split and the test table;
        :meth:`from_json` predicts identically.

        Parameters
        ----------
        path : str or pathlib.Path, optional
            File to write.

        Returns
        -------
        str
            The JSON text.
        """
        from hetmtl import serialization

        self._check_fitted()
        net = self.member_[0]
        args = dict(p0=net.p0, P=net.P, T=net.T, width=net.width, depth=net.depth, dr_mode=net.dr_mode,
                    in_true=net.in_true)
        step2, tensors = export_grid(self.fit_, "step2.", args)
        tensors["step2.imputed"] = net.imputed
        imp_params, imp_fitted, imp_tensors = self.imputer_._export("imputer.")
        tensors |= imp_tensors
        for part in ("train", "val", "test"):
            tensors |= {f"split.{part}.{t}": np.asarray(r, dtype=np.int64) for t, r in enumerate(getattr(self.split_, part))}
        fitted = {"task_names": self.task_names_, "source_dims": self.source_dims_, "private_source": self.private_source_,
                  "source_names": self.source_names_, "source_columns": self.source_columns_, "step2": step2,
                  "imputer": {"params": imp_params, "fitted": imp_fitted}}
        if hasattr(self, "test_table_"):
            fitted["test_table"] = {"index": list(self.test_table_.index),
                                    **{c: self.test_table_[c].tolist() for c in self.test_table_.columns}}
        params = {**self.get_params(deep=False), "imputer": None}
        return serialization.dumps(type(self).__name__, params, fitted, tensors, path)

    @classmethod
    def from_json(cls, source) -> "MTLHMB":
        """A fitted model from :meth:`to_json` output.

        Parameters
        ----------
        source : str or pathlib.Path
            JSON text or a file path.

        Returns
        -------
        MTLHMB
            The fitted model.
        """
        from hetmtl import serialization as ser

        params, fitted, enc = ser.loads(source, cls.__name__)
        where = "model JSON" if isinstance(source, str) and source.lstrip().startswith("{") else str(source)
        try:
            model = cls._from_loaded(params, fitted, enc)
            model._check_loaded()
            return model
        except ser.ModelFormatError as exc:
            msg = str(exc)
            raise ser.ModelFormatError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError, OverflowError) as exc:
            raise ser.ModelFormatError(f"{where}: malformed {cls.__name__} model ({type(exc).__name__}: {exc})") from None

    def _check_loaded(self) -> None:
        """Dry run of a loaded model: the declared task/source sizes must fit the stored networks
        (one zero row per task through the prediction path), so a forged file fails at load time
        rather than inside torch at the first ``predict``."""
        from hetmtl.serialization import ModelFormatError

        if len(self.private_source_) != self.n_tasks_ or not self.source_dims_:
            raise ModelFormatError(f"{self.n_tasks_} tasks but {len(self.private_source_)} private sources "
                                   f"and {len(self.source_dims_)} source sizes")
        for t in range(self.n_tasks_):
            s = self.private_source_[t]
            if not 0 < s < len(self.source_dims_) or min(self.source_dims_) < 1:
                raise ModelFormatError(f"task {self.task_names_[t]!r}: private source {s} / source sizes "
                                       f"{self.source_dims_} are invalid")
            p = self.source_dims_[0] + self.source_dims_[s]
            try:
                with torch_threads(getattr(self, "n_threads", 1)):
                    out = self._predict_task(t, np.zeros((1, self.source_dims_[0])), np.zeros((1, self.source_dims_[s])))
            except (RuntimeError, IndexError, ValueError, KeyError, TypeError) as exc:
                raise ModelFormatError(f"task {self.task_names_[t]!r}: the stored networks do not fit the declared "
                                       f"sizes ({p} columns; {type(exc).__name__}: {exc})") from None
            if np.shape(out) != (1,) or not np.all(np.isfinite(out)):
                raise ModelFormatError(f"task {self.task_names_[t]!r}: the stored networks give "
                                       f"{'non-finite' if np.shape(out) == (1,) else f'shape {np.shape(out)}'} "
                                       f"predictions")

    @classmethod
    def _from_loaded(cls, params: dict, fitted: dict, enc: dict) -> "MTLHMB":
        """:meth:`from_json` after the file's checks: sizes compared with the stored arrays before any
        network is built (:func:`~hetmtl.blockwise.hbi.import_grid`)."""
        from hetmtl import serialization as ser

        try:
            model = cls(**params)
            check_training_params(model)  # e.g. a forged n_threads must not reach torch.set_num_threads
            model.dtype_ = _dtype(model.dtype)
        except (TypeError, KeyError, ValueError) as exc:
            raise ser.ModelFormatError(f"{cls.__name__} model: invalid hyperparameters ({exc})") from None
        ser.require(fitted, ("task_names", "source_dims", "private_source", "source_names", "step2", "imputer"), "fitted")
        t = {k: ser.decode_tensor(v, k) for k, v in enc.items()}
        model.task_names_ = [str(v) for v in fitted["task_names"]]
        model.n_tasks_ = len(model.task_names_)
        model.source_dims_ = [int(v) for v in fitted["source_dims"]]
        model.private_source_ = [int(v) for v in fitted["private_source"]]
        model.source_names_ = list(fitted["source_names"])
        model.source_columns_ = fitted.get("source_columns")
        args = dict(fitted["step2"]["net"])
        ser.require(t, ("step2.imputed",), "tensors")
        imputed = t["step2.imputed"].to(model.dtype_)
        try:
            net = Step2Net(args.pop("p0"), args.pop("P"), args.pop("T"), imputed, **args)
        except (KeyError, TypeError, ValueError) as exc:
            raise ser.ModelFormatError(f"{cls.__name__} model: invalid Step-2 network ({exc})") from None
        model.fit_ = import_grid(fitted["step2"], t, "step2.", net, model.dtype_)
        model.selected_config_ = model.fit_.selected_config
        model.member_ = model.fit_.member()
        imp = fitted["imputer"]
        model.imputer_ = HBImputer._import(imp["params"], imp["fitted"], t, "imputer.")
        parts = {p: tuple(t[f"split.{p}.{i}"].numpy() for i in range(model.n_tasks_)) for p in ("train", "val", "test")}
        model.split_ = BlockwiseSplit(parts["train"], parts["val"], parts["test"])
        if "test_table" in fitted:
            tab = dict(fitted["test_table"])
            model.test_table_ = pd.DataFrame({k: v for k, v in tab.items() if k != "index"}, index=tab["index"])
            model.test_rmse_ = model.test_table_["rmse"].iloc[:-1]
            model.test_rmse_avg_ = float(model.test_table_["rmse"].iloc[-1])
        return model
