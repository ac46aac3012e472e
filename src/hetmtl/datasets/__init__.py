"""Built-in data sets (shipped with the package; no network access).

- :func:`load_ihdp` — the Infant Health and Development Program: an 8-site randomised trial,
  985 low-birth-weight children, IQ at 36 months (``iqsb.36``), MIT-licensed copy from econml.
"""
from hetmtl.datasets.ihdp import IHDP_COVARIATES, load_ihdp, load_ihdp_frame

__all__ = ["IHDP_COVARIATES", "load_ihdp", "load_ihdp_frame"]
