"""MTL-HMB family (the MTL-HMB paper, arXiv 2505.24413): multi-task learning with heterogeneous
multi-source block-wise missing data.

What to use when:

- :class:`MTLHMB` — prediction for several tasks that share an anchoring source and each observe
  one private source, when the tasks differ in feature distribution and in P(y | x). Step 1 (HBI)
  imputes the missing blocks, Step 2 learns shared and task-specific pathways.
- :class:`HBImputer` — Step 1 alone (fills the missing blocks of a BlockwiseData).
- :class:`STL`, :class:`HTL`, :class:`HPS`, :func:`naive_step2` — the paper's competitors and
  ablations, same API and paired splits (:func:`make_split`).
- :class:`CCLasso` — the complete-case baseline (``method="cc_lasso"`` in the study runner): a
  cross-validated lasso on the rows that observe every block, or per task on its observed blocks.
  Check it first when some rows observe every block: a linear truth is often fitted as well there.
- :func:`simulate_blockwise`, :func:`setting_params`, :data:`SETTINGS` — the paper's simulations;
  :func:`bayes_floor` — the exact Bayes floor RMSE of a replicate (y depends on blocks a task never
  observes, so no method can reach sigma), :func:`bayes_predict` — the Bayes predictor.
- :func:`demo_comparison` — a few-minute MTL-HMB vs STL vs HTL comparison.
- :func:`load_adni_mtlhmb`, :func:`simulate_adni_like` — the ADNI application (user-held file).
- :class:`MBI` — the statistical baseline (Xue & Qu 2021, R's BlockMissingData): one common sparse
  linear model by penalised GMM over multiple block-wise imputations; native C++ engine or R.

Grids train on one of two engines (``engine=``). ``"native"`` (the default in float32) is a C++
kernel that trains each configuration alone (hand-written backward, Adam, early stopping) with
the configurations spread over ``n_threads``: the fits are bit for bit those of training the
configurations one by one, whatever the threads. ``"torch"`` stacks the configurations of a group on
one axis (autograd; float32 or float64): the same fits as one by one in float64, while in float32
the rounding differs. STL and HPS train on torch.

Every grid search keeps, by default (``selection=0.25``), the smallest configuration within 0.25
standard errors of the lowest validation loss, the losses recomputed in float64
(:func:`~hetmtl.blockwise.selection.select_config`): losses tied up to rounding select the same
configuration; ``"1se"`` is the classical one-standard-error rule, ``"min"`` the authors' rule.
The native float32 fits themselves differ between CPUs with and without AVX-512 (another summation
order in every matrix product), so no selection rule makes them CPU-independent; float64 training
(``engine="torch", dtype="float64"``) makes such rounding differences about 1e9 times smaller.
``random_state=None`` draws a fresh seed (kept in ``seed_``); ``verbose=1`` shows progress.
"""
from hetmtl.blockwise.adni import load_adni_mtlhmb, simulate_adni_like
from hetmtl.blockwise.mbi import MBI, mbi_layout
from hetmtl.blockwise.selection import (BlockwiseSplit, hbi_grid, htl_grid, make_split, mlp_grid, rmse_table,
                                        select_config, step2_grid)
from hetmtl.blockwise.simulate import (SETTINGS, BayesFloor, SimulatedBlockwise, bayes_floor, bayes_predict,
                                      setting_params, simulate_blockwise)

# The neural estimators need torch (the ``nets`` extra): imported on first use, so MBI, the
# simulators and the splits work in a torch-free install.
_LAZY = {
    "MTLHMB": "model", "BlockwiseRegressor": "model", "HBImputer": "hbi", "STL": "baselines",
    "HTL": "baselines", "HPS": "baselines", "naive_step2": "baselines", "demo_comparison": "demo",
    "CCLasso": "baselines",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        from hetmtl._optional import require_torch

        require_torch(f"hetmtl.blockwise.{name}")
        value = getattr(import_module(f"hetmtl.blockwise.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hetmtl.blockwise' has no attribute {name!r}")


__all__ = [
    "MTLHMB", "HBImputer", "STL", "HTL", "HPS", "CCLasso", "naive_step2", "BlockwiseRegressor", "rmse_table",
    "BlockwiseSplit", "make_split", "select_config", "step2_grid", "hbi_grid", "mlp_grid", "htl_grid",
    "SETTINGS", "SimulatedBlockwise", "setting_params", "simulate_blockwise", "demo_comparison",
    "bayes_floor", "bayes_predict", "BayesFloor",
    "load_adni_mtlhmb", "simulate_adni_like", "MBI", "mbi_layout",
]
