"""MBI: stability of the selected model across λ grids (issue #24).

Run: PYTHONPATH=src python benchmarks/bench_mbi_grid.py  (writes benchmarks/results/mbi_grid.{md,csv})

Native MBI with its defaults (λ_max from the fixed-weight gradient, geometric grid down to
``lambda_min_ratio``; ``paths="both"``: bic1 selection over the exact path, warm-started from the
unpenalised fit upwards, and the path anchored at MBI's start; ``path_selected`` says which path
the selected model comes from) at nlam = 10, 20, 30, 50, 75, 100 on

* the package's linear block-wise setting (``setting_params("linear", True)``, the MTL-HMB
  paper's Table 9 at full size, p = 150, paired 60/20/20 split, fitted on train + validation,
  test RMSE averaged over the two tasks), seeds 0–2;
* the identified three-source data sets of ``bench_mbi_vs_r.py`` (layout ``complete``,
  p = 30/45, AR(1) covariates), replicates 0–3, held-out RMSE.

Criterion: the selected model's test RMSE varies by at most 10 % (max/min) across nlam.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_mbi_vs_r import make_data  # noqa: E402

from hetmtl.blockwise import MBI  # noqa: E402
from hetmtl.blockwise.selection import make_split  # noqa: E402
from hetmtl.blockwise.simulate import setting_params, simulate_blockwise  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
GRIDS = (10, 20, 30, 50, 75, 100)


def main() -> None:
    rows = []
    warnings.simplefilter("ignore")
    params = setting_params("linear", True)
    for seed in (0, 1, 2):
        sim = simulate_blockwise(**params, seed=seed)
        split = make_split(sim.data, seed=seed)
        for nlam in GRIDS:
            est = MBI(nlam=nlam, random_state=seed).fit(sim.data, split)
            rows.append({"data": f"linear_seed{seed}", "nlam": nlam, "rmse": est.test_rmse_avg_,
                         "df": int(est.support_.size), "lambda": est.lambda_,
                         "stationarity": est.stationarity_, "path_selected": est.path_kind_})
            print(rows[-1], flush=True)
    for rep in range(4):
        d = make_data("complete", rep)
        for nlam in GRIDS:
            est = MBI(nlam=nlam).fit(d["X"], d["y"], d["sources"])
            rmse = float(np.sqrt(np.mean((d["y_test"] - est.predict(d["X_test"])) ** 2)))
            rows.append({"data": f"three_source_complete_rep{rep}_p{d['p']}", "nlam": nlam,
                         "rmse": rmse, "df": int(est.support_.size), "lambda": est.lambda_,
                         "stationarity": est.stationarity_, "path_selected": est.path_kind_})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    frame.to_csv(OUT / "mbi_grid.csv", index=False)
    summary = frame.groupby("data", sort=False)["rmse"].agg(["min", "max"]).reset_index()
    summary["max_over_min"] = summary["max"] / summary["min"]
    summary["within_10pct"] = summary["max_over_min"] <= 1.10
    wide = frame.pivot(index="data", columns="nlam", values="rmse").loc[summary["data"]]
    kinds = frame.pivot(index="data", columns="nlam", values="path_selected").loc[summary["data"]]
    md = OUT / "mbi_grid.md"
    # the hand-written findings below the tables survive a rerun
    old = md.read_text() if md.exists() else ""
    findings = old[old.index("## Findings"):].strip() if "## Findings" in old else ""
    lines = ["# MBI: selected model across λ grids", "", (__doc__ or "").split("\n\n", 1)[1].strip(),
             "", "## Test RMSE of the selected model by nlam", "",
             wide.to_markdown(floatfmt=".4f"), "", "## Path of the selected model by nlam", "",
             kinds.to_markdown(), "", "## Spread", "",
             summary.to_markdown(index=False, floatfmt=".4f"), "",
             f"Within 10 %: {int(summary['within_10pct'].sum())} of {len(summary)} data sets.", ""]
    if findings:
        lines += [findings, ""]
    md.write_text("\n".join(lines))
    print(summary.to_string())


if __name__ == "__main__":
    main()
