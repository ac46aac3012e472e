"""hetmtl: multi-task learning and inference on heterogeneous multi-site data."""
from hetmtl import _core

__version__ = "0.1.0"
__all__ = ["_core", "__version__"]
