"""Built-in studies: the source papers' headline experiments, runnable by name (``hetmtl study list``).

What to use when:

- ``latefusion-eta``: late-fusion Scenario 1 across the heterogeneity η — per-site DML (ITL) and,
  when :class:`~hetmtl.latefusion.LateFusion` is installed, the fused estimators (squared, group)
  on the same per-site fits: bias, MSE (avg and max over sites), CI coverage and width;
- ``encoders-ablation`` / ``encoders-heterogeneity`` / ``encoders-imbalance``: the benchmark
  protocols of the dual-encoder paper (arXiv 2505.24281) for its model (:func:`encoder_methods`):
  every ablation and baseline, the fixed-λ fits and the validation-tuned ``dual`` / ``dual_cv`` on shared 60/20/20
  splits, replicate r with seed 1000 r + 17; per task ``rmse`` (held-out) and ``rmse_truth``
  (against the true regression function). Fits shared by several methods of a replicate (a tuned
  method and its candidates) are computed once;
- ``blockwise-A`` … ``blockwise-F``, ``blockwise-T``, ``blockwise-linear`` (the MTL-HMB paper,
  arXiv 2505.24413, Tables 2–9)
  and ``blockwise-ablation`` (Figure 8): MTL-HMB vs STL/HTL (+ Step1+STL, Step1+HPS, Naive+Step2 in
  Figure 8) with the authors' code grid and seeds 0–19 (:func:`blockwise_study`; HBI fitted once
  per replicate and shared by MTL-HMB and the Step-1 ablations), compared with the paper's tables
  (shipped in ``studies/reference/``). The ``blockwise`` method also takes ``name="hps"`` and
  ``name="mbi"``.

The benchmarks are thin drivers over these studies (stores in ``benchmarks/results/studies/``,
resumable; ``--summarize`` rewrites the result files from the stores)::

    PYTHONPATH=src nice -n 10 python -m benchmarks.bench_encoders --reps 20 [--only heterogeneity] [--jobs 2]
    PYTHONPATH=src nice -n 10 python -m benchmarks.bench_blockwise_repro --reps 20 [--rows "D:300;B:0.5"]
    PYTHONPATH=src nice -n 10 python -m benchmarks.bench_fusion_stats --reps 200

A family is imported only when its study is built; ``list_studies()`` says which are available.
Every built-in generator and method is also registered under its name, so study files can use
them (e.g. ``generator: latefusion``, ``fn: site-dml``, ``fn: encoders-fit``, ``fn: blockwise``).
The defaults are the full protocols: use ``--reps`` (and ``--timeout``) for a quick look.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

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
    """Whether a method family can be imported here.

    Parameters
    ----------
    family : {"latefusion", "fusion", "encoders", "blockwise"}
        The family.

    Returns
    -------
    bool
        True when its estimator imports.
    """
    module, attr = FAMILY_CHECKS[family]
    return _importable(module, attr)


def list_studies() -> list[dict]:
    """Every built-in study with its family, description and whether it can run here.

    Returns
    -------
    list of dict
        ``name``, ``family``, ``available``, ``description``.
    """
    return [{"name": n, "family": f, "available": family_available(f), "description": d}
            for n, (f, d, _) in _BUILDERS.items()]


def available_studies() -> list[str]:
    """Names of the built-in studies whose family can be imported here.

    Returns
    -------
    list of str
        Study names.
    """
    return [s["name"] for s in list_studies() if s["available"]]


def get_study(name: str) -> Study:
    """A built-in study by name (its family must be importable).

    Parameters
    ----------
    name : str
        One of :func:`list_studies`' names.

    Returns
    -------
    Study
        The study with its full protocol (use ``with_reps`` for a quick look).
    """
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
    if kind == "forest":  # SiteDML's learners before the ridge sieve became the default
        from hetmtl.latefusion.dml import forest_classifier, forest_regressor

        return forest_regressor(seed), forest_classifier(seed + 1)
    if kind == "default":
        return None, None  # SiteDML's defaults (ridge sieves), seeded by random_state
    if kind == "linear":
        from sklearn.linear_model import LinearRegression, LogisticRegression

        return LinearRegression(), LogisticRegression(max_iter=1000)
    if kind == "lasso":
        from sklearn.linear_model import LassoCV, LogisticRegressionCV

        return LassoCV(cv=3, random_state=seed), LogisticRegressionCV(cv=3, max_iter=1000)
    raise ValueError(f"learners must be 'default', 'forest', 'linear' or 'lasso', got {kind!r}")


def _site_dml_fit(rep: Replicate, model: str, learners: str, n_folds: int, tuning_folds: str | None):
    """Per-site DML on the replicate's data, shared through ``rep.cache`` by all methods."""
    key = ("site-dml", model, learners, n_folds, tuning_folds)
    if key not in rep.cache:
        from hetmtl.latefusion import MultiSiteDML

        ml_y, ml_d = _learners(learners, rep.seed)
        est = MultiSiteDML(model=model, ml_outcome=ml_y, ml_treatment=ml_d, n_folds=n_folds,
                           n_rep=None if learners == "default" else 1, tuning_folds=tuning_folds,
                           random_state=rep.seed)
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
    return interval_rows(fused_interval_frame(fused, level), _truth(rep.data, est), level)


def fused_interval_frame(fused, level: float):
    """(site, coef) frame for :func:`interval_rows`: the fused estimate ``coef``, the SE the
    interval method reports, and the interval the summary reports (``LateFusion.confint``: for the
    group penalty the robust EB interval beside the group estimate)."""
    import pandas as pd

    from hetmtl.inference import _level_names

    lo, hi = _level_names(level)
    table = fused.summary_frame(level)
    ci = fused.confint(level).drop(index="(centre)", level="site")
    se_col = next((c for c in ("std err", "robust EB std err", "boot std err", "conditional std err") if c in table), None)
    return pd.DataFrame({"coef": table["coef"], "std err": table[se_col] if se_col else np.nan,
                         lo: ci[lo], hi: ci[hi], "fused": table["fused"]}, index=table.index)


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


#: Settings every fit of the dual-encoder paper's benchmarks shares (the paper's algorithm: joint
#: training, alpha centred, as when these benchmarks were recorded).
ENCODER_COMMON = {"n_shared": 4, "n_specific": 2, "hidden": [32], "max_epochs": 400, "patience": 30, "lam_orth": 0.01,
                  "training": "joint", "center_alpha": True}
#: Strong baselines beside the package's networks (scikit-learn; trained on training + validation
#: rows, tuned internally): per-task RidgeCV / LassoCV, gradient boosting per task and pooled with a
#: task one-hot (:mod:`hetmtl.encoders.baselines`).
ENCODER_STRONG = ("ridge", "lasso", "gbm", "gbm_pooled")
#: The λ (= lam_alpha = lam_beta) grid the tuned fits choose from by summed validation MSE.
ENCODER_LAMS = (0.003, 0.03, 0.3)
#: Fresh rows per task for ``rmse_truth`` (RMSE against the noise-free regression function).
ENCODER_TRUTH_ROWS = 500


def _encoder_fit_rows(rep: Replicate, method: str, params: dict) -> list[dict]:
    """Fit ``make_method(method, **params)`` on the shared split (once per replicate: cached) and
    score it: per task n_train, summed validation MSE, test RMSE and RMSE against the truth."""
    import json
    import time

    key = ("encoders-fit", method, json.dumps(params, sort_keys=True, default=str))
    if key not in rep.cache:
        from hetmtl.encoders.baselines import make_method

        t0 = time.perf_counter()
        tr, va, te = rep.splits
        truth = rep.data.test_data(ENCODER_TRUTH_ROWS, random_state=rep.seed + 1)
        hidden = params.get("hidden")
        model = make_method(method, **{**params, **({"hidden": tuple(hidden)} if hidden is not None else {}),
                                       "random_state": rep.seed}).fit(tr, validation_data=va)
        val = float(model.score_tasks(va).mse.sum())
        test, tru = model.score_tasks(te), model.score_tasks(truth)
        secs = time.perf_counter() - t0
        rep.cache[key] = [{"task": str(t), "n_train": int(tr[t].n), "val_mse_sum": val, "rmse": float(test.rmse[t]),
                           "rmse_truth": float(tru.rmse[t]), "fit_seconds": secs} for t in tr.tasks]
    return [dict(r) for r in rep.cache[key]]


def _lam_params(method: str, lam: float | None, options: dict) -> dict:
    return {**options, **({} if lam is None else {"lam_alpha": float(lam), "lam_beta": float(lam)})}


@register_method("encoders-fit")
def encoders_fit_method(rep: Replicate, method: str = "dual", lam: float | None = None, **options) -> list[dict]:
    """One fit of :func:`hetmtl.encoders.baselines.make_method` (``method``; ``lam`` sets
    lam_alpha = lam_beta; other options go to the estimator) on the replicate's 60/20/20 split:
    per task ``n_train``, ``val_mse_sum`` (summed validation MSE over tasks, the tuning criterion),
    ``rmse`` (held-out split), ``rmse_truth`` (vs the true regression function on fresh rows) and
    ``fit_seconds``. A fit with the same settings in the replicate is computed once (cache)."""
    return _encoder_fit_rows(rep, method, _lam_params(method, lam, options))


def choose_candidate(val_mse_sum: dict[str, float]) -> str:
    """The candidate label with the smallest summed validation MSE (first one on ties)."""
    return min(val_mse_sum, key=lambda k: (val_mse_sum[k], list(val_mse_sum).index(k)))


@register_method("encoders-cv")
def encoders_cv_method(rep: Replicate, param_grid=None, cv=3, **base) -> list[dict]:
    """:class:`hetmtl.encoders.DualEncoderMTLCV` (default grid unless ``param_grid``; ``cv`` folds)
    on the replicate's training + validation rows, refitted on all of them: per task ``n_train``,
    ``rmse`` (held-out split), ``rmse_truth``, ``fit_seconds`` and the ``chosen`` setting."""
    import json
    import time

    from hetmtl.encoders import DualEncoderMTLCV
    from hetmtl.encoders.baselines import _merge

    key = ("encoders-cv", json.dumps([param_grid, cv, base], sort_keys=True, default=str))
    if key not in rep.cache:
        t0 = time.perf_counter()
        tr, va, te = rep.splits
        truth = rep.data.test_data(ENCODER_TRUTH_ROWS, random_state=rep.seed + 1)
        base = {k: (tuple(v) if k == "hidden" else v) for k, v in base.items()}
        model = DualEncoderMTLCV(param_grid, cv=cv, base_params=base or None, random_state=rep.seed).fit(_merge(tr, va))
        test, tru = model.score_tasks(te), model.score_tasks(truth)
        bp = model.best_params_
        chosen = json.dumps({k: bp[k] for k in sorted(bp)}, default=str)
        secs = time.perf_counter() - t0
        rep.cache[key] = [{"task": str(t), "n_train": int(tr[t].n), "rmse": float(test.rmse[t]),
                           "rmse_truth": float(tru.rmse[t]), "fit_seconds": secs, "chosen": chosen} for t in tr.tasks]
    return [dict(r) for r in rep.cache[key]]


@register_method("encoders-tuned")
def encoders_tuned_method(rep: Replicate, candidates: dict, **options) -> list[dict]:
    """Validation-tuned fit: every candidate ``{label: {"method": ..., "lam": ...}}`` is fitted
    (or taken from the cache, when the study also lists it as a method) and the rows of the one
    with the smallest summed validation MSE are returned, with its label in ``chosen``."""
    fits = {label: encoders_fit_method(rep, **{**options, **c}) for label, c in candidates.items()}
    best = choose_candidate({label: rows[0]["val_mse_sum"] for label, rows in fits.items()})
    return [{**r, "chosen": best} for r in fits[best]]


def lam_label(prefix: str, lam: float) -> str:
    return f"{prefix}={lam:g}"


def encoder_methods(experiment: str) -> list[MethodSpec]:
    """The dual-encoder paper's benchmark methods of ``experiment`` ("ablation", "heterogeneity",
    "imbalance").

    ``dual`` = full model (q = 2 task-specific dims) with λ chosen on validation over
    :data:`ENCODER_LAMS`; ``dual_cv`` = the same family tuned over λ and q ∈ {0 (shared encoder
    only), 2}; ``dual_lam=v`` / ``shared_lam=v`` the fixed-λ fits they choose from; the ablations
    and baselines use λ = 0.03. Imbalance weights the task losses by sqrt(n_r). ``dual_tuner`` is
    :class:`hetmtl.encoders.DualEncoderMTLCV` at its defaults (3-fold CV on training + validation
    rows, refit on them); ``ridge``, ``lasso``, ``gbm``, ``gbm_pooled`` the scikit-learn baselines
    (:data:`ENCODER_STRONG`)."""
    if experiment not in ("ablation", "heterogeneity", "imbalance"):
        raise ValueError(f"unknown encoders experiment {experiment!r}; choose ablation, heterogeneity or imbalance")
    common = dict(ENCODER_COMMON, **({"task_weights": "sqrt_n"} if experiment == "imbalance" else {}))
    dual_c = {lam_label("dual_lam", v): {"method": "dual", "lam": v} for v in ENCODER_LAMS}
    shared_c = {lam_label("shared_lam", v): {"method": "shared_only", "lam": v} for v in ENCODER_LAMS}
    specs = [MethodSpec("dual", "encoders-tuned", {"candidates": dual_c, **common}),
             MethodSpec("dual_cv", "encoders-tuned", {"candidates": {**dual_c, **shared_c}, **common})]
    lams = (0.0, *ENCODER_LAMS) if experiment == "heterogeneity" else ENCODER_LAMS
    specs += [MethodSpec(lam_label("dual_lam", v), "encoders-fit", {"method": "dual", "lam": v, **common}) for v in lams]
    specs += [MethodSpec(label, "encoders-fit", {**c, **common}) for label, c in shared_c.items()]
    if experiment == "ablation":  # ablation design: alpha not centred
        specs.append(MethodSpec("no_center_alpha", "encoders-fit",
                                {"method": "dual", "lam": 0.03, "center_alpha": False, **common}))
    others = {"ablation": ("shared_only", "specific_only", "no_orth", "no_integration", "stl", "pooled", "hps"),
              "heterogeneity": ("stl", "pooled", "hps"),
              "imbalance": ("stl", "pooled", "hps", "shared_only")}[experiment]
    specs += [MethodSpec(m, "encoders-fit", {"method": m, "lam": 0.03, **common}) for m in others]
    specs.append(MethodSpec("dual_tuner", "encoders-cv", {"cv": 3}))
    specs += [MethodSpec(m, "encoders-fit", {"method": m}) for m in ENCODER_STRONG]
    return specs


@register_generator("encoders-bench-split")
def encoders_bench_splitter(sim, seed: int):
    """The split of the dual-encoder paper's benchmarks: ``sim.data.split(random_state=seed)``
    (60/20/20 per task)."""
    return sim.data.split(random_state=seed)


ENCODER_DESIGN = {"n_tasks": 5, "d": 10, "covariate_shift": 1.0, "noise": 0.5}


def _encoders_bench(experiment: str) -> Study:
    grid: dict[str, Any]
    fixed: dict[str, Any]
    grid, fixed = {}, dict(ENCODER_DESIGN)
    if experiment == "ablation":
        fixed.update(n=100, posterior_drift=1.5, n_drifted=3)
    elif experiment == "heterogeneity":
        grid, fixed = {"posterior_drift": [0.0, 1.0, 3.0, 6.0]}, {**fixed, "n": 100}
    else:
        fixed.update(n=[50, 80, 200, 500, 1000], posterior_drift=1.5, n_drifted=3)
    name = f"encoders-{experiment}"
    return Study(name=name, generator="encoders-latent", splitter="encoders-bench-split",
                 methods=encoder_methods(experiment), grid=grid, fixed=fixed, n_reps=20, seed=17, seed_stride=1000,
                 metrics=["rmse", "rmse_truth"], description=_BUILDERS[name][1])


@_builtin("encoders-ablation", "encoders",
          "Dual-encoder MTL (dual-encoder paper, arXiv 2505.24281, experiment 1): every ablation (only C / "
          "only S_r / no orthogonality / no integration / alpha not centred) and baseline (STL, pooled, HPS) "
          "on shared 60/20/20 splits; moderate covariate shift, posterior drift in 3 of 5 tasks: per-task RMSE (held-out and vs truth).")
def _encoders_ablation() -> Study:
    return _encoders_bench("ablation")


@_builtin("encoders-heterogeneity", "encoders",
          "Dual-encoder MTL (dual-encoder paper, arXiv 2505.24281, experiment 2): posterior drift kappa in "
          "{0, 1, 3, 6} x centre penalty lambda in {0, 0.003, 0.03, 0.3} (fixed and validation-tuned) "
          "against STL / pooled / HPS.")
def _encoders_heterogeneity() -> Study:
    return _encoders_bench("heterogeneity")


@_builtin("encoders-imbalance", "encoders",
          "Dual-encoder MTL (dual-encoder paper, arXiv 2505.24281, experiment 3): task sizes n_r = 50, 80, "
          "200, 500, 1000 in one problem (sqrt(n_r) task weights): per-task RMSE by task size.")
def _encoders_imbalance() -> Study:
    return _encoders_bench("imbalance")


# ================================================================================ MTL-HMB
@register_generator("blockwise")
def blockwise_generator(setting: str = "A", setting_value=0.8, random_state=None, **overrides):
    """A row of the MTL-HMB paper's settings: :func:`hetmtl.blockwise.simulate.setting_params` then
    :func:`~hetmtl.blockwise.simulate.simulate_blockwise`."""
    from hetmtl.blockwise.simulate import setting_params, simulate_blockwise

    return simulate_blockwise(**{**setting_params(setting, setting_value), **overrides}, seed=random_state)


def blockwise_splitter(sim, seed: int):
    from hetmtl.blockwise.selection import make_split

    return make_split(sim.data, seed=seed)


register_generator("blockwise-split")(blockwise_splitter)

BLOCKWISE_METHODS = {"mtl-hmb": ("hetmtl.blockwise.model", "MTLHMB"), "stl": ("hetmtl.blockwise.baselines", "STL"),
                     "htl": ("hetmtl.blockwise.baselines", "HTL"), "hps": ("hetmtl.blockwise.baselines", "HPS"),
                     # the MTL-HMB paper's Figure 8 ablations: Step 1 (HBI) + STL, Step 1 + HPS,
                     # naive imputation + Step 2
                     "step1+stl": ("hetmtl.blockwise.baselines", "STL"),
                     "step1+hps": ("hetmtl.blockwise.baselines", "HPS"),
                     "naive+step2": ("hetmtl.blockwise.baselines", "naive_step2"),
                     # MBI (native engine by default): fit(data, split) on training + validation rows, test_table_
                     "mbi": ("hetmtl.blockwise.mbi", "MBI"),
                     # complete-case cross-validated lasso: pooled on the rows that observe every block
                     # (none in the MTL-HMB paper's layouts: it then fails, saying so), or per task on the
                     # task's observed blocks; training + validation rows, test_table_
                     "cc_lasso": ("hetmtl.blockwise.baselines", "CCLasso"),
                     "cc_lasso_task": ("hetmtl.blockwise.baselines", "CCLasso")}
#: Methods without a neural grid (no grid, epochs, threads or selection options).
LINEAR_METHODS = ("mbi", "cc_lasso", "cc_lasso_task")
#: Methods that run Step 1 (HBI); within a replicate they share one fitted imputer.
HBI_METHODS = ("mtl-hmb", "step1+stl", "step1+hps")
_HBI_DEFAULTS = {"hbi_grid": "small", "hbi_max_epochs": 5000, "hbi_rows": "all", "hbi_orth_power": 1, "patience": 30,
                 "lr": 1e-3, "dtype": "float32"}


def _hbi_key(options: dict, name: str) -> tuple:
    """What determines the fitted HBI imputer (besides the replicate's data and seed)."""
    import json

    import torch

    from hetmtl.blockwise._engine import resolve_engine

    hbi = {k: options.get(k, v) for k, v in _HBI_DEFAULTS.items()}
    hbi["one_by_one"] = options.get("group_by", "width") == "config"
    # MTL-HMB's Step 1 follows its engine ("auto" by default); STL / HPS fit Step 1 on torch
    engine = options.get("engine", "auto" if name == "mtl-hmb" else "torch")
    hbi["engine"] = resolve_engine(engine, torch.float64 if hbi["dtype"] == "float64" else torch.float32)
    return ("hbi", json.dumps(hbi, sort_keys=True, default=str))


@register_method("blockwise")
def blockwise_method(rep: Replicate, name: str = "mtl-hmb", **options) -> list[dict]:
    """One block-wise estimator fitted on the shared split: per task the pooled test RMSE
    (``rmse``, the paper's), the authors' code metric (``rmse_code``, mean of the batch-16 RMSEs,
    as in their printouts), the number of test rows ``n`` and the selected configuration
    (``selected``, JSON). ``name``: one of :data:`BLOCKWISE_METHODS`; ``options`` go to the
    estimator (``random_state`` is the replicate's seed). MTL-HMB and the Step-1 ablations fit HBI
    once per replicate and share it (the first of them to run fits it), as the MTL-HMB paper's
    ablation design does."""
    import json

    if name not in BLOCKWISE_METHODS:
        raise ValueError(f"unknown block-wise method {name!r}; choose from {sorted(BLOCKWISE_METHODS)}")
    module, attr = BLOCKWISE_METHODS[name]
    cls = getattr(importlib.import_module(module), attr)
    kwargs = dict(options)
    if name == "step1+stl":
        kwargs["features"] = "imputed"
    if name == "cc_lasso_task":
        kwargs["per_task"] = True
    shared = name in HBI_METHODS and kwargs.get("imputation", "hbi") == "hbi" and "imputer" not in kwargs
    key = _hbi_key(kwargs, name) if shared else None
    if shared and key in rep.cache:
        kwargs["imputer"] = rep.cache[key]
    est = cls(random_state=rep.seed, **kwargs).fit(rep.data.data, rep.splits)
    if shared and key not in rep.cache:
        rep.cache[key] = est.imputer_
    table = est.test_table_
    sel = getattr(est, "selected_config_", None)
    extra = {} if sel is None else {"selected": json.dumps(sel, default=str)}
    rows = []
    for t, r in table.iloc[:-1].iterrows():
        code = {"rmse_code": float(r["rmse_code"])} if "rmse_code" in table else {}
        rows.append({"task": str(t), "rmse": float(r["rmse"]), **code, "n": int(r["n"]), **extra})
    return rows


#: The options of the MTL-HMB paper's reproduction protocol (the authors' code grid, early stopping caps,
#: the lowest validation loss as selection rule, as the authors' code and the recorded stores).
BLOCKWISE_PROTOCOL = {"grid": "code", "hbi_grid": "code", "max_epochs": 25000, "hbi_max_epochs": 5000,
                      "dr_mode": "per_task", "n_threads": 1, "engine": "torch", "selection": "min"}
BLOCKWISE_TABLE_METHODS = ["mtl-hmb", "stl", "htl"]
BLOCKWISE_ABLATION_METHODS = ["mtl-hmb", "stl", "htl", "step1+stl", "step1+hps", "naive+step2"]


def blockwise_method_specs(names, grid="code", hbi_grid="code", max_epochs: int = 25000, hbi_max_epochs: int = 5000,
                           dr_mode: str = "per_task", n_threads: int | None = 1, engine: str = "torch",
                           selection: str = "min") -> list[MethodSpec]:
    """MethodSpecs of the reproduction protocol: each estimator gets the options it takes (STL:
    grid, epochs and selection rule; HTL: + dr_mode and engine; Step-1 methods: + the HBI grid and
    epoch cap; MBI and the complete-case lassos: none).
    The protocol trains on the torch engine, as its recorded stores did; ``engine="native"`` runs
    MTL-HMB, HTL and naive + Step 2 on the C++ kernel (STL / HPS and their Step 1 stay on torch)."""
    common = {"grid": grid, "max_epochs": max_epochs, "n_threads": n_threads, "selection": selection}
    step1 = {"hbi_grid": hbi_grid, "hbi_max_epochs": hbi_max_epochs}
    step2 = {"dr_mode": dr_mode, "engine": engine}
    extra = {"stl": {}, "hps": {}, "htl": step2, "mtl-hmb": {**step1, **step2},
             "step1+stl": step1, "step1+hps": step1, "naive+step2": {**step1, **step2}}
    specs = []
    for n in names:
        if n in LINEAR_METHODS:
            specs.append(MethodSpec(n, "blockwise", {"name": n}))
        elif n in extra:
            specs.append(MethodSpec(n, "blockwise", {"name": n, **common, **extra[n]}))
        else:
            raise ValueError(f"unknown block-wise method {n!r}; choose from {sorted(BLOCKWISE_METHODS)}")
    return specs


def blockwise_study(setting: str, methods=None, n_reps: int | None = None, **options) -> Study:
    """The reproduction study of one setting of the MTL-HMB paper (arXiv 2505.24413): a table of
    Tables 2-9, or ``"ablation"`` = Figure 8. Every row of the table is a grid value of
    ``setting_value``; replicate r uses seed r for data, split and fits (the authors' seeds 0-19);
    20 replicates (30 for Figure 8).
    ``methods`` default: MTL-HMB, STL, HTL (+ the three ablations in Figure 8); ``options``
    override :data:`BLOCKWISE_PROTOCOL` (e.g. ``grid="small"``)."""
    from hetmtl.blockwise.simulate import SETTINGS

    if setting not in SETTINGS:
        raise ValueError(f"unknown MTL-HMB paper setting {setting!r}; choose from {sorted(SETTINGS)}")
    unknown = sorted(set(options) - set(BLOCKWISE_PROTOCOL))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; options are {sorted(BLOCKWISE_PROTOCOL)}")
    names = list(methods or (BLOCKWISE_ABLATION_METHODS if setting == "ablation" else BLOCKWISE_TABLE_METHODS))
    spec = SETTINGS[setting]
    has_reference = isinstance(spec["table"], int)
    return Study(
        name=f"blockwise-{setting}", generator="blockwise", splitter="blockwise-split",
        methods=blockwise_method_specs(names, **{**BLOCKWISE_PROTOCOL, **options}),
        grid={"setting_value": list(spec["values"])}, fixed={"setting": setting},
        n_reps=int(n_reps or (30 if setting == "ablation" else 20)), seed=0, seed_stride=1,
        metrics=["rmse", "rmse_code"],
        reference=f"blockwise-{setting}.csv" if has_reference else None,
        description=f"{' vs '.join(n.upper() for n in names)}, MTL-HMB paper (arXiv 2505.24413) "
                    f"{'Table ' if has_reference else ''}{spec['table']} ({spec['vary']}): test RMSE per task "
                    "(the report averages over tasks: the paper's average RMSE).",
    )


# setting: (MTL-HMB paper's table, what varies); descriptions are static so that listing imports nothing
BLOCKWISE_SETTINGS = {"A": ("Table 2", "rho1 = rho2"), "B": ("Table 3", "rho2"), "C": ("Table 4", "alpha"),
                      "D": ("Table 5", "n1 = n2"), "E": ("Table 6", "p1 = p2"), "F": ("Table 7", "sigma1"),
                      "T": ("Table 8", "number of tasks"), "linear": ("Table 9", "linear DGP"),
                      "ablation": ("Figure 8", "n2, ablations")}
for _setting, (_table, _vary) in BLOCKWISE_SETTINGS.items():
    _methods = "MTL-HMB vs STL/HTL/Step1+STL/Step1+HPS/Naive+Step2" if _setting == "ablation" else "MTL-HMB vs STL/HTL"
    _BUILDERS[f"blockwise-{_setting}"] = ("blockwise", f"{_methods}, MTL-HMB paper (arXiv 2505.24413) "
                                                       f"setting {_setting} ({_table}; varies "
                                                       f"{_vary}), authors' code grid, seeds 0-19: test RMSE per task",
                                          (lambda s=_setting: blockwise_study(s)))  # type: ignore[misc]
