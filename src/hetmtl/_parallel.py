"""Thread counts: for the C++ kernels from scikit-learn's ``n_jobs`` convention, and BLAS limits."""
from __future__ import annotations

import functools
import os


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Threads for ``n_jobs``: None → 1, −1 → all cores, k ≥ 1 → k; anything else is refused."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    if n == 0 or n < -1:
        raise ValueError(f"n_jobs must be None, -1 or >= 1, got {n_jobs!r}")
    return (os.cpu_count() or 1) if n == -1 else n


@functools.lru_cache(maxsize=1)
def _blas_controller():
    import scipy.linalg  # noqa: F401  (scipy's BLAS is loaded before the libraries are listed)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread():
    """Context manager limiting BLAS to one thread; the loaded libraries are listed once per
    process (a fresh ``threadpool_limits`` rescans them, a few ms every call)."""
    return _blas_controller().limit(limits=1, user_api="blas")
