"""Late fusion, statistics: avg-/max-MSE of θ̃_k and CI coverage against heterogeneity (issue 3).

Run through the study runner (:mod:`hetmtl.studies`), resumable, paired (every method sees the
same data and the same per-site folds in a replicate):

    nice -n 10 python -m benchmarks.bench_fusion_stats --reps 200            # full protocol
    nice -n 10 python -m benchmarks.bench_fusion_stats --reps 200 --time-budget 2400

Settings (ATE, K = 10 sites, n_k ~ U{40..80}; latefusion spec §6):
- Scenario 1: θ_k = θ_0 + η ξ_k, η ∈ {0, 0.1, 0.25, 0.5, 1, 2};
- Scenario 3: Scenario 1 at η = 0.25 with a fraction ε ∈ {0.1, 0.2} of outlier sites (+5·u_k);
- Scenario 4: Scenario 1 at η = 0.25 with nuisance heterogeneity ``nuisance_shift`` ∈ {0, 1};
- Scenario 1 with K = 20 sites (study ``fusion-stats-s1-k20``, run last).

Methods (per-site DML nuisances: the sieve basis of :mod:`hetmtl.latefusion.nuisance` fitted per
site — C_η = 0, ridge α = 1, the best per-site α on a small grid — i.e. a cheap linear/logistic
sieve learner; 5-fold cross-fitting, folds shared by all methods; the multi-task fits use the
default ridge, α = 0.1 for outcome regressions and 1.0 for the propensity):
- ``itl``: per-site DML, Wald CI (valid by DML theory);
- ``pooled``: complete pooling (fixed-effect GLS centre, C = ∞), Wald CI of the centre;
- ``squared``: LateFusion(penalty="squared"), C by summary-statistic CV; Wald CI from the exact
  delta method (conditional on C; an interval for E[θ̃_k]) and the BLUP prediction interval
  (``coverage_blup``; valid under the random-effects model, which Scenario 1 is);
- ``squared-reml``: the same with τ² estimated by REML (random-effects model) instead of CV;
- ``group``: LateFusion(penalty="group"), C by CV; parametric-bootstrap percentile CI
  (approximate) and, for fused sites, the post-fusion CI of the centre (``coverage_postfusion``;
  conditional on the selected grouping);
- ``group-mt``: ``group`` on per-site DML whose nuisances are multi-task sieve fits
  (:func:`~hetmtl.latefusion.nuisance.fit_multitask_dml`, C_η tuned on the training folds);
- ``itl-mt``: per-site DML with the multi-task nuisances (no fusion).

Per site k: MSE_k = mean over replicates of (θ̃_k − θ_k)²; avg-MSE = mean_k MSE_k, max-MSE =
max_k MSE_k (spec §8 #13). Coverage is averaged over sites and replicates. Results:
``benchmarks/results/fusion_stats.{csv,md}`` with the exact number of replicates per point.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks._util import failed_replicates
from hetmtl.studies import (MethodSpec, Replicate, Study, load_results, paired_differences, run_study,
                            unit_summary)
from hetmtl.studies.builtin import _truth, fused_interval_frame, interval_rows

RESULTS = Path(__file__).resolve().parent / "results"
LEVEL = 0.95
ETAS = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
MT_OPTIONS = {"C_grid": [0.03, 0.1, 0.3, 1.0, 3.0, float("inf")], "n_inner": 1}
SITE_OPTIONS = {"C_eta": 0.0, "alpha": 1.0}
COVERAGE_VALID = (0.93, 0.97)


# ------------------------------------------------------------------------------ fits (cached)
def _dml(rep: Replicate, nuisance: str):
    """Per-site DML on the replicate: sieve nuisances per site ("site") or multi-task ("mt")."""
    key = ("dml", nuisance)
    if key not in rep.cache:
        from hetmtl.latefusion.nuisance import fit_multitask_dml

        opts = SITE_OPTIONS if nuisance == "site" else MT_OPTIONS
        rep.cache[key] = fit_multitask_dml(rep.data.data, model="ate", n_folds=5, random_state=rep.seed,
                                           nuisance_options=opts, tuning_folds="reuse")
    return rep.cache[key]


def _fusion(rep: Replicate, nuisance: str, **options):
    key = ("fusion", nuisance, tuple(sorted(options.items())))
    if key not in rep.cache:
        import warnings

        from hetmtl.latefusion import LateFusion

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep.cache[key] = LateFusion(random_state=rep.seed, **options).fit(_dml(rep, nuisance).summaries())
    return rep.cache[key]


def _z() -> float:
    return float(stats.norm.ppf(0.5 + LEVEL / 2))


# ------------------------------------------------------------------------------ methods
def itl_method(rep: Replicate, nuisance: str = "site") -> list[dict]:
    est = _dml(rep, nuisance)
    return interval_rows(est.summary_frame(LEVEL), _truth(rep.data, est), LEVEL)


def pooled_method(rep: Replicate) -> list[dict]:
    fit = _fusion(rep, "site", penalty="squared", C=float("inf"), ci="conditional")
    return interval_rows(fused_interval_frame(fit, LEVEL), _truth(rep.data, _dml(rep, "site")), LEVEL)


def squared_method(rep: Replicate, tau2: str | None = None) -> list[dict]:
    fit = _fusion(rep, "site", penalty="squared", ci="conditional", **({"C": "cv"} if tau2 is None else {"tau2": tau2}))
    rows = interval_rows(fused_interval_frame(fit, LEVEL), _truth(rep.data, _dml(rep, "site")), LEVEL)
    pi = fit.prediction_interval(LEVEL)
    lo, hi = pi.columns[-2], pi.columns[-1]
    for r, (_, p) in zip(rows, pi.iterrows()):
        r["coverage_blup"] = float(p[lo] <= r["truth"] <= p[hi])
        r["width_blup"] = float(p[hi] - p[lo])
        r["C"] = float(fit.C_)
    return rows


def group_method(rep: Replicate, nuisance: str = "site", n_boot: int = 300) -> list[dict]:
    fit = _fusion(rep, nuisance, penalty="group", ci="bootstrap", n_boot=n_boot)
    rows = interval_rows(fused_interval_frame(fit, LEVEL), _truth(rep.data, _dml(rep, nuisance)), LEVEL)
    centre = fit.centre_frame(LEVEL)
    pse = float(centre["post-fusion std err"].iloc[0])
    c0 = float(fit.centre_[0])
    for r in rows:
        ok = bool(r["fused"]) and np.isfinite(pse)
        r["coverage_postfusion"] = float(abs(r["truth"] - c0) <= _z() * pse) if ok else np.nan
        r["C"] = float(fit.C_)
    return rows


METHODS = [
    MethodSpec("itl", itl_method, {"nuisance": "site"}),
    MethodSpec("pooled", pooled_method),
    MethodSpec("squared", squared_method),
    MethodSpec("squared-reml", squared_method, {"tau2": "reml"}),
    MethodSpec("group", group_method, {"nuisance": "site"}),
    MethodSpec("group-mt", group_method, {"nuisance": "mt"}),
    MethodSpec("itl-mt", itl_method, {"nuisance": "mt"}),
]
METRICS = ["mse", "bias", "coverage", "ci_width", "coverage_blup", "coverage_postfusion", "fused"]


def studies() -> list[Study]:
    common = dict(generator="latefusion", methods=METHODS, n_reps=200, metrics=METRICS)
    return [
        Study(name="fusion-stats-s1", grid={"eta": ETAS}, fixed={"scenario": 1, "n_sites": 10}, seed=301, **common),
        Study(name="fusion-stats-s3", grid={"outlier_frac": [0.1, 0.2]},
              fixed={"scenario": 3, "n_sites": 10, "eta": 0.25}, seed=303, **common),
        Study(name="fusion-stats-s4", grid={"nuisance_shift": [0.0, 1.0]},
              fixed={"scenario": 4, "n_sites": 10, "eta": 0.25}, seed=304, **common),
        Study(name="fusion-stats-s1-k20", grid={"eta": ETAS}, fixed={"scenario": 1, "n_sites": 20}, seed=320, **common),
    ]


# ------------------------------------------------------------------------------ report
def collect(out: Path) -> pd.DataFrame:
    """One row per (scenario setting, method): replicates, avg-/max-MSE and coverage columns."""
    rows = []
    for study in studies():
        d = out / study.name
        if not (d / "results.sqlite").exists():
            continue
        res = load_results(d)
        f = res.frame
        if f.empty:
            continue
        mse = unit_summary(res, "mse")
        diff = paired_differences(res, "mse", baseline="itl")
        for (setting, method), g in f.groupby(["setting", "method"], sort=False):
            u = mse[(mse.setting == setting) & (mse.method == method)]
            row = {"study": study.name, "scenario": study.fixed["scenario"], "setting": setting, "method": method,
                   "n_reps": int(g["replicate"].nunique()),
                   "avg_mse": float(u["avg"].iloc[0]) if len(u) else np.nan,
                   "max_mse": float(u["max"].iloc[0]) if len(u) else np.nan}
            dd = diff[(diff.setting == setting) & (diff.method == method)]
            row["avg_mse_minus_itl"] = float(dd["mean_diff"].iloc[0]) if len(dd) else np.nan
            row["diff_ci_low"] = float(dd["ci_low"].iloc[0]) if len(dd) else np.nan
            row["diff_ci_high"] = float(dd["ci_high"].iloc[0]) if len(dd) else np.nan
            for m in ("coverage", "ci_width", "coverage_blup", "coverage_postfusion", "fused"):
                row[m] = float(g[m].mean()) if m in g and g[m].notna().any() else np.nan
            row["n_postfusion"] = int(g["coverage_postfusion"].notna().sum()) if "coverage_postfusion" in g else 0
            for m in ("coverage", "coverage_blup"):  # Monte Carlo SE, site-replicates treated as independent
                n_units = int(g[m].notna().sum()) if m in g else 0
                p = row[m]
                row[f"{m}_mcse"] = float(np.sqrt(p * (1 - p) / n_units)) if n_units and np.isfinite(p) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _verdict(value: float, mcse: float, lo: float, hi: float) -> str:
    if lo <= value <= hi:
        return "met"
    gap = lo - value if value < lo else value - hi
    return "missed" if gap > 2 * mcse else "within 2 MC SE"


def goals(table: pd.DataFrame) -> list[str]:
    """Honest pass/miss lines for the issue's goals."""
    lines = []
    s1 = table[table.study == "fusion-stats-s1"]
    for pen in ("squared", "squared-reml", "group", "group-mt"):
        miss = []
        for setting, g in s1.groupby("setting", sort=False):
            itl = g.loc[g.method == "itl", "avg_mse"]
            f = g.loc[g.method == pen, "avg_mse"]
            if len(itl) and len(f) and f.iloc[0] > itl.iloc[0]:
                hi_ci = g.loc[g.method == pen, "diff_ci_low"].iloc[0]
                sig = "significantly" if hi_ci > 0 else "not significantly (paired 95% CI of the difference covers 0)"
                miss.append(f"{setting} ({f.iloc[0]:.4f} > {itl.iloc[0]:.4f}, {sig})")
        lines.append(f"Scenario 1, {pen} avg-MSE <= per-site at every eta: "
                     + ("MET" if not miss else "MISSED at " + "; ".join(miss)))
        g0 = s1[s1.setting == "eta=0.0"]
        itl0, f0 = g0.loc[g0.method == "itl", "avg_mse"], g0.loc[g0.method == pen, "avg_mse"]
        if len(itl0) and len(f0):
            ratio = f0.iloc[0] / itl0.iloc[0]
            lines.append(f"Scenario 1, eta=0, {pen} avg-MSE / per-site = {ratio:.3f} (goal <= 0.5): "
                         + ("MET" if ratio <= 0.5 else "MISSED"))
    lo, hi = COVERAGE_VALID
    claims = (("coverage", "itl", None, "per-site DML Wald CI (valid by DML theory)"),
              ("coverage", "itl-mt", None, "per-site DML Wald CI with multi-task nuisances (valid by DML theory)"),
              ("coverage_blup", "squared-reml", "fusion-stats-s1",
               "BLUP prediction interval, REML tau2 (valid under the random-effects model = Scenario 1)"),
              ("coverage_blup", "squared", "fusion-stats-s1",
               "BLUP prediction interval, CV-tuned C (conditional on C; documented as conditional)"),
              ("coverage", "group", None, "group bootstrap percentile CI (documented approximate)"),
              ("coverage", "squared", None, "squared delta-method Wald CI (an interval for E[theta~_k], "
                                            "documented as biased for theta_k when sites differ)"))
    for col, method, study, claim in claims:
        sub = table[(table.method == method) & table[col].notna()]
        if study is not None:
            sub = sub[sub.study == study]
        if sub.empty:
            continue
        mc = f"{col}_mcse"
        parts = [f"{r.study.replace('fusion-stats-', '')} {r.setting}: {getattr(r, col):.3f} "
                 f"({_verdict(getattr(r, col), getattr(r, mc) if mc in sub else 0.0, lo, hi)})"
                 for r in sub.itertuples()]
        n_met = sum("(met)" in p for p in parts)
        n_miss = sum("(missed)" in p for p in parts)
        lines.append(f"coverage of the {claim} within [{lo}, {hi}]: met at {n_met}/{len(parts)} points, "
                     f"missed beyond 2 MC SE at {n_miss} — " + "; ".join(parts))
    return lines


def pivot(table: pd.DataFrame, study: str, value: str) -> str:
    sub = table[table.study == study]
    if sub.empty or value not in sub:
        return ""
    p = sub.pivot(index="method", columns="setting", values=value)
    p = p[[c for c in dict.fromkeys(sub.setting)]]
    return p.map(lambda v: "" if pd.isna(v) else f"{v:.3f}").to_markdown()


def recommendation(table: pd.DataFrame) -> str:
    """Default penalty from the evidence: worst-case relative regret (MSE / best of the two) over
    the Scenario 1 and 3 points (avg-MSE and max-MSE); wins are reported too."""
    pens = ("squared", "group")
    wins = dict.fromkeys(pens, 0)
    regret = {p: (1.0, "") for p in pens}
    for (study, setting), g in table[table.study.isin(["fusion-stats-s1", "fusion-stats-s3"])].groupby(
            ["study", "setting"], sort=False):
        for metric in ("avg_mse", "max_mse"):
            v = {p: g.loc[g.method == p, metric] for p in pens}
            if not all(len(x) for x in v.values()):
                continue
            v = {p: float(x.iloc[0]) for p, x in v.items()}
            best = min(v.values())
            wins[min(v, key=v.get)] += 1
            for p in pens:
                if v[p] / best > regret[p][0]:
                    regret[p] = (v[p] / best, f"{study.replace('fusion-stats-', '')} {setting} {metric}")
    choice = min(pens, key=lambda p: regret[p][0])
    return (f"Points won (avg-MSE and max-MSE, Scenarios 1 and 3): squared {wins['squared']}, group {wins['group']}. "
            f"Worst-case MSE relative to the better of the two: squared {regret['squared'][0]:.2f} "
            f"({regret['squared'][1]}), group {regret['group'][0]:.2f} ({regret['group'][1]}). "
            f"Minimax-regret choice for the default: penalty='{choice}'.")


def failures(out: Path) -> list[str]:
    return [f"{name}: failed replicates per point " + ", ".join(f"{k}: {v}" for k, v in per.items())
            + f" ({fold:.0%} of the failed jobs: a site with fewer treated/control units than folds, "
            "refused by MultiSiteDML's validation for every method alike)"
            for name, per, fold in failed_replicates(out, studies())]


READING = [
    "## Reading of the recorded run (2026-11-23; K = 10 points 195-200 replicates each, K = 20 points 160)", "",
    "- Scenario 1: every fused estimator has avg-MSE below per-site DML at every eta (paired CIs in the "
    "table), and at eta = 0 about 0.22-0.25x per-site (goal <= 0.5x met); with "
    "multi-task nuisances (`group-mt`) 0.10x.",
    "- `squared` is slightly better than `group` without outliers (Scenario 1, by up to ~20%), `group` is much "
    "better with outlier sites (Scenario 3: 0.20 vs 0.30 avg-MSE at 10% outliers, where `squared` gains "
    "nothing over per-site DML). The minimax-regret rule above therefore picks `group` — keep it as the "
    "package default (LateFusion's current default); choose `squared` when sites are believed exchangeable "
    "and exact delta-method inference is wanted.",
    "- Multi-task nuisances are the largest single gain: per-site DML with them (`itl-mt`) halves the MSE of "
    "per-site DML, and removes its bias (eta = 0: mean error +0.14 with per-site sieve nuisances vs +0.01 "
    "with multi-task ones). That Step-1 bias does not shrink with pooling, which is why the pooled/fused "
    "intervals on per-site nuisances undercover even at eta = 0 (pooled FE Wald 0.77).",
    "- Coverage: per-site DML Wald intervals are close to nominal but slightly low with n_k = 40-80 "
    "(0.91-0.93; 0.93-0.94 with multi-task nuisances). No fused interval reaches 0.93-0.97: the `squared` "
    "delta-method interval (for E[theta~_k], documented as biased for theta_k) 0.68-0.89, the BLUP "
    "prediction interval 0.77-0.92 (also with REML tau2: the Step-1 SEs are slightly small and tau2 is "
    "estimated from 10 sites), the `group` bootstrap percentile interval 0.72-0.89 (documented approximate), "
    "the post-fusion centre interval for fused sites in `coverage_postfusion`. Only the per-site DML intervals should be "
    "called valid; fused intervals must stay labelled approximate.",
]


def write(out: Path) -> pd.DataFrame:
    table = collect(out)
    if table.empty:
        return table
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "fusion_stats.csv", index=False)
    from benchmarks._util import machine

    lines = ["# Late fusion statistics: MSE and coverage vs heterogeneity (issue 3)", "",
             f"Machine: {machine()}", "",
             "Protocol: `python -m benchmarks.bench_fusion_stats` (study runner `hetmtl.studies`; see the module "
             "docstring for settings and methods). ATE, K = 10 (and 20 in study s1-k20), n_k ~ U{40..80}, 5-fold cross-fitting, "
             "nominal level 0.95. `n_reps` is the exact number of completed replicates per point "
             f"(protocol: 200; this run was time-limited). MSE_k = mean over replicates, avg/max over sites.", "",
             "## Goals", "", *[f"- {g}" for g in goals(table)], "",
             "## Failed replicates", "",
             *([f"- {x}" for x in failures(out)] or ["- none"]), "",
             "## Default penalty", "", recommendation(table), "",
             *READING, "",
             "## Scenario 1 at a glance (rows: method, columns: eta)", "",
             "avg-MSE:", "", pivot(table, "fusion-stats-s1", "avg_mse"), "",
             "max-MSE:", "", pivot(table, "fusion-stats-s1", "max_mse"), "",
             "Coverage of each method's own interval (itl/itl-mt: Wald; pooled: FE Wald; squared: delta "
             "method; group: bootstrap percentile):", "", pivot(table, "fusion-stats-s1", "coverage"), "",
             "## Scenario 1 with K = 20 (avg-MSE; rows: method, columns: eta)", "",
             pivot(table, "fusion-stats-s1-k20", "avg_mse"), "",
             "## All points", ""]
    show = table.copy()
    show["study"] = show["study"].str.replace("fusion-stats-", "")
    for c in show.columns:
        if show[c].dtype.kind == "f":
            show[c] = show[c].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    lines.append(show.to_markdown(index=False))
    (RESULTS / "fusion_stats.md").write_text("\n".join(lines) + "\n")
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="replicates per point (protocol: 200)")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "hetmtl_fusion_stats"),
                    help="study-store directory (resumable; kept out of the repository)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds; replicates are added in rounds over all settings until the budget is spent")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        t0 = time.perf_counter()
        schedule = [r for r in (2, 5, 10, 20, 30, 40, 60, 80, 100, 130, 160, 200) if r < args.reps] + [args.reps]
        for target in schedule:
            for study in studies():
                if args.time_budget is not None and time.perf_counter() - t0 > args.time_budget:
                    break
                run_study(study, out / study.name, n_reps=target, n_jobs=args.jobs, progress=False)
            write(out)
            print(f"[{time.perf_counter() - t0:.0f}s] {target} replicates per point done", flush=True)
            if args.time_budget is not None and time.perf_counter() - t0 > args.time_budget:
                break
    table = write(out)
    print(table.to_string())


if __name__ == "__main__":
    main()
