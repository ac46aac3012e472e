"""Dual-encoder multi-task regression (Sui, Xu, Bai & Qu 2025, arXiv 2505.24281).

What to use when: several regression tasks share one feature space but differ in their
covariate distributions (distribution heterogeneity) and/or in E[y | x] (posterior
heterogeneity), and some tasks are small. :class:`DualEncoderMTL` predicts task r by

    f_r(x) = b_r + alpha_r' S_r(x) + beta_r' C(x)

with a shared encoder C (``n_shared`` latent dims) and task encoders S_r (``n_specific``), an
orthogonality penalty ``lam_orth * sum_r (n_r/N) ||S_bar_r' C_bar_r||_F^2`` on centred,
Frobenius-normalised encodings, and a centre penalty ``lam * sum_r w_r ||alpha_r - alpha_bar||``
(group-l2 by default, l1 option) that fuses a task's coefficients to the common centre when the
data allow (adaptive integration). Training alternates Adam on the encoders (coefficients fixed),
proximal-gradient steps on the coefficients (encoders fixed; prox in the C++ core) and a centre
update (geometric median), with early stopping on the summed validation MSE.

Example::

    from hetmtl.encoders import DualEncoderMTL
    from hetmtl.encoders.simulate import simulate_latent
    data = simulate_latent(n_tasks=5, n=100, posterior_drift=1.0, random_state=0).data
    train, val, test = data.split(random_state=0)
    model = DualEncoderMTL(random_state=0).fit(train, validation_data=val)
    model.score_tasks(test)                 # per-task RMSE / R^2
    model.predict(test["task1"].X, "task1")

Special cases (ablations): ``n_specific=0`` shared encoder only; ``n_shared=0`` task-specific
only (with ``lam_alpha=0`` this is single-task learning); ``lam_orth=0`` no orthogonality;
``lam_alpha=lam_beta=0`` no integration (shared-bottom hard parameter sharing when also
``n_specific=0``). See :mod:`hetmtl.encoders.baselines`.

Design choices the paper does not publish, made here: pooled 1/N loss, unpenalised intercepts,
one lambda times a fixed per-task weight rule, standardised X and y (pooled over training rows).
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

from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders.model import (
    DTYPE, BatchedMLP, Coefficients, Padded, coefficient_step, encode, orthogonality, predict_stacked, ridge_init,
)
from hetmtl.encoders.proximal import CENTERS, PENALTIES
from hetmtl.exceptions import ConvergenceWarning, DataValidationError
from hetmtl.training import BatchedEarlyStopping, torch_threads


def as_multitask(X, y=None, task=None) -> MultiTaskData:
    """Accept a :class:`~hetmtl.data.MultiTaskData`, or stacked arrays with per-row task labels.

    Parameters
    ----------
    X : MultiTaskData or array-like
        The data, or stacked features ``(n, p)``.
    y : array-like, optional
        Stacked outcomes ``(n,)`` (with array ``X``).
    task : array-like, optional
        Task label of every row (with array ``X``).

    Returns
    -------
    MultiTaskData
        The data.
    """
    if isinstance(X, MultiTaskData):
        return X
    if y is None or task is None:
        raise DataValidationError("pass a MultiTaskData, or X, y and per-row task labels")
    X = np.asarray(X, dtype=float)
    task = np.asarray(task, dtype=object)
    if X.ndim != 2 or task.shape != (X.shape[0],):
        raise DataValidationError(f"X must be (n, p) and task (n,), got {X.shape} and {task.shape}")
    return MultiTaskData.from_arrays(X, y, task)


class DualEncoderMTL(BaseEstimator):
    """Dual-encoder multi-task regressor (see the module notes).

    Parameters
    ----------
    n_shared, n_specific : int
        Latent dimensions p of C and q of each S_r (0 drops that encoder).
    hidden : sequence of int
        Hidden-layer widths of every encoder (ReLU MLPs).
    lam_alpha, lam_beta : float or array-like
        Centre-penalty strengths (scalar, or one value per task).
    lam_orth : float
        Orthogonality-penalty strength.
    penalty : {"group_l2", "l1"}
        ``"group_l2"``: block soft-thresholding, fuses whole tasks; ``"l1"``: element-wise.
    center : {"median", "mean"}
        ``"median"`` (geometric / coordinate-wise median: exact centre step) or ``"mean"``.
    center_alpha : bool
        Penalise alpha_r towards a centre (the S_r are different networks, so this is optional;
        beta_r is always centred when ``lam_beta > 0``).
    center_step : {"joint", "block"}
        ``"joint"``: centres also move inside the proximal-gradient steps, via
        theta_r = centre + delta_r, then the exact centre update; ``"block"``: the literal
        alternation, centres move only in the exact centre update (can stall when fused tasks
        would need to move together). See :func:`hetmtl.encoders.model.coefficient_step`.
    task_weights : {"uniform", "sqrt_n"} or array-like
        Per-task penalty weights: equal, w_r = sqrt(n_r / mean n), or one value per task.
    lr : float
        Adam learning rate.
    max_epochs : int
        Epoch cap.
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
    early_stopping : {"sum", "per_task"}
        ``"sum"``: summed validation MSE; ``"per_task"``: each task keeps its own best epoch (only
        without a shared encoder and without integration, i.e. single-task learning).
    standardize : bool
        Standardise X and y with pooled training means and SDs.
    fuse_tol : float
        Distance to the centre below which a task counts as fused.
    random_state : int or None
        Seed of initialisation, splits and batches.
    n_threads : int or None
        Torch threads during fit (default 1: small models gain nothing from more).

    Attributes
    ----------
    tasks_ : list
        Task labels seen in fit (and added by :meth:`adapt`).
    coef_ : Coefficients
        Heads (alpha_r, beta_r, b_r) and centres.
    history_ : pandas.DataFrame
        Training and validation MSE per epoch.
    best_epoch_ : int or numpy.ndarray
        The kept epoch (per task with ``early_stopping="per_task"``).
    """

    def __init__(
        self,
        n_shared: int = 4,
        n_specific: int = 4,
        hidden: Sequence[int] = (32,),
        lam_alpha=0.01,
        lam_beta=0.01,
        lam_orth: float = 0.01,
        penalty: str = "group_l2",
        center: str = "median",
        center_alpha: bool = True,
        center_step: str = "joint",
        task_weights="uniform",
        lr: float = 1e-2,
        max_epochs: int = 500,
        patience: int = 30,
        batch_size: int | None = None,
        prox_steps: int = 5,
        prox_backend: str = "cpp",
        normalize: str | None = None,
        validation_fraction: float = 0.2,
        early_stopping: str = "sum",
        standardize: bool = True,
        fuse_tol: float = 1e-6,
        random_state: int | None = None,
        n_threads: int | None = 1,
    ) -> None:
        self.n_shared = n_shared
        self.n_specific = n_specific
        self.hidden = hidden
        self.lam_alpha = lam_alpha
        self.lam_beta = lam_beta
        self.lam_orth = lam_orth
        self.penalty = penalty
        self.center = center
        self.center_alpha = center_alpha
        self.center_step = center_step
        self.task_weights = task_weights
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.prox_steps = prox_steps
        self.prox_backend = prox_backend
        self.normalize = normalize
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.standardize = standardize
        self.fuse_tol = fuse_tol
        self.random_state = random_state
        self.n_threads = n_threads

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {self.center!r}")
        if self.prox_backend not in ("cpp", "torch"):
            raise ValueError(f"prox_backend must be 'cpp' or 'torch', got {self.prox_backend!r}")
        if self.normalize not in ("rms", "layer", None):
            raise ValueError(f"normalize must be 'rms', 'layer' or None, got {self.normalize!r}")
        if self.center_step not in ("joint", "block"):
            raise ValueError(f"center_step must be 'joint' or 'block', got {self.center_step!r}")
        if self.early_stopping not in ("sum", "per_task"):
            raise ValueError(f"early_stopping must be 'sum' or 'per_task', got {self.early_stopping!r}")
        if int(self.n_shared) < 0 or int(self.n_specific) < 0 or int(self.n_shared) + int(self.n_specific) == 0:
            raise ValueError("n_shared and n_specific must be >= 0 and not both 0")
        if self.normalize == "layer" and 1 in (int(self.n_shared), int(self.n_specific)):
            raise ValueError("normalize='layer' needs latent dimensions >= 2")
        if self.lam_orth < 0:
            raise ValueError("lam_orth must be >= 0")
        if self.early_stopping == "per_task" and int(self.n_shared) > 0:
            raise ValueError("early_stopping='per_task' needs n_shared=0 (tasks coupled through C share one stopping time)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1)")

    def _per_task(self, value, name: str, R: int) -> torch.Tensor:
        arr = np.full(R, float(value)) if np.ndim(value) == 0 else np.asarray(value, float)
        if arr.shape != (R,) or np.any(arr < 0) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a scalar >= 0 or one finite value >= 0 per task ({R}), got {value!r}")
        return torch.from_numpy(arr.copy())

    def _weights(self, sizes: np.ndarray) -> np.ndarray:
        R = sizes.size
        if isinstance(self.task_weights, str):
            if self.task_weights == "uniform":
                return np.ones(R)
            if self.task_weights == "sqrt_n":
                return np.sqrt(sizes / sizes.mean())
            raise ValueError(f"task_weights must be 'uniform', 'sqrt_n' or an array, got {self.task_weights!r}")
        w = np.asarray(self.task_weights, float)
        if w.shape != (R,) or np.any(w < 0) or not np.any(w > 0):
            raise ValueError(f"task_weights array must have one value >= 0 per task ({R}), not all zero")
        return w

    # ------------------------------------------------------------------ fitting
    def _scale_X(self, X: np.ndarray) -> np.ndarray:
        return (X - self.x_mean_) / self.x_scale_

    def _padded(self, data: MultiTaskData) -> Padded:
        return Padded.from_lists([self._scale_X(t.X) for t in data], [(t.y - self.y_mean_) / self.y_scale_ for t in data])

    def fit(self, X, y=None, task=None, *, validation_data: MultiTaskData | None = None) -> "DualEncoderMTL":
        """Fit on a :class:`~hetmtl.data.MultiTaskData` (or stacked X, y and per-row task labels).

        Parameters
        ----------
        X : MultiTaskData or array-like
            Training data, or stacked features ``(n, p)``.
        y : array-like, optional
            Stacked outcomes (with array ``X``).
        task : array-like, optional
            Task label of every row (with array ``X``).
        validation_data : MultiTaskData, optional
            Rows for early stopping (same tasks); default a random ``validation_fraction`` of each
            task's rows.

        Returns
        -------
        DualEncoderMTL
            The fitted estimator.
        """
        self._check_params()
        data = as_multitask(X, y, task)
        rng = np.random.default_rng(self.random_state)
        if validation_data is None:
            small = [t.task for t in data if t.n < 4]
            if small:
                raise DataValidationError(f"task(s) {small} have fewer than 4 rows; cannot hold out validation rows")
            train, val = data.split((1 - self.validation_fraction, self.validation_fraction), rng)
        else:
            train, val = data, validation_data
            if list(val.tasks) != list(train.tasks):
                raise DataValidationError(f"validation tasks {val.tasks} differ from training tasks {train.tasks}")
            if val.n_features != train.n_features:
                raise DataValidationError(f"validation data has {val.n_features} features, training data {train.n_features}")
        self.tasks_ = list(train.tasks)
        self.n_features_in_ = train.n_features
        self.feature_names_in_ = np.array(train.x_cols, dtype=object)
        allX = np.vstack([t.X for t in train])
        ally = np.concatenate([t.y for t in train])
        if self.standardize:
            self.x_mean_, self.x_scale_ = allX.mean(0), allX.std(0)
            self.x_scale_[self.x_scale_ == 0] = 1.0
            self.y_mean_, self.y_scale_ = float(ally.mean()), float(ally.std()) or 1.0
        else:
            self.x_mean_, self.x_scale_ = np.zeros(allX.shape[1]), np.ones(allX.shape[1])
            self.y_mean_, self.y_scale_ = 0.0, 1.0
        R = train.n_tasks
        self.task_weights_ = self._weights(train.sizes)
        lam_a = self._per_task(self.lam_alpha, "lam_alpha", R) * torch.from_numpy(self.task_weights_)
        lam_b = self._per_task(self.lam_beta, "lam_beta", R) * torch.from_numpy(self.task_weights_)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        d, p, q = train.n_features, int(self.n_shared), int(self.n_specific)
        hidden = tuple(int(h) for h in self.hidden)
        with torch_threads(self.n_threads):
            self.shared_ = BatchedMLP(1, d, hidden, p, self.normalize, gen) if p else None
            self.specific_ = BatchedMLP(R, d, hidden, q, self.normalize, gen) if q else None
            tr, va = self._padded(train), self._padded(val)
            coef = self._init_coef(self.shared_, self.specific_, tr, None)
            # centre step minimises sum_r lam_r w_r ||v_r - c||: weights lam_r w_r (w_r if all lam_r = 0)
            center_w = tuple(lam.numpy() if float(lam.sum()) > 0 else self.task_weights_ for lam in (lam_a, lam_b))
            self.coef_, self.history_ = self._train(
                self.shared_, self.specific_, coef, tr, va, lam_a, lam_b, train_shared=True, update_centers=True,
                center_weights=center_w, rng=rng,
            )
        self.n_epochs_ = len(self.history_)
        return self

    def _init_coef(self, shared, specific, tr: Padded, centers: tuple | None) -> Coefficients:
        """Ridge fit of each task's head at the initial encoders; centres = the coefficient means
        (or the given, frozen ones)."""
        with torch.no_grad():
            S, C = encode(shared, specific, tr.X)
            theta = ridge_init(S, C, tr.y, tr.mask)
        q = S.shape[-1]
        alpha, beta = theta[:, 1 : 1 + q].contiguous(), theta[:, 1 + q :].contiguous()
        if centers is None:
            centers = (alpha.mean(0), beta.mean(0))
        return Coefficients(alpha, beta, theta[:, 0].contiguous(), centers[0].clone(), centers[1].clone())

    def _train(self, shared, specific, coef, tr: Padded, va: Padded, lam_a, lam_b, *, train_shared: bool,
               update_centers: bool, center_weights, rng) -> tuple[Coefficients, pd.DataFrame]:
        R = tr.X.shape[0]
        n_total = float(tr.n.sum())
        params = list(specific.parameters()) if specific is not None else []
        if train_shared and shared is not None:
            params += list(shared.parameters())
        opt = torch.optim.Adam(params, lr=self.lr) if params else None
        share = tr.n / n_total
        per_task = self.early_stopping == "per_task"
        stopper = BatchedEarlyStopping(R if per_task else 1, self.patience)
        history = []
        n_max = tr.X.shape[1]
        bs = None if self.batch_size is None else int(self.batch_size)
        for epoch in range(int(self.max_epochs)):
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
                        Xb, yb, mb = tr.X, tr.y, tr.mask
                    else:
                        rows = torch.arange(R)[:, None]
                        Xb, yb, mb = tr.X[rows, b], tr.y[rows, b], torch.ones(R, b.shape[1], dtype=DTYPE)
                    opt.zero_grad()
                    S, C = encode(shared, specific, Xb)
                    resid = (yb - predict_stacked(S, C, coef)) * mb
                    mse_r = resid.pow(2).sum(1) / mb.sum(1)
                    loss = (share * mse_r).sum()
                    if self.lam_orth > 0:
                        loss = loss + self.lam_orth * (share * orthogonality(S, C, mb)).sum()
                    loss.backward()
                    opt.step()
            # (2) coefficient step (proximal gradient) and (3) centre update, encoders fixed
            with torch.no_grad():
                S, C = encode(shared, specific, tr.X)
                coef = coefficient_step(
                    S, C, tr.y, tr.mask, coef, n_total=n_total, lam_alpha=lam_a, lam_beta=lam_b, penalty=self.penalty,
                    n_steps=int(self.prox_steps), backend=self.prox_backend, update_centers=update_centers,
                    center=self.center, center_alpha=bool(self.center_alpha), center_weights=center_weights,
                    center_step=self.center_step,
                )
                train_mse = float(((tr.y - predict_stacked(S, C, coef)) * tr.mask).pow(2).sum() / n_total)
                Sv, Cv = encode(shared, specific, va.X)
                val_r = ((va.y - predict_stacked(Sv, Cv, coef)) * va.mask).pow(2).sum(1) / va.n
            history.append({"epoch": epoch, "train_mse": train_mse, "val_mse_sum": float(val_r.sum())})
            state = self._snapshot(shared, specific, coef, per_task)
            if per_task:
                stopper.update(epoch, val_r, state)
            else:
                stopper.update(epoch, val_r.sum().reshape(1), {k: v.unsqueeze(0) for k, v in state.items()})
            if stopper.done:
                break
        else:
            warnings.warn(f"stopped at max_epochs={self.max_epochs} before early stopping triggered", ConvergenceWarning,
                          stacklevel=3)
        best = stopper.best_params if per_task else {k: v[0] for k, v in stopper.best_params.items()}
        coef = self._restore(shared, specific, coef, best, train_shared)
        self.best_epoch_ = stopper.best_epoch.numpy().copy() if per_task else int(stopper.best_epoch[0])
        return coef, pd.DataFrame(history)

    @staticmethod
    def _snapshot(shared, specific, coef: Coefficients, per_task: bool) -> dict[str, torch.Tensor]:
        state = {f"coef.{k}": v.clone() for k, v in coef.state().items()}
        if specific is not None:
            state |= {f"S.{k}": v.detach().clone() for k, v in specific.stacked_state().items()}
        if not per_task:
            state |= {"coef.alpha_center": coef.alpha_center.clone(), "coef.beta_center": coef.beta_center.clone()}
            if shared is not None:
                state |= {f"C.{k}": v.detach().clone() for k, v in shared.stacked_state().items()}
        return state

    @staticmethod
    def _restore(shared, specific, coef: Coefficients, best: dict, train_shared: bool) -> Coefficients:
        if specific is not None:
            specific.load_stacked({k[2:]: v for k, v in best.items() if k.startswith("S.")})
        if shared is not None and train_shared and any(k.startswith("C.") for k in best):
            shared.load_stacked({k[2:]: v for k, v in best.items() if k.startswith("C.")})
        return Coefficients(
            best["coef.alpha"], best["coef.beta"], best["coef.b"],
            best.get("coef.alpha_center", coef.alpha_center), best.get("coef.beta_center", coef.beta_center),
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
        self._check_fitted()
        if task in self.tasks_:
            raise ValueError(f"task {task!r} is already fitted; choose a new label")
        new = MultiTaskData([self._check_X(X)], [y], [task], x_cols=list(self.feature_names_in_))
        rng = np.random.default_rng(self.random_state if random_state is None else random_state)
        if validation_data is None:
            if new.n_total < 4:
                raise DataValidationError(f"task {task!r}: {new.n_total} rows, too few to hold out validation rows")
            train, val = new.split((1 - self.validation_fraction, self.validation_fraction), rng)
        else:
            train, val = new, MultiTaskData([self._check_X(validation_data[0])], [validation_data[1]], [task],
                                            x_cols=list(self.feature_names_in_))
        lam_a = self._per_task(np.mean(np.atleast_1d(self.lam_alpha)), "lam_alpha", 1)
        lam_b = self._per_task(np.mean(np.atleast_1d(self.lam_beta)), "lam_beta", 1)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        q = int(self.n_specific)
        hidden = tuple(int(h) for h in self.hidden)
        stopping = self.early_stopping
        with torch_threads(self.n_threads):
            spec_new = BatchedMLP(1, self.n_features_in_, hidden, q, self.normalize, gen) if q else None
            if self.shared_ is not None:
                for prm in self.shared_.parameters():
                    prm.requires_grad_(False)
            tr, va = self._padded(train), self._padded(val)
            centers = (self.coef_.alpha_center, self.coef_.beta_center)
            coef = self._init_coef(self.shared_, spec_new, tr, centers)
            best_epoch = self.best_epoch_
            try:
                self.early_stopping = "per_task" if self.shared_ is None else "sum"
                coef, hist = self._train(self.shared_, spec_new, coef, tr, va, lam_a, lam_b, train_shared=False,
                                         update_centers=False, center_weights=(np.ones(1), np.ones(1)), rng=rng)
            finally:
                self.early_stopping = stopping
                if self.shared_ is not None:
                    for prm in self.shared_.parameters():
                        prm.requires_grad_(True)
            self.adapt_history_ = hist
            self.best_epoch_ = best_epoch
        if spec_new is not None:
            self.specific_.append_models(spec_new)  # type: ignore[union-attr]  # q > 0: fitted with one
        old = self.coef_
        self.coef_ = Coefficients(torch.cat([old.alpha, coef.alpha]), torch.cat([old.beta, coef.beta]),
                                  torch.cat([old.b, coef.b]), old.alpha_center, old.beta_center)
        self.tasks_ = [*self.tasks_, task]
        self.task_weights_ = np.append(self.task_weights_, 1.0)
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this DualEncoderMTL is not fitted yet; call fit first")

    def _task_index(self, task) -> int:
        try:
            return self.tasks_.index(task)
        except ValueError:
            raise KeyError(f"unknown task {task!r}; fitted tasks are {self.tasks_}") from None

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataValidationError(f"X has shape {X.shape}; expected (n, {self.n_features_in_})")
        if not np.all(np.isfinite(X)):
            raise DataValidationError("X contains non-finite values (NaN/inf)")
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
            Test data with fitted tasks.

        Returns
        -------
        pandas.DataFrame
            One row per task.
        """
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
                  "best_epoch": best if np.ndim(best) == 0 else list(best)}  # type: ignore[arg-type]  # array per task
        tensors = {"x_mean": self.x_mean_, "x_scale": self.x_scale_, "task_weights": self.task_weights_,
                   **{f"coef.{k}": getattr(self.coef_, k) for k in ("alpha", "beta", "b", "alpha_center", "beta_center")},
                   **{f"history.{c}": self.history_[c].to_numpy(float) for c in ("train_mse", "val_mse_sum")}}
        for prefix, mlp in (("C.", self.shared_), ("S.", self.specific_)):
            if mlp is not None:
                tensors |= {prefix + k: v for k, v in mlp.stacked_state().items()}
        return serialization.dumps(type(self).__name__, self.get_params(), fitted, tensors, path)

    @classmethod
    def from_json(cls, source) -> "DualEncoderMTL":
        """A fitted model from :meth:`to_json` output.

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

        params, fitted, enc = ser.loads(source, cls.__name__)
        try:
            model = cls(**{**params, "hidden": tuple(params.get("hidden", ()))})
            model._check_params()
        except (TypeError, ValueError) as exc:
            raise ser.ModelFormatError(f"{cls.__name__} model: invalid hyperparameters ({exc})") from None
        ser.require(fitted, ("tasks", "n_features_in", "y_mean", "y_scale", "feature_names_in", "n_epochs", "best_epoch"),
                    "fitted")
        ser.require(enc, ("x_mean", "x_scale", "task_weights", "coef.alpha", "coef.beta", "coef.b", "coef.alpha_center",
                          "coef.beta_center"), "tensors")
        t = {k: ser.decode_tensor(v, k) for k, v in enc.items()}
        R, d = len(fitted["tasks"]), int(fitted["n_features_in"])
        hidden = tuple(int(h) for h in model.hidden)
        model.tasks_ = list(fitted["tasks"])
        model.n_features_in_ = d
        model.feature_names_in_ = np.array(fitted["feature_names_in"], dtype=object)
        model.x_mean_, model.x_scale_ = t["x_mean"].numpy(), t["x_scale"].numpy()
        model.y_mean_, model.y_scale_ = float(fitted["y_mean"]), float(fitted["y_scale"])
        model.task_weights_ = t["task_weights"].numpy()
        model.coef_ = Coefficients(*(t[f"coef.{k}"] for k in ("alpha", "beta", "b", "alpha_center", "beta_center")))
        model.n_epochs_ = int(fitted["n_epochs"])
        best = fitted["best_epoch"]
        model.best_epoch_ = int(best) if np.ndim(best) == 0 else np.asarray(best, dtype=np.int64)
        model.history_ = pd.DataFrame({"epoch": np.arange(model.n_epochs_), "train_mse": t["history.train_mse"].numpy(),
                                       "val_mse_sum": t["history.val_mse_sum"].numpy()}) if "history.train_mse" in t else None
        sizes = {"C.": (1, int(model.n_shared)), "S.": (R, int(model.n_specific))}
        for prefix, attr in (("C.", "shared_"), ("S.", "specific_")):
            n_models, d_out = sizes[prefix]
            mlp = None
            if d_out:
                mlp = BatchedMLP(n_models, d, hidden, d_out, model.normalize, torch.Generator().manual_seed(0))
                state = {k[2:]: v for k, v in t.items() if k.startswith(prefix)}
                want = {k: tuple(v.shape) for k, v in mlp.stacked_state().items()}
                got = {k: tuple(v.shape) for k, v in state.items()}
                if got != want:
                    raise ser.ModelFormatError(f"{cls.__name__} model: encoder {prefix[0]} tensors {got} do not match the "
                                               f"architecture {want}")
                mlp.load_stacked(state)
            setattr(model, attr, mlp)
        shapes = {"x_mean": (d,), "x_scale": (d,), "task_weights": (R,), "coef.b": (R,),
                  "coef.alpha": (R, int(model.n_specific)), "coef.beta": (R, int(model.n_shared))}
        bad = {k: tuple(t[k].shape) for k, s in shapes.items() if tuple(t[k].shape) != s}
        if bad:
            raise ser.ModelFormatError(f"{cls.__name__} model: tensors with wrong shapes {bad} for {R} tasks, {d} features")
        return model


def _cycled_permutation(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    reps = int(np.ceil(length / n))
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:length]
