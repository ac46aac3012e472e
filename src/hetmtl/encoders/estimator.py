"""Dual-encoder multi-task regression (Sui, Xu, Bai & Qu 2025, arXiv 2505.24281).

What to use when: several regression tasks share one feature space but differ in their
covariate distributions (distribution heterogeneity) and/or in E[y | x] (posterior
heterogeneity), and some tasks are small. Start with :class:`~hetmtl.encoders.DualEncoderMTLCV`,
which tunes the settings below by cross-validation (its grid includes the purely linear
multi-task model) and refits on all rows; use :class:`DualEncoderMTL` directly for one fit at
settings you chose. Compare with per-task ridge and gradient boosting
(:func:`hetmtl.encoders.compare_methods`, methods ``ridge``, ``gbm``, ``gbm_pooled``): in
``benchmarks/results/encoders_strong_baselines.md`` they are the ones to beat.
:class:`DualEncoderMTL` predicts task r by

    f_r(x) = b_r + alpha_r' S_r(x) + beta_r' C(x) [+ gamma_r' x with ``linear=True``]

with a shared encoder C (``n_shared`` latent dims) and task encoders S_r (``n_specific``), an
orthogonality penalty ``lam_orth * sum_r (n_r/N) ||S_bar_r' C_bar_r||_F^2`` on centred,
Frobenius-normalised encodings, and a centre penalty ``lam * sum_r w_r ||alpha_r - alpha_bar||``
(group-l2 by default, l1 option) that fuses a task's coefficients to the common centre when the
data allow (adaptive integration). Training alternates Adam on the encoders (coefficients fixed),
proximal-gradient steps on the coefficients (encoders fixed; prox in the C++ core) and a centre
update (geometric median), with early stopping on the summed validation MSE.

Example (tuning, then one fit at fixed settings)::

    from hetmtl.encoders import DualEncoderMTL, DualEncoderMTLCV
    cv = DualEncoderMTLCV(cv=3, random_state=0).fit(X, y, task)   # stacked rows + task labels
    cv.best_params_, cv.cv_results_.head()
    cv.predict(X_new, task_new)

    from hetmtl.encoders.simulate import simulate_latent
    data = simulate_latent(n_tasks=5, n=100, posterior_drift=1.0, random_state=0).data
    train, val, test = data.split(random_state=0)   # validation_data may also be (X, y, task)
    model = DualEncoderMTL(random_state=0).fit(train, validation_data=val)
    model.score_tasks(test)                 # per-task RMSE / R^2
    model.predict(test["task1"].X, "task1")

Special cases (ablations): ``n_specific=0`` shared encoder only; ``n_shared=0`` task-specific
only (with ``lam_alpha=0`` this is single-task learning); ``lam_orth=0`` no orthogonality;
``lam_alpha=lam_beta=0`` no integration (shared-bottom hard parameter sharing when also
``n_specific=0``). See :mod:`hetmtl.encoders.baselines`.

Design choices the paper does not publish, made here: pooled 1/N loss, unpenalised intercepts,
one lambda times a fixed per-task weight rule, standardised X and y (pooled over training rows).
Departures from the paper's algorithm, both switchable: ``training="staged"`` (default; the
paper's joint alternation is ``training="joint"``) and ``center_alpha=False`` (default; alpha_r
are coefficients of different networks S_r, so a common centre has no meaning). Stacked input
orders tasks by sorted label unless ``task_order`` is given; ``tasks_`` records the order.
Encoder outputs are linear by default (``normalize=None``): in our runs an affine-free RMS/Layer
normalisation of the latent outputs (for scale identifiability, offered as
``normalize="rms" | "layer"``) raised test RMSE markedly at small n; the encoder step never sees the centre penalty, so it has no incentive to inflate
the encodings, and lambda is read relative to the encoder scale.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from hetmtl._progress import check_verbose, progress_bar
from hetmtl._validation import (
    check_array, check_bool, check_choice, check_float, check_hidden, check_int, check_is_fitted, check_random_state,
)
from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders.model import (
    DTYPE, BatchedMLP, Coefficients, Padded, coefficient_step, encode, linear_part, orthogonality, predict_stacked,
    ridge_init,
)
from hetmtl.encoders.proximal import CENTERS, PENALTIES
from hetmtl.exceptions import ConvergenceWarning, DataValidationError, ParameterError, TrainingError
from hetmtl.training import BatchedEarlyStopping, torch_threads

class UnknownTaskError(DataValidationError, KeyError):
    """A task label the model was not fitted on (a :class:`DataValidationError` and a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: Fitted attributes every fitted :class:`DualEncoderMTL` has.
FITTED = ("coef_", "tasks_", "n_features_in_")


def _ordered_labels(labels: np.ndarray, task_order: Sequence | None) -> list:
    """Task order of stacked input: ``task_order`` if given (checked against the labels), else sorted."""
    present = list(pd.unique(pd.Series(labels)))
    if task_order is not None:
        order = list(task_order)
        if len(set(map(repr, order))) != len(order):
            raise DataValidationError(f"task_order has duplicate labels: {order}")
        missing = [t for t in present if t not in order]
        if missing:
            raise DataValidationError(f"task labels {missing} are not in task_order {order}")
        extra = [t for t in order if t not in present]
        if extra:
            raise DataValidationError(f"task_order names tasks {extra} that have no rows")
        return order
    try:
        return sorted(present)
    except TypeError:  # labels of mixed types: sort by their text
        return sorted(present, key=str)


def as_multitask(X, y=None, task=None, *, task_order: Sequence | None = None, name: str = "X") -> MultiTaskData:
    """Accept a :class:`~hetmtl.data.MultiTaskData`, a tuple ``(X, y, task)``, or stacked arrays
    with per-row task labels.

    Parameters
    ----------
    X : MultiTaskData, tuple or array-like
        The data; a tuple ``(X, y, task)``; or stacked features ``(n, p)``.
    y : array-like, optional
        Stacked outcomes ``(n,)`` (with array ``X``).
    task : array-like, optional
        Task label of every row (with array ``X``).
    task_order : sequence, optional
        Order of the tasks for stacked input (default: the sorted labels); a
        :class:`MultiTaskData` keeps its own order.
    name : str
        Name of the argument in error messages.

    Returns
    -------
    MultiTaskData
        The data, tasks in the stated order.
    """
    if isinstance(X, MultiTaskData):
        return X
    if isinstance(X, tuple) and y is None and task is None:
        if len(X) != 3:
            raise DataValidationError(f"{name} as a tuple must be (X, y, task), got {len(X)} entries")
        X, y, task = X
    if y is None or task is None:
        raise DataValidationError(f"{name}: pass a MultiTaskData, a tuple (X, y, task), or X, y and per-row task labels")
    X = check_array(X, name, ndim=2)
    yy = check_array(y, "y", ndim=1, where=name if name != "X" else "")
    labels = np.asarray(task, dtype=object)
    if labels.shape != (X.shape[0],) or yy.shape != (X.shape[0],):
        raise DataValidationError(f"{name}: X must be (n, p), y (n,) and task (n,); got {X.shape}, {yy.shape} and {labels.shape}")
    if pd.isna(pd.Series(labels)).any():
        raise DataValidationError(f"{name}: missing task label in row(s) {np.flatnonzero(pd.isna(pd.Series(labels)))[:10].tolist()}")
    order = _ordered_labels(labels, task_order)
    return MultiTaskData([X[labels == t] for t in order], [yy[labels == t] for t in order], order)


def _robust_scale(A: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD computed without overflow (values up to the float64 limit); the plain
    computation when it is finite (ordinary data: the same numbers as ``mean``/``std``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, sd = A.mean(axis), A.std(axis)
    if np.all(np.isfinite(mean)) and np.all(np.isfinite(sd)):
        return mean, sd
    big = np.max(np.abs(A), axis=axis)
    big = np.where(big > 0, big, 1.0)
    B = A / big
    return B.mean(axis) * big, B.std(axis) * big


class DualEncoderMTL(BaseEstimator):
    """Dual-encoder multi-task regressor (see the module notes).

    Parameters
    ----------
    n_shared, n_specific : int
        Latent dimensions p of C and q of each S_r (0 drops that encoder; both 0 needs ``linear``).
    hidden : tuple of int
        Hidden-layer widths of every encoder (ReLU MLPs); ``()`` makes the encoders linear maps.
    hidden_specific : tuple of int or None
        Hidden-layer widths of the task-specific encoders S_r (default: ``hidden``). Each S_r
        learns from one task's rows only, so a narrower network overfits less.
    linear : bool
        Linear path: the standardised covariates themselves enter every task's predictor beside
        the encodings, ``+ gamma_r' x``, with ``gamma_r`` pulled towards its own centre by the
        same penalty as ``beta_r`` (strength ``lam_beta``). With ``n_shared = n_specific = 0`` the
        model is a linear multi-task regression (per-task least squares at ``lam_beta = 0``, one
        shared slope vector when ``lam_beta`` is large). That model is convex: it is solved to
        convergence on all training rows (no rows held out, ``max_epochs`` caps the epochs of
        ``prox_steps`` proximal-gradient steps).
    lam_alpha, lam_beta : float or array-like
        Centre-penalty strengths (scalar, or one value per task).
    lam_orth : float
        Orthogonality-penalty strength.
    penalty : {"group_l2", "l1"}
        ``"group_l2"``: block soft-thresholding, fuses whole tasks; ``"l1"``: element-wise.
    center : {"median", "mean"}
        ``"median"`` (geometric / coordinate-wise median: exact centre step) or ``"mean"``.
    center_alpha : bool
        Penalise alpha_r towards a centre. The S_r are different networks, so their coordinates
        have no common meaning across tasks; the default (False) leaves alpha_r free (beta_r and
        gamma_r are always centred when their lambda is > 0).
    center_step : {"joint", "block"}
        ``"joint"``: centres also move inside the proximal-gradient steps, via
        theta_r = centre + delta_r, then the exact centre update; ``"block"``: the literal
        alternation, centres move only in the exact centre update (can stall when fused tasks
        would need to move together). See :func:`hetmtl.encoders.model.coefficient_step`.
    task_weights : {"uniform", "sqrt_n"} or array-like
        Per-task penalty weights: equal, w_r = sqrt(n_r / mean n), or one value per task.
    lr : float
        Adam learning rate (> 0, finite).
    weight_decay : float
        Decoupled weight decay of the encoder weights (AdamW).
    max_epochs : int
        Epoch cap (with ``early_stopping="none"``: the number of epochs trained).
    patience : int
        Early-stopping patience (epochs).
    batch_size : int or None
        Per-task mini-batch size (``None``: full batch).
    prox_steps : int
        Proximal-gradient iterations per epoch.
    prox_backend : {"cpp", "torch"}
        Where the prox runs (C++ core or torch).
    normalize : {"rms", "layer"} or None
        Normalisation of the encoder outputs (default none).
    validation_fraction : float
        Share of each task's rows held out for early stopping when ``validation_data`` is not
        given to :meth:`fit`.
    early_stopping : {"sum", "per_task", "none"}
        ``"sum"``: keep the epoch with the smallest summed validation MSE; ``"per_task"``: each
        task keeps its own best epoch (only without a shared encoder and without integration, i.e.
        single-task learning); ``"none"``: no validation rows, train exactly ``max_epochs`` epochs
        on all rows (the refit of :class:`DualEncoderMTLCV`).
    training : {"staged", "joint"}
        ``"joint"``: the paper's alternation, all encoders trained together with one stopping
        time. ``"staged"`` (default): first the shared encoder, linear path and centres (early
        stopping on the summed validation MSE), then the task encoders S_r and the heads with C
        and the centres frozen, each task keeping its own best epoch; a task whose validation loss
        S_r does not lower keeps its stage-1 state with alpha_r = 0 (S_r off). In our runs the joint schedule let the S_r (fitted to
        one task's rows each) overfit before the shared encoder had converged, so q > 0 lost to
        q = 0; staged, S_r can only add what a task's own rows support.
    specific_epochs : array-like of int or None
        With ``early_stopping="none"`` and ``training="staged"``: epochs of S_r per task in
        stage 2 (0 leaves S_r off); set by :class:`DualEncoderMTLCV` for its refit.
    standardize : bool
        Standardise X and y with pooled training means and SDs.
    fuse_tol : float
        Distance to the centre below which a task counts as fused.
    random_state : None, int or numpy.random.Generator
        Randomness of initialisation, splits and batches: None draws fresh randomness, an int
        makes the fit reproducible.
    n_threads : int or None
        Torch threads during fit (default 1: small models gain nothing from more).
    verbose : int
        0 silent; 1 a progress bar over epochs; 2 also one line per 50 epochs.

    Attributes
    ----------
    tasks_ : list
        Task labels in fit order (a MultiTaskData's order; stacked labels: ``task_order`` or
        sorted), plus those added by :meth:`adapt`.
    coef_ : Coefficients
        Heads (alpha_r, beta_r, gamma_r, b_r) and centres.
    history_ : pandas.DataFrame
        Training and validation MSE per epoch.
    best_epoch_ : int or numpy.ndarray
        The kept epoch (per task with ``early_stopping="per_task"``).
    n_epochs_ : int
        Epochs run (both stages).
    specific_epochs_ : numpy.ndarray or None
        With staged training: epochs of S_r kept per task (0: S_r off for that task).

    Examples
    --------
    Tuning λ, q and the architecture by cross-validation, then a refit on all rows::

        from hetmtl.encoders import DualEncoderMTLCV
        cv = DualEncoderMTLCV(param_grid={"lam": [0.01, 0.1, 1.0], "n_specific": [0, 2]}, cv=3,
                              random_state=0).fit(X, y, task)
        cv.best_params_, cv.cv_results_
        cv.predict(X_new, task_new)
    """

    def __init__(
        self,
        n_shared: int = 4,
        n_specific: int = 4,
        hidden: Sequence[int] = (32,),
        hidden_specific: Sequence[int] | None = None,
        linear: bool = False,
        lam_alpha=0.01,
        lam_beta=0.01,
        lam_orth: float = 0.01,
        penalty: str = "group_l2",
        center: str = "median",
        center_alpha: bool = False,
        center_step: str = "joint",
        task_weights="uniform",
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        max_epochs: int = 1000,
        patience: int = 50,
        batch_size: int | None = None,
        prox_steps: int = 5,
        prox_backend: str = "cpp",
        normalize: str | None = None,
        validation_fraction: float = 0.2,
        early_stopping: str = "sum",
        training: str = "staged",
        specific_epochs=None,
        standardize: bool = True,
        fuse_tol: float = 1e-6,
        random_state=None,
        n_threads: int | None = 1,
        verbose: int = 0,
    ) -> None:
        self.n_shared = n_shared
        self.n_specific = n_specific
        self.hidden = hidden
        self.hidden_specific = hidden_specific
        self.linear = linear
        self.lam_alpha = lam_alpha
        self.lam_beta = lam_beta
        self.lam_orth = lam_orth
        self.penalty = penalty
        self.center = center
        self.center_alpha = center_alpha
        self.center_step = center_step
        self.task_weights = task_weights
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.prox_steps = prox_steps
        self.prox_backend = prox_backend
        self.normalize = normalize
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.training = training
        self.specific_epochs = specific_epochs
        self.standardize = standardize
        self.fuse_tol = fuse_tol
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> dict:
        """Every hyperparameter validated (errors name it); returns the cleaned values."""
        v = {
            "n_shared": check_int(self.n_shared, "n_shared", low=0, high=4096),
            "n_specific": check_int(self.n_specific, "n_specific", low=0, high=4096),
            "hidden": check_hidden(self.hidden, "hidden"),
            "hidden_specific": None if self.hidden_specific is None else check_hidden(self.hidden_specific, "hidden_specific"),
            "linear": check_bool(self.linear, "linear"),
            "lam_orth": check_float(self.lam_orth, "lam_orth", low=0),
            "penalty": check_choice(self.penalty, "penalty", PENALTIES),
            "center": check_choice(self.center, "center", CENTERS),
            "center_alpha": check_bool(self.center_alpha, "center_alpha"),
            "center_step": check_choice(self.center_step, "center_step", ("joint", "block")),
            "lr": check_float(self.lr, "lr", low=0, low_open=True),
            "weight_decay": check_float(self.weight_decay, "weight_decay", low=0),
            "max_epochs": check_int(self.max_epochs, "max_epochs", low=1, high=10**7),
            "patience": check_int(self.patience, "patience", low=1, high=10**7),
            "batch_size": check_int(self.batch_size, "batch_size", low=1, allow_none=True),
            "prox_steps": check_int(self.prox_steps, "prox_steps", low=1, high=10**5),
            "prox_backend": check_choice(self.prox_backend, "prox_backend", ("cpp", "torch")),
            "normalize": check_choice(self.normalize, "normalize", ("rms", "layer", None)),
            "validation_fraction": check_float(self.validation_fraction, "validation_fraction", low=0, high=1,
                                               low_open=True, high_open=True),
            "early_stopping": check_choice(self.early_stopping, "early_stopping", ("sum", "per_task", "none")),
            "training": check_choice(self.training, "training", ("staged", "joint")),
            "standardize": check_bool(self.standardize, "standardize"),
            "fuse_tol": check_float(self.fuse_tol, "fuse_tol", low=0),
            "n_threads": check_int(self.n_threads, "n_threads", low=1, high=1024, allow_none=True),
            "verbose": check_verbose(self.verbose),
        }
        v["specific_epochs"] = None
        if self.specific_epochs is not None:
            se = check_array(self.specific_epochs, "specific_epochs", ndim=1)
            if np.any(se < 0) or np.any(se != np.round(se)):
                raise ParameterError(f"specific_epochs must be integers >= 0, got {self.specific_epochs!r}")
            v["specific_epochs"] = se.astype(np.int64)
        if v["hidden_specific"] is None:
            v["hidden_specific"] = v["hidden"]
        if v["n_shared"] + v["n_specific"] == 0 and not v["linear"]:
            raise ParameterError("n_shared and n_specific are both 0: give one of them > 0, or linear=True")
        if v["normalize"] == "layer" and 1 in (v["n_shared"], v["n_specific"]):
            raise ParameterError("normalize='layer' needs latent dimensions >= 2 (n_shared, n_specific)")
        if v["early_stopping"] == "per_task" and v["n_shared"] > 0:
            raise ParameterError("early_stopping='per_task' needs n_shared=0 (tasks coupled through C share one stopping time)")
        for name in ("lam_alpha", "lam_beta"):
            value = getattr(self, name)
            if np.ndim(value) == 0:
                check_float(value, name, low=0)
        if isinstance(self.task_weights, str):
            check_choice(self.task_weights, "task_weights", ("uniform", "sqrt_n"))
        return v

    def _per_task(self, value, name: str, R: int) -> torch.Tensor:
        if np.ndim(value) == 0:
            arr = np.full(R, check_float(value, name, low=0))
        else:
            arr = check_array(value, name, ndim=1)
            if arr.shape != (R,) or np.any(arr < 0):
                raise ParameterError(f"{name} must be a scalar >= 0 or one finite value >= 0 per task ({R}), got {value!r}")
        return torch.from_numpy(np.array(arr, dtype=float))

    def _weights(self, sizes: np.ndarray) -> np.ndarray:
        R = sizes.size
        if isinstance(self.task_weights, str):
            if self.task_weights == "uniform":
                return np.ones(R)
            return np.sqrt(sizes / sizes.mean())
        w = check_array(self.task_weights, "task_weights", ndim=1)
        if w.shape != (R,) or np.any(w < 0) or not np.any(w > 0):
            raise ParameterError(f"task_weights array must have one value >= 0 per task ({R}), not all zero")
        return w

    # ------------------------------------------------------------------ fitting
    def _scale_X(self, X: np.ndarray) -> np.ndarray:
        return (X - self.x_mean_) / self.x_scale_

    def _padded(self, data: MultiTaskData) -> Padded:
        return Padded.from_lists([self._scale_X(t.X) for t in data], [(t.y - self.y_mean_) / self.y_scale_ for t in data])

    def fit(self, X, y=None, task=None, *, validation_data=None, task_order: Sequence | None = None) -> "DualEncoderMTL":
        """Fit on a :class:`~hetmtl.data.MultiTaskData` (or stacked X, y and per-row task labels).

        Parameters
        ----------
        X : MultiTaskData, tuple or array-like
            Training data, a tuple ``(X, y, task)``, or stacked features ``(n, p)``.
        y : array-like, optional
            Stacked outcomes (with array ``X``).
        task : array-like, optional
            Task label of every row (with array ``X``).
        validation_data : MultiTaskData or tuple, optional
            Rows for early stopping (same tasks): a MultiTaskData or a tuple ``(X, y, task)``;
            default a random ``validation_fraction`` of each task's rows (none with
            ``early_stopping="none"``).
        task_order : sequence, optional
            Task order for stacked labels (default sorted); recorded in ``tasks_``.

        Returns
        -------
        DualEncoderMTL
            The fitted estimator.

        Raises
        ------
        TrainingError
            When no epoch gives a finite training and validation loss (e.g. a learning rate far
            too large for the data).
        """
        v = self._check_params()
        data = as_multitask(X, y, task, task_order=task_order)
        rng = check_random_state(self.random_state)
        no_val = v["early_stopping"] == "none"
        convex = v["n_shared"] == 0 and v["n_specific"] == 0  # linear path only: solved to convergence
        if no_val:
            if validation_data is not None:
                raise ParameterError("early_stopping='none' trains on all rows; do not pass validation_data")
            train, val = data, data
        elif convex and validation_data is None:
            train, val = data, data  # nothing to stop early: every row is used for the fit
        elif validation_data is None:
            small = [t.task for t in data if t.n < 4]
            if small:
                raise DataValidationError(f"task(s) {small} have fewer than 4 rows; cannot hold out validation rows")
            train, val = data.split((1 - v["validation_fraction"], v["validation_fraction"]), rng)
        else:
            train = data
            val = as_multitask(validation_data, task_order=train.tasks if not isinstance(validation_data, MultiTaskData)
                               else None, name="validation_data")
            if list(val.tasks) != list(train.tasks):
                raise DataValidationError(f"validation_data tasks {val.tasks} differ from training tasks {train.tasks}")
            if val.n_features != train.n_features:
                raise DataValidationError(f"validation_data has {val.n_features} features, training data {train.n_features}")
        R = train.n_tasks
        lam_a = self._per_task(self.lam_alpha, "lam_alpha", R)
        lam_b = self._per_task(self.lam_beta, "lam_beta", R)
        weights = self._weights(train.sizes)
        allX = np.vstack([t.X for t in train])
        ally = np.concatenate([t.y for t in train])
        if v["standardize"]:
            x_mean, x_scale = _robust_scale(allX)
            x_scale[~(x_scale > 0)] = 1.0
            ym, ys = _robust_scale(ally)
            y_mean, y_scale = float(ym), float(ys) if ys > 0 else 1.0
        else:
            x_mean, x_scale, y_mean, y_scale = np.zeros(allX.shape[1]), np.ones(allX.shape[1]), 0.0, 1.0
        self.tasks_ = list(train.tasks)
        self.n_features_in_ = train.n_features
        self.feature_names_in_ = np.array(train.x_cols, dtype=object)
        self.x_mean_, self.x_scale_, self.y_mean_, self.y_scale_ = x_mean, x_scale, y_mean, y_scale
        self.task_weights_ = weights
        lam_a, lam_b = lam_a * torch.from_numpy(weights), lam_b * torch.from_numpy(weights)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        d, p, q, hidden = train.n_features, v["n_shared"], v["n_specific"], v["hidden"]
        with torch_threads(v["n_threads"]):
            shared = BatchedMLP(1, d, hidden, p, v["normalize"], gen) if p else None
            specific = BatchedMLP(R, d, v["hidden_specific"], q, v["normalize"], gen) if q else None
            tr, va = self._padded(train), self._padded(val)
            # centre step minimises sum_r lam_r w_r ||v_r - c||: weights lam_r w_r (w_r if all lam_r = 0)
            center_w = tuple(lam.numpy() if float(lam.sum()) > 0 else weights for lam in (lam_a, lam_b))
            staged = v["training"] == "staged" and specific is not None and (shared is not None or v["linear"])
            if not staged:
                coef = self._init_coef(shared, specific, tr, None, v["linear"])
                coef, history, best = self._train(
                    shared, specific, coef, tr, va, lam_a, lam_b, v, train_shared=True, update_centers=True,
                    center_weights=center_w, rng=rng, no_val=no_val, convex=convex,
                )
                self.specific_epochs_ = None
            else:
                # stage 1: shared encoder, linear path and centres (no S_r), early stopping on the sum
                coef = self._init_coef(shared, None, tr, None, v["linear"])
                coef, history, best = self._train(
                    shared, None, coef, tr, va, lam_a, lam_b, {**v, "early_stopping": "sum"}, train_shared=True,
                    update_centers=True, center_weights=center_w, rng=rng, no_val=no_val,
                )
                # stage 2: task encoders S_r on top of the stage-1 model (C and the centres frozen; S_r
                # and every head trained, the heads still pulled to the centres), each task keeping
                # its own best epoch; a task whose validation loss S_r never lowers keeps its
                # stage-1 state with alpha_r = 0
                coef = Coefficients(torch.zeros(R, q, dtype=DTYPE), coef.beta, coef.b, torch.zeros(q, dtype=DTYPE),
                                    coef.beta_center, coef.gamma, coef.gamma_center)
                if shared is not None:
                    for prm in shared.parameters():
                        prm.requires_grad_(False)
                keep = None
                if no_val:
                    keep = (np.full(R, v["max_epochs"]) if v["specific_epochs"] is None
                            else np.asarray(v["specific_epochs"], dtype=np.int64))
                    if keep.shape != (R,):
                        raise ParameterError(f"specific_epochs must have one entry per task ({R}), got shape {keep.shape}")
                try:
                    coef, hist2, best2 = self._train(
                        shared, specific, coef, tr, va, lam_a, lam_b,
                        {**v, "early_stopping": "per_task", "max_epochs": int(keep.max()) if keep is not None else v["max_epochs"]},
                        train_shared=False, update_centers=False, center_weights=center_w, rng=rng, no_val=no_val,
                        baseline=True, keep_epochs=keep)
                finally:
                    if shared is not None:
                        for prm in shared.parameters():
                            prm.requires_grad_(True)
                history = pd.concat([history.assign(stage=1), hist2.assign(stage=2)], ignore_index=True)
                self.specific_epochs_ = np.asarray(best2) + 1  # epochs of S_r kept per task (0: S_r off)
        self.shared_, self.specific_ = shared, specific
        self.coef_, self.history_, self.best_epoch_ = coef, history, best
        self.n_epochs_ = len(history)
        return self

    def _init_coef(self, shared, specific, tr: Padded, centers: tuple | None, linear: bool) -> Coefficients:
        """Ridge fit of each task's head at the initial encoders; centres = the coefficient means
        (or the given, frozen ones)."""
        with torch.no_grad():
            S, C = encode(shared, specific, tr.X)
            L = linear_part(tr.X, linear)
            theta = ridge_init(S, C, tr.y, tr.mask, L=L)
        q, p = S.shape[-1], C.shape[-1]
        alpha, beta = theta[:, 1 : 1 + q].contiguous(), theta[:, 1 + q : 1 + q + p].contiguous()
        gamma = theta[:, 1 + q + p :].contiguous()
        if centers is None:
            centers = (alpha.mean(0), beta.mean(0), gamma.mean(0))
        return Coefficients(alpha, beta, theta[:, 0].contiguous(), centers[0].clone(), centers[1].clone(), gamma,
                            centers[2].clone())

    def _train(self, shared, specific, coef, tr: Padded, va: Padded, lam_a, lam_b, v: dict, *, train_shared: bool,
               update_centers: bool, center_weights, rng, no_val: bool = False, baseline: bool = False,
               keep_epochs: np.ndarray | None = None, convex: bool = False):
        """Alternating training; returns (coefficients, history, best epoch).

        ``baseline``: the starting point counts as epoch -1 (kept when no epoch improves on it);
        ``keep_epochs`` (with ``no_val`` and per-task stopping): task r keeps its state after
        ``keep_epochs[r]`` epochs (0: the starting point); ``convex`` (no encoders): keep the last
        epoch and stop when the coefficients no longer move."""
        R = tr.X.shape[0]
        n_total = float(tr.n.sum())
        params = list(specific.parameters()) if specific is not None else []
        if train_shared and shared is not None:
            params += list(shared.parameters())
        opt = torch.optim.AdamW(params, lr=v["lr"], weight_decay=v["weight_decay"]) if params else None
        share = tr.n / n_total
        per_task = v["early_stopping"] == "per_task"
        stopper = BatchedEarlyStopping(R if per_task else 1, v["patience"] if not no_val else v["max_epochs"] + 1)
        history = []
        n_max = tr.X.shape[1]
        bs = v["batch_size"]
        Ltr, Lva = linear_part(tr.X, v["linear"]), linear_part(va.X, v["linear"])
        lam_orth = v["lam_orth"]
        finished = False
        if baseline:  # the starting point as epoch -1
            with torch.no_grad():
                S, C = encode(shared, specific, tr.X if no_val else va.X)
                ref = tr if no_val else va
                val_r = ((ref.y - predict_stacked(S, C, coef, Ltr if no_val else Lva)) * ref.mask).pow(2).sum(1) / ref.n
            key = torch.full((R if per_task else 1,), 0.0 if no_val else float("inf"), dtype=torch.float64)
            if not no_val:
                key = val_r if per_task else val_r.sum().reshape(1)
            state = self._snapshot(shared, specific, coef, per_task)
            stopper.update(-1, key, state if per_task else {k: x.unsqueeze(0) for k, x in state.items()})
        with progress_bar(v["max_epochs"], "dual encoder epochs", v["verbose"], unit="epoch") as bar:
            for epoch in range(v["max_epochs"]):
                # (1) encoder step(s): Adam on prediction loss + orthogonality, coefficients fixed
                if opt is not None:
                    batches: list[torch.Tensor | None]
                    if bs is None or bs >= n_max:
                        batches = [None]
                    else:
                        n_steps = int(np.ceil(n_max / bs))
                        idx = np.stack([_cycled_permutation(rng, int(n), n_steps * bs) for n in tr.n.tolist()])
                        batches = [torch.from_numpy(idx[:, s * bs:(s + 1) * bs]) for s in range(n_steps)]
                    for b in batches:
                        if b is None:
                            Xb, yb, mb, Lb = tr.X, tr.y, tr.mask, Ltr
                        else:
                            rows = torch.arange(R)[:, None]
                            Xb, yb, mb = tr.X[rows, b], tr.y[rows, b], torch.ones(R, b.shape[1], dtype=DTYPE)
                            Lb = linear_part(Xb, v["linear"])
                        opt.zero_grad()
                        S, C = encode(shared, specific, Xb)
                        resid = (yb - predict_stacked(S, C, coef, Lb)) * mb
                        mse_r = resid.pow(2).sum(1) / mb.sum(1)
                        loss = (share * mse_r).sum()
                        if lam_orth > 0:
                            loss = loss + lam_orth * (share * orthogonality(S, C, mb)).sum()
                        loss.backward()
                        opt.step()
                # (2) coefficient step (proximal gradient) and (3) centre update, encoders fixed
                with torch.no_grad():
                    S, C = encode(shared, specific, tr.X)
                    if not bool(torch.isfinite(S).all() and torch.isfinite(C).all()):
                        history.append({"epoch": epoch, "train_mse": float("nan"), "val_mse_sum": float("nan")})
                        break
                    previous = coef
                    coef = coefficient_step(
                        S, C, tr.y, tr.mask, coef, n_total=n_total, lam_alpha=lam_a, lam_beta=lam_b,
                        penalty=v["penalty"], n_steps=v["prox_steps"], backend=v["prox_backend"],
                        update_centers=update_centers, center=v["center"], center_alpha=v["center_alpha"],
                        center_weights=center_weights, center_step=v["center_step"], L=Ltr,
                    )
                    train_mse = float(((tr.y - predict_stacked(S, C, coef, Ltr)) * tr.mask).pow(2).sum() / n_total)
                    if no_val:
                        val_r = ((tr.y - predict_stacked(S, C, coef, Ltr)) * tr.mask).pow(2).sum(1) / tr.n
                    else:
                        Sv, Cv = encode(shared, specific, va.X)
                        val_r = ((va.y - predict_stacked(Sv, Cv, coef, Lva)) * va.mask).pow(2).sum(1) / va.n
                history.append({"epoch": epoch, "train_mse": train_mse, "val_mse_sum": float(val_r.sum())})
                if not np.isfinite(train_mse) or not bool(torch.isfinite(val_r).all()):
                    break  # diverged: later epochs cannot recover, keep the best finite one
                if no_val or convex:  # keep the last (or the stated) epoch: make it the "best" by a decreasing key
                    val_key = torch.full((R if per_task else 1,), -float(epoch + 1), dtype=torch.float64)
                    if keep_epochs is not None:
                        val_key = torch.where(torch.from_numpy(epoch < keep_epochs), val_key, torch.tensor(float("inf")))
                else:
                    val_key = val_r if per_task else val_r.sum().reshape(1)
                state = self._snapshot(shared, specific, coef, per_task)
                stopper.update(epoch, val_key, state if per_task else {k: x.unsqueeze(0) for k, x in state.items()})
                bar.update(1)
                if v["verbose"] >= 2 and epoch % 50 == 0:
                    bar.write(f"epoch {epoch}: train MSE {train_mse:.4g}, validation MSE (sum) {float(val_r.sum()):.4g}")
                if stopper.done:
                    finished = True
                    break
                if convex and epoch > 0:
                    move = max(float((coef.gamma - previous.gamma).abs().max()), float((coef.b - previous.b).abs().max()))
                    if move < 1e-9:
                        finished = True
                        break
            else:
                finished = no_val
        if not stopper.best_params or bool((stopper.best_epoch < (-1 if baseline else 0)).any()):
            raise TrainingError(
                "training produced no epoch with a finite training and validation loss "
                f"(first epoch: {history[0] if history else 'none'}); lower lr (now {v['lr']}), lam_orth "
                f"(now {v['lam_orth']}) or rescale the data")
        if not finished and not no_val and len(history) == v["max_epochs"]:
            if convex:
                warnings.warn(f"the linear model did not converge in max_epochs={v['max_epochs']} epochs of "
                              f"{v['prox_steps']} proximal steps; raise max_epochs or prox_steps", ConvergenceWarning,
                              stacklevel=3)
            else:
                warnings.warn(f"stopped at max_epochs={v['max_epochs']} before early stopping triggered",
                              ConvergenceWarning, stacklevel=3)
        best = stopper.best_params if per_task else {k: x[0] for k, x in stopper.best_params.items()}
        coef = self._restore(shared, specific, coef, best, train_shared)
        best_epoch = stopper.best_epoch.numpy().copy() if per_task else int(stopper.best_epoch[0])
        return coef, pd.DataFrame(history), best_epoch

    @staticmethod
    def _snapshot(shared, specific, coef: Coefficients, per_task: bool) -> dict[str, torch.Tensor]:
        state = {f"coef.{k}": x.clone() for k, x in coef.state().items()}
        if specific is not None:
            state |= {f"S.{k}": x.detach().clone() for k, x in specific.stacked_state().items()}
        if not per_task:
            state |= {"coef.alpha_center": coef.alpha_center.clone(), "coef.beta_center": coef.beta_center.clone(),
                      "coef.gamma_center": coef.gamma_center.clone()}
            if shared is not None:
                state |= {f"C.{k}": x.detach().clone() for k, x in shared.stacked_state().items()}
        return state

    @staticmethod
    def _restore(shared, specific, coef: Coefficients, best: dict, train_shared: bool) -> Coefficients:
        if specific is not None:
            specific.load_stacked({k[2:]: x for k, x in best.items() if k.startswith("S.")})
        if shared is not None and train_shared and any(k.startswith("C.") for k in best):
            shared.load_stacked({k[2:]: x for k, x in best.items() if k.startswith("C.")})
        return Coefficients(
            best["coef.alpha"], best["coef.beta"], best["coef.b"],
            best.get("coef.alpha_center", coef.alpha_center), best.get("coef.beta_center", coef.beta_center),
            best["coef.gamma"], best.get("coef.gamma_center", coef.gamma_center),
        )

    # ------------------------------------------------------------------ new task
    def adapt(self, X, y, task, *, validation_data: tuple | None = None, random_state: int | None = None) -> "DualEncoderMTL":
        """Add a new task fitted against the frozen shared encoder and frozen centres.

        A new task encoder S_new and head (alpha, beta, b) are trained with the same losses and
        the same centre penalty towards the fitted (alpha_bar, beta_bar); C and the other tasks
        are unchanged. Afterwards ``predict(X, task)`` works for the new task.

        Parameters
        ----------
        X : array-like
            Features of the new task, ``(n, p)``, same columns as in fit.
        y : array-like
            Outcomes of the new task, ``(n,)``.
        task : object
            Label of the new task (not one of ``tasks_``).
        validation_data : tuple, optional
            ``(X_val, y_val)`` for early stopping; default a ``validation_fraction`` split.
        random_state : int, optional
            Seed (default ``random_state`` of the estimator).

        Returns
        -------
        DualEncoderMTL
            The estimator, with the new task added.
        """
        check_is_fitted(self, FITTED)
        v = self._check_params()
        if task in self.tasks_:
            raise ParameterError(f"task {task!r} is already fitted; choose a new label")
        new = MultiTaskData([self._check_X(X)], [y], [task], x_cols=list(self.feature_names_in_))
        rng = check_random_state(self.random_state if random_state is None else random_state)
        if validation_data is None:
            if new.n_total < 4:
                raise DataValidationError(f"task {task!r}: {new.n_total} rows, too few to hold out validation rows")
            train, val = new.split((1 - v["validation_fraction"], v["validation_fraction"]), rng)
        else:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise DataValidationError("validation_data must be a tuple (X_val, y_val) of the new task")
            train, val = new, MultiTaskData([self._check_X(validation_data[0])], [validation_data[1]], [task],
                                            x_cols=list(self.feature_names_in_))
        lam_a = self._per_task(np.mean(np.atleast_1d(self.lam_alpha)), "lam_alpha", 1)
        lam_b = self._per_task(np.mean(np.atleast_1d(self.lam_beta)), "lam_beta", 1)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        q = v["n_specific"]
        with torch_threads(v["n_threads"]):
            spec_new = BatchedMLP(1, self.n_features_in_, v["hidden_specific"], q, v["normalize"], gen) if q else None
            if self.shared_ is not None:
                for prm in self.shared_.parameters():
                    prm.requires_grad_(False)
            tr, va = self._padded(train), self._padded(val)
            centers = (self.coef_.alpha_center, self.coef_.beta_center, self.coef_.gamma_center)
            coef = self._init_coef(self.shared_, spec_new, tr, centers, v["linear"])
            try:
                va_opts = {**v, "early_stopping": "per_task" if self.shared_ is None else "sum"}
                coef, hist, _ = self._train(self.shared_, spec_new, coef, tr, va, lam_a, lam_b, va_opts, train_shared=False,
                                            update_centers=False, center_weights=(np.ones(1), np.ones(1)), rng=rng)
            finally:
                if self.shared_ is not None:
                    for prm in self.shared_.parameters():
                        prm.requires_grad_(True)
            self.adapt_history_ = hist
        if spec_new is not None:
            self.specific_.append_models(spec_new)  # type: ignore[union-attr]  # q > 0: fitted with one
        old = self.coef_
        self.coef_ = Coefficients(torch.cat([old.alpha, coef.alpha]), torch.cat([old.beta, coef.beta]),
                                  torch.cat([old.b, coef.b]), old.alpha_center, old.beta_center,
                                  torch.cat([old.gamma, coef.gamma]), old.gamma_center)
        self.tasks_ = [*self.tasks_, task]
        self.task_weights_ = np.append(self.task_weights_, 1.0)
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        check_is_fitted(self, FITTED)

    def _task_index(self, task) -> int:
        try:
            return self.tasks_.index(task)
        except ValueError:
            raise UnknownTaskError(f"unknown task {task!r}; fitted tasks are {self.tasks_}") from None

    def _check_X(self, X) -> np.ndarray:
        X = check_array(X, "X", ndim=(1, 2))
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.n_features_in_:
            raise DataValidationError(f"X has shape {X.shape}; expected (n, {self.n_features_in_})")
        return X

    def _encode_task(self, X: np.ndarray, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        Xt = torch.from_numpy(self._scale_X(X))
        with torch.no_grad():
            S = self.specific_.forward_one(r, Xt) if self.specific_ is not None else Xt.new_zeros(len(Xt), 0)
            C = self.shared_.forward_one(0, Xt) if self.shared_ is not None else Xt.new_zeros(len(Xt), 0)
        return S, C

    def _predict_task(self, X: np.ndarray, r: int) -> np.ndarray:
        S, C = self._encode_task(X, r)
        c = self.coef_
        f = S @ c.alpha[r] + C @ c.beta[r] + c.b[r]
        if c.gamma.shape[1]:
            f = f + torch.from_numpy(self._scale_X(X)) @ c.gamma[r]
        return f.numpy() * self.y_scale_ + self.y_mean_

    def predict(self, X, task) -> np.ndarray:
        """Predictions for rows of one task (or one task label per row).

        Parameters
        ----------
        X : array-like
            Features, ``(n, p)``.
        task : object or array-like
            One task label, or one label per row.

        Returns
        -------
        numpy.ndarray
            Predictions on the scale of y, ``(n,)``.
        """
        self._check_fitted()
        if isinstance(X, MultiTaskData):
            return np.concatenate([self._predict_task(t.X, self._task_index(t.task)) for t in X])
        X = self._check_X(X)
        labels = np.asarray(task, dtype=object)
        if labels.ndim == 0:
            return self._predict_task(X, self._task_index(task))
        if labels.shape != (X.shape[0],):
            raise DataValidationError(f"task labels have shape {labels.shape}; expected one label or ({X.shape[0]},)")
        out = np.empty(X.shape[0])
        for t in pd.unique(pd.Series(labels)):
            rows = labels == t
            out[rows] = self._predict_task(X[rows], self._task_index(t))
        return out

    def score(self, X, y=None, task=None) -> float:
        """R^2 of the predictions over all rows (sklearn convention).

        Parameters
        ----------
        X : MultiTaskData or array-like
            Test data, or stacked features ``(n, p)``.
        y : array-like, optional
            Stacked outcomes (with array ``X``).
        task : array-like, optional
            Task label of every row (with array ``X``).

        Returns
        -------
        float
            Coefficient of determination over all rows.
        """
        self._check_fitted()
        if isinstance(X, tuple) and y is None and task is None:
            X = as_multitask(X)
        if isinstance(X, MultiTaskData):
            yy = np.concatenate([t.y for t in X])
            pred = self.predict(X, None)
        else:
            yy = np.asarray(y, float)
            pred = self.predict(X, task)
        return float(1 - np.sum((yy - pred) ** 2) / np.sum((yy - yy.mean()) ** 2))

    def score_tasks(self, data: MultiTaskData) -> pd.DataFrame:
        """Per-task n, RMSE, MSE and R^2.

        Parameters
        ----------
        data : MultiTaskData
            Test data with fitted tasks (or a tuple ``(X, y, task)``).

        Returns
        -------
        pandas.DataFrame
            One row per task.
        """
        self._check_fitted()
        data = as_multitask(data, task_order=None, name="data")
        rows = []
        for t in data:
            pred = self._predict_task(self._check_X(t.X), self._task_index(t.task))
            mse = float(np.mean((t.y - pred) ** 2))
            ss = float(np.sum((t.y - t.y.mean()) ** 2))
            rows.append({"task": t.task, "n": t.n, "rmse": np.sqrt(mse), "mse": mse,
                         "r2": 1 - mse * t.n / ss if ss > 0 else np.nan})
        return pd.DataFrame(rows).set_index("task")

    def encodings(self, X, task) -> tuple[np.ndarray, np.ndarray]:
        """Latent encodings ``(S_r(X), C(X))`` of one task (standardised-input scale).

        Parameters
        ----------
        X : array-like
            Features, ``(n, p)``.
        task : object
            A fitted task label.

        Returns
        -------
        tuple of numpy.ndarray
            ``S_r(X)`` ``(n, q)`` and ``C(X)`` ``(n, p_shared)``.
        """
        self._check_fitted()
        S, C = self._encode_task(self._check_X(X), self._task_index(task))
        return S.numpy(), C.numpy()


    # ------------------------------------------------------------------ export (no pickles)
    def to_json(self, path=None) -> str:
        """The fitted model as validated, checksummed JSON (:mod:`hetmtl.serialization`).

        :meth:`from_json` restores a model that predicts identically.

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
        best = self.best_epoch_
        fitted = {"tasks": self.tasks_, "n_features_in": self.n_features_in_, "y_mean": self.y_mean_,
                  "y_scale": self.y_scale_, "feature_names_in": list(self.feature_names_in_), "n_epochs": self.n_epochs_,
                  "best_epoch": best if np.ndim(best) == 0 else list(best)}
        tensors = {"x_mean": self.x_mean_, "x_scale": self.x_scale_, "task_weights": self.task_weights_,
                   **{f"coef.{k}": getattr(self.coef_, k) for k in ("alpha", "beta", "b", "alpha_center", "beta_center",
                                                                     "gamma", "gamma_center")},
                   **{f"history.{c}": self.history_[c].to_numpy(float) for c in ("train_mse", "val_mse_sum")}}
        for prefix, mlp in (("C.", self.shared_), ("S.", self.specific_)):
            if mlp is not None:
                tensors |= {prefix + k: v for k, v in mlp.stacked_state().items()}
        return serialization.dumps(type(self).__name__, self.get_params(), fitted, tensors, path)

    @classmethod
    def from_json(cls, source) -> "DualEncoderMTL":
        """A fitted model from :meth:`to_json` output.

        The declared sizes (tasks, features, hidden widths, latent dimensions) are checked against
        the stored arrays before any network is built, so a forged file cannot make the loader
        allocate more than the arrays it holds.

        Parameters
        ----------
        source : str or pathlib.Path
            JSON text or a file path.

        Returns
        -------
        DualEncoderMTL
            The fitted model.
        """
        from hetmtl import serialization as ser

        where = "model JSON" if isinstance(source, str) and source.lstrip().startswith("{") else str(source)
        params, fitted, enc = ser.loads(source, cls.__name__)
        try:
            hs = params.get("hidden_specific")
            model = cls(**{**params, "hidden": tuple(params.get("hidden", ())),
                           "hidden_specific": None if hs is None else tuple(hs)})
            v = model._check_params()
        except (TypeError, ValueError) as exc:
            raise ser.ModelFormatError(f"{where}: {cls.__name__} model with invalid hyperparameters ({exc})") from None
        ser.require(fitted, ("tasks", "n_features_in", "y_mean", "y_scale", "feature_names_in", "n_epochs", "best_epoch"),
                    f"{where}: fitted")
        ser.require(enc, ("x_mean", "x_scale", "task_weights", "coef.alpha", "coef.beta", "coef.b", "coef.alpha_center",
                          "coef.beta_center"), f"{where}: tensors")
        tasks = fitted["tasks"]
        if not isinstance(tasks, list) or not tasks:
            raise ser.ModelFormatError(f"{where}: fitted tasks must be a non-empty list")
        try:
            d = int(check_int(fitted["n_features_in"], "n_features_in", low=1, high=10**7))  # type: ignore[arg-type]
            n_epochs = int(check_int(fitted["n_epochs"], "n_epochs", low=0, high=10**8))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ser.ModelFormatError(f"{where}: {exc}") from None
        R, p, q, hidden = len(tasks), v["n_shared"], v["n_specific"], v["hidden"]
        dl = d if v["linear"] else 0
        # every stored array's shape follows from the declared sizes: compare before allocating
        want: dict[str, tuple[int, ...]] = {
            "x_mean": (d,), "x_scale": (d,), "task_weights": (R,), "coef.b": (R,), "coef.alpha": (R, q),
            "coef.beta": (R, p), "coef.alpha_center": (q,), "coef.beta_center": (p,)}
        if dl or "coef.gamma" in enc:
            want |= {"coef.gamma": (R, dl), "coef.gamma_center": (dl,)}
        for prefix, n_models, d_out, hid in (("C.", 1, p, hidden), ("S.", R, q, v["hidden_specific"])):
            if d_out:
                for i, (a, b) in enumerate(zip([d, *hid], [*hid, d_out])):
                    want[f"{prefix}w{i}"] = (n_models, a, b)
                    want[f"{prefix}b{i}"] = (n_models, 1, b)
        declared = {k: tuple(int(x) for x in obj.get("shape", ())) for k, obj in enc.items() if isinstance(obj, dict)}
        known = set(want) | {"history.train_mse", "history.val_mse_sum"}
        extra = sorted(set(enc) - known)
        if extra:
            raise ser.ModelFormatError(f"{where}: unexpected tensors {extra} for this architecture")
        bad = {k: (declared.get(k), s) for k, s in want.items() if declared.get(k) != s}
        if bad:
            raise ser.ModelFormatError(
                f"{where}: stored arrays do not match the declared sizes ({R} tasks, {d} features, hidden {hidden}, "
                f"hidden_specific {v['hidden_specific']}, "
                f"n_shared {p}, n_specific {q}, linear {v['linear']}): " +
                ", ".join(f"{k} stored {g} expected {s}" for k, (g, s) in bad.items()))
        if ("history.train_mse" in enc) != ("history.val_mse_sum" in enc):
            raise ser.ModelFormatError(f"{where}: history.train_mse and history.val_mse_sum must be stored together")
        for k in ("history.train_mse", "history.val_mse_sum"):
            if k in enc and declared.get(k) != (n_epochs,):
                raise ser.ModelFormatError(f"{where}: {k} has shape {declared.get(k)}, expected ({n_epochs},)")
        t = {k: ser.decode_tensor(obj, k) for k, obj in enc.items()}
        model.tasks_ = list(tasks)
        model.n_features_in_ = d
        model.feature_names_in_ = np.array(fitted["feature_names_in"], dtype=object)
        model.x_mean_, model.x_scale_ = t["x_mean"].numpy(), t["x_scale"].numpy()
        try:
            model.y_mean_ = float(check_float(fitted["y_mean"], "y_mean"))  # type: ignore[arg-type]
            model.y_scale_ = float(check_float(fitted["y_scale"], "y_scale", low=0, low_open=True))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ser.ModelFormatError(f"{where}: fitted {exc}") from None
        model.task_weights_ = t["task_weights"].numpy()
        lin = {k: t[f"coef.{k}"] for k in ("gamma", "gamma_center") if f"coef.{k}" in t}
        model.coef_ = Coefficients(*(t[f"coef.{k}"] for k in ("alpha", "beta", "b", "alpha_center", "beta_center")), **lin)
        model.n_epochs_ = n_epochs
        best = fitted["best_epoch"]
        try:
            if np.ndim(best) == 0:
                model.best_epoch_ = int(check_int(best, "best_epoch", low=0))  # type: ignore[arg-type]
            elif np.asarray(best).dtype.kind in "iu":
                model.best_epoch_ = np.asarray(best, dtype=np.int64)
            else:
                raise TypeError(f"best_epoch must be an integer or a list of integers, got {best!r}")
        except (TypeError, ValueError, OverflowError) as exc:
            raise ser.ModelFormatError(f"{where}: fitted {exc}") from None
        model.history_ = pd.DataFrame({"epoch": np.arange(n_epochs), "train_mse": t["history.train_mse"].numpy(),
                                       "val_mse_sum": t["history.val_mse_sum"].numpy()}) if "history.train_mse" in t else None
        for prefix, attr, n_models, d_out, hid in (("C.", "shared_", 1, p, hidden),
                                                   ("S.", "specific_", R, q, v["hidden_specific"])):
            mlp = None
            if d_out:
                mlp = BatchedMLP(n_models, d, hid, d_out, v["normalize"], torch.Generator().manual_seed(0))
                mlp.load_stacked({k[2:]: x for k, x in t.items() if k.startswith(prefix)})
            setattr(model, attr, mlp)
        return model


def _cycled_permutation(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    reps = int(np.ceil(length / n))
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:length]
