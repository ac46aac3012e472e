"""Block-wise missing data: methods for subjects whose covariate sources are missing block-wise.

What to use when: :class:`MBI` is the statistical baseline (one common sparse linear model fitted
by penalised GMM over multiple block-wise imputations; Xue & Qu 2021).
"""
from hetmtl.blockwise.mbi import MBI, mbi_layout

__all__ = ["MBI", "mbi_layout"]
