"""Tuning the dual-encoder model: :class:`DualEncoderMTLCV`.

What to use when: you have labelled rows of several tasks and want one model, not a choice to
make by hand. :class:`DualEncoderMTLCV` compares a small grid of settings of
:class:`~hetmtl.encoders.DualEncoderMTL` (centre penalty λ, tied or separate for α/β; q task-
specific dimensions; encoder width/depth; the linear path) by K-fold cross-validation (per-task
folds) or one validation split, then refits the chosen setting on all labelled rows for the
chosen number of epochs. The default grid includes the linear multi-task model (no encoders),
so on linear data it behaves like per-task ridge pulled towards a common slope vector.

Example::

    from hetmtl.encoders import DualEncoderMTLCV
    cv = DualEncoderMTLCV(param_grid={"lam": [0.01, 0.1, 1.0], "n_specific": [0, 2]}, cv=3,
                          random_state=0).fit(X, y, task)        # stacked rows, per-row task labels
    cv.best_params_          # the chosen setting
    cv.cv_results_           # one row per setting: mean / per-fold summed validation MSE, epochs
    cv.predict(X_new, task_new)
"""
from __future__ import annotations

from itertools import product
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from hetmtl._progress import check_verbose, progress
from hetmtl._validation import (
    check_bool, check_float, check_hidden, check_int, check_is_fitted, check_n_jobs, check_random_state,
)
from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders.estimator import DualEncoderMTL, as_multitask
from hetmtl.exceptions import DataValidationError, ParameterError, TrainingError

#: The default grid: the linear multi-task model (no encoders; λ in {0.01, 0.03, 0.1, 0.3}) and the
#: dual encoder with the linear path (shared encoder of 8 dims on one hidden layer of 64; task
#: encoders of 2 dims on a hidden layer of 16, or none), λ in {0.01, 0.03, 0.1}; λ tied
#: (``lam`` sets lam_alpha = lam_beta). Ten candidates.
DEFAULT_GRID: list[dict[str, list]] = [
    {"n_shared": [0], "n_specific": [0], "hidden": [()], "linear": [True], "lam": [0.01, 0.03, 0.1, 0.3]},
    {"n_shared": [8], "n_specific": [0, 2], "hidden": [(64,)], "hidden_specific": [(16,)], "linear": [True],
     "lam": [0.01, 0.03, 0.1]},
]

_PARAMS = set(DualEncoderMTL().get_params())


def expand_grid(param_grid) -> list[dict[str, Any]]:
    """The candidate settings of a grid (dict of lists, or a list of such dicts).

    The key ``lam`` sets ``lam_alpha`` and ``lam_beta`` together; every other key must be a
    :class:`DualEncoderMTL` parameter. A setting with ``n_specific = 0`` ignores α, so duplicates
    that differ only there are dropped.
    """
    grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
    if not grids:
        raise ParameterError("param_grid is empty")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for g in grids:
        if not isinstance(g, Mapping) or not g:
            raise ParameterError(f"param_grid entries must be non-empty dicts of candidate lists, got {g!r}")
        for k, vals in g.items():
            if k != "lam" and k not in _PARAMS:
                raise ParameterError(f"param_grid key {k!r} is not a DualEncoderMTL parameter (or 'lam')")
            if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) == 0:
                raise ParameterError(f"param_grid[{k!r}] must be a non-empty list of candidates, got {vals!r}")
        if "lam" in g and ({"lam_alpha", "lam_beta"} & set(g)):
            raise ParameterError("param_grid: give either 'lam' (tied) or 'lam_alpha'/'lam_beta', not both")
        keys = list(g)
        for values in product(*(g[k] for k in keys)):
            c = dict(zip(keys, values))
            for key in ("hidden", "hidden_specific"):  # lists (JSON, R) and bare widths as tuples
                if c.get(key) is not None:
                    c[key] = check_hidden(c[key], f"param_grid[{key!r}]")
            if "lam" in c:
                lam = c.pop("lam")
                c["lam_alpha"] = c["lam_beta"] = lam
            key = repr(sorted(c.items(), key=lambda kv: kv[0]))
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


def _folds(data: MultiTaskData, cv, rng: np.random.Generator) -> list[tuple[MultiTaskData, MultiTaskData]]:
    """Per-task K-fold (int ``cv``) or one validation split (float ``cv``): (train, validation) pairs."""
    if isinstance(cv, float):
        train, val = data.split((1 - cv, cv), rng)
        return [(train, val)]
    small = [t.task for t in data if t.n < 2 * cv]
    if small:
        raise DataValidationError(f"task(s) {small} have fewer than {2 * cv} rows; too few for cv={cv} folds")
    parts = [np.array_split(rng.permutation(t.n), cv) for t in data]
    out = []
    for k in range(cv):
        val_idx = [p[k] for p in parts]
        train_idx = [np.concatenate([p[j] for j in range(cv) if j != k]) for p in parts]
        out.append((data.subset(train_idx), data.subset(val_idx)))
    return out


def _fit_one(params: dict, train: MultiTaskData, val: MultiTaskData) -> tuple[float, int, str, Any]:
    """One candidate on one fold: (summed validation MSE, best epoch, error text, S_r epochs per task)."""
    try:  # early stopping on an inner split of the training fold: the scoring fold stays unseen
        model = DualEncoderMTL(**params).fit(train)
    except TrainingError as exc:
        return float("inf"), -1, str(exc), None
    loss = float(model.score_tasks(val).mse.sum())
    return loss, int(model.best_epoch_), "", model.specific_epochs_


class DualEncoderMTLCV(BaseEstimator):
    """:class:`~hetmtl.encoders.DualEncoderMTL` tuned by cross-validation, refitted on all rows.

    Parameters
    ----------
    param_grid : dict, list of dict or None
        Candidate settings: parameter name to list of values (``lam`` ties lam_alpha = lam_beta;
        give ``lam_alpha`` and ``lam_beta`` for separate values). None: :data:`DEFAULT_GRID`
        (linear multi-task model, and dual encoder with linear path and q in {0, 2}).
    cv : int or float
        int K >= 2: K-fold cross-validation with folds formed within each task; float in (0, 1):
        one per-task validation split of that fraction. Each candidate is trained on the other
        rows (early stopping on an inner ``validation_fraction`` split of them) and scored on the
        held-out rows, which it never saw; the criterion is the summed per-task validation MSE
        averaged over folds. (Stopping and scoring on the same rows favoured the flexible
        candidates: their best epoch is picked on the rows that then score them.)
    base_params : dict, optional
        :class:`DualEncoderMTL` settings shared by every candidate (e.g. ``max_epochs``,
        ``lam_orth``, ``task_weights``).
    refit : bool
        Refit the chosen setting on all rows for the median number of epochs kept over the folds
        (``early_stopping="none"``).
    n_refits : int
        Number of refits from different initialisations whose predictions are averaged (a seed
        ensemble: it lowers the variance of the networks). 1 (default) gives a single model, the
        one :meth:`DualEncoderMTL.to_json` can export; the study
        ``benchmarks/results/encoders_strong_baselines.md`` uses 5 (about 4 % lower RMSE than one
        in development runs).
    n_jobs : int or None
        Parallel candidate×fold fits (joblib convention; each fit uses ``n_threads`` torch threads).
    random_state : None, int or numpy.random.Generator
        Folds and every fit's initialisation (the same per fold for every candidate: paired).
    verbose : int
        0 silent; 1 a progress bar over candidate×fold fits.

    Attributes
    ----------
    cv_results_ : pandas.DataFrame
        One row per candidate: its parameters, ``mean_val_mse_sum``, ``std_val_mse_sum``,
        ``split<k>_val_mse_sum``, ``mean_best_epoch`` and ``rank``.
    best_index_ : int
        Row of the chosen candidate in ``cv_results_``.
    best_params_ : dict
        Its settings (``lam_alpha``/``lam_beta`` spelled out).
    best_score_ : float
        Its mean summed validation MSE (lower is better).
    best_n_epochs_ : int
        Epochs of the refit (median over folds of the best epoch + 1; with staged training the
        first stage).
    best_specific_epochs_ : numpy.ndarray or None
        With staged training and q > 0: per task the median over folds of the epochs its task
        encoder S_r was kept (0: S_r off), replayed in the refit.
    best_estimator_ : DualEncoderMTL
        The first refitted model (with ``refit=True``; diagnostics such as fused tasks read it).
    estimators_ : list of DualEncoderMTL
        All ``n_refits`` refitted models; :meth:`predict` averages them.
    tasks_ : list
        Task order.

    Examples
    --------
    >>> from hetmtl.encoders import DualEncoderMTLCV                     # doctest: +SKIP
    >>> cv = DualEncoderMTLCV(param_grid={"lam": [0.01, 0.1], "n_specific": [0, 2]},
    ...                       cv=3, random_state=0).fit(X, y, task)      # doctest: +SKIP
    >>> cv.best_params_, cv.predict(X_new, task_new)                     # doctest: +SKIP
    """

    def __init__(self, param_grid=None, cv=3, base_params: dict | None = None, refit: bool = True,
                 n_refits: int = 1, n_jobs: int | None = None, random_state=None, verbose: int = 0) -> None:
        self.param_grid = param_grid
        self.cv = cv
        self.base_params = base_params
        self.refit = refit
        self.n_refits = n_refits
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _check_cv(self):
        if isinstance(self.cv, float):
            return check_float(self.cv, "cv", low=0, high=1, low_open=True, high_open=True)
        return check_int(self.cv, "cv", low=2, high=100)

    def fit(self, X, y=None, task=None, *, task_order: Sequence | None = None) -> "DualEncoderMTLCV":
        """Tune on the labelled rows, then refit the chosen setting on all of them.

        Parameters
        ----------
        X : MultiTaskData, tuple or array-like
            Data, a tuple ``(X, y, task)``, or stacked features ``(n, p)``.
        y : array-like, optional
            Stacked outcomes (with array ``X``).
        task : array-like, optional
            Task label of every row (with array ``X``).
        task_order : sequence, optional
            Task order for stacked labels (default sorted).

        Returns
        -------
        DualEncoderMTLCV
            The fitted tuner.
        """
        from joblib import Parallel, delayed

        cv = self._check_cv()
        refit = check_bool(self.refit, "refit")
        n_refits = check_int(self.n_refits, "n_refits", low=1, high=100)
        n_jobs = check_n_jobs(self.n_jobs)
        verbose = check_verbose(self.verbose)
        base = dict(self.base_params or {})
        unknown = sorted(set(base) - _PARAMS)
        if unknown:
            raise ParameterError(f"base_params has names that are not DualEncoderMTL parameters: {unknown}")
        for name in ("random_state", "early_stopping", "verbose"):
            if name in base:
                raise ParameterError(f"base_params must not set {name!r}; the tuner sets it")
        candidates = expand_grid(DEFAULT_GRID if self.param_grid is None else self.param_grid)
        for c in candidates:  # validate every candidate before any training
            DualEncoderMTL(**{**base, **c})._check_params()
        data = as_multitask(X, y, task, task_order=task_order)
        rng = check_random_state(self.random_state)
        folds = _folds(data, cv, rng)
        seeds = [int(s) for s in rng.integers(0, 2**32 - 1, size=len(folds) + int(n_refits))]  # type: ignore[arg-type]
        jobs = [(i, k) for i in range(len(candidates)) for k in range(len(folds))]
        def params_of(i: int, k: int) -> dict:
            return {**base, **candidates[i], "random_state": seeds[k]}

        if n_jobs == 1:
            results = [_fit_one(params_of(i, k), *folds[k])
                       for i, k in progress(jobs, "dual-encoder tuning fits", verbose, unit="fit")]
        else:
            results = Parallel(n_jobs=n_jobs, verbose=10 if verbose >= 1 else 0)(
                delayed(_fit_one)(params_of(i, k), *folds[k]) for i, k in jobs)
        loss = np.full((len(candidates), len(folds)), np.inf)
        epochs = np.full((len(candidates), len(folds)), -1)
        errors: dict[int, str] = {}
        spec: dict[int, list] = {}
        for (i, fold), (lv, be, err, se) in zip(jobs, results):
            loss[i, fold], epochs[i, fold] = lv, be
            if err:
                errors[i] = err
            if se is not None:
                spec.setdefault(i, []).append(se)
        rows = []
        for i, c in enumerate(candidates):
            row: dict[str, Any] = {f"param_{name}": value for name, value in c.items()}
            row["params"] = c
            row["mean_val_mse_sum"] = float(np.mean(loss[i]))
            row["std_val_mse_sum"] = float(np.std(loss[i]))
            for j in range(len(folds)):
                row[f"split{j}_val_mse_sum"] = float(loss[i, j])
            row["mean_best_epoch"] = float(np.mean(epochs[i] + 1))
            row["error"] = errors.get(i, "")
            rows.append(row)
        table = pd.DataFrame(rows)
        if not np.isfinite(table.mean_val_mse_sum).any():
            raise TrainingError(f"no candidate setting trained to a finite validation loss; first error: {next(iter(errors.values()))}")
        table["rank"] = table.mean_val_mse_sum.rank(method="min").astype(int)
        self.cv_results_ = table
        self.best_index_ = int(np.argmin(table.mean_val_mse_sum.to_numpy()))
        self.best_params_ = dict(candidates[self.best_index_])
        self.best_score_ = float(table.mean_val_mse_sum.iloc[self.best_index_])
        ok = np.isfinite(loss[self.best_index_])
        self.best_n_epochs_ = int(max(1, round(float(np.median(epochs[self.best_index_][ok] + 1)))))
        # staged task encoders: per task the median over folds of the S_r epochs kept (0: off)
        self.best_specific_epochs_ = (np.round(np.median(np.vstack(spec[self.best_index_]), axis=0)).astype(np.int64)
                                      if self.best_index_ in spec else None)
        self.tasks_ = list(data.tasks)
        self.n_features_in_ = data.n_features
        if refit:
            params = {**base, **self.best_params_, "early_stopping": "none", "max_epochs": self.best_n_epochs_,
                      "specific_epochs": self.best_specific_epochs_}
            self.estimators_ = [DualEncoderMTL(**params, random_state=seed).fit(data) for seed in seeds[len(folds):]]
            self.best_estimator_ = self.estimators_[0]
        return self

    # ------------------------------------------------------------------ delegation
    def _model(self) -> DualEncoderMTL:
        check_is_fitted(self, ("cv_results_",))
        if "best_estimator_" not in vars(self):
            raise ParameterError("this DualEncoderMTLCV was fitted with refit=False: no model to predict with")
        return self.best_estimator_

    def predict(self, X, task) -> np.ndarray:
        """Mean prediction of the refitted models (see :meth:`DualEncoderMTL.predict`)."""
        self._model()
        return np.mean([m.predict(X, task) for m in self.estimators_], axis=0)

    def score(self, X, y=None, task=None) -> float:
        """R^2 of :meth:`predict` over all rows (sklearn convention)."""
        self._model()
        if isinstance(X, tuple) and y is None and task is None:
            X = as_multitask(X)
        if isinstance(X, MultiTaskData):
            yy, pred = np.concatenate([t.y for t in X]), self.predict(X, None)
        else:
            yy, pred = np.asarray(y, float), self.predict(X, task)
        return float(1 - np.sum((yy - pred) ** 2) / np.sum((yy - yy.mean()) ** 2))

    def score_tasks(self, data) -> pd.DataFrame:
        """Per-task n, RMSE, MSE and R^2 of :meth:`predict`."""
        self._model()
        data = as_multitask(data, name="data")
        rows = []
        for t in data:
            mse = float(np.mean((t.y - self.predict(t.X, t.task)) ** 2))
            ss = float(np.sum((t.y - t.y.mean()) ** 2))
            rows.append({"task": t.task, "n": t.n, "rmse": np.sqrt(mse), "mse": mse,
                         "r2": 1 - mse * t.n / ss if ss > 0 else np.nan})
        return pd.DataFrame(rows).set_index("task")
