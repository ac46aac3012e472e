"""HTL fidelity: which protocol difference puts our HTL above the authors' code printouts.

Our recorded HTL (``blockwise_repro_summary.md``) ran the *small* HTL grid (h in {32, 64}, L in {2, 3})
with R_dr in the paper's per-task form (``dr_mode="per_task"``, Eq. 8). The authors' HTL printouts
(spec §5.6, ``data/mtlhmb_code_printouts.csv``) come from their code, which (spec §2, §4.3) runs the
code grid (h in {32, 64, 128}, L in {2, 3, 4}) and sums the task weights inside the R_dr norm
(``dr_mode="sum_inside"``), both with lambda_orth = lambda_dr = 1. This benchmark refits HTL on the
same replicates (seed r = data, split and fit seed, as the reproduction) under the four combinations
and compares each with the printouts on the code metric (``rmse_code``, mean of batch-16 RMSEs).

Run (about 1-2 CPU-minutes per row and replicate for the four variants, native engine; ``--variants``
fits only some of them, e.g. ``authors`` = the authors' protocol alone, 5-30 CPU-seconds per fit)::

    PYTHONPATH=src nice -n 10 python -m benchmarks.bench_blockwise_htl --reps 10
    PYTHONPATH=src nice -n 10 python -m benchmarks.bench_blockwise_htl --rows "D:100,200" --reps 5 \
        --variants authors --selection min

Rows and replicates already in the raw file are not refitted.

Writes ``benchmarks/results/blockwise_htl.{md,csv}`` (raw per-replicate rows in
``blockwise_htl_raw.csv``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PRINTOUTS = HERE / "data" / "mtlhmb_code_printouts.csv"
#: the two-task rows the printouts cover (Gaussian covariates)
DEFAULT_ROWS = "B:0.5,0.7,0.9;C:0.2,0.4;D:200,400;E:50,100"
VARIANTS = {
    "recorded (small, per_task)": dict(grid="small", dr_mode="per_task"),
    "small, sum_inside": dict(grid="small", dr_mode="sum_inside"),
    "code, per_task": dict(grid="code", dr_mode="per_task"),
    "code, sum_inside (authors' code)": dict(grid="code", dr_mode="sum_inside"),
}
#: short keys of ``--variants`` (the full names are accepted too)
VARIANT_KEYS = {"recorded": "recorded (small, per_task)", "small-sum": "small, sum_inside",
                "code-per": "code, per_task", "authors": "code, sum_inside (authors' code)"}


def parse_variants(spec: str | None) -> list[str]:
    """``"authors,code-per"`` (short keys or full names, comma-separated) -> variant names; None = all four."""
    if not spec:
        return list(VARIANTS)
    out = []
    for part in (x.strip() for x in spec.split(",")):
        name = VARIANT_KEYS.get(part, part)
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r}; use one of {sorted(VARIANT_KEYS)} or {list(VARIANTS)}")
        out.append(name)
    return list(dict.fromkeys(out))


def parse_rows(spec: str) -> list[tuple[str, float]]:
    rows = []
    for part in spec.split(";"):
        setting, values = part.split(":")
        rows += [(setting.strip(), float(v)) for v in values.split(",")]
    return rows


def run(rows, reps: int, max_epochs: int, out_raw: Path, selection: str | None,
        variants: list[str] | None = None) -> pd.DataFrame:
    """Fit the ``variants`` (default all) on every row and replicate not yet in ``out_raw``; appends there."""
    from hetmtl.blockwise.baselines import HTL
    from hetmtl.blockwise.selection import make_split
    from hetmtl.blockwise.simulate import setting_params, simulate_blockwise

    done = pd.read_csv(out_raw) if out_raw.exists() else pd.DataFrame()
    records = done.to_dict("records")
    have = {(r["setting"], float(r["value"]), int(r["rep"]), r["variant"]) for r in records}
    for setting, value in rows:
        v = int(value) if setting in ("D", "E") else value
        for rep in range(reps):
            sim = None
            for label in variants or list(VARIANTS):
                opts = VARIANTS[label]
                if (setting, float(value), rep, label) in have:
                    continue
                if sim is None:
                    sim = simulate_blockwise(**setting_params(setting, v), seed=rep)
                    split = make_split(sim.data, seed=rep)
                extra = {} if selection is None else {"selection": selection}
                est = HTL(max_epochs=max_epochs, engine="native", n_threads=1, random_state=rep, **opts, **extra)
                t0 = time.perf_counter()
                est.fit(sim.data, split)
                tab = est.test_table_
                records.append({"setting": setting, "value": float(value), "rep": rep, "variant": label,
                                "rmse": float(tab["rmse"].iloc[-1]), "rmse_code": float(tab["rmse_code"].iloc[-1]),
                                "seconds": round(time.perf_counter() - t0, 2),
                                "selected": json.dumps(est.selected_config_)})
                pd.DataFrame(records).to_csv(out_raw, index=False)
                print(setting, value, rep, label, round(records[-1]["rmse_code"], 3), flush=True)
    return pd.DataFrame(records)


def summarize(raw: pd.DataFrame) -> pd.DataFrame:
    ref = pd.read_csv(PRINTOUTS)
    ref = ref[(ref["method"] == "HTL") & (ref["covariates"] == "gaussian")].drop_duplicates(["setting", "value"])
    ref = ref.set_index(["setting", "value"])
    out = []
    for (setting, value, variant), g in raw.groupby(["setting", "value", "variant"], sort=False):
        code = ref.loc[(setting, value)] if (setting, value) in ref.index else None
        m = g["rmse_code"].mean()
        row = {"setting": setting, "value": value, "variant": variant, "reps": len(g),
               "ours rmse_code": f"{m:.3f} ({g['rmse_code'].std(ddof=1):.3f})",
               "code HTL": None if code is None else f"{code['mean']:.3f} ({code['sd']:.3f})",
               "gap": None if code is None else round(m - code["mean"], 3),
               "gap in printout SDs": None if code is None else round((m - code["mean"]) / code["sd"], 2),
               "seconds / fit": round(g["seconds"].mean(), 1)}
        out.append(row)
    order = {v: i for i, v in enumerate(VARIANTS)}
    return pd.DataFrame(out).sort_values(["setting", "value", "variant"], key=lambda c: c.map(order)
                                         if c.name == "variant" else c, kind="stable", ignore_index=True)


def paired(raw: pd.DataFrame, a: str, b: str) -> tuple[float, float, float, int]:
    """Mean paired difference a − b of rmse_code over all (row, replicate) pairs with its 95 % CI."""
    from scipy import stats

    w = raw.pivot_table(index=["setting", "value", "rep"], columns="variant", values="rmse_code").dropna(subset=[a, b])
    d = (w[a] - w[b]).to_numpy()
    if d.size < 2:
        return float("nan"), float("nan"), float("nan"), int(d.size)
    h = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - h), float(d.mean() + h), int(d.size)


#: how the recorded raw file was produced (printed in the Markdown result)
RUN_NOTE = ("Run recorded here: all four variants on rows B 0.5 (8 replicates), B 0.7, C 0.2, E 50 (5 replicates); "
            "then the authors' protocol alone (`--variants authors --selection min --reps 5`) on every other two-task "
            "row the code printouts cover, one DGP once: B 0.6, 0.8, 0.9; C 0.1, 0.3 (= A 0.8), 0.4, 0.5; "
            "D 100, 200, 400, 500, 600 (D 300 = E 25 = B 0.7); E 75, 100, 125 (75 fits, 17 CPU-minutes, 4-51 s "
            "wall per fit, median 17 s). `nice`, one thread, on a 2-core machine shared with other jobs (load "
            "1-3.3; the fit seconds are wall times under that load). B 0.5 ran before the selection change (the "
            "lowest float32 validation loss), the other rows with `selection=\"min\"` (the lowest float64 loss): "
            "the authors' rule in both.")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=DEFAULT_ROWS)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-epochs", type=int, default=25000)
    ap.add_argument("--variants", default=None,
                    help=f"comma list of variants to fit (short keys {', '.join(VARIANT_KEYS)} or full names); default all")
    ap.add_argument("--selection", default=None, help="HTL selection rule (default: the estimator's)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--summarize", action="store_true")
    args = ap.parse_args(argv)
    res = Path(args.results)
    raw_path = res / "blockwise_htl_raw.csv"
    raw = pd.read_csv(raw_path) if args.summarize else run(parse_rows(args.rows), args.reps, args.max_epochs,
                                                          raw_path, args.selection, parse_variants(args.variants))
    table = summarize(raw)
    table.to_csv(res / "blockwise_htl.csv", index=False)
    base = "recorded (small, per_task)"
    lines = ["# HTL fidelity (`bench_blockwise_htl.py`)", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Replicates: seeds 0..{int(raw['rep'].max())}; native engine, 25000-epoch cap, patience 30. "
             "gap = our mean rmse_code minus the authors' HTL printout (Gaussian covariates).", "", RUN_NOTE, "",
             table.to_markdown(index=False), "", "Paired differences to the recorded protocol, all rows pooled "
             "(rmse_code, mean [95 % CI], pairs):", ""]
    for v in VARIANTS:
        if v == base:
            continue
        m, lo, hi, n = paired(raw, v, base)
        lines.append(f"- {v} − recorded: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] ({n} pairs)")
    gaps = table.dropna(subset=["gap"])
    every = gaps.groupby(["setting", "value"]).variant.transform("nunique") == gaps.variant.nunique()
    lines += [""]
    for label, sub in (("over the rows run", gaps), ("over the rows run with every variant", gaps[every])):
        g = sub.groupby("variant", sort=False)["gap"].agg(["mean", "count"]).reindex(
            [v for v in VARIANTS if v in set(sub.variant)])
        lines.append(f"Mean gap to the printouts {label}: "
                     + "; ".join(f"{k}: {r['mean']:+.3f} ({int(r['count'])} rows)" for k, r in g.iterrows()))
    lines += [""]
    (res / "blockwise_htl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
