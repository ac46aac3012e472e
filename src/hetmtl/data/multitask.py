"""Multi-task regression data: per-task features ``X_r`` (n_r x p, one p for all tasks) and
outcomes ``y_r``, validated on entry (input of the dual-encoder family).

Build it with :meth:`MultiTaskData.from_arrays` (lists of per-task arrays or a dict),
:meth:`MultiTaskData.from_dataframe` (one frame with a task column) or
:meth:`MultiTaskData.from_formula` (a formula on one frame). Errors name the task and column at
fault; nothing is dropped; complex numbers, dates and text are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from hetmtl.data._arrays import as_float_array, format_rows as _rows
from hetmtl.exceptions import DataValidationError


@dataclass(frozen=True)
class TaskArrays:
    """The rows of one task.

    Parameters
    ----------
    task : object
        The task label.
    X : numpy.ndarray
        Features, shape (n_r, p).
    y : numpy.ndarray
        Outcomes, shape (n_r,).
    """

    task: object
    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        """Number of rows of the task."""
        return self.y.shape[0]


class MultiTaskData:
    """Features and outcomes of R regression tasks sharing one feature space.

    Parameters
    ----------
    X, y : sequence of array-like
        One entry per task: features ``(n_r, p)`` and outcomes ``(n_r,)``.
    tasks : sequence, optional
        Task labels (default ``0..R-1``).
    x_cols : sequence of str, optional
        Feature names (default ``x1..xp``).
    y_col : str
        Name of the outcome, used in messages and tables.
    min_rows : int
        Smallest allowed task size (default 1; a task with 0 rows is refused).
    """

    def __init__(
        self,
        X: Sequence,
        y: Sequence,
        tasks: Sequence | None = None,
        *,
        x_cols: Sequence[str] | None = None,
        y_col: str = "y",
        min_rows: int = 1,
    ) -> None:
        if len(X) != len(y):
            raise DataValidationError(f"got {len(X)} feature arrays but {len(y)} outcome arrays (one per task)")
        if len(X) == 0:
            raise DataValidationError("no tasks given")
        tasks = list(range(len(X))) if tasks is None else list(tasks)
        if len(tasks) != len(X):
            raise DataValidationError(f"got {len(tasks)} task labels for {len(X)} tasks")
        if len(set(tasks)) != len(tasks):
            raise DataValidationError(f"duplicate task labels in {tasks}")
        texts = [str(t) for t in tasks]
        if len(set(texts)) != len(texts):
            raise DataValidationError(f"task labels {tasks} are distinct values with the same text (e.g. 1 and '1'); "
                                      "use one type for the task labels")
        self.y_col = str(y_col)
        self.formula: str | None = None
        self._tasks: list[TaskArrays] = []
        p = None
        for t, Xr, yr in zip(tasks, X, y):
            Xr = as_float_array(Xr, 2, f"task {t!r}, 'X'")
            yr = as_float_array(yr, 1, f"task {t!r}, {self.y_col!r}")
            if Xr.shape[0] == 0 or yr.shape[0] == 0:
                raise DataValidationError(f"task {t!r} is empty (0 rows)")
            if Xr.shape[0] != yr.shape[0]:
                raise DataValidationError(f"task {t!r}: X has {Xr.shape[0]} rows but {self.y_col!r} has {yr.shape[0]}")
            if Xr.shape[0] < min_rows:
                raise DataValidationError(f"task {t!r}: {Xr.shape[0]} row(s), at least {min_rows} needed")
            if p is None:
                p, first = Xr.shape[1], t
            elif Xr.shape[1] != p:
                raise DataValidationError(
                    f"task {t!r} has {Xr.shape[1]} features but task {first!r} has {p}; all tasks must share the feature space"
                )
            self._tasks.append(TaskArrays(t, Xr, yr))
        assert p is not None  # at least one task (checked above)
        self.x_cols = [f"x{j + 1}" for j in range(p)] if x_cols is None else [str(c) for c in x_cols]
        if len(self.x_cols) != p:
            raise DataValidationError(f"x_cols has {len(self.x_cols)} names for {p} feature columns")
        if len(set(self.x_cols)) != len(self.x_cols):
            raise DataValidationError(f"duplicate feature names in {self.x_cols}")
        self._check_finite()

    def _check_finite(self) -> None:
        for ta in self._tasks:
            bad_y = ~np.isfinite(ta.y)
            if bad_y.any():
                raise DataValidationError(
                    f"task {ta.task!r}, column {self.y_col!r}: {int(bad_y.sum())} non-finite value(s) (NaN/inf) "
                    f"at task row(s) {_rows(np.flatnonzero(bad_y))}; remove or impute them explicitly"
                )
            bad = ~np.isfinite(ta.X)
            if bad.any():
                j = int(np.flatnonzero(bad.any(axis=0))[0])
                raise DataValidationError(
                    f"task {ta.task!r}, column {self.x_cols[j]!r}: {int(bad[:, j].sum())} non-finite value(s) (NaN/inf) "
                    f"at task row(s) {_rows(np.flatnonzero(bad[:, j]))}; remove or impute them explicitly"
                )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, X, y, tasks: Sequence | None = None, **kwargs) -> "MultiTaskData":
        """Build from per-task arrays, dicts, or stacked arrays with a per-row task label.

        Parameters
        ----------
        X, y : list, dict or numpy.ndarray
            Per-task lists ``X=[X_1, ...]``, ``y=[y_1, ...]``; dicts ``{task: array}`` with the same
            keys; or stacked arrays ``X`` (n, p), ``y`` (n,) when ``tasks`` labels every row.
        tasks : sequence, optional
            Task labels (one per task for lists, one per row for stacked arrays).
        **kwargs
            ``x_cols``, ``y_col``, ``min_rows`` as in :class:`MultiTaskData`.

        Returns
        -------
        MultiTaskData
            The validated data.
        """
        if isinstance(X, Mapping):
            if not isinstance(y, Mapping) or set(X) != set(y):
                raise DataValidationError("X and y dicts must have the same task keys")
            keys = list(X)
            return cls([X[k] for k in keys], [y[k] for k in keys], keys, **kwargs)
        if isinstance(X, np.ndarray) and X.ndim == 2 and tasks is not None and len(tasks) == X.shape[0]:
            labels = np.asarray(tasks, dtype=object)
            y = np.asarray(y)
            if y.shape[0] != X.shape[0]:
                raise DataValidationError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
            if pd.isna(pd.Series(labels)).any():
                raise DataValidationError(f"missing task label in row(s) {_rows(np.flatnonzero(pd.isna(pd.Series(labels)).to_numpy()))}")
            keys = list(pd.unique(pd.Series(labels)))
            return cls([X[labels == k] for k in keys], [y[labels == k] for k in keys], keys, **kwargs)
        return cls(list(X), list(y), tasks, **kwargs)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, y_col: str, task_col: str, x_cols: Sequence[str] | None = None, **kwargs) -> "MultiTaskData":
        """Build from one DataFrame with a task column.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per observation; outcome and feature columns must be numeric.
        y_col, task_col : str
            Outcome and task columns.
        x_cols : sequence of str, optional
            Feature columns; default every other column.
        **kwargs
            ``min_rows`` as in :class:`MultiTaskData`.

        Returns
        -------
        MultiTaskData
            The validated data.
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        if x_cols is None:
            x_cols = [c for c in df.columns if c not in {y_col, task_col}]
        x_cols = list(x_cols)
        missing = [c for c in [y_col, task_col, *x_cols] if c not in df.columns]
        if missing:
            raise DataValidationError(f"column(s) not in the data frame: {missing}")
        if df[task_col].isna().any():
            rows = np.flatnonzero(df[task_col].isna().to_numpy())
            raise DataValidationError(f"column {task_col!r}: missing task label in row(s) {_rows(rows)}")
        from hetmtl.data.multisite import _check_numeric_columns

        if df.shape[0] == 0:
            raise DataValidationError("the data frame has 0 rows")
        _check_numeric_columns(df, [y_col, *x_cols])
        keys = list(pd.unique(df[task_col]))
        groups = [df[df[task_col] == k] for k in keys]
        return cls([g[x_cols] for g in groups], [g[y_col] for g in groups], keys,
                   x_cols=x_cols, y_col=y_col, **kwargs)

    @classmethod
    def from_formula(cls, formula: str, data: pd.DataFrame, *, task: str, **kwargs) -> "MultiTaskData":
        """Build from a formula (formulaic, R/patsy syntax) on one DataFrame with a task column.

        ``MultiTaskData.from_formula("log(y) ~ x1 + log(x2) + C(g)", df, task="hospital")``: the
        left side is the outcome (transformed), the right side the features (no intercept column;
        ``C()`` dummies against a reference level), built on all rows at once so every task gets
        the same encoding. Missing values are refused (nothing is dropped).

        Parameters
        ----------
        formula : str
            ``"outcome ~ features"``.
        data : pandas.DataFrame
            One row per observation.
        task : str
            The task column (not part of the formula).
        **kwargs
            ``min_rows`` as in :class:`MultiTaskData`.

        Returns
        -------
        MultiTaskData
            The validated data; ``formula`` holds the formula.
        """
        from hetmtl.data._formula import model_frame

        y, y_name, X = model_frame(formula, data, forbidden=[(task, "task")], outcome="features")
        if X.shape[1] == 0:
            raise DataValidationError(f"formula {formula!r} gives no feature columns")
        if data[task].isna().any():
            rows = np.flatnonzero(data[task].isna().to_numpy())
            raise DataValidationError(f"column {task!r}: missing task label in row(s) {_rows(rows)}")
        labels = data[task].to_numpy(object)
        keys = list(pd.unique(data[task]))
        out = cls([X.to_numpy()[labels == k] for k in keys], [np.asarray(y)[labels == k] for k in keys], keys,
                  x_cols=list(X.columns), y_col=str(y_name), **kwargs)
        out.formula = formula
        return out

    # ------------------------------------------------------------------ access
    @property
    def tasks(self) -> list:
        """Task labels, in order."""
        return [ta.task for ta in self._tasks]

    @property
    def n_tasks(self) -> int:
        """Number of tasks R."""
        return len(self._tasks)

    @property
    def n_features(self) -> int:
        """Number of features p."""
        return len(self.x_cols)

    @property
    def sizes(self) -> np.ndarray:
        """Rows per task, shape (R,)."""
        return np.array([ta.n for ta in self._tasks])

    @property
    def n_total(self) -> int:
        """Rows over all tasks."""
        return int(self.sizes.sum())

    def __len__(self) -> int:
        return self.n_tasks

    def __iter__(self) -> Iterator[TaskArrays]:
        return iter(self._tasks)

    def __getitem__(self, task) -> TaskArrays:
        for ta in self._tasks:
            if ta.task == task:
                return ta
        raise KeyError(f"unknown task {task!r}; tasks are {self.tasks}")

    def task_index(self, task) -> int:
        """Position of a task label.

        Parameters
        ----------
        task : object
            A task label.

        Returns
        -------
        int
            Its index in :attr:`tasks`.
        """
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(f"unknown task {task!r}; tasks are {self.tasks}") from None

    def subset(self, indices: Sequence[np.ndarray]) -> "MultiTaskData":
        """Rows ``indices[r]`` of every task r (e.g. one part of a paired train/val/test split).

        Parameters
        ----------
        indices : sequence of numpy.ndarray
            One row-index array per task.

        Returns
        -------
        MultiTaskData
            The selected rows.
        """
        if len(indices) != self.n_tasks:
            raise ValueError(f"need one index array per task ({self.n_tasks}), got {len(indices)}")
        return MultiTaskData([ta.X[i] for ta, i in zip(self._tasks, indices)], [ta.y[i] for ta, i in zip(self._tasks, indices)],
                             self.tasks, x_cols=self.x_cols, y_col=self.y_col)

    def split(self, fractions: Sequence[float] = (0.6, 0.2, 0.2), random_state=None) -> tuple["MultiTaskData", ...]:
        """Per-task random split (same fractions in every task); reuse the result for paired comparisons.

        Parameters
        ----------
        fractions : sequence of float
            Fractions of each task's rows per part (default 60/20/20).
        random_state : int, numpy.random.Generator or None
            Seed of the split.

        Returns
        -------
        tuple of MultiTaskData
            One data set per fraction.
        """
        from hetmtl.data._arrays import split_indices

        rng = np.random.default_rng(random_state)
        parts = [split_indices(ta.n, fractions, rng) for ta in self._tasks]
        return tuple(self.subset([p[j] for p in parts]) for j in range(len(fractions)))

    def pooled(self, task_label="pooled") -> "MultiTaskData":
        """All rows as one task (for the pooled single-model baseline).

        Parameters
        ----------
        task_label : object
            Label of the single task.

        Returns
        -------
        MultiTaskData
            One task with every row.
        """
        return MultiTaskData([np.vstack([ta.X for ta in self._tasks])], [np.concatenate([ta.y for ta in self._tasks])],
                             [task_label], x_cols=self.x_cols, y_col=self.y_col)

    def to_dataframe(self, task_col: str = "task") -> pd.DataFrame:
        """The data as one DataFrame with a task column.

        Parameters
        ----------
        task_col : str
            Name of the task column.

        Returns
        -------
        pandas.DataFrame
            Features, outcome and task label, one row per observation.
        """
        frames = [pd.DataFrame(ta.X, columns=self.x_cols).assign(**{self.y_col: ta.y, task_col: ta.task}) for ta in self._tasks]
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        return f"MultiTaskData(tasks={self.n_tasks}, n={self.sizes.tolist()}, features={self.n_features})"
