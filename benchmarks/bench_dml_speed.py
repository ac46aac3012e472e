"""Per-site DML vs DoubleML: wall time with identical learners and folds, K = 20 sites × n = 500.

Both fit the same nuisance learners on the same folds, so the sequential ratio measures the
framework overhead around the learner fits; it is timed in process CPU seconds, which other load
on the machine does not inflate (wall seconds are reported too). Runs alternate (ours, DoubleML,
ours, …) and the median of ``--repeats`` runs is reported. Estimates are checked equal.
The last column is what a user of ``MultiSiteDML(n_jobs=2)`` gets: sites fitted in parallel on
the 2 cores (DoubleML has no multi-site driver, so its figure is the sequential loop).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from benchmarks._util import write_results
from hetmtl.data import MultiSiteData
from hetmtl.latefusion import MultiSiteDML, SiteDML


def make_sites(k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    sites = []
    for _ in range(k):
        X = rng.normal(size=(n, 10))
        d = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
        y = d * (1 + 0.3 * rng.normal()) + np.sin(X[:, 0]) + X[:, 1] ** 2 + rng.normal(size=n)
        ids = rng.permutation(np.arange(n) % 5)
        folds = [[(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(5)]]
        sites.append((y, d, X, folds))
    return sites


def learners():
    return (
        RandomForestRegressor(n_estimators=100, min_samples_leaf=5, max_features=0.5, random_state=1),
        RandomForestClassifier(n_estimators=100, min_samples_leaf=5, max_features=0.5, random_state=2),
    )


def run_ours(model, sites):
    reg, clf = learners()
    return [SiteDML(model, reg, clf, n_folds=5).fit(y, d, X, folds=f).coef_[0] for y, d, X, f in sites]


def run_ours_parallel(model, sites):
    reg, clf = learners()
    y, d, X = (np.concatenate([s[i] for s in sites]) for i in range(3))
    labels = np.repeat([f"s{k:02d}" for k in range(len(sites))], [s[0].shape[0] for s in sites])
    folds = {f"s{k:02d}": s[3] for k, s in enumerate(sites)}
    est = MultiSiteDML(model, reg, clf, n_folds=5, tuning_folds=None, n_jobs=2)
    est.fit(MultiSiteData(y, d, X, labels), folds=folds)
    return [e.coef_[0] for e in est.estimators_.values()]


def run_doubleml(model, sites):
    import doubleml

    reg, clf = learners()
    out = []
    for y, d, X, f in sites:
        df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(y=y, d=d)
        data = doubleml.DoubleMLData(df, "y", "d")
        est = (
            doubleml.DoubleMLPLR(data, ml_l=reg, ml_m=clf, n_folds=5)
            if model == "plr"
            else doubleml.DoubleMLIRM(data, ml_g=reg, ml_m=clf, n_folds=5)
        )
        est.set_sample_splitting(f)
        out.append(est.fit().coef[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sites = make_sites(args.sites, args.n, 0)
    rows = []
    for model in ("plr", "ate"):
        cpu = {"hetmtl": [], "DoubleML": []}
        wall = {"hetmtl": [], "DoubleML": [], "parallel": []}
        coefs = {}
        for _ in range(args.repeats):
            for name, fn in (("hetmtl", run_ours), ("DoubleML", run_doubleml), ("parallel", run_ours_parallel)):
                c0, t0 = time.process_time(), time.perf_counter()
                coefs[name] = np.array(fn(model, sites))
                wall[name].append(time.perf_counter() - t0)
                if name in cpu:
                    cpu[name].append(time.process_time() - c0)
        ref = coefs["DoubleML"]
        max_diff = max(float(np.max(np.abs(coefs[k] - ref) / np.abs(ref))) for k in ("hetmtl", "parallel"))
        med = {k: float(np.median(v)) for k, v in cpu.items()}
        medw = {k: float(np.median(v)) for k, v in wall.items()}
        rows.append(
            {"model": model, "sites": args.sites, "n per site": args.n, "hetmtl CPU s": round(med["hetmtl"], 2),
             "DoubleML CPU s": round(med["DoubleML"], 2), "ratio (CPU, sequential)": round(med["hetmtl"] / med["DoubleML"], 3),
             "hetmtl wall s": round(medw["hetmtl"], 2), "DoubleML wall s": round(medw["DoubleML"], 2),
             "MultiSiteDML n_jobs=2 wall s": round(medw["parallel"], 2),
             "ratio (wall, n_jobs=2 vs DoubleML)": round(medw["parallel"] / medw["DoubleML"], 3),
             "max rel. coef difference": f"{max_diff:.1e}", "repeats": args.repeats}
        )
    write_results(
        "dml_speed",
        pd.DataFrame(rows),
        "Per-site DML wall time: hetmtl vs DoubleML (identical learners and folds)",
        ["Learners: random forests (100 trees, min_samples_leaf=5, max_features=0.5), 5 folds, n_rep=1.",
         "Goal: ratio <= 1. Median of alternating runs.",
         "Timings taken while other jobs shared the 2 cores; CPU-second ratios are the robust comparison."],
    )


if __name__ == "__main__":
    main()
