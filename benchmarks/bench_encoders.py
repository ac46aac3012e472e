"""Dual-encoder MTL: the seed's three first experiments (seed 001, spec dual_encoder.md §5c).

1. ``ablation``      — every ablation and baseline on the same splits (moderate covariate shift,
                       posterior drift in 3 of 5 tasks).
2. ``heterogeneity`` — posterior drift kappa in {0, 1, 3, 6} x centre-penalty strength lambda in
                       {0, 0.003, 0.03, 0.3}, against STL / pooled / HPS.
3. ``imbalance``     — task sizes n_r = 50 .. 1000 in one problem.

Data: :func:`hetmtl.encoders.simulate.simulate_latent` (model-matched design, noise SD 0.5),
60/20/20 per-task split of each replicate's data (train / early-stopping validation / held-out
test). ``dual`` is the full model (q = 2 task-specific dims) with lambda chosen by summed
validation MSE over {0.003, 0.03, 0.3} (spec §2); ``dual_cv`` is the same family tuned over lambda
and q in {0 (its shared-encoder-only special case), 2}; ``dual_lam=<v>`` / ``shared_lam=<v>`` are
the fixed-lambda fits they choose from (tuning is recomputed by ``--summarize``). Recorded per fit and task:
test RMSE on the held-out split (noisy y: ``rmse``) and RMSE against the true regression
function on 500 fresh rows per task (``rmse_truth``).

Run: ``PYTHONPATH=src nice -n 10 python -m benchmarks.bench_encoders [--reps 20] [--only NAME]``
(``--part shared_grid`` / ``--part no_center_alpha`` add only the shared-only lambda grid / the
alpha-not-centred ablation to replicates already recorded).
Rows are appended to ``benchmarks/results/encoders_<experiment>.csv`` replicate by replicate
(so an interrupted run keeps what finished, and a rerun only adds missing replicates: delete the
CSVs to start afresh); ``--summarize`` writes
``benchmarks/results/encoders_summary.md`` from whatever is there.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks._util import machine
from hetmtl.encoders.baselines import make_method
from hetmtl.encoders.simulate import simulate_latent
from hetmtl.exceptions import ConvergenceWarning

RESULTS = Path(__file__).resolve().parent / "results"
LAMS = (0.003, 0.03, 0.3)
COMMON = dict(n_shared=4, n_specific=2, hidden=(32,), max_epochs=400, patience=30, lam_orth=0.01)
BASELINES = ("stl", "pooled", "hps")


def fit_rows(method: str, params: dict, tr, va, te, truth, label: str) -> list[dict]:
    t0 = time.perf_counter()
    model = make_method(method, **{**COMMON, **params}).fit(tr, validation_data=va)
    val = float(model.score_tasks(va).mse.sum())
    test = model.score_tasks(te)
    tru = model.score_tasks(truth)
    secs = time.perf_counter() - t0
    return [{"method": label, "task": t, "n_train": tr[t].n, "val_mse_sum": val, "rmse": float(test.rmse[t]),
             "rmse_truth": float(tru.rmse[t]), "seconds": secs} for t in tr.tasks]


def add_tuned(df: pd.DataFrame, keys: list[str], label: str = "dual", prefixes: tuple[str, ...] = ("dual_lam",)) -> pd.DataFrame:
    """``label`` = the candidate fit (methods ``<prefix>=<v>``, v in LAMS) with the smallest summed
    validation MSE, per replicate (and setting) ``keys``; the chosen candidate is in ``chosen``."""
    names = [f"{pre}={v:g}" for pre in prefixes for v in LAMS]
    cand = df[df.method.isin(names)]
    if cand.empty:
        return df
    best = cand.groupby(keys + ["method"]).val_mse_sum.first().reset_index()
    best = best.loc[best.groupby(keys).val_mse_sum.idxmin()]
    tuned = cand.merge(best[keys + ["method"]], on=keys + ["method"]).assign(
        chosen=lambda d: d.method, method=label)
    return pd.concat([df, tuned], ignore_index=True)


def shared_grid(common: dict, tr, va, te, truth) -> list[dict]:
    """Shared-encoder-only fits (the n_specific = 0 special case) over the lambda grid, for ``dual_cv``."""
    rows = []
    for v in LAMS:
        rows += fit_rows("shared_only", {**common, "lam_alpha": v, "lam_beta": v}, tr, va, te, truth, f"shared_lam={v:g}")
    return rows


def replicate(experiment: str, rep: int, part: str = "all") -> pd.DataFrame:
    """One replicate; ``part="shared_grid"`` fits only the shared-only lambda grid (added later)."""
    seed = 1000 * rep + 17
    if experiment not in ("ablation", "heterogeneity", "imbalance"):
        raise ValueError(experiment)
    frames = []
    for kappa in ((0.0, 1.0, 3.0, 6.0) if experiment == "heterogeneity" else (None,)):
        sim = _simulate(experiment, seed, kappa)
        tr, va, te = sim.data.split(random_state=seed)
        truth = sim.test_data(500, random_state=seed + 1)
        common = dict(random_state=seed, **({"task_weights": "sqrt_n"} if experiment == "imbalance" else {}))
        rows = shared_grid(common, tr, va, te, truth) if part in ("all", "shared_grid") else []
        if experiment == "ablation" and part in ("all", "no_center_alpha"):  # spec §8.3: alpha not centred
            rows += fit_rows("dual", {**common, "lam_alpha": 0.03, "lam_beta": 0.03, "center_alpha": False}, tr, va, te,
                             truth, "no_center_alpha")
        if part == "all":
            for v in ((0.0, *LAMS) if experiment == "heterogeneity" else LAMS):
                rows += fit_rows("dual", {**common, "lam_alpha": v, "lam_beta": v}, tr, va, te, truth, f"dual_lam={v:g}")
            others = {"ablation": ("shared_only", "specific_only", "no_orth", "no_integration", *BASELINES),
                      "heterogeneity": BASELINES, "imbalance": (*BASELINES, "shared_only")}[experiment]
            for m in others:
                rows += fit_rows(m, {**common, "lam_alpha": 0.03, "lam_beta": 0.03}, tr, va, te, truth, m)
        f = pd.DataFrame(rows)
        frames.append(f.assign(kappa=kappa) if kappa is not None else f)
    keys = ["rep", "kappa"] if experiment == "heterogeneity" else ["rep"]
    out = pd.concat(frames, ignore_index=True).assign(rep=rep)
    return add_tuned(out, keys) if part == "all" else out


def _simulate(experiment: str, seed: int, kappa=None):
    """The replicate's data, exactly as in :func:`replicate`."""
    if experiment == "ablation":
        return simulate_latent(n_tasks=5, n=100, d=10, covariate_shift=1.0, posterior_drift=1.5, n_drifted=3, noise=0.5,
                               random_state=seed)
    if experiment == "heterogeneity":
        return simulate_latent(n_tasks=5, n=100, d=10, covariate_shift=1.0, posterior_drift=kappa, noise=0.5,
                               random_state=seed)
    return simulate_latent(n_tasks=5, n=[50, 80, 200, 500, 1000], d=10, covariate_shift=1.0, posterior_drift=1.5,
                           n_drifted=3, noise=0.5, random_state=seed)


PROVENANCE = (
    "Provenance of the recorded run: the dual_lam / ablation / baseline fits of `ablation` and `heterogeneity` "
    "were produced at commit 9ba1dcb (coefficient step in torch with C++ prox), `imbalance` at 0ea1f44 and the "
    "`shared_lam` grid at 514126a (coefficient step in one C++ call). The two code paths agree: the "
    "`shared_lam=0.03` fits of `ablation` reproduce the earlier `shared_only` fits (same settings and seeds) to "
    "4e-16 in RMSE. `no_center_alpha` (ablation only) was added at the commit after 50fc75b. Run under `nice -n 10`, torch threads = 1, on a shared 2-core machine."
)


def summarize() -> str:
    lines = ["# Dual-encoder MTL benchmarks (seed 001 first experiments)", "",
             "Generated by `benchmarks/bench_encoders.py`; simulate_latent design (d = 10, 5 tasks, noise SD 0.5, "
             "covariate shift 1.0), 60/20/20 per-task splits. `rmse`: held-out split (noisy y; floor about 0.5); "
             "`rmse_truth`: against the true regression function on 500 fresh rows per task. "
             "Mean (SD over replicates) of the task-averaged RMSE; the last column is the mean paired "
             "difference in RMSE vs truth to `dual` on the same replicate (SE over replicates). `dual` = full model (q = 2 task-specific "
             "dims), lambda tuned on validation over {0.003, 0.03, 0.3}; `dual_cv` = the same family tuned over "
             "lambda and q in {0 (shared encoder only), 2}; `dual_lam=v` / `shared_lam=v` are fixed-lambda fits.", "",
             PROVENANCE, "", f"Summary written on: {machine()}", ""]
    for exp in ("ablation", "heterogeneity", "imbalance"):
        path = RESULTS / f"encoders_{exp}.csv"
        if not path.exists():
            lines += [f"## {exp}: not run", ""]
            continue
        df = pd.read_csv(path)
        keys = ["kappa"] if exp == "heterogeneity" else []
        df = df.drop_duplicates(subset=keys + ["rep", "method", "task"])  # two runners may overlap on a rep
        df = df[~df.method.isin(["dual", "dual_cv"])].drop(columns="chosen", errors="ignore")
        df = add_tuned(df, keys + ["rep"], "dual", ("dual_lam",))
        if df.method.str.startswith("shared_lam").any():
            df = add_tuned(df, keys + ["rep"], "dual_cv", ("dual_lam", "shared_lam"))
        per_rep = df.groupby(keys + ["rep", "method"])[["rmse", "rmse_truth"]].mean().reset_index()
        n_rep = per_rep.rep.nunique()
        lines += [f"## {exp} ({n_rep} replicates)", ""]
        agg = per_rep.groupby(keys + ["method"]).agg(rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                                                     rmse_truth=("rmse_truth", "mean"), rmse_truth_sd=("rmse_truth", "std"))
        # paired difference to `dual` per replicate (same data and split): mean and its standard error
        wide = per_rep.pivot_table(index=keys + ["rep"], columns="method", values="rmse_truth")
        diff = wide.sub(wide["dual"], axis=0).stack().rename("d").reset_index()
        dstat = diff.groupby(keys + ["method"]).d.agg(["mean", "std", "count"])
        agg["diff_dual"] = dstat["mean"]
        agg["diff_dual_se"] = dstat["std"] / np.sqrt(dstat["count"])
        if exp == "heterogeneity":
            for kappa, sub in agg.groupby(level=0):
                sub = sub.droplevel(0).sort_values("rmse_truth")
                lines += [f"### posterior drift kappa = {kappa:g}", "", _table(sub), ""]
                lines += [_goal(sub, kappa), ""]
        else:
            sub = agg.sort_values("rmse_truth")
            lines += [_table(sub), "", _goal(sub, None), ""]
        if exp == "imbalance":
            by_n = df.groupby(["method", "n_train"]).rmse_truth.mean().unstack("n_train")
            lines += ["RMSE vs truth by task training size n_r (mean over replicates):", "",
                      by_n.round(3).to_markdown(), ""]
        for lab in ("dual", "dual_cv"):
            if lab in set(df.method):
                ch = df[df.method == lab].groupby(keys + ["rep"]).chosen.first().value_counts()
                lines += [f"chosen by validation for `{lab}`: " + ", ".join(f"{k}: {v}" for k, v in ch.items()), ""]
    text = "\n".join(lines)
    (RESULTS / "encoders_summary.md").write_text(text)
    return text


def _table(sub: pd.DataFrame) -> str:
    return sub.apply(lambda r: pd.Series({"rmse (held-out)": f"{r.rmse:.3f} ({r.rmse_sd:.3f})",
                                          "rmse vs truth": f"{r.rmse_truth:.3f} ({r.rmse_truth_sd:.3f})",
                                          "paired diff vs dual (SE)": f"{r.diff_dual:+.3f} ({r.diff_dual_se:.3f})"}),
                     axis=1).to_markdown()


def _goal(sub: pd.DataFrame, kappa) -> str:
    base = [b for b in BASELINES if b in sub.index]
    best = min(base, key=lambda b: sub.loc[b, "rmse_truth"])
    b, s = sub.loc[best, "rmse_truth"], sub.loc["stl", "rmse_truth"] if "stl" in sub.index else np.nan
    out = []
    for lab in ("dual", "dual_cv"):
        if lab in sub.index:
            d = sub.loc[lab, "rmse_truth"]
            ok = "meets" if d <= b else "misses"
            out.append(f"Goal check ({lab}, RMSE vs truth): {d:.3f} vs best of STL/pooled/HPS ({best}) {b:.3f} -> {ok} "
                       f"the goal (ratio {d / b:.3f}); {lab} / STL ratio {d / s:.3f}.")
    return "\n\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", choices=["ablation", "heterogeneity", "imbalance"], action="append")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--part", choices=["all", "shared_grid", "no_center_alpha"], default="all",
                    help="add only the shared-only lambda grid / the center_alpha=False ablation to existing replicates")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        print(summarize())
        return
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    for exp in args.only or ["ablation", "heterogeneity", "imbalance"]:
        path = RESULTS / f"encoders_{exp}.csv"
        old = pd.read_csv(path) if path.exists() else None
        if args.part == "all":
            done = set(old.rep.unique()) if old is not None else set()
        else:
            marker = "shared_lam" if args.part == "shared_grid" else "no_center_alpha"
            done = set(old.loc[old.method.str.startswith(marker), "rep"].unique()) if old is not None else set()
        for rep in range(args.reps):
            if rep in done:
                continue
            t0 = time.time()
            df = replicate(exp, rep, args.part)
            if old is not None:
                df = df.reindex(columns=old.columns)
            df.to_csv(path, mode="a", header=not path.exists(), index=False)
            print(f"{exp} rep {rep}: {time.time() - t0:.1f}s", flush=True)
        summarize()
    print(summarize())


if __name__ == "__main__":
    sys.exit(main())
