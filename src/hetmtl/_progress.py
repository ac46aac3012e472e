"""Progress reporting for long fits: one ``verbose`` meaning across the package.

``verbose=0`` (the default everywhere) prints nothing; ``verbose>=1`` shows a tqdm bar on
stderr over the fit's units of work (sites × repetitions × folds, grid configurations, epochs);
``verbose>=2`` also prints one line per finished unit. Use :func:`progress` around loops and
:func:`progress_bar` where the work is counted by hand (batched training, C++ callbacks).
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, TypeVar

from hetmtl._validation import check_int

T = TypeVar("T")


def check_verbose(verbose: Any) -> int:
    """``verbose`` as an int >= 0 (True → 1, False → 0)."""
    if isinstance(verbose, bool):
        return int(verbose)
    return check_int(verbose, "verbose", low=0, high=10)  # type: ignore[return-value]


class _Silent:
    """The do-nothing bar used when ``verbose=0`` (tqdm is not imported then)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def write(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, verbose: Any, unit: str = "it") -> Any:
    """A tqdm bar (context manager with ``update``/``set_postfix_str``/``write``) or a silent one."""
    if not check_verbose(verbose):
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True)


def progress(iterable: Iterable[T], desc: str, verbose: Any, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` with a bar when ``verbose`` (``total`` defaults to ``len(iterable)``)."""
    if not check_verbose(verbose):
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(total, desc, verbose, unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)
