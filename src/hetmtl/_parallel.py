"""Thread counts: for the C++ kernels from scikit-learn's ``n_jobs`` convention, and BLAS limits."""
from __future__ import annotations

import functools

from hetmtl._validation import check_n_jobs


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Threads for ``n_jobs`` by joblib's convention (None → 1, −1 → all cores, −2 → all but one)."""
    return check_n_jobs(n_jobs)


@functools.lru_cache(maxsize=1)
def _blas_controller():
    import scipy.linalg  # noqa: F401  (scipy's BLAS is loaded before the libraries are listed)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread():
    """Context manager limiting BLAS to one thread; the loaded libraries are listed once per
    process (a fresh ``threadpool_limits`` rescans them, a few ms every call)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system (once per process).

    Network training frees and reallocates the same multi-megabyte buffers (activations,
    gradients) every step; by default glibc serves them with fresh ``mmap`` pages, each zeroed by
    the kernel on first touch (thousands of page faults per step). Raising the mmap threshold to
    glibc's maximum (32 MiB) and the trim threshold to 1 GiB keeps them in the heap; the process
    then keeps its peak heap until exit. Returns False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
