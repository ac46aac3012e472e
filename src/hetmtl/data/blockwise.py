"""Block-wise missing multi-source data: T tasks, one anchoring source seen by every task and one
task-specific (private) source per task; every other block is missing by design.

Use :class:`BlockwiseData` as the input of the MTL-HMB family (:mod:`hetmtl.blockwise`) and of the
MBI baseline (via :meth:`BlockwiseData.stacked_design`). Build it with
:meth:`BlockwiseData.from_arrays` (nested ``blocks[task][source]``, ``None`` marks a missing block)
or :meth:`BlockwiseData.from_dataframe` (one frame, a task column and a block map). Patterns the
method does not define (a task without the anchor, a task with zero or two private sources, a
private source shared by two tasks, a partially missing block) are refused with an error that
names the task and block at fault. Nothing is dropped or imputed silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from hetmtl.exceptions import DataValidationError


@dataclass(frozen=True)
class StackedDesign:
    """All tasks stacked row-wise (task 0 rows first, then task 1, ...).

    Parameters
    ----------
    X : numpy.ndarray
        Design ``(n, p)`` with ``NaN`` in every missing block.
    y : numpy.ndarray
        Responses ``(n,)``.
    task : numpy.ndarray
        Task index of each row.
    source_columns : list of numpy.ndarray
        ``source_columns[s]`` are the column indices of source ``s`` (source 0 = anchor).
    task_rows : list of numpy.ndarray
        ``task_rows[t]`` are the rows of task ``t``.
    task_names, source_names : list of str
        Labels of the tasks and sources.

    See Also
    --------
    BlockwiseData.stacked_design : Builds it.

    Notes
    -----
    :attr:`cov_index` / :attr:`sub_index` are the 1-based first column of each source / first
    row of each task (R ``BlockMissingData::MBI`` conventions) and :attr:`miss_source` lists the
    1-based sources missing in each task.
    """

    X: np.ndarray
    y: np.ndarray
    task: np.ndarray
    source_columns: list[np.ndarray]
    task_rows: list[np.ndarray]
    task_names: list[str]
    source_names: list[str]

    @property
    def cov_index(self) -> np.ndarray:
        """1-based first column of each source (R ``BlockMissingData::MBI``'s ``cov_index``)."""
        return np.array([int(c[0]) + 1 for c in self.source_columns])

    @property
    def sub_index(self) -> np.ndarray:
        """1-based first row of each task (R ``BlockMissingData::MBI``'s ``sub_index``)."""
        return np.array([int(r[0]) + 1 for r in self.task_rows])

    @property
    def miss_source(self) -> list[list[int]]:
        """1-based indices of the sources missing in each task (R's ``miss_source``)."""
        out = []
        for rows in self.task_rows:
            missing = [s + 1 for s, cols in enumerate(self.source_columns) if np.isnan(self.X[rows[0], cols[0]])]
            out.append(missing)
        return out


def _real_array(a, where: str) -> np.ndarray:
    """``a`` as a float array; complex, dates/times and text refused (never truncated)."""
    from hetmtl.data._arrays import as_float_array

    arr = np.asarray(a) if not hasattr(a, "to_numpy") else a
    ndim = np.ndim(arr)
    if ndim not in (1, 2):
        try:
            return np.asarray(a, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{where}: must be numeric ({exc})") from None
    return as_float_array(a, ndim, where)


def _rows(idx: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (", ..." if idx.size > limit else "")


class BlockwiseData:
    """T tasks with sources ``0..S-1``: source 0 (the anchor) observed in every task, each task
    observing exactly one further private source, and each private source observed by exactly
    one task (S = T + 1).

    Parameters
    ----------
    blocks : sequence or mapping
        Over tasks, sequences over sources of arrays ``(n_t, p_s)`` or ``None`` (missing block).
        A mapping ``{task: {source: array}}`` is accepted too (absent = missing).
    y : sequence or mapping
        Over tasks, responses ``(n_t,)``.
    task_names, source_names : sequence of str, optional
        Labels (default ``task1..``, ``x0, x1, ...``).
    source_columns : mapping, optional
        Column names of each source, ``{source: [column, ...]}`` (kept for
        :meth:`to_dataframe`; set by :meth:`from_dataframe`).
    """

    def __init__(
        self,
        blocks,
        y,
        *,
        task_names: Sequence[str] | None = None,
        source_names: Sequence[str] | None = None,
        source_columns: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if isinstance(blocks, Mapping):
            task_names = list(blocks) if task_names is None else list(task_names)
            src = source_names
            if src is None:
                src = []
                for name in task_names:
                    for s in blocks[name]:
                        if s not in src:
                            src.append(s)
            source_names = [str(s) for s in src]
            blocks = [[blocks[t].get(s) for s in src] for t in task_names]
            if isinstance(y, Mapping):
                y = [y[t] for t in task_names]
        blocks = [list(b) for b in blocks]
        T = len(blocks)
        if T < 2:
            raise DataValidationError(f"MTL-HMB needs at least 2 tasks, got {T}")
        S = max(len(b) for b in blocks)
        self.task_names = [f"task{t + 1}" for t in range(T)] if task_names is None else [str(t) for t in task_names]
        self.source_names = [f"x{s}" for s in range(S)] if source_names is None else [str(s) for s in source_names]
        if len(self.task_names) != T or len(set(self.task_names)) != T:
            raise DataValidationError(f"task_names must be {T} distinct names, got {self.task_names}")
        if len(self.source_names) != S or len(set(self.source_names)) != S:
            raise DataValidationError(f"source_names must be {S} distinct names, got {self.source_names}")
        for t, b in enumerate(blocks):
            if len(b) < S:
                b.extend([None] * (S - len(b)))
        if len(y) != T:
            raise DataValidationError(f"y has {len(y)} entries for {T} tasks")
        self._blocks: list[list[np.ndarray | None]] = []
        self._y: list[np.ndarray] = []
        for t in range(T):
            self._y.append(self._as_response(t, y[t]))
            self._blocks.append([None if a is None else self._as_block(t, s, a) for s, a in enumerate(blocks[t])])
        self.source_columns = None if source_columns is None else {k: list(v) for k, v in source_columns.items()}
        self._validate()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, blocks, y, **kwargs) -> "BlockwiseData":
        """Build from nested arrays.

        Parameters
        ----------
        blocks : sequence or mapping
            ``blocks[task][source]``, ``None`` for a missing block.
        y : sequence or mapping
            ``y[task]``.
        **kwargs
            ``task_names``, ``source_names``, ``source_columns`` as in :class:`BlockwiseData`.

        Returns
        -------
        BlockwiseData
            The validated data.
        """
        return cls(blocks, y, **kwargs)

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        block_map: Mapping[str, Sequence[str]],
        task_col: str,
        y_col: str,
        anchor: str | None = None,
    ) -> "BlockwiseData":
        """Build from one frame with a task column and a block map.

        In each task a block must be fully observed or entirely NaN.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per observation.
        block_map : mapping
            Each source name to its columns, the anchor first unless ``anchor`` names it.
        task_col, y_col : str
            Task and response columns.
        anchor : str, optional
            Name of the anchoring block.

        Returns
        -------
        BlockwiseData
            The validated data.
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        names = list(block_map)
        if anchor is not None:
            if anchor not in block_map:
                raise DataValidationError(f"anchor {anchor!r} is not a block of block_map {names}")
            names = [anchor] + [n for n in names if n != anchor]
        cols = [c for n in names for c in block_map[n]]
        missing = [c for c in [task_col, y_col, *cols] if c not in df.columns]
        if missing:
            raise DataValidationError(f"column(s) not in the data frame: {missing}")
        seen: dict[str, str] = {}
        for n in names:
            if len(block_map[n]) == 0:
                raise DataValidationError(f"block {n!r} has no columns")
            for c in block_map[n]:
                if c in seen:
                    raise DataValidationError(f"column {c!r} is in blocks {seen[c]!r} and {n!r}")
                seen[c] = n
        from hetmtl.data.multisite import _check_numeric_columns

        if df.shape[0] == 0:
            raise DataValidationError("the data frame has 0 rows")
        _check_numeric_columns(df, [y_col, *cols])
        if df[task_col].isna().any():
            raise DataValidationError(
                f"column {task_col!r}: missing task label in row(s) {_rows(np.flatnonzero(df[task_col].isna().to_numpy()))}"
            )
        tasks = list(pd.unique(df[task_col]))
        blocks, ys = [], []
        for t in tasks:
            sub = df[df[task_col] == t]
            row_blocks: list[np.ndarray | None] = []
            for n in names:
                a = sub[list(block_map[n])].to_numpy(float)
                nan = np.isnan(a)
                if nan.all():
                    row_blocks.append(None)
                elif nan.any():
                    bad_rows = np.flatnonzero(nan.any(axis=1))
                    bad_cols = [block_map[n][int(j)] for j in np.flatnonzero(nan.any(axis=0))]
                    raise DataValidationError(
                        f"task {t!r}, block {n!r}: partially missing (NaN in column(s) {bad_cols[:5]} at task "
                        f"row(s) {_rows(bad_rows)}); a block must be fully observed or fully missing in a task"
                    )
                else:
                    row_blocks.append(a)
            blocks.append(row_blocks)
            ys.append(sub[y_col].to_numpy(float))
        return cls(
            blocks, ys, task_names=[str(t) for t in tasks], source_names=names,
            source_columns={n: list(block_map[n]) for n in names},
        )

    # ------------------------------------------------------------------ validation
    def _as_block(self, t: int, s: int, a) -> np.ndarray:
        where = f"task {self.task_names[t]!r}, block {self.source_names[s]!r}"
        arr = _real_array(a, where)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataValidationError(f"{where}: must be 2-dimensional, got shape {arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            if bad.all():
                raise DataValidationError(
                    f"{where}: every value is NaN/inf; pass None to mark a missing block explicitly"
                )
            raise DataValidationError(
                f"{where}: {int(bad.sum())} non-finite value(s) at row(s) {_rows(np.flatnonzero(bad.any(axis=1)))}; "
                "a block must be fully observed or marked missing (None)"
            )
        return arr

    def _as_response(self, t: int, a) -> np.ndarray:
        where = f"task {self.task_names[t]!r}, response"
        arr = _real_array(a, where)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise DataValidationError(f"{where}: must be 1-dimensional, got shape {arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataValidationError(f"{where}: non-finite value(s) at row(s) {_rows(np.flatnonzero(bad))}")
        return arr

    def _validate(self) -> None:
        T, S = self.n_tasks, len(self.source_names)
        if S != T + 1:
            raise DataValidationError(
                f"{T} tasks need {T + 1} sources (the anchor plus one private source per task), got {S}: "
                f"{self.source_names}"
            )
        anchor = self.source_names[0]
        for t in range(T):
            name = self.task_names[t]
            if self._blocks[t][0] is None:
                raise DataValidationError(
                    f"task {name!r} does not observe the anchoring block {anchor!r}; MTL-HMB needs the anchor in every task"
                )
            n = self._y[t].shape[0]
            if n < 1:
                raise DataValidationError(f"task {name!r}: only {n} row(s)")
            for s, b in enumerate(self._blocks[t]):
                if b is not None and b.shape[0] != n:
                    raise DataValidationError(
                        f"task {name!r}, block {self.source_names[s]!r}: {b.shape[0]} rows but the response has {n}"
                    )
            private = [s for s in range(1, S) if self._blocks[t][s] is not None]
            if len(private) == 0:
                raise DataValidationError(
                    f"task {name!r} observes no private block (only the anchor {anchor!r}); MTL-HMB needs exactly one"
                )
            if len(private) > 1:
                raise DataValidationError(
                    f"task {name!r} observes blocks {[self.source_names[s] for s in private]} besides the anchor; "
                    "the MTL-HMB pattern allows exactly one private block per task"
                )
        owner: dict[int, int] = {}
        for t in range(T):
            s = [k for k in range(1, S) if self._blocks[t][k] is not None][0]
            if s in owner:
                raise DataValidationError(
                    f"block {self.source_names[s]!r} is observed by tasks {self.task_names[owner[s]]!r} and "
                    f"{self.task_names[t]!r}; each private block must belong to exactly one task"
                )
            owner[s] = t
        self._private = [[k for k in range(1, S) if self._blocks[t][k] is not None][0] for t in range(T)]
        self._owner = {s: t for t, s in enumerate(self._private)}
        for s in range(S):
            dims = {self._blocks[t][s].shape[1] for t in range(T) if self._blocks[t][s] is not None}  # type: ignore[union-attr]
            if len(dims) > 1:
                raise DataValidationError(f"block {self.source_names[s]!r} has different widths across tasks: {sorted(dims)}")

    # ------------------------------------------------------------------ access
    @property
    def n_tasks(self) -> int:
        """Number of tasks T."""
        return len(self._blocks)

    @property
    def n_sources(self) -> int:
        """Number of sources S = T + 1."""
        return len(self.source_names)

    @property
    def n_per_task(self) -> list[int]:
        """Rows of every task."""
        return [y.shape[0] for y in self._y]

    @property
    def source_dims(self) -> list[int]:
        """Width p_s of every source (source 0 = anchor)."""
        out = []
        for s in range(self.n_sources):
            b = next(self._blocks[t][s] for t in range(self.n_tasks) if self._blocks[t][s] is not None)
            out.append(b.shape[1])  # type: ignore[union-attr]  # b is not None (filtered)
        return out

    @property
    def private_source(self) -> list[int]:
        """Index of the private source of every task."""
        return list(self._private)

    def owner(self, source: int) -> int:
        """Task that observes a private source.

        Parameters
        ----------
        source : int
            Index of a private source (1..T).

        Returns
        -------
        int
            Index of the task observing it.
        """
        return self._owner[source]

    @property
    def observed(self) -> pd.DataFrame:
        """Tasks x sources table of observed (True) / missing (False) blocks."""
        m = np.array([[b is not None for b in row] for row in self._blocks])
        return pd.DataFrame(m, index=self.task_names, columns=self.source_names)

    def task_index(self, task) -> int:
        """Position of a task.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.

        Returns
        -------
        int
            The task's position.
        """
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if not 0 <= int(task) < self.n_tasks:
                raise DataValidationError(f"task index {task} out of range for {self.n_tasks} tasks")
            return int(task)
        if str(task) not in self.task_names:
            raise DataValidationError(f"unknown task {task!r}; tasks are {self.task_names}")
        return self.task_names.index(str(task))

    def block(self, task, source: int) -> np.ndarray | None:
        """One block of one task.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.
        source : int
            Source index (0 = anchor).

        Returns
        -------
        numpy.ndarray or None
            The block ``(n_t, p_s)``, ``None`` when missing.
        """
        return self._blocks[self.task_index(task)][source]

    def x0(self, task) -> np.ndarray:
        """The anchoring block of a task.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.

        Returns
        -------
        numpy.ndarray
            ``(n_t, p_0)``.
        """
        return self._blocks[self.task_index(task)][0]  # type: ignore[return-value]  # the anchor block is always observed

    def x_private(self, task) -> np.ndarray:
        """The private block of a task.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.

        Returns
        -------
        numpy.ndarray
            ``(n_t, p_s)`` for the task's private source s.
        """
        t = self.task_index(task)
        return self._blocks[t][self._private[t]]  # type: ignore[return-value]  # the private block is observed

    def y(self, task) -> np.ndarray:
        """The responses of a task.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.

        Returns
        -------
        numpy.ndarray
            ``(n_t,)``.
        """
        return self._y[self.task_index(task)]

    def subset(self, rows: Sequence[np.ndarray]) -> "BlockwiseData":
        """The same tasks restricted to some rows.

        Parameters
        ----------
        rows : sequence of numpy.ndarray
            ``rows[t]``: indices within task t.

        Returns
        -------
        BlockwiseData
            The selected rows.
        """
        if len(rows) != self.n_tasks:
            raise DataValidationError(f"rows must give one index array per task ({self.n_tasks})")
        blocks = [[None if b is None else b[np.asarray(r)] for b in bl] for bl, r in zip(self._blocks, rows)]
        ys = [y[np.asarray(r)] for y, r in zip(self._y, rows)]
        return BlockwiseData(blocks, ys, task_names=self.task_names, source_names=self.source_names,
                             source_columns=self.source_columns)

    def full_design(self, task, imputed: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
        """``[x_0 | x_1 | ... | x_T]`` of a task, missing blocks taken from ``imputed``.

        Parameters
        ----------
        task : str or int
            A task name or its integer position.
        imputed : mapping, optional
            ``{source: array (n_t, p_s)}`` for every missing block of the task.

        Returns
        -------
        numpy.ndarray
            ``(n_t, p_0 + ... + p_T)``.
        """
        t = self.task_index(task)
        parts = []
        for s, b in enumerate(self._blocks[t]):
            if b is None:
                if imputed is None or s not in imputed:
                    raise DataValidationError(
                        f"task {self.task_names[t]!r}, block {self.source_names[s]!r} is missing and no imputation was given"
                    )
                b = np.asarray(imputed[s], float)
                if b.shape != (self.n_per_task[t], self.source_dims[s]):
                    raise DataValidationError(
                        f"task {self.task_names[t]!r}, block {self.source_names[s]!r}: imputation has shape {b.shape}, "
                        f"expected {(self.n_per_task[t], self.source_dims[s])}"
                    )
            parts.append(b)
        return np.hstack(parts)

    def stacked_design(self) -> StackedDesign:
        """All tasks stacked, ``NaN`` in missing blocks, plus each source's column indices."""
        dims = self.source_dims
        starts = np.concatenate([[0], np.cumsum(dims)])
        cols = [np.arange(starts[s], starts[s + 1]) for s in range(self.n_sources)]
        Xs, task_rows, offset = [], [], 0
        for t in range(self.n_tasks):
            n = self.n_per_task[t]
            X = np.full((n, int(starts[-1])), np.nan)
            for s, b in enumerate(self._blocks[t]):
                if b is not None:
                    X[:, cols[s]] = b
            Xs.append(X)
            task_rows.append(np.arange(offset, offset + n))
            offset += n
        task = np.concatenate([np.full(n, t) for t, n in enumerate(self.n_per_task)])
        return StackedDesign(np.vstack(Xs), np.concatenate(self._y), task, cols, task_rows,
                             list(self.task_names), list(self.source_names))

    def to_dataframe(self, task_col: str = "task", y_col: str = "y") -> pd.DataFrame:
        """One frame, NaN in the missing blocks, columns named after the block map when known.

        Parameters
        ----------
        task_col, y_col : str
            Names of the task and response columns.

        Returns
        -------
        pandas.DataFrame
            One row per observation.
        """
        sd = self.stacked_design()
        names = []
        for s, c in enumerate(sd.source_columns):
            given = None if self.source_columns is None else self.source_columns.get(self.source_names[s])
            names += list(given) if given else [f"{self.source_names[s]}_{j + 1}" for j in range(c.size)]
        df = pd.DataFrame(sd.X, columns=names)
        df.insert(0, y_col, sd.y)
        df.insert(0, task_col, [self.task_names[t] for t in sd.task])
        return df

    def __repr__(self) -> str:
        return (
            f"BlockwiseData(tasks={self.task_names}, n={self.n_per_task}, sources={self.source_names}, "
            f"dims={self.source_dims})"
        )
