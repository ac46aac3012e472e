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
- ``hps``            hard parameter sharing: shared bottom + unpenalised per-task linear heads;
- ``ridge``, ``lasso`` per-task ``RidgeCV`` / ``LassoCV`` (scikit-learn; penalty by internal CV);
- ``gbm``            per-task gradient boosting (``HistGradientBoostingRegressor``);
- ``gbm_pooled``     one gradient-boosting model on all rows with a one-hot task indicator.

The scikit-learn baselines use every labelled row: :func:`compare_methods` adds the validation
rows to their training rows (they tune themselves by internal CV / early stopping), as the tuned
model :class:`~hetmtl.encoders.DualEncoderMTLCV` (pseudo-method ``"dual_cv"``) refits on them.
Every method fits from a :class:`~hetmtl.data.MultiTaskData`, a tuple ``(X, y, task)`` or stacked
arrays ``fit(X, y, task)``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from hetmtl._validation import check_array, check_is_fitted
from hetmtl.data.multitask import MultiTaskData
from hetmtl.encoders.estimator import DualEncoderMTL, UnknownTaskError, as_multitask


def _score_tasks(model, data) -> pd.DataFrame:
    data = as_multitask(data, name="data")
    rows = []
    for t in data:
        mse = float(np.mean((t.y - model.predict(t.X, t.task)) ** 2))
        ss = float(np.sum((t.y - t.y.mean()) ** 2))
        rows.append({"task": t.task, "n": t.n, "rmse": np.sqrt(mse), "mse": mse, "r2": 1 - mse * t.n / ss if ss > 0 else np.nan})
    return pd.DataFrame(rows).set_index("task")


def _merge(a: MultiTaskData, b: MultiTaskData) -> MultiTaskData:
    """Rows of ``b`` appended to ``a`` task by task (same tasks)."""
    if list(a.tasks) != list(b.tasks):
        raise ValueError(f"validation_data tasks {b.tasks} differ from training tasks {a.tasks}")
    return MultiTaskData([np.vstack([a[t].X, b[t].X]) for t in a.tasks], [np.concatenate([a[t].y, b[t].y]) for t in a.tasks],
                         list(a.tasks), x_cols=a.x_cols)


def _labels(task, n: int) -> np.ndarray:
    labels = np.asarray(task, dtype=object)
    return np.full(n, task, dtype=object) if labels.ndim == 0 else labels


class PerTaskRegressor(BaseEstimator):
    """One scikit-learn regressor per task (a clone of ``estimator`` fitted on the task's rows).

    Parameters
    ----------
    estimator : sklearn regressor
        The per-task model (e.g. ``RidgeCV()``, ``HistGradientBoostingRegressor()``).
    use_validation : bool
        Add ``validation_data`` rows to the training rows (the estimator tunes itself).
    """

    def __init__(self, estimator=None, use_validation: bool = True) -> None:
        self.estimator = estimator
        self.use_validation = use_validation

    def fit(self, X, y=None, task=None, *, validation_data=None, task_order=None) -> "PerTaskRegressor":
        """Fit one clone per task (data as in :meth:`DualEncoderMTL.fit`)."""
        from sklearn.base import clone
        from sklearn.linear_model import RidgeCV

        data = as_multitask(X, y, task, task_order=task_order)
        if validation_data is not None and self.use_validation:
            data = _merge(data, as_multitask(validation_data, task_order=data.tasks if not isinstance(validation_data, MultiTaskData) else None,
                                             name="validation_data"))
        base = self.estimator if self.estimator is not None else RidgeCV(alphas=np.logspace(-3, 3, 13))
        self.models_ = {t.task: clone(base).fit(t.X, t.y) for t in data}
        self.tasks_ = list(data.tasks)
        self.n_features_in_ = data.n_features
        return self

    def predict(self, X, task) -> np.ndarray:
        """Predictions for rows of one task (or one task label per row)."""
        check_is_fitted(self, ("models_",))
        if isinstance(X, MultiTaskData):
            return np.concatenate([self.predict(t.X, t.task) for t in X])
        X = check_array(X, "X", ndim=2, n_columns=self.n_features_in_)
        labels = _labels(task, X.shape[0])
        out = np.empty(X.shape[0])
        for t in pd.unique(pd.Series(labels)):
            if t not in self.models_:
                raise UnknownTaskError(f"unknown task {t!r}; fitted tasks are {self.tasks_}")
            rows = labels == t
            out[rows] = self.models_[t].predict(X[rows])
        return out

    def score_tasks(self, data) -> pd.DataFrame:
        """Per-task n, RMSE, MSE and R^2."""
        return _score_tasks(self, data)


class PooledOneHotRegressor(BaseEstimator):
    """One scikit-learn regressor on all tasks' rows with a one-hot task indicator appended.

    Parameters
    ----------
    estimator : sklearn regressor
        The pooled model (default ``HistGradientBoostingRegressor``).
    use_validation : bool
        Add ``validation_data`` rows to the training rows.
    """

    def __init__(self, estimator=None, use_validation: bool = True) -> None:
        self.estimator = estimator
        self.use_validation = use_validation

    def _design(self, X: np.ndarray, labels: np.ndarray) -> np.ndarray:
        onehot = np.zeros((X.shape[0], len(self.tasks_)))
        for j, t in enumerate(self.tasks_):
            onehot[labels == t, j] = 1.0
        return np.column_stack([X, onehot])

    def fit(self, X, y=None, task=None, *, validation_data=None, task_order=None) -> "PooledOneHotRegressor":
        """Fit on the pooled rows (data as in :meth:`DualEncoderMTL.fit`)."""
        from sklearn.base import clone

        data = as_multitask(X, y, task, task_order=task_order)
        if validation_data is not None and self.use_validation:
            data = _merge(data, as_multitask(validation_data, task_order=data.tasks if not isinstance(validation_data, MultiTaskData) else None,
                                             name="validation_data"))
        self.tasks_ = list(data.tasks)
        self.n_features_in_ = data.n_features
        labels = np.concatenate([np.full(t.n, t.task, dtype=object) for t in data])
        Xa = self._design(np.vstack([t.X for t in data]), labels)
        self.model_ = clone(self.estimator if self.estimator is not None else _gbm()).fit(Xa, np.concatenate([t.y for t in data]))
        return self

    def predict(self, X, task) -> np.ndarray:
        """Predictions for rows of one task (or one task label per row)."""
        check_is_fitted(self, ("model_",))
        if isinstance(X, MultiTaskData):
            return np.concatenate([self.predict(t.X, t.task) for t in X])
        X = check_array(X, "X", ndim=2, n_columns=self.n_features_in_)
        labels = _labels(task, X.shape[0])
        unknown = sorted(set(map(str, labels.tolist())) - set(map(str, self.tasks_)))
        if unknown:
            raise UnknownTaskError(f"unknown task(s) {unknown}; fitted tasks are {self.tasks_}")
        return self.model_.predict(self._design(X, labels))

    def score_tasks(self, data) -> pd.DataFrame:
        """Per-task n, RMSE, MSE and R^2."""
        return _score_tasks(self, data)


def _gbm(random_state=None):
    """The gradient-boosting baseline: small learning rate, early stopping on 20 % of the rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(learning_rate=0.05, max_iter=500, min_samples_leaf=10, early_stopping=True,
                                         validation_fraction=0.2, n_iter_no_change=20, random_state=random_state)


class PooledMTL(BaseEstimator):
    """Pooled single model: one network (shared encoder + one linear head) on all tasks' rows.

    Parameters
    ----------
    params : dict, optional
        :class:`DualEncoderMTL` settings (``n_shared`` is the latent size).
    """

    def __init__(self, params: dict | None = None) -> None:
        self.params = params

    def fit(self, X, y=None, task=None, *, validation_data=None, task_order=None) -> "PooledMTL":
        """Fit one model on the pooled rows of every task.

        Parameters
        ----------
        X : MultiTaskData, tuple or array-like
            Training data, a tuple ``(X, y, task)``, or stacked features (with ``y``, ``task``).
        y, task : array-like, optional
            Stacked outcomes and per-row task labels (with array ``X``).
        validation_data : MultiTaskData or tuple, optional
            Rows for early stopping (pooled too).
        task_order : sequence, optional
            Task order for stacked labels (default sorted).

        Returns
        -------
        PooledMTL
            The fitted estimator.
        """
        data = as_multitask(X, y, task, task_order=task_order)
        kw = dict(self.params or {}, n_specific=0, lam_alpha=0.0, lam_beta=0.0, lam_orth=0.0)
        val = None
        if validation_data is not None:
            val = as_multitask(validation_data, task_order=data.tasks if not isinstance(validation_data, MultiTaskData) else None,
                               name="validation_data").pooled()
        self.model_ = DualEncoderMTL(**kw).fit(data.pooled(), validation_data=val)
        self.tasks_ = list(data.tasks)
        self.n_features_in_ = data.n_features
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
        check_is_fitted(self, ("model_",))
        if isinstance(X, MultiTaskData):
            return np.concatenate([self.predict(t.X, t.task) for t in X])
        labels = np.asarray(task, dtype=object)
        unknown = set(np.atleast_1d(labels).tolist()) - set(self.tasks_)
        if unknown:
            raise UnknownTaskError(f"unknown task(s) {sorted(map(str, unknown))}; fitted tasks are {self.tasks_}")
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
        return _score_tasks(self, data)


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


def _ridge(**common) -> PerTaskRegressor:
    from sklearn.linear_model import RidgeCV

    return PerTaskRegressor(RidgeCV(alphas=np.logspace(-3, 3, 13)))


def _lasso(**common) -> PerTaskRegressor:
    from sklearn.linear_model import LassoCV

    return PerTaskRegressor(LassoCV(cv=5, alphas=30, max_iter=5000, random_state=_seed(common)))


def _seed(common: dict):
    rs = common.get("random_state")
    return rs if rs is None or isinstance(rs, (int, np.integer)) else None


def _gbm_task(**common) -> PerTaskRegressor:
    return PerTaskRegressor(_gbm(_seed(common)))


def _gbm_pooled(**common) -> PooledOneHotRegressor:
    return PooledOneHotRegressor(_gbm(_seed(common)))


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
    "ridge": _ridge,
    "lasso": _lasso,
    "gbm": _gbm_task,
    "gbm_pooled": _gbm_pooled,
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
        Keys of :data:`METHODS`, plus the pseudo-methods ``"dual_tuned"`` (the full model with
        ``tune_grid`` chosen by summed validation MSE on ``validation``) and ``"dual_cv"``
        (:class:`~hetmtl.encoders.DualEncoderMTLCV` with its default grid, 3-fold CV on train +
        validation rows, refitted on all of them; ``tune_grid`` replaces the grid).
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
        elif name == "dual_cv":
            from hetmtl.encoders.tuning import DualEncoderMTLCV

            base = {k: v for k, v in common.items() if k not in ("random_state", "early_stopping", "verbose")}
            model = DualEncoderMTLCV(tune_grid, cv=3, base_params=base, random_state=common.get("random_state")).fit(
                _merge(train, validation))
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
