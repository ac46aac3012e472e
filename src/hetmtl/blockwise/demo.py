"""A short block-wise comparison for ``make demo``: MTL-HMB vs STL vs HTL vs the complete-case lasso
on one simulated data set."""
from __future__ import annotations

import time
from typing import Any

import pandas as pd

from hetmtl.blockwise.baselines import HTL, STL, CCLasso
from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.selection import make_split
from hetmtl.blockwise.simulate import simulate_blockwise


def demo_comparison(seed: int = 0, n: int = 200, p0: int = 40, p_private: int = 10, max_epochs: int = 600,
                    n_threads: int = 1) -> pd.DataFrame:
    """A short MTL-HMB vs STL vs HTL vs complete-case lasso comparison on one simulated data set.

    The paper's heterogeneous two-task DGP (rho = (0.95, 0.7), alpha = 0.3, sigma = 0.1) at a
    reduced size; small grids and one shared 60/20/20 split. ``CC-lasso`` is
    :class:`~hetmtl.blockwise.CCLasso` per task (no row observes every block in this layout).

    Parameters
    ----------
    seed : int
        Seed of the data, the split and the fits.
    n : int
        Rows per task.
    p0 : int
        Width of the anchoring block.
    p_private : int
        Width of each private block.
    max_epochs : int
        Epoch cap of Step 2 and the baselines.
    n_threads : int
        Threads per fit.

    Returns
    -------
    pandas.DataFrame
        Per-task and average test RMSE with the fitting seconds, one row per method.
    """
    sim = simulate_blockwise(n=n, p0=p0, p_private=p_private, rho=(0.95, 0.7), alpha=0.3, sigma=0.1, seed=seed)
    split = make_split(sim.data, seed=seed)
    kw: dict[str, Any] = dict(max_epochs=max_epochs, random_state=seed, n_threads=n_threads)
    rows = []
    methods: tuple = (("MTL-HMB", MTLHMB(hbi_max_epochs=2000, **kw)), ("STL", STL(**kw)), ("HTL", HTL(**kw)),
                      ("CC-lasso", CCLasso(per_task=True, random_state=seed)))
    for name, est in methods:
        t0 = time.perf_counter()
        est.fit(sim.data, split)
        row = {"method": name, **est.test_rmse_.to_dict(), "average": est.test_rmse_avg_,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
