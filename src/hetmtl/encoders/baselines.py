"""Ablations and baselines of the dual-encoder model, fitted on paired splits.

What to use when: to check whether the dual structure, the orthogonality penalty and the
adaptive integration pay off on your data, fit every method of :data:`METHODS` on the same
train / validation / test rows with :func:`compare_methods` (one split) or
:func:`paired_comparison` (several random splits) and compare per-task test RMSE.

Methods (all share the encoder sizes and optimiser settings given as ``common``):

- ``dual``           full model;
- ``shared_only``    shared encoder C only (``n_specific=0``), with the centre penalty;
- ``specific_only``  task encoders S_r only (``n_shared=0``), with the centre penalty;
- ``no_orth``        ``lam_orth=0``;
- ``no_integration`` ``lam_alpha=lam_beta=0``;
- ``stl``            single-task learning: one MLP per task (task encoders of size p+q, no
                     coupling, per-task early stopping);
- ``pooled``         one MLP on all rows, ignoring the task;
- ``hps``            hard parameter sharing: shared bottom + unpenalised per-task linear heads.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders.estimator import DualEncoderMTL


class PooledMTL(BaseEstimator):
    """Pooled single model: one network (shared encoder + one linear head) on all tasks' rows.

    Parameters
    ----------
    params : dict, optional
        :class:`DualEncoderMTL` settings (``n_shared`` is the latent size).
    """

    def __init__(self, params: dict | None = None) -> None:
        self.params = params

    def fit(self, data: MultiTaskData, *, validation_data: MultiTaskData | None = None) -> "PooledMTL":
        """Fit one model on the pooled rows of every task.

        Parameters
        ----------
        data : MultiTaskData
            Training data.
        validation_data : MultiTaskData, optional
            Rows for early stopping (pooled too).

        Returns
        -------
        PooledMTL
            The fitted estimator.
        """
        kw = dict(self.params or {}, n_specific=0, lam_alpha=0.0, lam_beta=0.0, lam_orth=0.0)
        self.model_ = DualEncoderMTL(**kw).fit(data.pooled(), validation_data=None if validation_data is None else validation_data.pooled())
        self.tasks_ = list(data.tasks)
        return self

    def predict(self, X, task) -> np.ndarray:
        """Predictions of the pooled model (the same function for every fitted task).

        Parameters
        ----------
        X : array-like or MultiTaskData
            Features ``(n, p)``, or data whose tasks are predicted in turn.
        task : object or array-like
            Task label(s), checked against the fitted tasks.

        Returns
        -------
        numpy.ndarray
            Predictions.
        """
        if isinstance(X, MultiTaskData):
            return np.concatenate([self.predict(t.X, t.task) for t in X])
        labels = np.asarray(task, dtype=object)
        unknown = set(np.atleast_1d(labels).tolist()) - set(self.tasks_)
        if unknown:
            raise KeyError(f"unknown task(s) {sorted(map(str, unknown))}; fitted tasks are {self.tasks_}")
        return self.model_.predict(X, "pooled")

    def score_tasks(self, data: MultiTaskData) -> pd.DataFrame:
        """Per-task n, RMSE, MSE and R^2.

        Parameters
        ----------
        data : MultiTaskData
            Test data.

        Returns
        -------
        pandas.DataFrame
            One row per task.
        """
        rows = []
        for t in data:
            mse = float(np.mean((t.y - self.predict(t.X, t.task)) ** 2))
            ss = float(np.sum((t.y - t.y.mean()) ** 2))
            rows.append({"task": t.task, "n": t.n, "rmse": np.sqrt(mse), "mse": mse, "r2": 1 - mse * t.n / ss if ss > 0 else np.nan})
        return pd.DataFrame(rows).set_index("task")


def _variant(**overrides) -> Callable[..., BaseEstimator]:
    def make(**common) -> DualEncoderMTL:
        return DualEncoderMTL(**{**common, **overrides})

    return make


def _stl(**common) -> DualEncoderMTL:
    q = int(common.get("n_shared", 4)) + int(common.get("n_specific", 4))
    return DualEncoderMTL(**{**common, "n_shared": 0, "n_specific": q, "lam_alpha": 0.0, "lam_beta": 0.0,
                             "lam_orth": 0.0, "early_stopping": "per_task"})


def _pooled(**common) -> PooledMTL:
    q = int(common.get("n_shared", 4)) + int(common.get("n_specific", 4))
    return PooledMTL({**common, "n_shared": q})


#: The methods of :func:`compare_methods`, name -> factory ``f(**common)`` of an unfitted estimator.
METHODS: dict[str, Callable[..., BaseEstimator]] = {
    "dual": _variant(),
    "shared_only": _variant(n_specific=0),
    "specific_only": _variant(n_shared=0),
    "no_orth": _variant(lam_orth=0.0),
    "no_integration": _variant(lam_alpha=0.0, lam_beta=0.0),
    "stl": _stl,
    "pooled": _pooled,
    "hps": _variant(n_specific=0, lam_alpha=0.0, lam_beta=0.0, lam_orth=0.0),
}


def make_method(name: str, **common) -> BaseEstimator:
    """An unfitted estimator for one method of :data:`METHODS`.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS`.
    **common
        Settings shared by every method (:class:`~hetmtl.encoders.DualEncoderMTL` parameters,
        e.g. ``n_shared``, ``n_specific``, ``lam_alpha``, ``random_state``).

    Returns
    -------
    sklearn.base.BaseEstimator
        The unfitted estimator (``fit(train, validation_data=...)``, ``score_tasks``).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name](**common)


def compare_methods(train: MultiTaskData, validation: MultiTaskData, test: MultiTaskData,
                    methods: Iterable[str] = tuple(METHODS), *, return_models: bool = False,
                    tune_grid: dict[str, list] | None = None, **common):
    """Fit each method on the same split and score it on the same test rows.

    Parameters
    ----------
    train, validation, test : MultiTaskData
        One split of the same tasks (validation rows drive early stopping and tuning).
    methods : iterable of str
        Keys of :data:`METHODS`, plus the pseudo-method ``"dual_tuned"``: the full model with
        ``tune_grid`` chosen by summed validation MSE.
    return_models : bool
        Also return the fitted models.
    tune_grid : dict, optional
        Grid of ``"dual_tuned"`` (default: ``lam_alpha = lam_beta`` in {0.003, 0.03, 0.3}, key
        ``lam``).
    **common
        Settings shared by every method (:class:`~hetmtl.encoders.DualEncoderMTL` parameters,
        e.g. ``n_shared``, ``n_specific``, ``lam_alpha``, ``random_state``).

    Returns
    -------
    pandas.DataFrame or tuple
        Per-task test RMSE in long format (``method, task, n_train, rmse``); with
        ``return_models``, ``(table, {method: model})``.
    """
    rows, models = [], {}
    for name in methods:
        if name == "dual_tuned":
            grid = tune_grid or {"lam": [0.003, 0.03, 0.3]}
            model = _tuned(train, validation, grid, **common)
        else:
            model = make_method(name, **common).fit(train, validation_data=validation)
        sc = model.score_tasks(test)
        for task, r in sc.iterrows():
            rows.append({"method": name, "task": task, "n_train": int(train[task].n), "rmse": float(r.rmse)})
        models[name] = model
    out = pd.DataFrame(rows)
    return (out, models) if return_models else out


def _tuned(train, validation, grid: dict[str, list], **common):
    """select_by_validation, where a ``lam`` key sets lam_alpha = lam_beta together."""
    grid = dict(grid)
    lams = grid.pop("lam", None)
    if lams is None:
        return select_by_validation(train, validation, grid, **common)[0]
    best, best_loss = None, np.inf
    for lam in lams:
        model, table = select_by_validation(train, validation, grid or {"lam_alpha": [lam]}, **{**common, "lam_alpha": lam, "lam_beta": lam})
        loss = float(table.val_mse_sum.min())
        if loss < best_loss:
            best, best_loss = model, loss
    return best


def paired_comparison(data: MultiTaskData, methods: Iterable[str] = tuple(METHODS), n_splits: int = 5,
                      fractions=(0.6, 0.2, 0.2), random_state: int | None = None, **common) -> pd.DataFrame:
    """:func:`compare_methods` over several random per-task splits.

    Every method sees the same rows in each split.

    Parameters
    ----------
    data : MultiTaskData
        All rows.
    methods : iterable of str
        Keys of :data:`METHODS` (and ``"dual_tuned"``).
    n_splits : int
        Number of random splits.
    fractions : tuple of float
        Train / validation / test fractions of each task.
    random_state : int or None
        Seed of the splits (and of the fits).
    **common
        Settings shared by every method (:class:`~hetmtl.encoders.DualEncoderMTL` parameters,
        e.g. ``n_shared``, ``n_specific``, ``lam_alpha``, ``random_state``).

    Returns
    -------
    pandas.DataFrame
        The :func:`compare_methods` table with a ``split`` column.
    """
    rng = np.random.default_rng(random_state)
    frames = []
    for s in range(n_splits):
        seed = int(rng.integers(2**31))
        tr, va, te = data.split(fractions, seed)
        frames.append(compare_methods(tr, va, te, methods, **{**common, "random_state": seed}).assign(split=s))
    return pd.concat(frames, ignore_index=True)


def select_by_validation(train: MultiTaskData, validation: MultiTaskData, param_grid: dict[str, list],
                         method: str = "dual", **common):
    """Fit a method for every combination of a grid and keep the best on validation rows.

    The criterion is the summed per-task validation MSE.

    Parameters
    ----------
    train, validation : MultiTaskData
        Training and validation rows of the same tasks.
    param_grid : dict
        Parameter name to candidate values.
    method : str
        A key of :data:`METHODS`.
    **common
        Settings shared by every method (:class:`~hetmtl.encoders.DualEncoderMTL` parameters,
        e.g. ``n_shared``, ``n_specific``, ``lam_alpha``, ``random_state``).

    Returns
    -------
    best_model : sklearn.base.BaseEstimator
        The fit with the smallest summed validation MSE.
    table : pandas.DataFrame
        Every combination with its summed validation MSE (``val_mse_sum``).
    """
    from itertools import product

    keys = list(param_grid)
    rows, best, best_loss = [], None, np.inf
    for values in product(*(param_grid[k] for k in keys)):
        params = dict(zip(keys, values))
        model = make_method(method, **{**common, **params}).fit(train, validation_data=validation)
        loss = float(model.score_tasks(validation).mse.sum())
        rows.append({**params, "val_mse_sum": loss})
        if loss < best_loss:
            best, best_loss = model, loss
    return best, pd.DataFrame(rows)
