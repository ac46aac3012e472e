"""MTL-HMB selection across builds: does the same seed select the same configuration with the
portable extension (x86-64-v3) and the native one (-march=native)?

``--run`` fits MTL-HMB (native engine, float32) on the demo setting (``hetmtl.blockwise.demo``: the
heterogeneous two-task DGP at n = 200, p0 = 40, private blocks of 10, 600 Step-2 epochs) for a few
seeds with the small grid and with the authors' code grid, and writes, for the extension it imports,
the Step-2 configuration each rule selects (``"1se"`` and ``"min"``, the lowest
float64 validation loss), the losses and the test RMSE to a JSON file, then times the training
kernels on one fixed fit (seed 0, small grids, no early stopping: the same work in every build).
``--compare A.json B.json [C.json ...]`` writes ``benchmarks/results/blockwise_selection_builds.md``
from two such files (C, ...: further builds compared with B, e.g. a native build with AVX-512).

Run once per build. Each build goes to its own directory (CMake option ``HETMTL_NATIVE_ARCH=ON`` or
``OFF``, as ``make dev`` configures it; ``HETMTL_NATIVE_AVX512=ON`` for a native build with AVX-512)
and is put first on the path through a package directory that links every file of ``src/hetmtl``
but holds that build's ``_core`` and ``_build_config.json``::

    PYTHONPATH=<native package root> nice -n 10 python -m benchmarks.bench_blockwise_selection_builds --run native.json
    PYTHONPATH=<portable package root> nice -n 10 python -m benchmarks.bench_blockwise_selection_builds --run portable.json
    python -m benchmarks.bench_blockwise_selection_builds --compare \
        benchmarks/results/blockwise_selection_builds_native.json benchmarks/results/blockwise_selection_builds_portable.json

The two JSON files of the recorded run are kept beside the Markdown result.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SMALL_SEEDS = range(6)
CODE_SEEDS = range(2)
TIMING_REPS = 3
NOTES = "## Notes\n"


def _build_info() -> dict:
    """The build of the extension this process loaded (read when the run starts)."""
    import hashlib

    from hetmtl import _core

    so = Path(_core.__file__)
    cfg = so.parent / "_build_config.json"
    info = json.loads(cfg.read_text()) if cfg.exists() else {}
    info["sha256"] = hashlib.sha256(so.read_bytes()).hexdigest()[:16]
    return info


def _test_rmse_per_config(m, data, split) -> list[float]:
    """Average test RMSE of every configuration's early-stopped parameters (the fitted model
    pointed at each configuration in turn; nothing is refitted)."""
    fit = m.fit_
    keep = m.member_, m.selected_config_
    out = []
    try:
        for i in range(len(fit.configs)):
            m.member_, m.selected_config_ = fit.member(i), dict(fit.configs[i])
            out.append(float(m.evaluate(data, split.test)["rmse"].iloc[-1]))
    finally:
        m.member_, m.selected_config_ = keep
    return out


def run(out: Path, timing_reps: int = TIMING_REPS) -> None:
    from hetmtl.blockwise.model import MTLHMB
    from hetmtl.blockwise.selection import make_split, select_config
    from hetmtl.blockwise.simulate import simulate_blockwise

    build = _build_info()
    records = []
    for grid, seeds in (("small", SMALL_SEEDS), ("code", CODE_SEEDS)):
        for seed in seeds:
            sim = simulate_blockwise(n=200, p0=40, p_private=10, rho=(0.95, 0.7), alpha=0.3, sigma=0.1, seed=seed)
            split = make_split(sim.data, seed=seed)
            t0 = time.perf_counter()
            m = MTLHMB(grid=grid, hbi_grid="small", max_epochs=600, hbi_max_epochs=2000, engine="native",
                       n_threads=1, random_state=seed, selection="1se").fit(sim.data, split)
            fit = m.fit_
            i_min = select_config(fit.val_loss, fit.val_se, fit.configs, "min")
            i_1se = fit.selected
            rec = {"grid": grid, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                   "hbi_selected": {str(s): int(f.selected) for s, f in m.imputer_.fits_.items()},
                   "selected_1se": i_1se, "selected_min": i_min,
                   "config_1se": fit.configs[i_1se], "config_min": fit.configs[i_min],
                   "val_loss": [float(v) for v in fit.val_loss], "val_se": [float(v) for v in fit.val_se],
                   "best_epoch": [int(v) for v in fit.best_epoch],
                   "test_rmse": _test_rmse_per_config(m, sim.data, split)}
            rec["test_rmse_1se"], rec["test_rmse_min"] = rec["test_rmse"][i_1se], rec["test_rmse"][i_min]
            records.append(rec)
            print(grid, seed, i_1se, i_min, round(rec["test_rmse_1se"], 4), round(rec["test_rmse_min"], 4), flush=True)
    timing = kernel_seconds(timing_reps)
    print("kernel seconds", timing, flush=True)
    out.write_text(json.dumps({"build": build, "records": records, "timing": timing}, indent=1))


def kernel_seconds(reps: int = TIMING_REPS, max_epochs: int = 600, hbi_max_epochs: int = 2000) -> dict:
    """Wall and process CPU seconds in the Step-2 and HBI training kernels of one fixed fit (seed 0,
    small grids, ``patience`` = the epoch cap: every configuration trains every epoch), ``reps`` times.
    CPU seconds are the steadier measure on a shared machine."""
    from hetmtl import _core
    from hetmtl.blockwise.model import MTLHMB
    from hetmtl.blockwise.selection import make_split
    from hetmtl.blockwise.simulate import simulate_blockwise

    sim = simulate_blockwise(n=200, p0=40, p_private=10, rho=(0.95, 0.7), alpha=0.3, sigma=0.1, seed=0)
    split = make_split(sim.data, seed=0)
    kinds = ("step2", "hbi")
    times: dict[str, list[float]] = {f"{k}{c}": [] for k in kinds for c in ("", "_cpu")}
    originals = {k: getattr(_core, f"blockwise_train_{k}") for k in kinds}

    def timed(key: str):
        def call(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return originals[key](*args, **kwargs)
            finally:
                times[key][-1] += time.perf_counter() - t0
                times[f"{key}_cpu"][-1] += time.process_time() - c0
        return call

    try:
        for k in kinds:
            setattr(_core, f"blockwise_train_{k}", timed(k))
        for _ in range(reps):
            for v in times.values():
                v.append(0.0)
            MTLHMB(grid="small", hbi_grid="small", max_epochs=max_epochs, hbi_max_epochs=hbi_max_epochs,
                   patience=max(max_epochs, hbi_max_epochs), engine="native", n_threads=1,
                   random_state=0).fit(sim.data, split)
    finally:
        for k, f in originals.items():
            setattr(_core, f"blockwise_train_{k}", f)
    return {"reps": reps, "max_epochs": max_epochs, "hbi_max_epochs": hbi_max_epochs,
            **{k: [round(t, 3) for t in v] for k, v in times.items()}}


def _configs(rec: dict) -> list[dict]:
    from hetmtl.blockwise.selection import step2_grid

    return step2_grid(rec["grid"])


def _name(d: dict) -> str:
    b = d["build"]
    return (f"{b.get('arch', '?')} ({'native' if b.get('native') else 'portable'} build; {b.get('compiler', '?')}, "
            f"`{b.get('cxx_flags', '?')}`{', LTO' if b.get('lto') else ''}; extension {b.get('sha256', '?')})")


def _agreement(a: dict, b: dict) -> dict:
    """Counts of replicates where two builds agree: the selections of each rule (k = the 1-SE rule's
    tolerance in standard errors) and the losses bit for bit; the median relative loss difference."""
    from hetmtl.blockwise.selection import select_config

    pairs = list(zip(a["records"], b["records"]))
    for ra, rb in pairs:
        assert (ra["grid"], ra["seed"]) == (rb["grid"], rb["seed"])
    rule = lambda r, k: select_config(r["val_loss"], k * np.array(r["val_se"]), _configs(r), "1se")  # noqa: E731
    return {"n": len(pairs),
            "bitwise": sum(ra["val_loss"] == rb["val_loss"] and ra["best_epoch"] == rb["best_epoch"] for ra, rb in pairs),
            "hbi": sum(ra["hbi_selected"] == rb["hbi_selected"] for ra, rb in pairs),
            **{k: sum(rule(ra, k) == rule(rb, k) for ra, rb in pairs) for k in (0.0, 0.1, 0.25, 0.5, 1.0)},
            "median_rel": float(np.mean([np.median(np.abs(np.array(ra["val_loss"]) - np.array(rb["val_loss"]))
                                                   / np.array(ra["val_loss"])) for ra, rb in pairs]))}


def _speed_rows(builds: dict[str, dict]) -> list[str]:
    """Median (min) kernel seconds of each build's timed fits and the ratio of medians to build B."""
    cols = ("step2_cpu", "step2", "hbi_cpu", "hbi")
    med = {key: {c: float(np.median(d["timing"][c])) for c in cols} for key, d in builds.items() if d.get("timing")}
    rows = []
    for key, m in med.items():
        t = builds[key]["timing"]
        cells = [f"{m[c]:.2f} ({min(t[c]):.2f}) | {m[c] / med['B'][c]:.2f}" if "B" in med else f"{m[c]:.2f}"
                 for c in cols]
        rows.append(f"| {key} = {builds[key]['build'].get('arch', '?')} | " + " | ".join(cells) + " |")
    return rows


def compare(a_path: Path, b_path: Path, out: Path, others: list[Path] | tuple = ()) -> str:
    paths = {"A": Path(a_path), "B": Path(b_path), **{chr(ord("C") + i): Path(p) for i, p in enumerate(others)}}
    builds = {k: json.loads(p.read_text()) for k, p in paths.items()}
    a, b = builds["A"], builds["B"]
    rows = []
    for ra, rb in zip(a["records"], b["records"]):
        va, vb = np.array(ra["val_loss"]), np.array(rb["val_loss"])
        same = {k: ra[f"selected_{k}"] == rb[f"selected_{k}"] for k in ("1se", "min")}
        same_hbi = ra["hbi_selected"] == rb["hbi_selected"]
        cfg = lambda r, k: "h{width} L{depth} λ{lambda_orth:g}/{lambda_imp:g}/{lambda_dr:g}".format(**r[f"config_{k}"])  # noqa: E731
        rows.append(f"| {ra['grid']} | {ra['seed']} | {'yes' if same_hbi else 'no'} | "
                    f"{cfg(ra, '1se')} / {cfg(rb, '1se')} | {'yes' if same['1se'] else '**no**'} | "
                    f"{cfg(ra, 'min')} / {cfg(rb, 'min')} | {'yes' if same['min'] else '**no**'} | "
                    f"{np.max(np.abs(va - vb) / va):.1e} | {ra['test_rmse_1se']:.4f} / {rb['test_rmse_1se']:.4f} | "
                    f"{ra['test_rmse_min']:.4f} / {rb['test_rmse_min']:.4f} |")
    ag = _agreement(a, b)
    n = ag["n"]
    # the 1-SE rule's tolerance scaled by k (k = 0: the lowest loss), from the stored losses and the
    # per-configuration test RMSE of both builds
    from hetmtl.blockwise.selection import select_config

    rules = []
    for k in (0.0, 0.1, 0.25, 0.5, 1.0):
        rmse = [[r["test_rmse"][select_config(r["val_loss"], k * np.array(r["val_se"]), _configs(r), "1se")]
                 for r in d["records"]] for d in (a, b)]
        rules.append(f"| {k:g} | {ag[k]}/{n} | {np.mean(rmse[0]):.4f} | {np.mean(rmse[1]):.4f} |")
    if ag["bitwise"] == n:
        verdict = (f"The fits are the same bit for bit: every configuration's validation loss and best epoch agree "
                   f"exactly in {n}/{n} replicates, so every rule selects the same configuration.")
    else:
        verdict = (f"Validation losses bitwise identical in {ag['bitwise']}/{n} replicates. The builds' fits differ, "
                   f"not only their rounding of near ties: the median relative difference of a configuration's "
                   f"validation loss between the builds is {ag['median_rel']:.0%} (mean over replicates), so no "
                   "tolerance on the losses can make the native float32 engine's selection build-independent; the "
                   "tolerance only removes ties at the rounding level.")
    lines = [
        "# MTL-HMB selection across builds (`bench_blockwise_selection_builds.py`)", "",
        *[f"Build {k}: {_name(d)}; `{paths[k].name}`." for k, d in builds.items()], "",
        "The same code and seeds on the same machine (AMD EPYC, AVX-512), native engine (float32, one thread, "
        "`nice -n 10`, the other core shared). Demo setting: heterogeneous two-task DGP, n = 200 per task, p0 = 40, "
        "private blocks of 10, HBI small grid (2000 epochs), Step 2 at 600 epochs; small grid (8 configurations) "
        f"for seeds {SMALL_SEEDS.start}-{SMALL_SEEDS.stop - 1}, the authors' code grid (72) for seeds "
        f"{CODE_SEEDS.start}-{CODE_SEEDS.stop - 1}. Losses: float64 validation loss recomputed from the "
        "early-stopped parameters; rel. diff = the largest relative difference between the builds' losses "
        "over the grid. Run: `--run` once per build (each build's package first on `PYTHONPATH`), then "
        "`--compare A.json B.json [C.json ...]`.", "",
        f"A vs B, same Step-2 selection: 0.25-SE rule (the default) {ag[0.25]}/{n}, 1-SE rule {ag[1.0]}/{n}, "
        f"lowest loss {ag[0.0]}/{n}; same HBI selection {ag['hbi']}/{n}. {verdict}", ""]
    for key in list(builds)[2:]:
        ac = _agreement(builds[key], b)
        lines += [f"{key} vs B: same Step-2 selection 0.25-SE {ac[0.25]}/{n}, 1-SE {ac[1.0]}/{n}, lowest loss "
                  f"{ac[0.0]}/{n}; same HBI selection {ac['hbi']}/{n}; losses bitwise identical in "
                  f"{ac['bitwise']}/{n} replicates, median relative loss difference {ac['median_rel']:.0%}.", ""]
    lines += [
        "| grid | seed | HBI same | 1-SE: A / B | same | min: A / B | same | loss rel. diff | test RMSE 1-SE A / B "
        "| test RMSE min A / B |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Tolerance of the rule: keep the smallest configuration within k standard errors of the lowest "
        "loss (k = 0.25: the estimators' default; k = 1: `selection=\"1se\"`; k = 0: `\"min\"`). Same "
        "selection in both builds and the mean test RMSE (average over tasks) of the selected configurations "
        "(every configuration's test RMSE is stored, so each rule is evaluated on the same fits):", "",
        "| k (SE) | same selection | mean test RMSE A | mean test RMSE B |", "|---|---|---|---|", *rules, ""]
    speed = _speed_rows(builds)
    if speed:
        t = b["timing"]
        lines += [
            f"Kernel time of one fixed fit (seed 0, small grids, {t['max_epochs']} Step-2 and {t['hbi_max_epochs']} "
            "HBI epochs, no early stopping, so every build does the same work): process CPU and wall seconds "
            f"in the C++ training kernels, median (min) of {t['reps']} repetitions, ratio of medians to B (CPU "
            "seconds compare the builds; wall seconds also count waiting for the shared cores):", "",
            "| build | Step 2 CPU s | ratio | Step 2 wall s | ratio | HBI CPU s | ratio | HBI wall s | ratio |",
            "|---|---|---|---|---|---|---|---|---|", *speed, ""]
    text = "\n".join(lines)
    # a hand-written "## Notes" section of an earlier result is kept
    notes = out.read_text().partition(NOTES)[2] if out.exists() else ""
    text += f"\n{NOTES}{notes}" if notes else ""
    out.write_text(text)
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", metavar="OUT.json")
    ap.add_argument("--time", metavar="RUN.json", help="measure the kernel times again into a --run file")
    ap.add_argument("--reps", type=int, default=TIMING_REPS, help="repetitions of the timed fit")
    ap.add_argument("--compare", nargs="+", metavar="A.json B.json [C.json ...]")
    ap.add_argument("--out", default=str(RESULTS / "blockwise_selection_builds.md"))
    args = ap.parse_args(argv)
    if args.run:
        run(Path(args.run), args.reps)
    if args.time:
        path = Path(args.time)
        d = json.loads(path.read_text())
        assert d["build"]["sha256"] == _build_info()["sha256"], "the run was made with another extension"
        d["timing"] = kernel_seconds(args.reps)
        print("kernel seconds", d["timing"], flush=True)
        path.write_text(json.dumps(d, indent=1))
    if args.compare:
        if len(args.compare) < 2:
            ap.error("--compare takes two JSON files or more")
        paths = [Path(f) for f in args.compare]
        print(compare(paths[0], paths[1], Path(args.out), paths[2:]))


if __name__ == "__main__":
    main()
