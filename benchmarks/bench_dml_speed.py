"""Per-site DML vs DoubleML: wall time with identical learners and folds, K = 20 sites × n = 500.

Both fit the same nuisance learners on the same folds, so the ratio measures the framework
overhead around the learner fits. Runs alternate (ours, DoubleML, ours, …) so load on the machine
affects both alike; the median of ``--repeats`` runs is reported. Estimates are checked equal.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from benchmarks._util import write_results
from hetmtl.latefusion import SiteDML


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
        times = {"hetmtl": [], "DoubleML": []}
        for _ in range(args.repeats):
            for name, fn in (("hetmtl", run_ours), ("DoubleML", run_doubleml)):
                t0 = time.perf_counter()
                coefs = fn(model, sites)
                times[name].append(time.perf_counter() - t0)
                if name == "hetmtl":
                    ours = coefs
                else:
                    max_diff = float(np.max(np.abs(np.array(ours) - np.array(coefs)) / np.abs(coefs)))
        t_ours, t_ref = np.median(times["hetmtl"]), np.median(times["DoubleML"])
        rows.append(
            {"model": model, "sites": args.sites, "n per site": args.n, "hetmtl s": round(t_ours, 2),
             "DoubleML s": round(t_ref, 2), "ratio hetmtl/DoubleML": round(t_ours / t_ref, 3),
             "max rel. coef difference": f"{max_diff:.1e}", "repeats": args.repeats}
        )
    write_results(
        "dml_speed",
        pd.DataFrame(rows),
        "Per-site DML wall time: hetmtl vs DoubleML (identical learners and folds)",
        ["Learners: random forests (100 trees, min_samples_leaf=5, max_features=0.5), 5 folds, n_rep=1.",
         "Goal: ratio <= 1. Median of alternating runs."],
    )


if __name__ == "__main__":
    main()
