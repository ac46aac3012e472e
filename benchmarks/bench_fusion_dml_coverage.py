"""Per-site DML Wald coverage at small n_k: nuisance penalty, repeated cross-fitting, corrections.

Run: ``PYTHONPATH=src nice -n 10 python -m benchmarks.bench_fusion_dml_coverage --reps 200``;
``--summarize`` rebuilds the tables from the raw per-site rows alone.
Writes benchmarks/results/fusion_dml_coverage.{csv,md} and fusion_dml_coverage_raw.csv
(``--tag T``: fusion_dml_coverage_T.*).

Design: the fusion-statistics Scenario 1 (``make_latefusion_data``; ATE, K = 10 sites, n_k ~
U{40..80}), 5-fold cross-fitting, sieve nuisances through ``fit_multitask_dml``. Configurations
(every replicate fits each one on the same data):

- ``itl-alpha1``: per-site sieves with ridge α = 1 on outcome and propensity (the ``itl`` method of
  ``bench_fusion_stats``);
- ``itl``: per-site sieves with the package's default penalties (α = 0.1 outcome, 1 propensity);
- ``…-rep5`` / ``…-rep10``: the same with 5 / 10 repetitions of cross-fitting, DoubleML's median
  aggregation;
- ``itl-mt`` (``itl-mt-rep5``): multi-task sieves (C_η tuned; the ``itl-mt`` method of
  ``bench_fusion_stats``), only when named in ``--configs``; ``itl-rep10`` likewise.

Each fit is then read with four intervals, from the summary n_k, θ̂_k and V̂_k alone (paired):
``none`` (V̂, normal quantile: DoubleML's interval), ``hc1`` (V̂·n/(n − d)), ``t`` (Student-t
quantile, df = n − d), ``hc1+t``. Coverage is averaged over sites and replicates; MC SE =
√(p(1 − p)/m) with m site-intervals (sites within a replicate are independent data sets).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks._util import RESULTS, write_results
from hetmtl.latefusion.nuisance import fit_multitask_dml
from hetmtl.latefusion.simulate import make_latefusion_data

LEVEL = 0.95
MULTITASK = {"C_grid": [0.03, 0.1, 0.3, 1.0, 3.0, float("inf")], "n_inner": 1}
CONFIGS = {  # name: (nuisance_options, n_rep)
    "itl-alpha1": ({"C_eta": 0.0, "alpha": 1.0}, 1),
    "itl": ({"C_eta": 0.0}, 1),
    "itl-alpha1-rep5": ({"C_eta": 0.0, "alpha": 1.0}, 5),
    "itl-rep5": ({"C_eta": 0.0}, 5),
    "itl-rep10": ({"C_eta": 0.0}, 10),
    "itl-mt": (MULTITASK, 1),
    "itl-mt-rep5": (MULTITASK, 5),
}
DEFAULT_CONFIGS = ["itl-alpha1", "itl", "itl-alpha1-rep5", "itl-rep5"]
VARIANTS = ("none", "hc1", "t", "hc1+t")
NAME = "fusion_dml_coverage"


def intervals(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per (site fit, interval variant) with covered / width (d = 1: the ATE)."""
    out = []
    for v in VARIANTS:
        se = raw.se * (np.sqrt(raw.n / (raw.n - 1)) if "hc1" in v else 1.0)
        q = stats.t.ppf(0.5 + LEVEL / 2, raw.n - 1) if "t" in v.split("+") else stats.norm.ppf(0.5 + LEVEL / 2)
        out.append(raw.assign(variant=v, covered=(raw.err.abs() <= q * se).astype(float), width=2 * q * se))
    return pd.concat(out, ignore_index=True)


def summarize(raw: pd.DataFrame, notes: list[str], name: str = NAME) -> None:
    rows = intervals(raw)
    g = rows.groupby(["config", "eta", "variant"])
    table = g.agg(coverage=("covered", "mean"), m=("covered", "size"), mean_width=("width", "mean"),
                  mean_err=("err", "mean"), sd_err=("err", "std"), mean_se=("se", "mean"),
                  reps=("rep", "nunique")).reset_index()
    table["mc_se"] = np.sqrt(table.coverage * (1 - table.coverage) / table.m)
    table["sd_err/mean_se"] = table.sd_err / table.mean_se
    rows["n band"] = np.where(rows.n < 60, "40-59", "60-80")
    band = rows.groupby(["config", "variant", "n band"])["covered"].agg(["mean", "size"]).reset_index()
    band.columns = ["config", "variant", "n band", "coverage", "m"]
    band["mc_se"] = np.sqrt(band.coverage * (1 - band.coverage) / band.m)
    notes = notes + ["Coverage by n_k band (pooled over eta):\n\n" + band.to_markdown(index=False, floatfmt=".4g")]
    write_results(name, table, "Per-site DML Wald coverage at n_k = 40-80", notes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    ap.add_argument("--time-budget", type=float, default=np.inf, help="seconds; stop starting replicates after")
    ap.add_argument("--summarize", action="store_true", help="only rebuild the tables from the raw rows")
    ap.add_argument("--tag", default="", help="write fusion_dml_coverage_<tag>.* instead")
    args = ap.parse_args()
    name = f"{NAME}_{args.tag}" if args.tag else NAME
    raw_path = RESULTS / f"{name}_raw.csv"
    if args.summarize:
        summarize(pd.read_csv(raw_path), [f"Rebuilt from {raw_path.name} (--summarize)."], name)
        return
    t0 = time.time()
    rows, failed = [], 0
    for r in range(args.reps):  # etas interleaved, so a time budget cuts every point alike
        if time.time() - t0 > args.time_budget:
            break
        for eta in args.etas:
            seed = 7000 + 1000 * int(10 * eta) + r
            sim = make_latefusion_data(scenario=1, n_sites=10, eta=eta, random_state=seed)
            for config in args.configs:
                opts, n_rep = CONFIGS[config]
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est = fit_multitask_dml(sim.data, model="ate", n_folds=5, n_rep=n_rep, random_state=seed,
                                                nuisance_options=opts)
                except Exception as exc:  # a site with fewer treated/control units than folds
                    failed += 1
                    print(f"eta={eta} rep={r} {config}: {exc}", flush=True)
                    continue
                for k, s in enumerate(est.summaries()):
                    rows.append({"config": config, "eta": eta, "rep": r, "site": k, "n": s.n,
                                 "err": float(s.theta[0] - sim.theta[k, 0]), "se": float(np.sqrt(s.vcov[0, 0]))})
        print(f"rep={r} elapsed {time.time() - t0:.0f}s", flush=True)
    raw = pd.DataFrame(rows)
    raw.to_csv(raw_path, index=False)
    summarize(raw, [f"{args.reps} replicates requested per eta (etas {args.etas}); {failed} fits refused (a site "
                    f"with fewer treated/control units than folds). Wall time {time.time() - t0:.0f} s."], name)


if __name__ == "__main__":
    main()
