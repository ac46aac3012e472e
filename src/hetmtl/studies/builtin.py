"""Built-in studies: the seeds' headline experiments, runnable by name (``hetmtl study list``).

What to use when:
- ``latefusion-eta``: late-fusion Scenario 1 across the heterogeneity η — per-site DML (ITL) and,
  when :class:`~hetmtl.latefusion.LateFusion` is installed, the fused estimators (squared, group)
  on the same per-site fits: bias, MSE (avg and max over sites), CI coverage and width;
- ``encoders-drift`` / ``encoders-shift`` / ``encoders-imbalance``: the dual-encoder model, its
  ablations and baselines on shared 60/20/20 splits (seed 001): per-task test RMSE;
- ``blockwise-A`` … ``blockwise-linear``, ``blockwise-ablation``: MTL-HMB vs STL/HTL/HPS (+MBI when
  installed) on seed 002's settings, compared with the paper's Tables 2–9 (shipped in
  ``studies/reference/``).

A family is imported only when its study is built; ``list_studies()`` says which are available.
Every built-in generator and method is also registered under its name, so study files can use
them (e.g. ``generator: latefusion``, ``fn: site-dml``). The defaults (e.g. 100 replicates, random
forests) are the full protocols: use ``--reps`` for a quick look.
"""
from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from hetmtl.studies.spec import MethodSpec, Replicate, Study, register_generator, register_method

_BUILDERS: dict[str, tuple[str, str, Callable[[], Study]]] = {}


def _builtin(name: str, family: str, description: str):
    def deco(fn: Callable[[], Study]) -> Callable[[], Study]:
        _BUILDERS[name] = (family, description, fn)
        return fn
    return deco


def _importable(module: str, attr: str | None = None) -> bool:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    return attr is None or hasattr(mod, attr)


FAMILY_CHECKS = {
    "latefusion": ("hetmtl.latefusion", "MultiSiteDML"),
    "fusion": ("hetmtl.latefusion", "LateFusion"),
    "encoders": ("hetmtl.encoders", "DualEncoderMTL"),
    "blockwise": ("hetmtl.blockwise.model", "MTLHMB"),
}


def family_available(family: str) -> bool:
    module, attr = FAMILY_CHECKS[family]
    return _importable(module, attr)


def list_studies() -> list[dict]:
    """Every built-in study with its family, description and whether it can run here."""
    return [{"name": n, "family": f, "available": family_available(f), "description": d}
            for n, (f, d, _) in _BUILDERS.items()]


def available_studies() -> list[str]:
    return [s["name"] for s in list_studies() if s["available"]]


def get_study(name: str) -> Study:
    """The built-in study ``name`` (its family must be importable)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown built-in study {name!r}; built-in studies: {sorted(_BUILDERS)}")
    family, _, build = _BUILDERS[name]
    if not family_available(family):
        module, attr = FAMILY_CHECKS[family]
        raise ImportError(f"study {name!r} needs {module}.{attr} (method family {family!r}), which is not "
                          "available in this installation")
    return build()


# ================================================================================ late fusion
@register_generator("latefusion")
def latefusion_generator(scenario: int = 1, n_sites: int = 10, eta: float = 0.5, random_state=None, **kwargs):
    """:func:`hetmtl.latefusion.simulate.make_latefusion_data` (returns ``SimulatedSites``)."""
    from hetmtl.latefusion.simulate import make_latefusion_data

    return make_latefusion_data(scenario=scenario, n_sites=n_sites, eta=eta, random_state=random_state, **kwargs)


def _learners(kind: str, seed: int):
    if kind == "forest":
        return None, None  # SiteDML's random-forest defaults, seeded by random_state
    if kind == "linear":
        from sklearn.linear_model import LinearRegression, LogisticRegression

        return LinearRegression(), LogisticRegression(max_iter=1000)
    if kind == "lasso":
        from sklearn.linear_model import LassoCV, LogisticRegressionCV

        return LassoCV(cv=3, random_state=seed), LogisticRegressionCV(cv=3, max_iter=1000)
    raise ValueError(f"learners must be 'forest', 'linear' or 'lasso', got {kind!r}")


def _site_dml_fit(rep: Replicate, model: str, learners: str, n_folds: int, tuning_folds: str | None):
    """Per-site DML on the replicate's data, shared through ``rep.cache`` by all methods."""
    key = ("site-dml", model, learners, n_folds, tuning_folds)
    if key not in rep.cache:
        from hetmtl.latefusion import MultiSiteDML

        ml_y, ml_d = _learners(learners, rep.seed)
        est = MultiSiteDML(model=model, ml_outcome=ml_y, ml_treatment=ml_d, n_folds=n_folds,
                           tuning_folds=tuning_folds, random_state=rep.seed)
        rep.cache[key] = est.fit(rep.data.data)
    return rep.cache[key]


def _truth(sim, est) -> dict:
    """True θ_k per site on the estimator's basis (standardised basis for CATE)."""
    sites = [str(s) for s in est.sites_]
    if sim.theta.shape[1] == 1:
        return {s: sim.theta[k] for k, s in enumerate(sites)}
    first = next(iter(est.estimators_.values()))
    th = sim.theta_standardized(np.asarray(first.basis_["center"]), np.asarray(first.basis_["scale"]))
    return {s: th[k] for k, s in enumerate(sites)}


def interval_rows(frame, truth: dict, level: float) -> list[dict]:
    """Per (site, coef) rows: estimate, truth, se, bias, squared error (mse), coverage (0/1), ci_width.

    ``frame`` is indexed by (site, coef) with DoubleML-style columns ``coef``, ``std err`` and the
    CI columns at ``level`` (e.g. ``2.5 %``, ``97.5 %``)."""
    from hetmtl.inference import _level_names

    lo_col, hi_col = _level_names(level)
    missing = [c for c in ("coef", "std err", lo_col, hi_col) if c not in frame.columns]
    if missing:
        raise ValueError(f"estimate table lacks column(s) {missing}; has {list(frame.columns)}")
    rows = []
    for (site, coef), r in frame.iterrows():
        names = list(frame.loc[site].index)
        true = float(np.asarray(truth[str(site)])[names.index(coef)])
        est, lo, hi = float(r["coef"]), float(r[lo_col]), float(r[hi_col])
        rows.append({"site": str(site), "coef": str(coef), "estimate": est, "truth": true, "se": float(r["std err"]),
                     "bias": est - true, "mse": (est - true) ** 2, "coverage": float(lo <= true <= hi),
                     "ci_width": hi - lo})
        if "fused" in frame.columns:
            rows[-1]["fused"] = float(bool(r["fused"]))
    return rows


@register_method("site-dml")
def site_dml_method(rep: Replicate, model: str = "ate", learners: str = "forest", n_folds: int = 5,
                    level: float = 0.95) -> list[dict]:
    """ITL-DML: each site's own DML estimate (no fusion). One row per site (and coefficient)."""
    est = _site_dml_fit(rep, model, learners, n_folds, "reuse")
    return interval_rows(est.summary_frame(level), _truth(rep.data, est), level)


# ---- Fused estimators (branch `fusion`): hetmtl.latefusion.LateFusion(**options).fit(summaries),
# summary_frame(level) indexed by (site, coef) with coef, std err, CI columns and a "fused" flag.
def late_fusion_method(rep: Replicate, model: str = "ate", learners: str = "forest", n_folds: int = 5,
                       level: float = 0.95, **options) -> list[dict]:
    """Late fusion of the per-site DML summaries (the very same per-site fits as ``site-dml`` in
    this replicate); ``options`` go to :class:`~hetmtl.latefusion.LateFusion` (``random_state``
    defaults to the replicate's seed). Adds ``fused`` (0/1: site merged with the centre)."""
    from hetmtl.latefusion import LateFusion

    est = _site_dml_fit(rep, model, learners, n_folds, "reuse")
    fused = LateFusion(**{"random_state": rep.seed, **options}).fit(est.summaries())
    return interval_rows(fused.summary_frame(level), _truth(rep.data, est), level)


# Registered always (it imports LateFusion only when called); the built-in study lists the fused
# methods only when LateFusion is importable.
register_method("late-fusion")(late_fusion_method)


@_builtin("latefusion-eta", "latefusion",
          "Late-fusion Scenario 1 (ATE, K=10 sites, n_k ~ U{40..80}): per-site DML bias, MSE, CI coverage and "
          "width vs the heterogeneity eta (fused estimators added when hetmtl.latefusion.LateFusion is available).")
def _latefusion_eta() -> Study:
    methods = [MethodSpec("itl-dml", "site-dml", {"model": "ate", "learners": "forest", "n_folds": 5})]
    if family_available("fusion"):
        for penalty in ("squared", "group"):
            methods.append(MethodSpec(f"lf-{penalty}", "late-fusion",
                                      {"model": "ate", "learners": "forest", "n_folds": 5, "penalty": penalty}))
    return Study(
        name="latefusion-eta", generator="latefusion", methods=methods,
        grid={"eta": [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]}, fixed={"scenario": 1, "n_sites": 10},
        n_reps=100, seed=20250710, metrics=["bias", "mse", "coverage", "ci_width"]
        + (["fused"] if family_available("fusion") else []),
        reference="latefusion-eta.csv",
        description=_BUILDERS["latefusion-eta"][1],
    )


# ================================================================================ dual encoder
@register_generator("encoders-latent")
def encoders_generator(random_state=None, **kwargs):
    """:func:`hetmtl.encoders.simulate.simulate_latent` (returns ``SimulatedTasks``)."""
    from hetmtl.encoders.simulate import simulate_latent

    return simulate_latent(random_state=random_state, **kwargs)


def encoders_splitter(sim, seed: int):
    """Per-task 60/20/20 train/validation/test split shared by every method."""
    return sim.data.split((0.6, 0.2, 0.2), seed)


register_generator("encoders-split")(encoders_splitter)


@register_method("encoders")
def encoders_method(rep: Replicate, name: str = "dual", **common) -> list[dict]:
    """One method of :mod:`hetmtl.encoders.baselines` on the shared split: per-task test RMSE."""
    from hetmtl.encoders.baselines import compare_methods

    train, val, test = rep.splits
    table = compare_methods(train, val, test, [name], random_state=rep.seed, **common)
    return [{"task": str(r.task), "n_train": int(r.n_train), "rmse": float(r.rmse)} for r in table.itertuples()]


ENCODER_METHODS = ["dual", "shared_only", "specific_only", "no_integration", "stl", "pooled"]


def _encoders_study(name: str, grid: dict, fixed: dict) -> Study:
    return Study(
        name=name, generator="encoders-latent", splitter="encoders-split",
        methods=[MethodSpec(n, "encoders", {"name": n, "max_epochs": 300}) for n in ENCODER_METHODS],
        grid=grid, fixed=fixed, n_reps=20, seed=1, metrics=["rmse"], description=_BUILDERS[name][1],
    )


@_builtin("encoders-drift", "encoders",
          "Dual-encoder MTL vs ablations (only C / only S_r / no integration) and baselines across posterior drift "
          "(seed 001 experiment 2): per-task test RMSE.")
def _encoders_drift() -> Study:
    return _encoders_study("encoders-drift", {"posterior_drift": [0.0, 0.5, 1.0, 2.0]}, {"n_tasks": 5, "n": 100})


@_builtin("encoders-shift", "encoders",
          "Dual-encoder MTL vs ablations and baselines across covariate shift (seed 001): per-task test RMSE.")
def _encoders_shift() -> Study:
    return _encoders_study("encoders-shift", {"covariate_shift": [0.0, 0.5, 1.0, 2.0]}, {"n_tasks": 5, "n": 100})


@_builtin("encoders-imbalance", "encoders",
          "Dual-encoder MTL with balanced vs highly imbalanced task sizes (seed 001 experiment 3): per-task test "
          "RMSE (does the shared encoder favour the large task?).")
def _encoders_imbalance() -> Study:
    return _encoders_study("encoders-imbalance", {"n": [[100] * 5, [400, 25, 25, 25, 25]]},
                           {"n_tasks": 5, "posterior_drift": 0.5})


# ================================================================================ MTL-HMB
@register_generator("blockwise")
def blockwise_generator(setting: str = "A", setting_value=0.8, random_state=None, **overrides):
    """A row of the seed-002 settings: :func:`hetmtl.blockwise.simulate.setting_params` then
    :func:`~hetmtl.blockwise.simulate.simulate_blockwise`."""
    from hetmtl.blockwise.simulate import setting_params, simulate_blockwise

    return simulate_blockwise(**{**setting_params(setting, setting_value), **overrides}, seed=random_state)


def blockwise_splitter(sim, seed: int):
    from hetmtl.blockwise.selection import make_split

    return make_split(sim.data, seed=seed)


register_generator("blockwise-split")(blockwise_splitter)

BLOCKWISE_METHODS = {"mtl-hmb": ("hetmtl.blockwise.model", "MTLHMB"), "stl": ("hetmtl.blockwise.baselines", "STL"),
                     "htl": ("hetmtl.blockwise.baselines", "HTL"), "hps": ("hetmtl.blockwise.baselines", "HPS"),
                     # MBI (branch `mbi`): assumed to follow the block-wise estimator API (fit(data, split),
                     # test_table_); the study lists it only when importable.
                     "mbi": ("hetmtl.blockwise.mbi", "MBI")}


@register_method("blockwise")
def blockwise_method(rep: Replicate, name: str = "mtl-hmb", **options) -> list[dict]:
    """One block-wise estimator fitted on the shared split: per-task test RMSE and the average."""
    if name not in BLOCKWISE_METHODS:
        raise ValueError(f"unknown block-wise method {name!r}; choose from {sorted(BLOCKWISE_METHODS)}")
    module, attr = BLOCKWISE_METHODS[name]
    cls = getattr(importlib.import_module(module), attr)
    est = cls(random_state=rep.seed, **options).fit(rep.data.data, rep.splits)
    table = est.test_table_
    return [{"task": str(t), "rmse": float(r["rmse"]), "n": int(r["n"])} for t, r in table.iloc[:-1].iterrows()]


def _blockwise_study(setting: str) -> Study:
    from hetmtl.blockwise.simulate import SETTINGS

    names = ["mtl-hmb", "stl", "htl", "hps"] + (["mbi"] if _importable(*BLOCKWISE_METHODS["mbi"]) else [])
    spec = SETTINGS[setting]
    has_reference = isinstance(spec["table"], int)
    return Study(
        name=f"blockwise-{setting}", generator="blockwise", splitter="blockwise-split",
        methods=[MethodSpec(n, "blockwise", {"name": n}) for n in names],
        grid={"setting_value": list(spec["values"])}, fixed={"setting": setting},
        n_reps=10, seed=2, metrics=["rmse"],
        reference=f"blockwise-{setting}.csv" if has_reference else None,
        description=f"MTL-HMB vs {'/'.join(n.upper() for n in names[1:])}, seed 002 "
                    f"{'Table ' if has_reference else ''}{spec['table']} ({spec['vary']}): test RMSE per task "
                    "(the report averages over tasks: the paper's average RMSE).",
    )


# setting: (seed 002 table, what varies); descriptions are static so that listing imports nothing
BLOCKWISE_SETTINGS = {"A": ("Table 2", "rho1 = rho2"), "B": ("Table 3", "rho2"), "C": ("Table 4", "alpha"),
                      "D": ("Table 5", "n1 = n2"), "E": ("Table 6", "p1 = p2"), "F": ("Table 7", "sigma1"),
                      "T": ("Table 8", "number of tasks"), "linear": ("Table 9", "linear DGP"),
                      "ablation": ("Figure 8", "n2, ablations")}
for _setting, (_table, _vary) in BLOCKWISE_SETTINGS.items():
    _BUILDERS[f"blockwise-{_setting}"] = ("blockwise", f"MTL-HMB vs STL/HTL/HPS (+MBI), seed 002 setting {_setting} "
                                                       f"({_table}; varies {_vary}): test RMSE per task",
                                          (lambda s=_setting: _blockwise_study(s)))
