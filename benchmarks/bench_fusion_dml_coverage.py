"""Per-site DML Wald coverage at small n_k, with and without small-sample corrections.

Run: ``PYTHONPATH=src nice -n 10 python -m benchmarks.bench_fusion_dml_coverage --reps 200``.
Writes benchmarks/results/fusion_dml_coverage.{csv,md}.

Design: the fusion-statistics Scenario 1 (``make_latefusion_data``; ATE, K = 10 sites, n_k ~
U{40..80}), 5-fold cross-fitting, per-site sieve nuisances (``itl``, as in bench_fusion_stats) and
multi-task sieve nuisances (``itl-mt``). Every replicate is fitted once, uncorrected; each
correction is then applied to the same fit (paired), from the summary n_k, Ĵ_k, Ω̂_k alone:

- ``none``: V = Ĵ⁻¹Ω̂Ĵ⁻ᵀ/n, normal quantile (DoubleML's interval);
- ``hc1``: Ω̂·n/(n − d) (degrees-of-freedom correction of the score variance), normal quantile;
- ``t``: V unchanged, Student-t quantile with df = n − d;
- ``hc1+t``: both (``SiteDML(df_correction=True)``).

Coverage is averaged over sites and replicates; MC SE = √(p(1 − p)/m) with m site-intervals
(sites within a replicate are independent data sets).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks._util import write_results
from hetmtl.latefusion.nuisance import fit_multitask_dml
from hetmtl.latefusion.simulate import make_latefusion_data

LEVEL = 0.95
SITE_OPTIONS = {"C_eta": 0.0, "alpha": 1.0}
MT_OPTIONS = {"C_grid": [0.03, 0.1, 0.3, 1.0, 3.0, float("inf")], "n_inner": 1}
VARIANTS = ("none", "hc1", "t", "hc1+t")


def site_rows(est, truth: np.ndarray) -> list[dict]:
    rows = []
    for k, s in enumerate(est.summaries()):
        n, d = s.n, s.d
        se0 = float(np.sqrt(s.vcov[0, 0]))
        err = float(s.theta[0] - truth[k, 0])
        for v in VARIANTS:
            se = se0 * (np.sqrt(n / (n - d)) if "hc1" in v else 1.0)
            q = stats.t.ppf(0.5 + LEVEL / 2, n - d) if "t" in v.split("+") else stats.norm.ppf(0.5 + LEVEL / 2)
            rows.append({"variant": v, "n": n, "covered": float(abs(err) <= q * se), "width": 2 * q * se,
                         "err": err, "se": se})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--time-budget", type=float, default=np.inf, help="seconds; stop starting replicates after")
    ap.add_argument("--nuisances", nargs="+", default=["itl", "itl-mt"], choices=["itl", "itl-mt"])
    args = ap.parse_args()
    t0 = time.time()
    rows, failed = [], 0
    for r in range(args.reps):  # etas interleaved, so a time budget cuts every point alike
        if time.time() - t0 > args.time_budget:
            break
        for eta in args.etas:
            seed = 7000 + 1000 * int(10 * eta) + r
            sim = make_latefusion_data(scenario=1, n_sites=10, eta=eta, random_state=seed)
            for nuis, opts in (("itl", SITE_OPTIONS), ("itl-mt", MT_OPTIONS)):
                if nuis not in args.nuisances:
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est = fit_multitask_dml(sim.data, model="ate", n_folds=5, random_state=seed,
                                                nuisance_options=opts, tuning_folds=None)
                except Exception as exc:  # a site with fewer treated/control units than folds
                    failed += 1
                    print(f"eta={eta} rep={r} {nuis}: {exc}", flush=True)
                    continue
                for row in site_rows(est, sim.theta):
                    rows.append({"eta": eta, "rep": r, "nuisance": nuis, **row})
        if r % 5 == 0:
            print(f"rep={r} elapsed {time.time() - t0:.0f}s", flush=True)
            report(rows, failed, args, t0)
    report(rows, failed, args, t0)


def report(rows: list[dict], failed: int, args, t0: float) -> None:
    """Write the tables (also called during the run, so an interrupted run keeps its results)."""
    if not rows:
        return
    raw = pd.DataFrame(rows)
    g = raw.groupby(["nuisance", "eta", "variant"])
    table = g.agg(coverage=("covered", "mean"), m=("covered", "size"), mean_width=("width", "mean"),
                  mean_err=("err", "mean"), sd_err=("err", "std"), mean_se=("se", "mean")).reset_index()
    table["mc_se"] = np.sqrt(table.coverage * (1 - table.coverage) / table.m)
    table["reps"] = g["rep"].nunique().to_numpy()
    # n_k bands: 40-59 and 60-80
    raw["n band"] = np.where(raw.n < 60, "40-59", "60-80")
    band = raw.groupby(["nuisance", "variant", "n band"])["covered"].agg(["mean", "size"]).reset_index()
    band.columns = ["nuisance", "variant", "n band", "coverage", "m"]
    band["mc_se"] = np.sqrt(band.coverage * (1 - band.coverage) / band.m)
    notes = [
        f"{args.reps} replicates requested per eta; 'reps' is the number completed; {failed} fits refused "
        "(a site with fewer treated/control units than folds).",
        "Coverage by n_k band (pooled over eta):\n\n" + band.to_markdown(index=False, floatfmt=".4g"),
        f"Wall time {time.time() - t0:.0f} s.",
    ]
    write_results("fusion_dml_coverage", table, "Per-site DML Wald coverage: small-sample corrections", notes)


if __name__ == "__main__":
    main()
