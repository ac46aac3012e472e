"""Speed of MTL-HMB grid training: seconds per replicate, batched vs one by one.

One replicate of the paper's base heterogeneous setting (rho = (0.95, 0.7), n = 300, p0 = 100,
p1 = p2 = 25; the shared row of Settings B/D/E/F) with the chosen grid. Runs HBI (Step 1) and
Step 2 with the configurations stacked (``group_by`` = "width" / "all") and one by one
("config"), and records seconds, epochs, the selected configuration and the test RMSE, which must
agree between the two. Usage (long; run under nice):

    PYTHONPATH=src nice -n 10 python benchmarks/bench_blockwise_speed.py --grid code --max-epochs 25000

``--threads 2`` trains independent groups in two threads (the 2-core target of the issue).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.selection import make_split
from hetmtl.blockwise.simulate import setting_params, simulate_blockwise

RESULTS = Path(__file__).resolve().parent / "results"


def run(grid: str, hbi_grid: str, group_by: str, max_epochs: int, hbi_max_epochs: int, seed: int, threads: int) -> dict:
    sim = simulate_blockwise(**setting_params("D", 300), seed=seed)
    split = make_split(sim.data, seed=seed)
    est = MTLHMB(grid=grid, hbi_grid=hbi_grid, group_by=group_by, max_epochs=max_epochs, hbi_max_epochs=hbi_max_epochs,
                 random_state=seed,
                 n_threads=threads)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(sim.data, split)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    hbi_seconds = max(f.seconds for f in est.imputer_.fits_.values())  # the sources train together
    tab = est.selection_table()
    return {
        "group_by": group_by, "grid": grid, "hbi_grid": hbi_grid, "n_configs": len(tab), "max_epochs": max_epochs,
        "hbi_max_epochs": hbi_max_epochs, "hbi_n_configs": len(est.imputer_.selection_table()),
        "seconds_total": round(total, 2), "cpu_seconds_total": round(cpu, 2), "seconds_hbi": round(hbi_seconds, 2),
        "seconds_step2": round(est.fit_.seconds, 2), "n_groups_step2": len(est.fit_.groups),
        "mean_best_epoch": float(tab["best_epoch"].mean()), "max_best_epoch": int(tab["best_epoch"].max()),
        "selected": est.selected_config_,
        "hbi_selected": {int(s): f.selected_config for s, f in est.imputer_.fits_.items()}, "test_rmse": est.test_rmse_.round(6).tolist(),
        "test_rmse_avg": round(est.test_rmse_avg_, 6), "val_loss": tab["val_loss"].round(6).tolist(),
    }


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="code")
    ap.add_argument("--hbi-grid", default="code")
    ap.add_argument("--max-epochs", type=int, default=25000)
    ap.add_argument("--hbi-max-epochs", type=int, default=5000)
    ap.add_argument("--modes", default="width,config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--version", default="", help="label of the code version, recorded with the numbers")
    ap.add_argument("--out", default=str(RESULTS / "blockwise_speed.json"))
    ap.add_argument("--note", default="", help="conditions of the run (other load on the machine), recorded")
    args = ap.parse_args()
    out = Path(args.out)
    records = json.loads(out.read_text()) if out.exists() else []
    for mode in args.modes.split(","):
        load0 = round(os.getloadavg()[0], 2)
        rec = run(args.grid, args.hbi_grid, mode, args.max_epochs, args.hbi_max_epochs, args.seed, args.threads)
        rec.update(machine=platform.machine(), torch=torch.__version__, threads=args.threads,
                   load_average_1min_start_end=[load0, round(os.getloadavg()[0], 2)], version=args.version,
                   cpu_count=os.cpu_count(), note=args.note)
        records.append(rec)
        out.write_text(json.dumps(records, indent=1))
        print(json.dumps({k: v for k, v in rec.items() if k != "val_loss"}), flush=True)


if __name__ == "__main__":
    main()
