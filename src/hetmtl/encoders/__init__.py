"""Dual-encoder multi-task learning (Sui, Xu, Bai & Qu 2025, arXiv 2505.24281): shared +
task-specific encodings with adaptive coefficient integration.

What to use when:

- :class:`DualEncoderMTLCV` — the default entry point: tunes the dual encoder (λ tied or separate,
  q task-specific dims, width/depth, the linear path; the linear multi-task model is in the
  default grid) by K-fold CV or a validation split and refits on all labelled rows;
- :class:`DualEncoderMTL` — one fit at given settings, for several regression tasks on one
  feature space that differ in P(X) and in P(y | x), some of them small (fit / predict(X, task) /
  score / adapt); ``linear=True`` adds the covariates themselves beside the encodings;
- :mod:`hetmtl.encoders.baselines` — whether the dual structure pays off on your data: ablations
  and baselines on paired splits (:func:`compare_methods`, :func:`paired_comparison`), including
  per-task ridge / lasso and gradient boosting per task and pooled (scikit-learn); when those
  win on your data (e.g. very small tasks, tree-shaped signals), use them;
- :mod:`hetmtl.encoders.diagnostics` — after a fit: fused tasks, distances to centres,
  redundancy, negative transfer (:func:`adaptivity_report`, :func:`negative_transfer`);
- :mod:`hetmtl.encoders.simulate` — generators with separate covariate shift and posterior drift;
- :mod:`hetmtl.encoders.pdx` — PDX Encyclopedia loader and a synthetic look-alike;
- :mod:`hetmtl.encoders.proximal` — prox maps and centre updates (C++ core).
"""
from hetmtl._optional import require_torch

require_torch("hetmtl.encoders (dual-encoder MTL)")

# the imports below follow the torch check on purpose (E402)
from hetmtl.encoders.baselines import (
    METHODS, PerTaskRegressor, PooledMTL, PooledOneHotRegressor, compare_methods, make_method, paired_comparison,
    select_by_validation,
)
from hetmtl.encoders.diagnostics import NegativeTransferWarning, adaptivity_report, negative_transfer
from hetmtl.encoders.estimator import DualEncoderMTL, UnknownTaskError
from hetmtl.encoders.pdx import load_pdxe, make_pdxe_like, pdxe_from_frames
from hetmtl.encoders.simulate import simulate_latent, simulate_paper_like
from hetmtl.encoders.tuning import DualEncoderMTLCV

__all__ = [
    "DualEncoderMTL", "DualEncoderMTLCV", "UnknownTaskError", "PooledMTL", "PerTaskRegressor", "PooledOneHotRegressor", "METHODS", "make_method", "compare_methods", "paired_comparison", "select_by_validation",
    "adaptivity_report", "negative_transfer", "NegativeTransferWarning", "simulate_latent", "simulate_paper_like",
    "load_pdxe", "pdxe_from_frames", "make_pdxe_like",
]
