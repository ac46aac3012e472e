"""Dual-encoder multi-task learning (the dual-encoder paper, arXiv 2505.24281): shared +
task-specific encodings with adaptive coefficient integration.

- :class:`DualEncoderMTL` — the estimator (fit / predict(X, task) / score / adapt);
- :mod:`hetmtl.encoders.proximal` — prox maps and centre updates (C++ core);
- :mod:`hetmtl.encoders.baselines` — ablations and baselines on paired splits;
- :mod:`hetmtl.encoders.diagnostics` — fused tasks, distances to centres, redundancy, negative transfer;
- :mod:`hetmtl.encoders.simulate` — generators with separate covariate shift and posterior drift;
- :mod:`hetmtl.encoders.pdx` — PDX Encyclopedia loader and a synthetic look-alike.
"""
from hetmtl.encoders.baselines import METHODS, compare_methods, make_method, paired_comparison, select_by_validation
from hetmtl.encoders.diagnostics import NegativeTransferWarning, adaptivity_report, negative_transfer
from hetmtl.encoders.estimator import DualEncoderMTL
from hetmtl.encoders.pdx import load_pdxe, make_pdxe_like, pdxe_from_frames
from hetmtl.encoders.simulate import simulate_latent, simulate_paper_like

__all__ = [
    "DualEncoderMTL", "METHODS", "make_method", "compare_methods", "paired_comparison", "select_by_validation",
    "adaptivity_report", "negative_transfer", "NegativeTransferWarning", "simulate_latent", "simulate_paper_like",
    "load_pdxe", "pdxe_from_frames", "make_pdxe_like",
]
