"""Reproduction of the MTL-HMB paper's simulations (arXiv 2505.24413): Tables 2-9 and Figure 8, run
through the study runner (:mod:`hetmtl.studies`; built-in studies ``blockwise-A`` ...
``blockwise-linear``, ``blockwise-ablation``, built by :func:`hetmtl.studies.builtin.blockwise_study`).

Every row of a table is a grid value of its study (:data:`hetmtl.blockwise.SETTINGS`); replicate r
draws its data with seed r (the authors used seeds 0-19), one paired 60/20/20 split per task, and
fits every method on that split with ``random_state=r``. Methods: MTL-HMB, STL, HTL (Tables 2-9);
Figure 8 adds Step1+STL, Step1+HPS and Naive+Step2 (HBI is fitted once per replicate and shared by
MTL-HMB and the Step-1 ablations). MBI runs in ``bench_mbi_tables.py`` with the same seeds; the
summary puts its replicates that match the ones run here beside the other methods.

Rows of different tables with the same DGP (:func:`hetmtl.blockwise.simulate.dgp_key`: Table 3
rho2 = 0.7, Table 5 n = 300, Table 6 p = 25, Table 7 sigma1 = 0.1; Table 2 rho = 0.8, Table 4
alpha = 0.3) draw the same data and split for a seed, and the paper prints one run for each group.
They are run once (the member with the most stored replicates, :func:`shared_sources`), and the
summary reports that member's replicates for every row of the group (column ``replicates of``).

Results go to resumable stores ``results/studies/blockwise-repro/<profile>/blockwise-<setting>/``,
one profile per (grid, HBI grid, epoch caps, dr_mode, engine), e.g. ``code-code-e25000-h5000-per_task``
(the full protocol, torch engine; ``...-per_task-native`` with ``--engine native``). After a run (or with ``--summarize``) the driver writes from every store:
``results/blockwise_repro_raw.csv`` (one row per fit, the pre-runner format),
``results/blockwise_repro_summary.{csv,md}`` (our mean (SD) next to the paper's numbers row by row,
with the two checks of issue 4: MTL-HMB mean <= paper MTL-HMB mean + 1 SE (SE = paper SD / sqrt(20)),
and MTL-HMB mean < our STL mean; the row's exact Bayes floor RMSE (:func:`hetmtl.blockwise.bayes_floor`)
over the seeds run and over seeds 0-19, with a flag where the paper's mean lies below it; the authors'
code printouts of spec §5.6 (``data/mtlhmb_code_printouts.csv``) and our gap to them; HTL refitted with
the authors' protocol by ``bench_blockwise_htl.py``, read from ``results/blockwise_htl_raw.csv``),
``results/blockwise_repro_reference.csv`` (every paper number and code printout with ours, the delta,
relative delta and delta in SEs) and boxplots ``results/blockwise_repro_<setting>.png``; with
``--store-reports`` also each store's ``report/`` (:func:`hetmtl.studies.write_report`; not kept
under version control). Only rewriting these from the stores (no fits): ``--summarize``
(``--no-figures`` leaves the PNGs alone).

Full protocol (CPU-days):  PYTHONPATH=src nice -n 10 python -m benchmarks.bench_blockwise_repro --reps 20
Reduced run:               ... --rows "D:300;B:0.5" --reps 3 --grid small --hbi-grid small --jobs 2
Import a pre-runner raw CSV into the stores: ... --import-raw OLD.csv
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hetmtl.studies import ResultStore, compare_reference, load_results, run_study, summary_table, write_report
from hetmtl.studies.builtin import (BLOCKWISE_ABLATION_METHODS, BLOCKWISE_PROTOCOL, BLOCKWISE_TABLE_METHODS,
                                    blockwise_generator, blockwise_splitter, blockwise_study)
from hetmtl.studies.spec import Study, setting_label

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STORES = RESULTS / "studies" / "blockwise-repro"
MBI_STORE = RESULTS / "mbi_tables_paired"  # bench_mbi_tables.py
REFERENCE = HERE / "data" / "mtlhmb_paper_tables.csv"
#: the authors' code printouts (spec §5.6), mapped to the paper's setting letters; Gaussian rows are used
CODE_REFERENCE = HERE / "data" / "mtlhmb_code_printouts.csv"
#: replicate seeds of the "floor (seeds 0-19)" column: the authors' seeds
FLOOR_SEEDS = range(20)
TABLE_SETTINGS = ["A", "B", "C", "D", "E", "F", "T", "linear"]
#: study method name -> the label of the pre-runner files and the paper's tables
LABELS = {"mtl-hmb": "MTL-HMB", "stl": "STL", "htl": "HTL", "hps": "HPS", "mbi": "MBI", "step1+stl": "Step1+STL",
          "step1+hps": "Step1+HPS", "naive+step2": "Naive+Step2", "cc_lasso_task": "CC-lasso",
          "cc_lasso": "CC-lasso (pooled)"}
NAMES = {v: k for k, v in LABELS.items()}
#: methods added to the stores after the protocol's runs (their replicate count is shown in their cell
#: when it differs from the row's)
EXTRA_METHODS = ("cc_lasso_task", "cc_lasso")
ORDER = [LABELS[m] for m in BLOCKWISE_ABLATION_METHODS] + ["HPS", "MBI", "CC-lasso"]


def _settings():
    from hetmtl.blockwise import SETTINGS

    return SETTINGS


def parse_rows(spec: str | None) -> dict[str, list]:
    """``"A:0.5,0.6;D:all"`` -> {setting: [values]}; None = every row of Tables 2-9 and Figure 8."""
    settings = _settings()
    if not spec:
        return {s: list(settings[s]["values"]) for s in TABLE_SETTINGS + ["ablation"]}
    rows: dict[str, list] = {}
    for part in spec.split(";"):
        name, _, vals = part.partition(":")
        if name not in settings:
            raise SystemExit(f"unknown setting {name!r} in --rows; settings are {sorted(settings)}")
        values = settings[name]["values"]
        if vals and vals != "all":
            wanted = [v.strip() for v in vals.split(",")]
            values = [v for v in values if str(v) in wanted]
            if len(values) != len(wanted):
                raise SystemExit(f"unknown value(s) in {part!r}; setting {name} has {settings[name]['values']}")
        rows.setdefault(name, []).extend(values)
    return rows


def profile_name(grid="code", hbi_grid="code", max_epochs=25000, hbi_max_epochs=5000, dr_mode="per_task",
                 engine="torch", **_) -> str:
    suffix = "" if engine == "torch" else f"-{engine}"  # torch-engine stores keep their names
    return f"{grid}-{hbi_grid}-e{int(max_epochs)}-h{int(hbi_max_epochs)}-{dr_mode}{suffix}"


def _profile_options(profile: str) -> dict:
    grid, hbi, e, h, rest = profile.split("-", 4)
    dr, _, engine = rest.partition("-")
    return {"grid": grid, "hbi_grid": hbi, "max_epochs": int(e[1:]), "hbi_max_epochs": int(h[1:]), "dr_mode": dr,
            "engine": engine or "torch"}


def _study(setting: str, directory: Path, extra_methods=(), n_reps=None, **options):
    """The setting's study with the protocol methods, those already stored and ``extra_methods``."""
    names = list(BLOCKWISE_ABLATION_METHODS if setting == "ablation" else BLOCKWISE_TABLE_METHODS)
    if (directory / "results.sqlite").exists():
        with ResultStore(directory / "results.sqlite") as store:
            for spec in store.study_specs():
                names += [m["name"] for m in spec["methods"]]
    names += list(extra_methods)
    return blockwise_study(setting, methods=list(dict.fromkeys(names)), n_reps=n_reps, **options)


def _row_counts(setting: str, frame: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Replicates stored per row of one store: (setting, value) -> the fewest over the row's methods."""
    if frame.empty:
        return {}
    per = frame.groupby(["setting_value", "method"]).replicate.nunique().groupby(level=0).min()
    return {(setting, _norm(v)): int(n) for v, n in per.items()}


def _stored_counts(profile_dir: Path) -> dict[tuple[str, str], int]:
    """:func:`_row_counts` of every store of one profile."""
    return {k: n for db in profile_dir.glob("blockwise-*/results.sqlite")
            for k, n in _row_counts(db.parent.name.removeprefix("blockwise-"), load_results(db.parent).frame).items()}


def shared_sources(counts: dict[tuple[str, str], int], prefer=()) -> dict[tuple[str, str], tuple[str, str]]:
    """Row (setting, value) -> the row whose replicates it reports. Rows with the same DGP
    (:func:`hetmtl.blockwise.simulate.dgp_key`; the studies draw replicate r with seed r) get the same
    data and split, so they are run once, as the paper did; the source is the member with the most
    stored replicates (``counts``), ties broken by the rows in ``prefer``, then by paper order."""
    from hetmtl.blockwise.simulate import dgp_key

    groups: dict[tuple, list[tuple[str, str]]] = {}
    for setting, values in parse_rows(None).items():
        for v in values:
            groups.setdefault(dgp_key(setting, v), []).append((setting, _norm(v)))
    return {row: max(members, key=lambda m: (counts.get(m, 0), m in prefer, -members.index(m)))
            for members in groups.values() for row in members}


def _value(setting: str, norm_value: str):
    """The setting's grid value (its own type) whose normalised text is ``norm_value``."""
    return next(v for v in _settings()[setting]["values"] if _norm(v) == norm_value)


def run(rows: dict[str, list], reps: int | None, options: dict, methods=None, jobs: int = 1,
        timeout: float | None = None, stores: Path = STORES, progress: bool = True) -> None:
    base = stores / profile_name(**options)
    source = shared_sources(_stored_counts(base), [(s, _norm(v)) for s, values in rows.items() for v in values])
    todo: dict[str, list] = {}
    for setting, values in rows.items():
        for v in values:
            src = source[(setting, _norm(v))]
            if src != (setting, _norm(v)):
                print(f"{setting} {_norm(v)}: the same data as {src[0]} {src[1]}, which is run instead", flush=True)
            if _value(*src) not in todo.setdefault(src[0], []):
                todo[src[0]].append(_value(*src))
    for setting, values in todo.items():
        d = base / f"blockwise-{setting}"
        study = _study(setting, d, methods or (), **options)
        n = reps if setting != "ablation" or reps != 20 else 30  # Figure 8: 30 replicates
        res = run_study(study, d, n_reps=n or study.n_reps, n_jobs=jobs, timeout=timeout, progress=progress,
                        only={"setting_value": values}, methods=methods)
        print(f"{setting} {values}: {res.n_run} jobs run, {res.n_skipped} already stored, {res.n_failed} with "
              f"failures ({res.seconds:.0f} s)", flush=True)


def import_raw(path: Path, stores: Path = STORES) -> int:
    """Load a pre-runner ``blockwise_repro_raw.csv`` into the stores (one record per fit; the
    per-task rows and test sizes are rebuilt from the seeded data and split). Returns records added."""
    raw = pd.read_csv(path, dtype={"value": str})
    added = 0
    for (grid, hbi, me, hme), block in raw.groupby(["grid", "hbi_grid", "max_epochs", "hbi_max_epochs"]):
        options = {"grid": grid, "hbi_grid": hbi, "max_epochs": int(me), "hbi_max_epochs": int(hme)}
        for setting, sub in block.groupby("setting"):
            d = stores / profile_name(**options) / f"blockwise-{setting}"
            d.mkdir(parents=True, exist_ok=True)
            study = _study(setting, d, [NAMES[m] for m in sub.method.unique()], **options)
            values = study.grid["setting_value"]
            with ResultStore(d / "results.sqlite") as store:
                store.register_study(study.to_dict(), study.data_key())
                for (value, rep), fits in sub.groupby(["value", "rep"]):
                    v = next(x for x in values if _norm(x) == _norm(value))
                    sim = blockwise_generator(setting=setting, setting_value=v, random_state=int(rep))
                    split = blockwise_splitter(sim, int(rep))
                    tasks, n_test = sim.data.task_names, [len(r) for r in split.test]
                    recs = []
                    for r in fits.itertuples():
                        rmse = json.loads(r.rmse_tasks)
                        rows = [{"task": str(t), "rmse": float(x), "n": int(n), "selected": r.selected}
                                for t, x, n in zip(tasks, rmse, n_test)]
                        recs.append({"study": study.name, "setting": setting_label({"setting_value": v}),
                                     "setting_index": values.index(v), "params": {"setting_value": v},
                                     "replicate": int(rep), "method": NAMES[r.method], "status": "ok", "error": None,
                                     "seconds": float(r.seconds), "rows": rows})
                    added += store.append(recs)
    return added


def _norm(v) -> str:
    if isinstance(v, (bool, np.bool_)) or str(v) in ("True", "False"):
        return str(v)
    try:
        return f"{float(v):g}"
    except ValueError:
        return str(v)


def _stores(stores: Path):
    """(profile, setting, directory) of every store, profiles and settings in protocol order."""
    order = {s: i for i, s in enumerate(TABLE_SETTINGS + ["ablation"])}
    found = []
    for db in sorted(stores.glob("*/blockwise-*/results.sqlite")):
        setting = db.parent.name.removeprefix("blockwise-")
        found.append((db.parent.parent.name, setting, db.parent))
    return sorted(found, key=lambda x: (x[0], order.get(x[1], 99)))


def export_raw(stores: Path = STORES) -> pd.DataFrame:
    """All stores as the pre-runner raw CSV: one row per (setting, value, replicate, method, profile)."""
    out = []
    settings = _settings()
    for profile, setting, d in _stores(stores):
        f = load_results(d).frame
        if f.empty:
            continue
        opts = _profile_options(profile)
        for (si, rep, method), g in f.groupby(["setting_index", "replicate", "method"], sort=True):
            out.append(dict(setting=setting, table=settings[setting]["table"], value=_norm(g.setting_value.iloc[0]),
                            rep=int(rep), method=LABELS.get(method, method), grid=opts["grid"],
                            hbi_grid=opts["hbi_grid"], max_epochs=opts["max_epochs"],
                            hbi_max_epochs=opts["hbi_max_epochs"], dr_mode=opts["dr_mode"], engine=opts["engine"],
                            rmse_tasks=json.dumps([round(float(v), 6) for v in g.rmse]),
                            rmse_avg=float(g.rmse.mean()), seconds=round(float(g.seconds.iloc[0]), 2),
                            selected=g["selected"].iloc[0] if "selected" in g else ""))
    return pd.DataFrame(out)


def reference_frame(setting: str) -> pd.DataFrame:
    """The paper's numbers of one setting in the report's reference format."""
    ref = pd.read_csv(REFERENCE, dtype={"value": str})
    ref = ref[ref.setting == setting]
    return pd.DataFrame({"setting_value": ref.value.map(lambda v: v == "True" if v in ("True", "False") else float(v)),
                         "method": ref.method.map(NAMES), "metric": "rmse", "value": ref["mean"], "sd": ref["sd"],
                         "source": [f"MTL-HMB paper (arXiv 2505.24413) Table {t}" for t in ref.table]})


@functools.lru_cache(maxsize=None)
def _code_printouts() -> pd.DataFrame:
    """The authors' code printouts for Gaussian covariates (the rows compared with ours)."""
    ref = pd.read_csv(CODE_REFERENCE, dtype={"value": str})
    return ref[ref.covariates == "gaussian"]


def code_reference_frame(setting: str, metric: str = "rmse_code") -> pd.DataFrame:
    """The authors' code printouts (Gaussian data) of one setting in the report's reference format,
    compared on ``metric`` (their batch-mean RMSE, ``rmse_code``, when the store has it)."""
    ref = _code_printouts()
    ref = ref[ref.setting == setting]
    return pd.DataFrame({"setting_value": ref.value.map(float), "method": ref.method.map(NAMES), "metric": metric,
                         "value": ref["mean"], "sd": ref["sd"],
                         "source": [f"authors' code printout ({c} {v}; {s})"
                                    for c, v, s in zip(ref.code_setting, ref.code_value, ref.source)],
                         "note": ref["note"].fillna("")})


@functools.lru_cache(maxsize=None)
def _mbi_frame(setting: str) -> pd.DataFrame | None:
    """The paired MBI store's results of one setting (read once), None where not run."""
    try:
        return load_results(MBI_STORE, f"blockwise-{setting}-mbi").frame
    except (FileNotFoundError, ValueError):
        return None


def paired_mbi(setting: str, value, replicates) -> str:
    """Our native MBI on the same replicates (``bench_mbi_tables.py`` store: replicate r uses seed r,
    as these studies): mean (SD) of the average test RMSE over tasks, or "" where not run."""
    f = _mbi_frame(setting)
    if f is None:
        return ""
    f = f[(f.setting_value.map(_norm) == _norm(value)) & f.replicate.isin(list(replicates))]
    avg = f.groupby("replicate").rmse.mean()
    if len(avg) < len(replicates):
        return ""
    return f"{avg.mean():.3f} ({avg.std(ddof=1):.3f})" if len(avg) > 1 else f"{avg.mean():.3f}"


def row_floor(setting: str, value, seeds) -> tuple[float, float, np.ndarray]:
    """Bayes floor RMSE of a setting row (:func:`hetmtl.blockwise.simulate.bayes_floor`) over the
    replicate data seeds ``seeds``: mean and SD over seeds of the task average, mean per task."""
    from hetmtl.blockwise.simulate import bayes_floor, setting_params

    f = bayes_floor(**setting_params(setting, value), seed=[int(x) for x in seeds])
    avg = f.per_seed.mean(axis=1)
    return float(avg.mean()), float(avg.std(ddof=1)) if len(avg) > 1 else float("nan"), f.per_task


PAIRED = "MTL-HMB - STL (paired, 95% CI)"
#: ``bench_blockwise_htl.py``'s HTL refits with the protocol of the authors' code printouts (its raw file
#: ``blockwise_htl_raw.csv`` in the results directory) and the summary columns that show them
HTL_RAW = "blockwise_htl_raw.csv"
HTL_AUTHORS_VARIANT = "code, sum_inside (authors' code)"
HTL_AUTHORS = "ours HTL (authors' protocol)"
HTL_AUTHORS_GAP = "gap to code HTL (authors' protocol)"


def htl_authors_protocol(results: Path) -> dict[tuple, pd.Series]:
    """HTL refitted with the authors' protocol (``HTL_AUTHORS_VARIANT`` rows of ``results/HTL_RAW``):
    :func:`~hetmtl.blockwise.simulate.dgp_key` -> ``rmse_code`` per replicate (index: seed) of the row run
    with that DGP (the one with the most replicates); {} where the file is absent. Reads the file only."""
    from hetmtl.blockwise.simulate import dgp_key

    path = Path(results) / HTL_RAW
    if not path.exists():
        return {}
    raw = pd.read_csv(path)
    out: dict[tuple, pd.Series] = {}
    settings = _settings()
    for (setting, value), g in raw[raw.variant == HTL_AUTHORS_VARIANT].groupby(["setting", "value"]):
        if setting not in settings or _norm(value) not in {_norm(v) for v in settings[setting]["values"]}:
            continue  # a printout row outside the paper's tables (E 125): in blockwise_htl.md only
        key = dgp_key(setting, _value(setting, _norm(value)))
        x = g.set_index("rep")["rmse_code"].sort_index()
        if key not in out or len(x) > len(out[key]):
            out[key] = x
    return out


def _add_htl_authors(row: dict, x: pd.Series | None, code_ref: pd.DataFrame) -> None:
    """Put the authors'-protocol HTL refits ``x`` of the row's DGP, and their gap to the code's HTL
    printout, into the summary ``row``."""
    if x is None or x.empty:
        return
    sd = f" ({x.std(ddof=1):.3f})" if len(x) > 1 else ""
    row[HTL_AUTHORS] = f"{x.mean():.3f}{sd} [{len(x)} reps]"
    ref = code_ref[(code_ref.setting == row["setting"]) & (code_ref.value.map(_norm) == row["value"])
                   & (code_ref.method == "HTL")]
    if not ref.empty:
        row[HTL_AUTHORS_GAP] = round(float(x.mean() - ref["mean"].iloc[0]), 3)


def paired_interval(avg: pd.DataFrame, other: str = "stl") -> tuple[float, float, float, int]:
    """Mean paired difference MTL-HMB - ``other`` of the replicates' average RMSE, its t 95 % CI
    (NaN with fewer than 2 replicates) and the number of replicates."""
    from scipy import stats

    diff = (avg["mtl-hmb"] - avg[other]).dropna().to_numpy()
    if len(diff) < 2:
        return (diff.mean() if len(diff) else np.nan), np.nan, np.nan, len(diff)
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return diff.mean(), diff.mean() - half, diff.mean() + half, len(diff)


def paired_difference(avg: pd.DataFrame, other: str = "stl") -> str:
    """:func:`paired_interval` as text: ``+0.012 [-0.020, +0.044]``."""
    mean, lo, hi, n = paired_interval(avg, other)
    if n < 2:
        return f"{mean:+.3f}" if n else ""
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def check_totals(df: pd.DataFrame) -> pd.DataFrame:
    """Per profile: rows run, their replicate counts, and how many rows pass each of the issue's checks
    (20+ replicates; MTL-HMB below STL in mean and with the paired CI below 0; MTL-HMB <= paper + 1 SE). ``df``: the
    summary rows with their numeric ``_paired_hi`` (upper end of the paired CI)."""
    out = []
    for (grid, hbi, engine), g in df.groupby(["grid", "hbi_grid", "engine"], sort=False):
        count = lambda col, ok: f"{int((g[col] == ok).sum())} of {int(g[col].notna().sum())}" if col in g else "0 of 0"  # noqa: E731
        out.append({"grid": grid, "hbi_grid": hbi, "engine": engine, "rows": len(g),
                    "replicates per row": "-".join(dict.fromkeys(str(r) for r in (g.reps.min(), g.reps.max()))),
                    "rows with 20+ replicates": f"{int((g.reps >= 20).sum())} of {len(g)}",
                    "MTL-HMB < STL": count("MTL-HMB < STL", "yes"),
                    "paired CI below 0": f"{int((g['_paired_hi'] < 0).sum())} of {int(g['_paired_hi'].notna().sum())}",
                    "MTL-HMB <= paper + 1 SE": count("MTL-HMB <= paper + 1 SE", "yes")})
    return pd.DataFrame(out)


def _summary_row(setting: str, value, src: tuple[str, str], res, si, g: pd.DataFrame, summ_all: pd.DataFrame,
                 code_metric: str, opts: dict, code_ref: pd.DataFrame, ablations: list) -> dict:
    """One summary row: the replicates of row ``src`` (setting index ``si`` of ``res``; ``g`` and ``summ_all``
    its summary on rmse and on every metric) against the paper's and the code's numbers of row
    (``setting``, ``value``). Figure 8's paired comparisons are appended to ``ablations``."""
    row = dict(setting=setting, table=_settings()[setting]["table"], value=_norm(value), grid=opts["grid"],
               hbi_grid=opts["hbi_grid"], engine=opts["engine"], max_epochs=opts["max_epochs"],
               reps=int(g.loc[~g.method.isin(EXTRA_METHODS), "n_reps"].min() if (~g.method.isin(EXTRA_METHODS)).any()
                        else g.n_reps.min()),
               **{"replicates of": "" if src == (setting, _norm(value)) else " ".join(src)})
    run = sorted(res.frame.loc[res.frame.setting_index == si, "replicate"].unique())
    study = Study.from_dict(res.spec)
    fl, _, fl_task = row_floor(setting, value, [study.seeds(int(si), int(r))[0] for r in run])
    fl20, fl20_sd, _ = row_floor(setting, value, FLOOR_SEEDS)
    row["floor"] = round(fl, 3)
    row["floor per task"] = " / ".join(f"{x:.3f}" for x in fl_task)
    row["floor (seeds 0-19)"] = f"{fl20:.3f} ({fl20_sd:.3f})"
    row["ours MBI"] = paired_mbi(setting, value, run)
    for r in g.itertuples():
        lab = LABELS.get(r.method, r.method)
        row[f"ours {lab}"] = f"{r.mean:.3f} ({r.sd:.3f})" if r.n_reps > 1 else f"{r.mean:.3f}"
        if r.method in EXTRA_METHODS and r.n_reps != row["reps"]:
            row[f"ours {lab}"] += f" [{r.n_reps} reps]"
        row[f"_mean {lab}"] = r.mean
    ref = pd.read_csv(REFERENCE, dtype={"value": str})
    below = []
    for r in ref[(ref.setting == setting) & (ref.value.map(_norm) == _norm(value))].itertuples():
        row[f"paper {r.method}"] = f"{r.mean:.3f} ({r.sd:.3f})"
        row[f"_paper {r.method}"] = r.mean
        row[f"_papersd {r.method}"] = r.sd
        if r.mean < fl20:
            below.append(r.method)
    if any(k.startswith("_paper ") for k in row):
        row["paper below floor"] = ", ".join(below) if below else "no"
    ours_code = summ_all[summ_all.metric == code_metric]
    ours_code = {LABELS.get(m, m): v for m, v in zip(ours_code.method, ours_code["mean"])}
    for r in code_ref[(code_ref.setting == setting) & (code_ref.value.map(_norm) == _norm(value))].itertuples():
        row[f"code {r.method}"] = f"{r.mean:.3f} ({r.sd:.3f})"
        if r.method in ours_code:
            row[f"gap to code {r.method}"] = round(ours_code[r.method] - r.mean, 3)
            row["code gap metric"] = code_metric
    if "_mean MTL-HMB" in row and "_paper MTL-HMB" in row:
        se = row["_papersd MTL-HMB"] / np.sqrt(20)
        gap = row["_mean MTL-HMB"] - row["_paper MTL-HMB"]
        row["MTL-HMB <= paper + 1 SE"] = "yes" if gap <= se else "no"
        row["gap to paper MTL-HMB"] = round(gap, 3)
    if "_mean MTL-HMB" in row and "_mean STL" in row:
        row["MTL-HMB < STL"] = "yes" if row["_mean MTL-HMB"] < row["_mean STL"] else "no"
        per_rep = res.frame[res.frame.setting_index == si].groupby(["replicate", "method"])["rmse"].mean().unstack()
        row[PAIRED] = paired_difference(per_rep)
        row["_paired_hi"] = paired_interval(per_rep)[2]
        for other in per_rep.columns.drop(["mtl-hmb", "stl"]) if setting == "ablation" else []:
            wins = (per_rep["mtl-hmb"] - per_rep[other]).dropna()
            ablations.append({"setting": setting, "value": _norm(value), "grid": opts["grid"],
                              "hbi_grid": opts["hbi_grid"], "engine": opts["engine"], "method": LABELS.get(other, other),
                              "reps": len(wins), "MTL-HMB - method (paired, 95% CI)": paired_difference(per_rep, other),
                              "MTL-HMB lower in": f"{int((wins < 0).sum())} of {len(wins)}"})
    return row


def summarize(stores: Path = STORES, results: Path = RESULTS, figures: bool = True,
              store_reports: bool = False) -> pd.DataFrame:
    """Summary (wide, one row per setting row and profile), reference deltas, raw CSV, boxplots;
    ``store_reports``: also each store's ``report/`` (with figures when ``figures``)."""
    from hetmtl.blockwise.simulate import dgp_key

    settings = _settings()
    code_ref = _code_printouts()
    htl_authors = htl_authors_protocol(results)
    rows, comps, ablations = [], [], []
    loaded: dict[tuple[str, str], tuple] = {}
    for profile, setting, d in _stores(stores):
        res = load_results(d)
        if res.frame.empty:
            continue
        code_metric = "rmse_code" if "rmse_code" in res.frame.columns else "rmse"
        loaded[(profile, setting)] = (res, code_metric, summary_table(res, list(dict.fromkeys(["rmse", code_metric]))))
        if store_reports:
            write_report(d, figures=figures)
    for profile in dict.fromkeys(p for p, _ in loaded):
        opts = _profile_options(profile)
        counts = {k: n for (p, setting), (res, _, _) in loaded.items() if p == profile
                  for k, n in _row_counts(setting, res.frame).items()}
        source = shared_sources(counts)
        for setting, values in parse_rows(None).items():
            for value in values:
                src = source[(setting, _norm(value))]
                if src not in counts:
                    continue
                res, code_metric, summ_all = loaded[(profile, src[0])]
                si = summ_all.setting_index[summ_all.setting_value.map(_norm) == src[1]].iloc[0]
                summ_all = summ_all[summ_all.setting_index == si].assign(setting_value=value)
                g = summ_all[summ_all.metric == "rmse"]
                if isinstance(settings[setting]["table"], int):
                    comp = compare_reference(g, reference_frame(setting), ["setting_value"]).dropna(subset=["ours"])
                    comps.append(comp.assign(setting=setting, profile=profile))
                    code = code_reference_frame(setting, code_metric)
                    if not code.empty:
                        code_comp = compare_reference(summ_all, code, ["setting_value"]).dropna(subset=["ours"])
                        comps.append(code_comp.assign(setting=setting, profile=profile))
                rows.append(_summary_row(setting, value, src, res, si, g, summ_all, code_metric, opts, code_ref,
                                         ablations))
                _add_htl_authors(rows[-1], htl_authors.get(dgp_key(setting, value)), code_ref)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first = ["setting", "table", "value", "grid", "hbi_grid", "engine", "max_epochs", "reps", "replicates of"]
    ours = [c for m in ORDER for c in (f"ours {m}",) + ((HTL_AUTHORS,) if m == "HTL" else ()) if c in df.columns]
    paper = [f"paper {m}" for m in ("STL", "HTL", "MTL-HMB", "MBI") if f"paper {m}" in df.columns]
    checks = [c for c in ("gap to paper MTL-HMB", "MTL-HMB <= paper + 1 SE", "MTL-HMB < STL", PAIRED) if c in df.columns]
    floor = [c for c in ("floor", "floor per task", "floor (seeds 0-19)", "paper below floor") if c in df.columns]
    code = [c for m in ("STL", "HTL", "MTL-HMB")
            for c in (f"code {m}", f"gap to code {m}") + ((HTL_AUTHORS_GAP,) if m == "HTL" else ()) if c in df.columns]
    code += ["code gap metric"] if "code gap metric" in df.columns else []
    summary = df[first + ours + paper + checks + floor + code].astype(object).fillna("")
    summary.to_csv(results / "blockwise_repro_summary.csv", index=False)
    if comps:
        comp = pd.concat(comps, ignore_index=True)
        comp = comp.reindex(columns=["profile", "setting", "setting_value", "method", "metric", "reference",
                                     "reference_sd", "source", "n_reps", "ours", "ours_sd", "se", "delta", "rel_delta",
                                     "delta_in_se", "note"])
        comp.to_csv(results / "blockwise_repro_reference.csv", index=False)
    raw = export_raw(stores)
    raw.to_csv(results / "blockwise_repro_raw.csv", index=False)
    with open(results / "blockwise_repro_summary.md", "w") as fh:
        fh.write("# MTL-HMB reproduction (the MTL-HMB paper, arXiv 2505.24413: Tables 2-9, Figure 8)\n\n")
        fh.write("Written by `benchmarks/bench_blockwise_repro.py` from the study stores "
                 "(`results/studies/blockwise-repro/<profile>/`). ours = mean (SD) of the average test RMSE over "
                 "`reps` replicates (seeds 0..reps-1), with the grid, HBI grid and epoch cap actually run; replicates of = "
                 "the row of another table whose replicates are reported (the same DGP, hence the same data; the "
                 "paper prints one run for these rows too); paper X = the "
                 "paper's table value of method X, mean (SD). ours CC-lasso = the complete-case baseline (`CCLasso(per_task=True)`, "
                 "study method `cc_lasso_task`: a cross-validated lasso per task on its observed blocks [x0 | x_t], fitted on "
                 "the training and validation rows; no row of these layouts observes every block, so the pooled complete-case "
                 "lasso has no rows to fit) on the same data and split. ours MBI = native MBI on the same replicates (`mbi_tables_paired` store of "
                 "`bench_mbi_tables.py`). Per-row deltas to the paper's numbers: "
                 "`blockwise_repro_reference.csv`. Which run produced which numbers: `blockwise_NOTES.md`.\n\n"
                 "floor = the exact Bayes floor RMSE of the DGP (`hetmtl.blockwise.bayes_floor`: the RMSE of "
                 "E[y | the task's observed blocks], averaged over tasks), mean over the replicate seeds actually "
                 "run; floor per task = the same per task; floor (seeds 0-19) = mean (SD over seeds) over the "
                 "authors' 20 seeds. paper below floor = the paper's methods whose mean lies below floor (seeds "
                 "0-19), which no predictor can reach under the written DGP. code X = the authors' code printout "
                 "(spec §5.6, Gaussian data, code setting letters mapped to the paper's; "
                 "`data/mtlhmb_code_printouts.csv`); gap to code X = our mean minus it, on `code gap metric` "
                 "(rmse_code = their mean of batch-16 RMSEs when the store has it, else our pooled RMSE, "
                 "about 1-3 % higher). " + PAIRED + " = mean over replicates of the paired difference of the "
                 "average test RMSE (both methods on the same data and split), with its t-based 95 % CI.\n\n"
                 "Two HTL columns. ours HTL = HTL as run in the row's profile: the *small* HTL grid (h in {32, 64}, "
                 "L in {2, 3}), R_dr per task (Eq. 8), `reps` replicates (20; 30 in Figure 8), average test RMSE. "
                 f"{HTL_AUTHORS} = HTL refitted by `bench_blockwise_htl.py` (variant \"{HTL_AUTHORS_VARIANT}\", "
                 "raw rows in `blockwise_htl_raw.csv`) with the protocol of the authors' code printouts: the code "
                 "grid (h in {32, 64, 128}, L in {2, 3, 4}), the task weights summed inside the R_dr norm, "
                 "lambda_orth = lambda_dr = 1, the configuration with the lowest validation loss, native engine; "
                 "mean (SD) of rmse_code over the [n reps] replicates run (seeds 0..n-1, the same data and split "
                 "as this row's replicates; rows with the same DGP share them); "
                 f"{HTL_AUTHORS_GAP} = its mean minus code HTL. gap to code HTL compares the small-grid "
                 "column with the same printout.\n\n")
        fh.write(summary.to_markdown(index=False))
        fh.write("\n\n## The issue's checks, by profile\n\n")
        fh.write(check_totals(df).to_markdown(index=False))
        fh.write("\n")
        if ablations:
            fh.write("\n## Figure 8: MTL-HMB against each ablation and baseline (paired)\n\n")
            fh.write(pd.DataFrame(ablations).to_markdown(index=False))
            fh.write("\n")
    if figures:
        _boxplots(raw, results)
    return summary


def _boxplots(raw: pd.DataFrame, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hetmtl.plotting.blockwise import rmse_boxplot

    settings = _settings()
    for setting, sub in raw.groupby("setting"):
        grids = sorted(set(zip(sub.grid, sub.max_epochs)))
        fig = rmse_boxplot(sub, x="value", method="method", y="rmse_avg",
                           title=f"Setting {setting} (grid {', '.join(g for g, _ in grids)}; "
                                 f"{sub.groupby(['value', 'method']).size().min()}+ reps)",
                           xlabel=settings[setting]["vary"])
        fig.savefig(results / f"blockwise_repro_{setting}.png", dpi=110)
        plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=None, help='e.g. "B:0.5,0.7;D:all"; default every row')
    ap.add_argument("--reps", type=int, default=20, help="replicates per row (Figure 8: 30 when 20 is given)")
    ap.add_argument("--grid", default=BLOCKWISE_PROTOCOL["grid"])
    ap.add_argument("--hbi-grid", default=BLOCKWISE_PROTOCOL["hbi_grid"])
    ap.add_argument("--max-epochs", type=int, default=BLOCKWISE_PROTOCOL["max_epochs"])
    ap.add_argument("--hbi-max-epochs", type=int, default=BLOCKWISE_PROTOCOL["hbi_max_epochs"])
    ap.add_argument("--dr-mode", default=BLOCKWISE_PROTOCOL["dr_mode"])
    ap.add_argument("--engine", default=BLOCKWISE_PROTOCOL["engine"], choices=["torch", "native"],
                    help="training engine of MTL-HMB, HTL and naive + Step 2 (native: profile suffix '-native')")
    ap.add_argument("--methods", default=None,
                    help="comma list of study method names (mtl-hmb, stl, htl, hps, step1+stl, step1+hps, naive+step2, "
                         "mbi) to run now; default: the protocol's (MTL-HMB, STL, HTL, + ablations in Figure 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    ap.add_argument("--jobs", type=int, default=1, help="local worker processes")
    ap.add_argument("--timeout", type=float, default=None, help="per-job time limit in seconds")
    ap.add_argument("--stores", default=str(STORES), help="root of the study stores")
    ap.add_argument("--results", default=str(RESULTS), help="where the CSV, Markdown and PNG results go")
    ap.add_argument("--import-raw", default=None, help="load a pre-runner raw CSV into the stores, then summarize")
    ap.add_argument("--summarize", action="store_true", help="only rewrite the result files from the stores")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--store-reports", action="store_true",
                    help="also write each store's report/ (summary tables, reference deltas, figures)")
    args = ap.parse_args(argv)
    stores, results = Path(args.stores), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.import_raw:
        print(f"{import_raw(Path(args.import_raw), stores)} records imported", flush=True)
    elif not args.summarize:
        options = {"grid": args.grid, "hbi_grid": args.hbi_grid, "max_epochs": args.max_epochs,
                   "hbi_max_epochs": args.hbi_max_epochs, "dr_mode": args.dr_mode, "n_threads": args.threads,
                   "engine": args.engine}
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        run(parse_rows(args.rows), args.reps, options, methods, args.jobs, args.timeout, stores)
    summary = summarize(stores, results, figures=not args.no_figures, store_reports=args.store_reports)
    print(summary.to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
