"""Shared training utilities for the torch-based families (encoders, blockwise).

- :func:`torch_threads` caps torch/BLAS threads (2 CPU cores is the design target);
- :func:`seed_all` seeds numpy and torch for reproducible fits;
- :func:`split_indices` (from :mod:`hetmtl.data`, torch-free) makes train/validation/test index
  splits shared by every method of a comparison (paired splits);
- :class:`BatchedEarlyStopping` tracks validation loss for G configurations trained together
  (weights stacked on a leading config axis), keeps each configuration's best parameters, and
  says which configurations are still training;
- :func:`check_trained` refuses fits in which no epoch produced a finite validation loss.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from hetmtl._optional import require_torch
from hetmtl.exceptions import TrainingError
from hetmtl.data._arrays import split_indices  # noqa: F401  (re-exported: paired splits)

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch("hetmtl.training (the neural families)")


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Limit torch intra-op threads and BLAS threads to ``n`` (default: min(2, cores))."""
    import os

    n = n or min(2, os.cpu_count() or 1)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


def seed_all(seed: int | None) -> np.random.Generator:
    """Seed torch's global generator and return a numpy Generator from the same seed."""
    if seed is not None:
        torch.manual_seed(int(seed))
    return np.random.default_rng(seed)


class BatchedEarlyStopping:
    """Early stopping for ``n_configs`` models trained together.

    Call :meth:`update` once per epoch with the validation loss of every configuration (shape
    ``(n_configs,)``) and the current parameters (tensors whose first axis is the configuration).
    A configuration stops after ``patience`` epochs without improving by more than ``min_delta``;
    its best parameters are kept in :attr:`best_params`.
    """

    def __init__(self, n_configs: int, patience: int = 30, min_delta: float = 0.0) -> None:
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best_loss = torch.full((n_configs,), float("inf"), dtype=torch.float64)
        self.best_epoch = torch.full((n_configs,), -1, dtype=torch.long)
        self.wait = torch.zeros(n_configs, dtype=torch.long)
        self.active = torch.ones(n_configs, dtype=torch.bool)
        self.best_params: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, val_loss: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Record one epoch; return the boolean mask of configurations still training."""
        val_loss = val_loss.detach().to(torch.float64).reshape(-1)
        improved = self.active & (val_loss < self.best_loss - self.min_delta)
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, torch.full_like(self.best_epoch, epoch), self.best_epoch)
        self.wait = torch.where(improved, torch.zeros_like(self.wait), self.wait + self.active.long())
        for name, p in params.items():
            p = p.detach()
            if name not in self.best_params:
                self.best_params[name] = p.clone()
                continue
            mask = improved.view(-1, *([1] * (p.dim() - 1)))
            self.best_params[name] = torch.where(mask, p, self.best_params[name])
        self.active = self.active & (self.wait < self.patience)
        return self.active

    @property
    def done(self) -> bool:
        return not bool(self.active.any())

    @property
    def never_improved(self) -> torch.Tensor:
        """Mask of the configurations for which no epoch produced a finite validation loss."""
        return ~torch.isfinite(self.best_loss)


def check_trained(val_loss, labels, what: str) -> np.ndarray:
    """Mask of the trained configurations; :class:`TrainingError` when there is none.

    Parameters
    ----------
    val_loss : array-like
        Best validation loss of every configuration (inf or NaN: no epoch gave a finite loss,
        e.g. ``max_epochs`` too small, a diverging learning rate or non-finite data).
    labels : sequence of str
        One label per configuration (named in the error).
    what : str
        The fit (e.g. ``"MTLHMB Step 2"``), named in the error.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the configurations with a finite validation loss.

    Raises
    ------
    TrainingError
        When no configuration has a finite validation loss.
    """
    ok = np.isfinite(np.asarray(val_loss, dtype=np.float64))
    if not ok.any():
        shown = ", ".join(list(labels)[:4]) + (", ..." if len(labels) > 4 else "")
        raise TrainingError(f"{what}: no epoch produced a finite validation loss for any configuration "
                            f"({shown}); check lr, max_epochs and the data for non-finite or extreme values")
    return ok
