"""Speed of MTL-HMB grid training: seconds per replicate, batched vs one by one.

One replicate of the paper's base heterogeneous setting (rho = (0.95, 0.7), n = 300, p0 = 100,
p1 = p2 = 25; the shared row of Settings B/D/E/F) with the chosen grid. Runs HBI (Step 1) and
Step 2 with the configurations stacked (``group_by`` = "width" / "all") and one by one
("config"), and records seconds, epochs, the selected configuration and the test RMSE, which must
agree between the two. Usage (long; run under nice):

    PYTHONPATH=src nice -n 10 python benchmarks/bench_blockwise_speed.py --grid code --max-epochs 25000

``--threads 2`` trains independent groups in two threads (the 2-core target of the issue).
``--engine native`` trains on the C++ kernel; its ``config`` mode trains every configuration in
its own call on one thread, the one-by-one reference the grid must reproduce bit for bit.

Each record also counts the work: the matrix-multiply FLOPs the fit needed (:func:`training_flops`:
every configuration alone, unpadded, times the epochs it ran) and this machine's one-thread matmul
rate (:func:`matmul_gflops`), hence the achieved rate and the seconds the same FLOPs would take on
two cores at that rate (a lower bound for any implementation of the same protocol).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from hetmtl.blockwise._engine import _training_leaves
from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.nets import HBINet, Step2Net
from hetmtl.blockwise.selection import make_split
from hetmtl.blockwise.simulate import setting_params, simulate_blockwise

RESULTS = Path(__file__).resolve().parent / "results"


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _step_flops(net, params: dict, cfg: dict, batch: dict, val: dict) -> tuple[int, int]:
    """(one training step: loss and gradients, one validation pass) of a one-configuration network."""
    leaves, names = _training_leaves(net, params, cfg)
    step = _flops(lambda: torch.autograd.grad(net.loss(leaves, cfg, batch).sum(), [leaves[k] for k in names]))
    with torch.no_grad():
        return step, _flops(lambda: net.val_loss(params, cfg, val))


def _epochs_run(best_epoch: int, patience: int, max_epochs: int) -> int:
    """Epochs a configuration trained: early stopping ends it ``patience`` epochs after its best one."""
    return min(int(best_epoch) + patience + 1, max_epochs)


def training_flops(est: MTLHMB, data, split) -> dict[str, float]:
    """Matrix-multiply FLOPs (forward, backward, validation; ``torch.utils.flop_counter``) of a fitted
    MTL-HMB: each grid configuration counted alone at its own width and depth, per epoch, times the
    epochs it ran (HBI on all rows, the default ``hbi_rows="all"``). Elementwise work, Adam and padding
    are not counted."""
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731  (values do not change FLOPs)
    m = est.fit_.groups[0].model
    T = m.T
    n_tr, n_va = [len(r) for r in split.train], max(len(r) for r in split.val)
    step2 = 0.0
    for i, c in enumerate(est.fit_.configs):
        B = int(c["batch_size"])
        batch = {"x0": rand(T, B, m.p0), "xf": rand(T, B, m.P), "y": rand(T, B), "w": torch.ones(T, B)}
        val = {"x0": rand(T, n_va, m.p0), "xf": rand(T, n_va, m.P), "y": rand(T, n_va), "w": torch.ones(T, n_va)}
        net = Step2Net(m.p0, m.P, T, m.imputed, int(c["width"]), int(c["depth"]), m.dr_mode, m.in_true)
        step, valf = _step_flops(net, *net.init([c], [i], 0, torch.float32), batch, val)
        steps = min(math.ceil(n / B) for n in n_tr)
        step2 += _epochs_run(est.fit_.best_epoch[i], est.patience, est.max_epochs) * (steps * step + valf)
    imp = est.imputer_
    hbi = 0.0
    for t in range(data.n_tasks):
        s = data.private_source[t]
        fit = imp.fits_[s]
        n_t = data.n_per_task[t]
        n_v = n_t - math.floor((1 - imp.val_fraction) * n_t)
        n_m = sum(data.n_per_task) - n_t
        ps = data.source_dims[s]
        p0 = data.source_dims[0]
        batch = {"x0t": rand(n_t - n_v, p0), "xst": rand(n_t - n_v, ps), "x0m": rand(n_m, p0)}
        val = {"x0t": rand(n_v, p0), "xst": rand(n_v, ps)}
        for i, c in enumerate(fit.configs):
            net = HBINet(p0, ps, int(c["depth"]), int(c["width"]), imp.heterogeneous, imp.orth_power)
            step, valf = _step_flops(net, *net.init([c], [i], 0, torch.float32), batch, val)
            hbi += _epochs_run(fit.best_epoch[i], imp.patience, imp.max_epochs) * (step + valf)
    return {"step2": step2, "hbi": hbi}


def matmul_gflops(shape: tuple[int, ...] = (1024, 1024, 1024), seconds: float = 2.0) -> float:
    """Best one-thread float32 rate (GFLOP/s) of ``(G,) M x K @ K x N`` products on this machine."""
    *lead, M, K, N = shape
    a, b = torch.randn(*lead, M, K), torch.randn(*lead, K, N)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best, t_end = math.inf, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2.0 * math.prod(lead) * M * K * N / best / 1e9


def run(grid: str, hbi_grid: str, group_by: str, max_epochs: int, hbi_max_epochs: int, seed: int, threads: int,
        engine: str = "torch") -> dict:
    sim = simulate_blockwise(**setting_params("D", 300), seed=seed)
    split = make_split(sim.data, seed=seed)
    est = MTLHMB(grid=grid, hbi_grid=hbi_grid, group_by=group_by, max_epochs=max_epochs, hbi_max_epochs=hbi_max_epochs,
                 random_state=seed, engine=engine, n_threads=threads)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(sim.data, split)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    hbi_seconds = max(f.seconds for f in est.imputer_.fits_.values())  # the sources train together
    tab = est.selection_table()
    flops = training_flops(est, sim.data, split)
    peak = matmul_gflops()
    return {
        "engine": engine, "group_by": group_by, "grid": grid, "hbi_grid": hbi_grid, "n_configs": len(tab), "max_epochs": max_epochs,
        "hbi_max_epochs": hbi_max_epochs, "hbi_n_configs": len(est.imputer_.selection_table()),
        "seconds_total": round(total, 2), "cpu_seconds_total": round(cpu, 2), "seconds_hbi": round(hbi_seconds, 2),
        "seconds_step2": round(est.fit_.seconds, 2), "n_groups_step2": len(est.fit_.groups),
        "mean_best_epoch": float(tab["best_epoch"].mean()), "max_best_epoch": int(tab["best_epoch"].max()),
        "selected": est.selected_config_,
        "hbi_selected": {int(s): f.selected_config for s, f in est.imputer_.fits_.items()}, "test_rmse": est.test_rmse_.round(6).tolist(),
        "test_rmse_avg": round(est.test_rmse_avg_, 6), "val_loss": tab["val_loss"].round(6).tolist(),
        "best_epoch": tab["best_epoch"].tolist(),
        "gflop_step2": round(flops["step2"] / 1e9, 1), "gflop_hbi": round(flops["hbi"] / 1e9, 1),
        "gflops_achieved": round((flops["step2"] + flops["hbi"]) / 1e9 / cpu, 1),
        "gflops_matmul_1thread": {"1024^3": round(peak, 1), "24 x (32x128 @ 128x128)": round(
            matmul_gflops((24, 32, 128, 128)), 1)},
        "seconds_at_matmul_rate_2cores": round((flops["step2"] + flops["hbi"]) / 1e9 / (2 * peak), 1),
    }


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="code")
    ap.add_argument("--hbi-grid", default="code")
    ap.add_argument("--max-epochs", type=int, default=25000)
    ap.add_argument("--hbi-max-epochs", type=int, default=5000)
    ap.add_argument("--modes", default="width,config", help="group_by values to run (native: 'config' = one by one)")
    ap.add_argument("--engine", default="torch", choices=["torch", "native"])
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
        rec = run(args.grid, args.hbi_grid, mode, args.max_epochs, args.hbi_max_epochs, args.seed, args.threads,
                  args.engine)
        rec.update(machine=platform.machine(), torch=torch.__version__, threads=args.threads,
                   load_average_1min_start_end=[load0, round(os.getloadavg()[0], 2)], version=args.version,
                   cpu_count=os.cpu_count(), note=args.note)
        records.append(rec)
        out.write_text(json.dumps(records, indent=1))
        print(json.dumps({k: v for k, v in rec.items() if k != "val_loss"}), flush=True)


if __name__ == "__main__":
    main()
