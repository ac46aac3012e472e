"""Dual-encoder MTL against strong baselines (issue #26): the tuned model
(:class:`hetmtl.encoders.DualEncoderMTLCV`) beside the package's STL / pooled / HPS networks,
per-task ridge and lasso (``RidgeCV``/``LassoCV``) and gradient boosting per task and pooled with a
task one-hot (``HistGradientBoostingRegressor``), RMSE against the true regression function.

Data: three families from the generator below (written for this study, independently of
:mod:`hetmtl.encoders.simulate`). Six tasks of 60, 90, 120, 170, 230 and 300 rows; ten covariates
with task-dependent means: x1..x4 correlated Gaussians (AR(1), rho = 0.6), x5 and x6 skewed
(centred log-normal and exponential), x7 and x8 binary (p = 0.3, 0.5), x9 and x10 Gaussian.

- ``shared``    shared nonlinear latent plus a task-specific nonlinear feature per task:
                f_r(x) = b_r + z(x)' beta + 0.8 u_r(x), z three nonlinear functions of x1..x8
                shared by all tasks (same beta), u_r a task's own even function of one of x1..x4,
                x9, x10 (no linear part);
- ``unrelated`` as ``shared`` for tasks 1-4; tasks 5 and 6 follow their own unrelated functions
                (different latent features and signs);
- ``linear``    f_r(x) = b_r + x' g_r with g_r = g for tasks 1-4 and g + a task deviation of norm
                0.6 for tasks 5 and 6.

Noise SD 0.5 (signal SD about 1). Per replicate: training rows as above, fresh 500 rows per task
for the truth. Methods: ``dual_cv`` = :class:`~hetmtl.encoders.DualEncoderMTLCV` at its default
grid (linear multi-task model at λ in {0.01, 0.03, 0.1, 0.3}; dual encoder with linear path,
shared encoder 8 dims on 64 hidden units, q in {0, 2} with task encoders on 16 hidden units, λ in
{0.01, 0.03, 0.1}); ``stl``, ``pooled``, ``hps`` = the package's networks
(:data:`hetmtl.encoders.METHODS`, 4 + 2 latent dims on 32 hidden units, package defaults
otherwise); ``ridge``/``lasso`` = per-task ``RidgeCV``/``LassoCV``; ``gbm``/``gbm_pooled`` =
``HistGradientBoostingRegressor`` per task / pooled with a task one-hot (learning rate 0.05, up to
500 iterations with early stopping on 20 %, min_samples_leaf 10). The package's networks use a
per-task 80/20 split for early stopping; ridge, lasso
and gradient boosting (internal CV / early stopping) and the tuned model (3-fold CV over a small
grid, then 5 refits on all rows at the chosen setting and epoch count from different
initialisations, predictions averaged) use every labelled row.
Fused: a task whose shared-head and linear coefficients both sit at their centres.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_encoders_strong
[--reps 24] [--jobs 2] [--families shared,unrelated,linear]``; writes
``benchmarks/results/encoders_strong_baselines.{csv,md}`` (a rerun resumes from the csv).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "encoders_strong_baselines"
SIZES = (60, 90, 120, 170, 230, 300)
FAMILIES = ("shared", "unrelated", "linear")
NOISE = 0.5
N_TRUTH = 500


# ----------------------------------------------------------------------------- generator
def _covariates(rng: np.random.Generator, n: int, shift: np.ndarray) -> np.ndarray:
    rho = 0.6
    cov = rho ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    g = rng.multivariate_normal(shift[:4], cov, size=n)
    skew1 = np.exp(0.6 * rng.normal(size=n) + 0.3 * shift[4]) - np.exp(0.18)
    skew2 = rng.exponential(1.0 + 0.2 * abs(shift[5]), size=n) - 1.0
    b1 = (rng.random(n) < 0.3 + 0.1 * np.tanh(shift[6])).astype(float)
    b2 = (rng.random(n) < 0.5).astype(float)
    rest = rng.normal(shift[8:10], 1.0, size=(n, 2))
    return np.column_stack([g, skew1, skew2, b1, b2, rest])


def _latent(X: np.ndarray) -> np.ndarray:
    return np.column_stack([np.tanh(X[:, 0] + X[:, 1]), X[:, 2] * X[:, 6] - 0.3, np.sin(1.5 * X[:, 4]) + 0.4 * X[:, 3]])


def _own(X: np.ndarray, r: int) -> np.ndarray:
    """Task r's own even nonlinear feature of one coordinate (centre at the task's mean)."""
    col = (0, 1, 2, 3, 8, 9)[r]
    x = X[:, col]
    return [np.cos(2 * x), x**2 / 2 - 0.5, np.abs(x) - 0.8, np.cos(2.5 * x), 1 - x**2 / 2, np.exp(-x**2)][r]


def _unrelated(X: np.ndarray, r: int) -> np.ndarray:
    if r == 4:
        return -1.2 * np.tanh(2 * X[:, 8]) + 0.8 * X[:, 5] * X[:, 7]
    return 1.0 * np.sin(2 * X[:, 9]) - 0.9 * np.tanh(X[:, 3] - X[:, 0])


def make_family(family: str, rep: int) -> dict:
    """One replicate: training arrays per task and a truth function ``f(X, r)``."""
    rng = np.random.default_rng(20261205 + 7919 * rep + 131 * FAMILIES.index(family))
    R, d = len(SIZES), 10
    shifts = 0.5 * rng.normal(size=(R, d))
    shifts[:, 6:8] = 0.0
    b = 0.5 * rng.normal(size=R)
    beta = np.array([1.0, 0.8, 0.9])
    g = rng.normal(size=d) * 0.5
    devs = rng.normal(size=(R, d))
    devs = 0.6 * devs / np.linalg.norm(devs, axis=1, keepdims=True)

    def f(X: np.ndarray, r: int) -> np.ndarray:
        if family == "linear":
            return b[r] + X @ (g + (devs[r] if r >= 4 else 0.0))
        if family == "unrelated" and r >= 4:
            return b[r] + _unrelated(X, r)
        return b[r] + _latent(X) @ beta + 0.8 * _own(X, r)

    Xs = [_covariates(rng, n, shifts[r]) for r, n in enumerate(SIZES)]
    ys = [f(X, r) + NOISE * rng.normal(size=len(X)) for r, X in enumerate(Xs)]
    Xt = [_covariates(rng, N_TRUTH, shifts[r]) for r in range(R)]
    truth = [f(X, r) for r, X in enumerate(Xt)]
    related = [not (family != "shared" and r >= 4) for r in range(R)]
    return {"X": Xs, "y": ys, "X_truth": Xt, "truth": truth, "related": related}


# ----------------------------------------------------------------------------- methods
#: The tuner's grid in this study: its default grid (the linear multi-task model and the dual
#: encoder with linear path, shared encoder only or with two task-specific dimensions).
GRID = None
#: Refits averaged by the tuned model (a seed ensemble; the tuner's default is one).
N_REFITS = 5
#: Settings of the package's STL / pooled / HPS networks (the dual-encoder benchmark's sizes).
NET = {"n_shared": 4, "n_specific": 2, "hidden": (32,)}
METHODS = ("dual_cv", "stl", "pooled", "hps", "ridge", "lasso", "gbm", "gbm_pooled")
BASELINES = ("stl", "pooled", "hps", "ridge", "gbm", "gbm_pooled")  # the goal's reference set


def run_one(family: str, rep: int, methods=METHODS) -> list[dict]:
    """Fit every method on one replicate; per method and task the RMSE against the truth."""
    import torch

    from hetmtl.data import MultiTaskData
    from hetmtl.encoders import DualEncoderMTLCV, adaptivity_report, make_method

    torch.set_num_threads(1)
    D = make_family(family, rep)
    tasks = [f"task{r + 1}" for r in range(len(SIZES))]
    data = MultiTaskData(D["X"], D["y"], tasks)
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        extra: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "dual_cv":
                model = DualEncoderMTLCV(GRID, cv=3, n_refits=N_REFITS, random_state=rep).fit(data)
                rep_ = adaptivity_report(model)
                bp = model.best_params_
                chosen = ("linear" if bp["n_shared"] == 0 else f"q={bp['n_specific']}") + f",lam={bp['lam_beta']:g}"
                extra = {"chosen": chosen, "n_epochs": model.best_n_epochs_}
                fused = rep_.fused.to_numpy()
            else:
                model = make_method(name, **NET, random_state=rep).fit(data)
                fused = None
        secs = time.perf_counter() - t0
        for r, t in enumerate(tasks):
            err = float(np.sqrt(np.mean((model.predict(D["X_truth"][r], t) - D["truth"][r]) ** 2)))
            rows.append({"family": family, "rep": rep, "method": name, "task": t, "n_train": SIZES[r],
                         "related": bool(D["related"][r]), "rmse_truth": err,
                         "fused": None if fused is None else bool(fused[r]), "seconds": secs, **extra})
    return rows


# ----------------------------------------------------------------------------- report
PROVENANCE = ("Provenance: all 72 replicate-families recorded in one run on 2026-12-05 (base commit of main plus "
              "the working-tree changes of issue #26) on a shared 2-core x86_64 machine under `nice -n 10`, one "
              "torch/OpenMP thread per fit, 2 joblib workers, other jobs running alongside (seconds are indicative).")

#: Causes of the goals' outcome (written after the recorded run of 24 replicates per family).
GOAL_NOTES = """\
## Goals: what was met and why the rest was not

- **Linear family: met** (0.71x per-task ridge, better in 24/24 replicates). The tuner picks the
  linear multi-task model in every replicate; pulling the slopes towards a common centre helps
  most on the small tasks (60 rows: 0.120 vs ridge 0.241). The price is on the two unrelated tasks
  (230 / 300 rows: 0.132 / 0.108 vs ridge 0.113 / 0.093): their slopes are shrunk towards the
  centre although they are not fused.
- **Shared family: missed, 0.996x** the best other method (pooled gradient boosting with a task
  one-hot; better in 13/24 replicates, per-replicate ratio 0.79-1.16). The tuned model is better on
  the tasks of 90, 120 and 230 rows, level on 300 rows (0.473 vs 0.475), worse on 60 rows (0.722
  vs 0.686) and clearly worse on task 4 (170 rows: 0.711 vs 0.606), whose own feature cos(2.5 x4)
  is a high-frequency function that none of the package's networks learns from these sizes (HPS
  0.788, STL 0.906) while trees partly do.
- **Unrelated family: missed, 1.11x** per-task gradient boosting (1/24 replicates; ratio
  0.94-1.28). The gap is on the two unrelated tasks (230 / 300 rows: 0.547 / 0.709 vs 0.456 /
  0.389) and on task 4 as above (0.781 vs 0.653); on the tasks of 60-120 rows the tuned model is
  better than boosting. Every network of the package misses the 300-row unrelated task's
  function sin(2 x10) - 0.9 tanh(x4 - x1) (HPS 0.731, STL 0.741): it is neither learnt by the
  shared encoder (whose loss weights that task by 300/970) nor by its own encoder (q = 2 was chosen
  in 8/24 replicates; its S_r, on 16 hidden units, is stopped on a few dozen validation rows).
- **Fused flags: unrelated tasks left unfused (met: 0 % linear, 10 % unrelated); related tasks
  fused in 66 % (linear), 40 % (shared), 14 % (unrelated): missed.** The tuner chooses λ for
  prediction (λ = 0.03 in most replicates); at that λ the noise in the related tasks' heads is
  not always below the fusion threshold. At λ = 0.1 the linear model fuses every related task but
  also half of the unrelated ones and its RMSE doubles (development run: 0.237 vs 0.104 at
  λ = 0.01). In the nonlinear families each related task also has its own feature, which the
  stage-1 heads (shared encoder only) partly absorb, so their beta_r differ legitimately. (Fused
  flags are read from the first of the five refits.)
- Averaging 5 refits matters: the first full run of this study with one refit (otherwise the same
  code, seeds and candidates) gave 0.629 (1.04x) in ``shared`` and 0.728 (1.14x) in
  ``unrelated``; the linear model is convex, so its refits coincide.
- Cost: the tuned model is 10 candidates x 3 folds + 5 refits, 12-15 s per replicate on one
  thread (each baseline: under 1 s).
"""


#: What the development runs behind the model changes measured (same generator, fixed settings;
#: RMSE against the truth, mean over tasks and replicates). Kept here so that ``--summarize``
#: reproduces the whole note.
INVESTIGATION = """\
## Why the model changed (development runs on this generator)

Settings unless stated: shared encoder of 8 dims on one hidden layer of 64, linear path, λ = 0.03,
default optimiser (Adam, lr 1e-2, full batch), per-task 80/20 split for early stopping.

**Early stopping at epochs 1-25 is overfitting, not under-training.** Watching the whole curve
(``unrelated`` replicate 0, patience 1000): the pooled training MSE (standardised y) falls from
0.30 at epoch 0 to 0.11 at epoch 40 and 0.008 at epoch 800, while the summed validation MSE falls
from 2.76 to its minimum 2.19 at epoch 40 and climbs to 3.58 at epoch 800. A smaller learning rate
only moves the minimum later (lr 3e-3: epoch 54, summed validation MSE 2.24) and was worse on
average (``shared``, 10 replicates: 0.657 vs 0.635 at lr 1e-2); decoupled weight decay 0.1 / 1.0
changed RMSE by at most 0.01 (``unrelated``, 4 replicates: 0.704 -> 0.702 / 0.695); narrower (16)
or deeper (64x64) encoders were worse (0.721, 0.736). With 48-240 training rows per task the
flexible model starts overfitting after a few dozen full-batch steps. Defaults kept lr = 1e-2
and moved patience 30 -> 50 and max_epochs 500 -> 1000 (never binding here); what changed the
results is where the epoch count is chosen: the tuner early-stops on an inner split of each
training fold and refits on all rows for the median epoch count, and the linear model (no
encoders, a convex problem) is solved to convergence instead of being stopped early (linear
family, 4 replicates, λ = 0.03: 0.134 stopped early, 0.127 converged; related tasks fused 50 %
-> 81 %).

**Task-specific encoders (q > 0) lost to q = 0** because, in the paper's joint alternation, each
S_r (a network fitted to one task's 48-240 rows) overfits before the shared encoder has
converged, and one stopping time is chosen for the sum over tasks (``shared``, 10 replicates:
q = 0 0.635, q = 2 joint 0.668 with S_r width 16; the gap per replicate 0.05-0.09 with width 64).
Fix: staged training (now the default; ``training="joint"`` is the paper's schedule): the shared
encoder, linear path and centres first, then S_r and the heads with C and the centres frozen,
each task keeping its own best epoch and S_r switched off (alpha_r = 0) where it does not lower
that task's validation loss. Staged q = 2 recovers most of the loss (``shared``, 5 replicates:
joint 0.679 -> staged 0.655, q = 0 0.637; ``unrelated``: 0.722 -> 0.700, q = 0 0.701), and the
tuner still chooses q by CV. S_r do not beat q = 0 on these data: the per-task validation sets of
12-60 rows pick S_r epochs noisily (S_r is switched on in tasks without an own feature), and an
even function of one of ten covariates is hard to learn from <= 300 rows for any per-task
learner (per-task gradient boosting is also worse than pooled gradient boosting in ``shared``).
alpha_r are no longer pulled to a common centre by default (``center_alpha=False``): the S_r are
different networks, so a common centre of their coefficients has no meaning.
"""


def summarize(df: pd.DataFrame) -> str:
    """The Markdown report of the stored rows."""
    lines = [f"# Dual-encoder MTL against strong baselines ({NAME})", ""]
    lines += [__doc__.split("\n\n", 1)[1].split("Run:")[0].strip(), ""]
    lines += [PROVENANCE, ""]
    lines += ["Regenerate: `PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_encoders_strong --reps 24 "
              "--jobs 2` (resumes from the csv; `--summarize` rewrites this file only).", ""]
    per_rep = df.groupby(["family", "rep", "method"]).rmse_truth.mean().unstack("method")
    lines += ["## Mean RMSE against the truth (mean over tasks, then replicates)", ""]
    tab = per_rep.groupby("family").mean().T
    counts = per_rep.groupby("family").size()
    lines += [tab.round(3).to_markdown(), "", "Replicates: " + ", ".join(f"{f} {n}" for f, n in counts.items()), ""]
    lines += ["## Goal: tuned model against the best other method", ""]
    goal_rows = []
    for fam, g in per_rep.groupby("family"):
        means = g.mean()
        base = means[[m for m in BASELINES if m in means]]
        best = base.idxmin()
        ratio = means["dual_cv"] / base.min()
        wins = int((g["dual_cv"] < g[list(base.index)].min(axis=1)).sum())
        target = 1.02 if fam == "linear" else 0.95
        goal_rows.append({"family": fam, "dual_cv": means["dual_cv"], "best other": best, "its RMSE": base.min(),
                          "ratio": ratio, "goal": f"<= {target}", "met": bool(ratio <= target),
                          "replicates where dual_cv beats every other": f"{wins}/{len(g)}"})
    lines += [pd.DataFrame(goal_rows).round(3).to_markdown(index=False), ""]
    dc = df[df.method == "dual_cv"]
    lines += ["## Fused tasks (tuned model): share of task fits whose shared-head and linear coefficients sit at "
              "their centres", ""]
    fz = dc.groupby(["family", "related"]).fused.mean().unstack("related")
    fz.columns = [("related" if c else "unrelated") for c in fz.columns]
    lines += [fz.round(3).to_markdown(), "", "Goal: unrelated <= 0.25, related >= 0.75.", ""]
    lines += ["## Settings the tuner chose (count of replicates)", ""]
    ch = dc.drop_duplicates(["family", "rep"]).groupby(["family", "chosen"]).size().unstack("family").fillna(0).astype(int)
    lines += [ch.to_markdown(), ""]
    ep = dc.drop_duplicates(["family", "rep"]).groupby("family").n_epochs.describe()[["min", "50%", "max"]]
    lines += ["Refit epochs (median over folds of the best epoch + 1): " + "; ".join(
        f"{f}: median {r['50%']:.0f} (range {r['min']:.0f}-{r['max']:.0f})" for f, r in ep.iterrows()), ""]
    lines += ["## RMSE by family and task (training rows; tasks 5-6 = 230 and 300 rows are the unrelated ones in "
              "`unrelated` and `linear`)", ""]
    lines += [df.groupby(["family", "n_train", "method"]).rmse_truth.mean().unstack("method").round(3).to_markdown(), ""]
    secs = df.drop_duplicates(["family", "rep", "method"]).groupby("method").seconds.mean()
    lines += ["Mean seconds per fit (1 thread, shared machine): " + ", ".join(f"{m} {s:.1f}" for m, s in secs.items()), ""]
    lines += [GOAL_NOTES, INVESTIGATION]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--summarize", action="store_true", help="only rewrite the md from the csv")
    ap.add_argument("--notes", default="", help="a file whose text is appended to the report")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    csv = RESULTS / f"{NAME}.csv"
    df = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
    if not args.summarize:
        from joblib import Parallel, delayed

        done = set() if df.empty else set(zip(df.family, df.rep))
        todo = [(f, r) for r in range(args.reps) for f in args.families.split(",") if (f, r) not in done]
        jobs = min(max(args.jobs, 1), 2)
        for start in range(0, len(todo), 2 * jobs):  # write after every few replicates: resumable
            chunk = todo[start:start + 2 * jobs]
            out = Parallel(n_jobs=jobs)(delayed(run_one)(f, r) for f, r in chunk)
            new = pd.DataFrame([row for rows in out for row in rows])
            df = new if df.empty else pd.concat([df, new], ignore_index=True)
            df.to_csv(csv, index=False)
            print(f"{len(set(zip(df.family, df.rep)))} replicate-families done", flush=True)
    text = summarize(df)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    (RESULTS / f"{NAME}.md").write_text(text)


if __name__ == "__main__":
    main()
