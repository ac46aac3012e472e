"""Dual-encoder multi-task learning (seed 001): shared + task-specific encodings with adaptive
coefficient integration.

- :class:`DualEncoderMTL` — the estimator (fit / predict(X, task) / score / adapt);
- :mod:`hetmtl.encoders.proximal` — prox maps and centre updates (C++ core);
- :mod:`hetmtl.encoders.baselines` — ablations and baselines on paired splits;
- :mod:`hetmtl.encoders.diagnostics` — fused tasks, distances to centres, redundancy, negative transfer;
- :mod:`hetmtl.encoders.simulate` — generators with separate covariate shift and posterior drift;
- :mod:`hetmtl.encoders.pdx` — PDX Encyclopedia loader and a synthetic look-alike.
"""
from hetmtl.encoders.estimator import DualEncoderMTL

__all__ = ["DualEncoderMTL"]
