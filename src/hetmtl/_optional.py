"""Optional dependencies: one clear error naming the extra that provides them."""
from __future__ import annotations

from types import ModuleType

TORCH_HINT = (
    "pip install 'hetmtl[nets]' (on PyPI plain torch is the CUDA build; for the CPU build run "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu first)"
)


def require_torch(what: str) -> ModuleType:
    """``torch``, or an ImportError saying that ``what`` needs the ``nets`` extra."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"{what} needs torch: {TORCH_HINT}") from exc
    return torch
