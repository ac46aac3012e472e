"""Dual-encoder MTL: the seed's three first experiments (seed 001, spec dual_encoder.md §5c).

1. ``ablation``      — every ablation and baseline on the same splits (moderate covariate shift,
                       posterior drift in 3 of 5 tasks).
2. ``heterogeneity`` — posterior drift kappa in {0, 1, 3, 6} x centre-penalty strength lambda in
                       {0, 0.003, 0.03, 0.3}, against STL / pooled / HPS.
3. ``imbalance``     — task sizes n_r = 50 .. 1000 in one problem.

Data: :func:`hetmtl.encoders.simulate.simulate_latent` (model-matched design, noise SD 0.5),
60/20/20 per-task split of each replicate's data (train / early-stopping validation / held-out
test). ``dual`` is the full model with lambda chosen by summed validation MSE over
{0.003, 0.03, 0.3} (spec §2); ``dual_lam=<v>`` are fixed-lambda fits. Recorded per fit and task:
test RMSE on the held-out split (noisy y: ``rmse``) and RMSE against the true regression
function on 500 fresh rows per task (``rmse_truth``).

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_encoders.py [--reps 20] [--only NAME]``.
Rows are appended to ``benchmarks/results/encoders_<experiment>.csv`` replicate by replicate
(so an interrupted run keeps what finished); ``--summarize`` writes
``benchmarks/results/encoders_summary.md`` from whatever is there.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

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


def add_tuned(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``dual`` = the dual_lam=<v> fit (v in LAMS) with the smallest summed validation MSE."""
    cand = df[df.method.isin([f"dual_lam={v:g}" for v in LAMS])]
    if cand.empty:
        return df
    best = cand.groupby(keys + ["method"]).val_mse_sum.first().reset_index()
    best = best.loc[best.groupby(keys).val_mse_sum.idxmin()]
    tuned = cand.merge(best[keys + ["method"]], on=keys + ["method"]).assign(
        chosen=lambda d: d.method, method="dual")
    return pd.concat([df, tuned], ignore_index=True)


def replicate(experiment: str, rep: int) -> pd.DataFrame:
    seed = 1000 * rep + 17
    rows = []
    if experiment == "ablation":
        sim = simulate_latent(n_tasks=5, n=100, d=10, covariate_shift=1.0, posterior_drift=1.5, n_drifted=3, noise=0.5,
                              random_state=seed)
        tr, va, te = sim.data.split(random_state=seed)
        truth = sim.test_data(500, random_state=seed + 1)
        common = dict(random_state=seed)
        for v in LAMS:
            rows += fit_rows("dual", {**common, "lam_alpha": v, "lam_beta": v}, tr, va, te, truth, f"dual_lam={v:g}")
        for m in ("shared_only", "specific_only", "no_orth", "no_integration", *BASELINES):
            rows += fit_rows(m, {**common, "lam_alpha": 0.03, "lam_beta": 0.03}, tr, va, te, truth, m)
        out = pd.DataFrame(rows)
        return add_tuned(out.assign(rep=rep), ["rep"])
    if experiment == "heterogeneity":
        frames = []
        for kappa in (0.0, 1.0, 3.0, 6.0):
            rows = []
            sim = simulate_latent(n_tasks=5, n=100, d=10, covariate_shift=1.0, posterior_drift=kappa, noise=0.5,
                                  random_state=seed)
            tr, va, te = sim.data.split(random_state=seed)
            truth = sim.test_data(500, random_state=seed + 1)
            common = dict(random_state=seed)
            for v in (0.0, *LAMS):
                rows += fit_rows("dual", {**common, "lam_alpha": v, "lam_beta": v}, tr, va, te, truth, f"dual_lam={v:g}")
            for m in BASELINES:
                rows += fit_rows(m, common, tr, va, te, truth, m)
            frames.append(pd.DataFrame(rows).assign(kappa=kappa))
        out = pd.concat(frames, ignore_index=True).assign(rep=rep)
        return add_tuned(out, ["rep", "kappa"])
    if experiment == "imbalance":
        sizes = [50, 80, 200, 500, 1000]
        sim = simulate_latent(n_tasks=5, n=sizes, d=10, covariate_shift=1.0, posterior_drift=1.5, n_drifted=3, noise=0.5,
                              random_state=seed)
        tr, va, te = sim.data.split(random_state=seed)
        truth = sim.test_data(500, random_state=seed + 1)
        common = dict(random_state=seed, task_weights="sqrt_n")
        for v in LAMS:
            rows += fit_rows("dual", {**common, "lam_alpha": v, "lam_beta": v}, tr, va, te, truth, f"dual_lam={v:g}")
        for m in (*BASELINES, "shared_only"):
            rows += fit_rows(m, {**common, "lam_alpha": 0.03, "lam_beta": 0.03}, tr, va, te, truth, m)
        return add_tuned(pd.DataFrame(rows).assign(rep=rep), ["rep"])
    raise ValueError(experiment)


def summarize() -> str:
    lines = ["# Dual-encoder MTL benchmarks (seed 001 first experiments)", "",
             "Generated by `benchmarks/bench_encoders.py`; simulate_latent design (d = 10, 5 tasks, noise SD 0.5, "
             "covariate shift 1.0), 60/20/20 per-task splits. `rmse`: held-out split (noisy y; floor about 0.5); "
             "`rmse_truth`: against the true regression function on 500 fresh rows per task. "
             "Mean (SD over replicates) of the task-averaged RMSE. `dual` = full model, lambda tuned on validation "
             "over {0.003, 0.03, 0.3}.", ""]
    for exp in ("ablation", "heterogeneity", "imbalance"):
        path = RESULTS / f"encoders_{exp}.csv"
        if not path.exists():
            lines += [f"## {exp}: not run", ""]
            continue
        df = pd.read_csv(path)
        keys = ["kappa"] if exp == "heterogeneity" else []
        df = df.drop_duplicates(subset=keys + ["rep", "method", "task"])  # two runners may overlap on a rep
        per_rep = df.groupby(keys + ["rep", "method"])[["rmse", "rmse_truth"]].mean().reset_index()
        n_rep = per_rep.rep.nunique()
        lines += [f"## {exp} ({n_rep} replicates)", ""]
        agg = per_rep.groupby(keys + ["method"]).agg(rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                                                     rmse_truth=("rmse_truth", "mean"), rmse_truth_sd=("rmse_truth", "std"))
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
        if "chosen" in df.columns:
            ch = df[df.method == "dual"].groupby(keys + ["rep"]).chosen.first().value_counts()
            lines += ["lambda chosen by validation for `dual`: " + ", ".join(f"{k}: {v}" for k, v in ch.items()), ""]
    text = "\n".join(lines)
    (RESULTS / "encoders_summary.md").write_text(text)
    return text


def _table(sub: pd.DataFrame) -> str:
    return sub.apply(lambda r: pd.Series({"rmse (held-out)": f"{r.rmse:.3f} ({r.rmse_sd:.3f})",
                                          "rmse vs truth": f"{r.rmse_truth:.3f} ({r.rmse_truth_sd:.3f})"}), axis=1).to_markdown()


def _goal(sub: pd.DataFrame, kappa) -> str:
    if "dual" not in sub.index:
        return ""
    base = [b for b in BASELINES if b in sub.index]
    best = min(base, key=lambda b: sub.loc[b, "rmse_truth"])
    d, b, s = sub.loc["dual", "rmse_truth"], sub.loc[best, "rmse_truth"], sub.loc["stl", "rmse_truth"] if "stl" in sub.index else np.nan
    ok = "meets" if d <= b else "misses"
    return (f"Goal check: dual {d:.3f} vs best of STL/pooled/HPS ({best}) {b:.3f} -> {ok} the goal "
            f"(ratio {d / b:.3f}); dual / STL ratio {d / s:.3f}.")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", choices=["ablation", "heterogeneity", "imbalance"], action="append")
    ap.add_argument("--summarize", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        print(summarize())
        return
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    for exp in args.only or ["ablation", "heterogeneity", "imbalance"]:
        path = RESULTS / f"encoders_{exp}.csv"
        done = set(pd.read_csv(path).rep.unique()) if path.exists() else set()
        for rep in range(args.reps):
            if rep in done:
                continue
            t0 = time.time()
            df = replicate(exp, rep)
            df.to_csv(path, mode="a", header=not path.exists(), index=False)
            print(f"{exp} rep {rep}: {time.time() - t0:.1f}s", flush=True)
        summarize()
    print(summarize())


if __name__ == "__main__":
    sys.exit(main())
