"""Study reports: summary tables, paired differences, figures, comparison with reference values.

What to use when:

- everything at once (CSV + Markdown + PNG into the study directory): :func:`write_report`;
- a table in Python: :func:`load_results` then :func:`summary_table`, :func:`paired_differences`,
  :func:`compare_reference`.

Replicates are the independent units. When a method returns several rows per replicate (one per
site or task), its metrics are first averaged over those rows within the replicate; the summary is
then the mean, SD and SE (= SD/√R) over the R successful replicates. Paired differences use the
replicates where both methods succeeded: mean difference, SD, SE and a t-interval with R − 1 df.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hetmtl._jsonio import regular_file
from hetmtl.exceptions import InputError
from hetmtl.studies.runner import STORE_NAME
from hetmtl.studies.store import ResultStore

ID_COLUMNS = ("study", "setting", "setting_index", "replicate", "method")
UNIT_COLUMNS = ("site", "task", "unit")


@dataclass
class StudyResults:
    """A study's description, successful metric rows and job records.

    Parameters
    ----------
    spec : dict
        The study description (:meth:`Study.to_dict <hetmtl.studies.Study.to_dict>`).
    frame : pandas.DataFrame
        Successful metric rows (:meth:`ResultStore.frame <hetmtl.studies.ResultStore.frame>`).
    records : pandas.DataFrame
        Job records (:meth:`ResultStore.records <hetmtl.studies.ResultStore.records>`).
    """

    spec: dict
    frame: pd.DataFrame
    records: pd.DataFrame

    @property
    def grid_keys(self) -> list[str]:
        """Names of the grid parameters."""
        return list(self.spec.get("grid") or {})

    @property
    def methods(self) -> list[str]:
        """Method names, in study order."""
        return [m["name"] for m in self.spec["methods"]]

    @property
    def failures(self) -> pd.DataFrame:
        """The failed jobs.

        Returns
        -------
        pandas.DataFrame
            ``setting``, ``replicate``, ``method`` and ``error`` of every failed record.
        """
        r = self.records
        return r.loc[r.status == "failed", ["setting", "replicate", "method", "error"]].reset_index(drop=True)

    def metrics(self) -> list[str]:
        """Metric columns of the results.

        Returns
        -------
        list of str
            The study's ``metrics`` (plus ``seconds``) when given, else every numeric column
            methods returned.
        """
        if self.spec.get("metrics"):  # those some method returned (a method may have failed everywhere)
            return [m for m in dict.fromkeys([*self.spec["metrics"], "seconds"]) if m in self.frame.columns]
        skip = set(ID_COLUMNS) | set(UNIT_COLUMNS) | set(self.grid_keys)
        return [c for c in self.frame.columns if c not in skip and (pd.api.types.is_numeric_dtype(self.frame[c])
                                                                     or pd.api.types.is_bool_dtype(self.frame[c]))]


def _read_reference(path) -> pd.DataFrame:
    """A reference CSV (a regular file, checked before it is opened); errors name the file."""
    regular_file(path, "reference table", InputError)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise InputError(f"{path}: cannot read the reference table ({str(exc).strip()[:200]})") from None


def load_results(directory: str | Path, study: str | None = None) -> StudyResults:
    """Read a study directory written by :func:`~hetmtl.studies.run_study`.

    Parameters
    ----------
    directory : str or pathlib.Path
        The study's output directory.
    study : str, optional
        Study name (needed when the store holds several).

    Returns
    -------
    StudyResults
        Description, metric rows and job records.
    """
    path = Path(directory) / STORE_NAME
    if not path.exists():
        raise InputError(f"no results store {path}; run the study first")
    with ResultStore(path) as store:
        specs = store.study_specs()
        if not specs:
            raise InputError(f"{path} holds no study")
        if study is None:
            if len(specs) > 1:
                raise InputError(f"{path} holds several studies {[s['name'] for s in specs]}; pass study=")
            spec = specs[0]
        else:
            match = [s for s in specs if s["name"] == study]
            if not match:
                raise InputError(f"study {study!r} not in {path}; it holds {[s['name'] for s in specs]}")
            spec = match[0]
        return StudyResults(spec, store.frame(spec["name"]), store.records(spec["name"]))


def _param_columns(res: StudyResults) -> pd.DataFrame:
    """One row per setting_index with its grid values (lists shown as text)."""
    if res.frame.empty:
        return pd.DataFrame(columns=["setting_index", *res.grid_keys])
    first = res.frame.drop_duplicates("setting_index").set_index("setting_index")
    out = pd.DataFrame(index=first.index)
    for k in res.grid_keys:
        out[k] = [json.dumps(v) if isinstance(v, list) else v for v in first[k]]
    return out.reset_index()


def replicate_frame(res: StudyResults, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (setting, replicate, method): metrics averaged over sites/tasks within the replicate.

    Parameters
    ----------
    res : StudyResults
        Output of :func:`load_results`.
    metrics : sequence of str, optional
        Metric columns (default the study's metrics).

    Returns
    -------
    pandas.DataFrame
        The replicate table.
    """
    metrics = list(metrics or res.metrics())
    f = res.frame
    if f.empty:
        return pd.DataFrame(columns=["setting_index", "setting", "replicate", "method", *metrics])
    missing = [m for m in metrics if m not in f.columns]
    if missing:
        raise InputError(f"study {res.spec['name']!r}: metric(s) {missing} not returned by any method; "
                         f"columns are {list(f.columns)}")
    vals = f[metrics].astype(float)
    g = pd.concat([f[["setting_index", "setting", "replicate", "method"]], vals], axis=1)
    return g.groupby(["setting_index", "setting", "replicate", "method"], sort=True, as_index=False).mean()


def _order_methods(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    df = df.copy()
    df["method"] = pd.Categorical(df["method"], categories=methods, ordered=True)
    return df


def summary_table(res: StudyResults, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table by setting × method × metric: n_reps (successful replicates), mean, sd, se.

    Parameters
    ----------
    res : StudyResults
        Output of :func:`load_results`.
    metrics : sequence of str, optional
        Metric columns (default the study's metrics).

    Returns
    -------
    pandas.DataFrame
        With the grid parameters as columns.
    """
    metrics = list(metrics or res.metrics())
    rep = replicate_frame(res, metrics)
    long = rep.melt(id_vars=["setting_index", "setting", "replicate", "method"], value_vars=metrics,
                    var_name="metric", value_name="value").dropna(subset=["value"])
    long = _order_methods(long, res.methods)
    g = long.groupby(["setting_index", "setting", "method", "metric"], observed=True, sort=True)["value"]
    out = g.agg(n_reps="count", mean="mean", sd=lambda x: x.std(ddof=1) if len(x) > 1 else np.nan).reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n_reps"])
    out = out.merge(_param_columns(res), on="setting_index", how="left")
    cols = ["setting_index", "setting", *res.grid_keys, "method", "metric", "n_reps", "mean", "sd", "se"]
    out["method"] = out["method"].astype(str)
    return out[cols].sort_values(["metric", "setting_index"], kind="stable").reset_index(drop=True)


def paired_differences(res: StudyResults, metric: str, baseline: str | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per setting, every method minus a baseline on the replicates where both succeeded.

    Parameters
    ----------
    res : StudyResults
        Output of :func:`load_results`.
    metric : str
        The metric.
    baseline : str, optional
        Baseline method (default the study's first method).
    level : float
        Level of the t-interval.

    Returns
    -------
    pandas.DataFrame
        n_reps, mean_diff, sd, se and the t-interval (``ci_low``, ``ci_high``).
    """
    from scipy import stats

    from hetmtl._validation import check_level

    level = check_level(level, "level")

    baseline = baseline or res.methods[0]
    if baseline not in res.methods:
        raise InputError(f"baseline {baseline!r} is not a method of study {res.spec['name']!r}: {res.methods}")
    rep = replicate_frame(res, [metric])
    wide = rep.pivot_table(index=["setting_index", "setting", "replicate"], columns="method", values=metric)
    rows = []
    for (si, label), block in wide.groupby(level=["setting_index", "setting"], sort=True):
        if baseline not in block:
            continue
        for m in res.methods:
            if m == baseline or m not in block:
                continue
            d = (block[m] - block[baseline]).dropna().to_numpy()
            n = d.size
            mean = float(d.mean()) if n else np.nan
            sd = float(d.std(ddof=1)) if n > 1 else np.nan
            se = sd / np.sqrt(n) if n > 1 else np.nan
            q = stats.t.ppf(0.5 + level / 2, n - 1) if n > 1 else np.nan
            rows.append({"setting_index": si, "setting": label, "method": m, "baseline": baseline, "metric": metric,
                         "n_reps": n, "mean_diff": mean, "sd": sd, "se": se,
                         "ci_low": mean - q * se, "ci_high": mean + q * se})
    out = pd.DataFrame(rows, columns=["setting_index", "setting", "method", "baseline", "metric", "n_reps", "mean_diff",
                                      "sd", "se", "ci_low", "ci_high"])
    return out.merge(_param_columns(res), on="setting_index", how="left")[
        ["setting_index", "setting", *res.grid_keys, "method", "baseline", "metric", "n_reps", "mean_diff", "sd", "se",
         "ci_low", "ci_high"]]


def unit_summary(res: StudyResults, metric: str) -> pd.DataFrame:
    """Per-unit means over replicates, then their average and maximum over units.

    For methods returning one row per site/task: the per-unit mean over replicates (e.g.
    MSE_k = mean_r (θ̂_k − θ_k)²), then its average and maximum over units (avg-MSE, max-MSE)
    by setting × method.

    Parameters
    ----------
    res : StudyResults
        Output of :func:`load_results`.
    metric : str
        The metric.

    Returns
    -------
    pandas.DataFrame
        Empty when the results have no unit column.
    """
    f = res.frame
    unit = next((c for c in UNIT_COLUMNS if c in f.columns), None)
    cols = ["setting_index", "setting", *res.grid_keys, "method", "metric", "unit", "n_units", "avg", "max", "max_at"]
    if unit is None or metric not in f.columns:
        return pd.DataFrame(columns=cols)
    f = f.dropna(subset=[unit, metric])
    per_unit = f.groupby(["setting_index", "setting", "method", unit], sort=True)[metric].mean().reset_index()
    rows = []
    for (si, label, method), g in per_unit.groupby(["setting_index", "setting", "method"], sort=True):
        k = int(np.argmax(g[metric].to_numpy()))
        rows.append({"setting_index": si, "setting": label, "method": method, "metric": metric, "unit": unit,
                     "n_units": len(g), "avg": float(g[metric].mean()), "max": float(g[metric].iloc[k]),
                     "max_at": str(g[unit].iloc[k])})
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in res.grid_keys])
    return out.merge(_param_columns(res), on="setting_index", how="left")[cols]


def _key(v) -> str:
    """Comparable text of a grid value (1 and 1.0 agree; booleans stay booleans)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    try:
        f = float(v)
        return repr(float(f))
    except (TypeError, ValueError):
        return str(v)


def compare_reference(summary: pd.DataFrame, reference: pd.DataFrame | str | Path, grid_keys: Sequence[str]) -> pd.DataFrame:
    """Reference values next to ours with per-row deltas.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`summary_table`.
    reference : pandas.DataFrame, str or pathlib.Path
        Columns ``method``, ``metric``, ``value`` and either ``setting`` or some grid
        parameters, optionally ``sd`` (the reference's SD over replicates, kept as
        ``reference_sd``), ``source`` and ``note``; a CSV path is read.
    grid_keys : sequence of str
        The study's grid parameters.

    Returns
    -------
    pandas.DataFrame
        The reference rows with ``ours``, ``delta`` (ours − reference), ``rel_delta`` and
        ``delta_in_se``; rows we did not run get NaN.
    """
    if isinstance(reference, pd.DataFrame):
        ref = reference.copy()
    else:
        ref = _read_reference(reference)
    need = {"method", "metric", "value"}
    if not need <= set(ref.columns):
        raise InputError(f"reference table needs columns {sorted(need)}, has {list(ref.columns)}")
    keys = ["setting"] if "setting" in ref.columns else [k for k in grid_keys if k in ref.columns]
    extra = sorted(set(ref.columns) - need - set(keys) - {"sd", "source", "note"})
    if extra:
        raise InputError(f"reference table has column(s) {extra} that are neither grid parameters {list(grid_keys)} "
                         "nor method/metric/value/sd/source/note")
    ours = summary.copy()
    for k in keys:
        ref["_k_" + k] = ref[k].map(_key)
        ours["_k_" + k] = ours[k].map(_key)
    on = ["_k_" + k for k in keys] + ["method", "metric"]
    ours = ours[on + ["n_reps", "mean", "sd", "se"]].rename(columns={"sd": "ours_sd"})
    out = ref.merge(ours, on=on, how="left").drop(columns=["_k_" + k for k in keys])
    out = out.rename(columns={"value": "reference", "sd": "reference_sd", "mean": "ours"})
    out["delta"] = out["ours"] - out["reference"]
    out["rel_delta"] = out["delta"] / out["reference"].abs().replace(0.0, np.nan)
    out["delta_in_se"] = out["delta"] / out["se"]
    return out


def _fmt(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.4g} ({se:.2g})" if np.isfinite(se) else f"{mean:.4g}"


def markdown_tables(summary: pd.DataFrame, methods: Sequence[str]) -> str:
    """One Markdown table per metric: rows are settings, cells ``mean (SE)`` per method.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`summary_table`.
    methods : sequence of str
        Column order.

    Returns
    -------
    str
        Markdown.
    """
    parts = []
    for metric, block in summary.groupby("metric", sort=False):
        cols = [m for m in methods if m in set(block["method"])]
        lines = [f"### {metric}", "", "| setting | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for (si, label), rows in block.groupby(["setting_index", "setting"], sort=True):
            cell = {r.method: _fmt(r.mean, r.se) for r in rows.itertuples()}
            lines.append(f"| {label} | " + " | ".join(cell.get(m, "—") for m in cols) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _frame_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def write_report(directory: str | Path, *, out: str | Path | None = None, reference: str | Path | None = None,
                 baseline: str | None = None, figures: bool = True, study: str | None = None) -> dict[str, Path]:
    """Write the report of a study directory.

    ``summary.csv``, ``paired_<metric>.csv``, ``failures.csv``, ``report.md``, figures (PNG) and,
    with reference values, ``reference.csv``.

    Parameters
    ----------
    directory : str or pathlib.Path
        The study's output directory.
    out : str or pathlib.Path, optional
        Where to write (default ``directory/report``).
    reference : str or pathlib.Path, optional
        Reference CSV (default the study's ``reference``).
    baseline : str, optional
        Baseline of the paired differences (default the first method).
    figures : bool
        Also draw the figures.
    study : str, optional
        Study name (needed when the store holds several).

    Returns
    -------
    dict
        The written paths by name.
    """
    res = load_results(directory, study)
    out = Path(out or Path(directory) / "report")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    name = res.spec["name"]
    md = [f"# Study `{name}`", ""] + ([res.spec["description"], ""] if res.spec.get("description") else [])
    n_jobs = res.records.groupby(["setting", "replicate"]).ngroups if not res.records.empty else 0
    md.append(f"Jobs recorded: {n_jobs}; method runs ok: {(res.records.status == 'ok').sum()}, "
              f"failed: {(res.records.status == 'failed').sum()}.")
    if res.frame.empty:
        md.append("\nNo successful results yet.")
        summary = pd.DataFrame()
    else:
        summary = summary_table(res)
        summary.to_csv(out / "summary.csv", index=False)
        written["summary"] = out / "summary.csv"
        md += ["", "## Summary (mean (SE) over replicates)", "", markdown_tables(summary, res.methods)]
        if len(res.methods) > 1:
            md += ["", f"## Paired differences (method − {baseline or res.methods[0]}, 95% t-interval)", ""]
            for metric in res.metrics():
                pdiff = paired_differences(res, metric, baseline)
                if pdiff.empty:
                    continue
                p = out / f"paired_{metric}.csv"
                pdiff.to_csv(p, index=False)
                written[f"paired_{metric}"] = p
                md += [f"### {metric}", "", _frame_markdown(pdiff[["setting", "method", "n_reps", "mean_diff", "se",
                                                                   "ci_low", "ci_high"]]), ""]
        for metric in [m for m in ("mse", "rmse") if m in res.metrics()]:
            units = unit_summary(res, metric)
            if units.empty:
                continue
            p = out / f"units_{metric}.csv"
            units.to_csv(p, index=False)
            written[f"units_{metric}"] = p
            md += ["", f"## {metric} per {units.unit.iloc[0]} (mean over replicates): average and maximum over "
                   f"{units.unit.iloc[0]}s", "",
                   _frame_markdown(units[["setting", "method", "n_units", "avg", "max", "max_at"]])]
    ref = reference or res.spec.get("reference")
    if ref is not None and not summary.empty:
        ref_path = Path(ref)
        if not ref_path.is_absolute() and not ref_path.exists():
            ref_path = Path(__file__).parent / "reference" / ref_path
        comp = compare_reference(summary, ref_path, res.grid_keys)
        comp.to_csv(out / "reference.csv", index=False)
        written["reference"] = out / "reference.csv"
        md += ["", f"## Comparison with reference values ({ref_path.name})", "", _frame_markdown(comp)]
    fail = res.failures
    if not fail.empty:
        fail.to_csv(out / "failures.csv", index=False)
        written["failures"] = out / "failures.csv"
        short = fail.assign(error=fail.error.str.split("\n").str[0])
        md += ["", "## Failures", "", _frame_markdown(short)]
    if figures and not summary.empty:
        written.update(_figures(res, summary, out))
        figs = [k for k in written if k.startswith("fig_")]
        if figs:
            md += ["", "## Figures", ""] + [f"![{k}]({written[k].name})" for k in figs]
    (out / "report.md").write_text("\n".join(md) + "\n")
    written["report"] = out / "report.md"
    return written


def _figures(res: StudyResults, summary: pd.DataFrame, out: Path) -> dict[str, Path]:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hetmtl.plotting.studies import coverage_plot, metric_boxplot, metric_curve

    written = {}
    metrics = res.metrics()
    numeric_x = [k for k in res.grid_keys if summary[k].nunique() > 1
                 and pd.api.types.is_numeric_dtype(pd.to_numeric(summary[k], errors="coerce"))
                 and pd.to_numeric(summary[k], errors="coerce").notna().all()]
    rep = replicate_frame(res, metrics)
    metric: str
    for metric in [m for m in ("rmse", "rmse_avg", "mse") if m in metrics]:
        fig = metric_boxplot(rep, metric, methods=res.methods)
        p = out / f"boxplot_{metric}.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written[f"fig_boxplot_{metric}"] = p
    if numeric_x:
        x = numeric_x[0]
        for metric in [m for m in ("mse", "bias", "rmse", "ci_width") if m in metrics]:
            fig = metric_curve(summary, x, metric, methods=res.methods)
            p = out / f"curve_{metric}_vs_{x}.png"
            fig.savefig(p, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written[f"fig_curve_{metric}"] = p
        for metric in [m for m in ("mse", "rmse") if m in metrics]:
            units = unit_summary(res, metric)
            if units.empty:
                continue
            # max over sites/tasks of the per-unit mean (no Monte Carlo SE drawn for a maximum)
            frame = units.assign(metric=f"max {metric} over {units.unit.iloc[0]}s", mean=units["max"], n_reps=0,
                                 sd=np.nan, se=np.nan)[["setting_index", "setting", *res.grid_keys, "method", "metric",
                                                        "n_reps", "mean", "sd", "se"]]
            fig = metric_curve(frame, x, frame.metric.iloc[0], methods=res.methods)
            p = out / f"curve_max_{metric}_vs_{x}.png"
            fig.savefig(p, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written[f"fig_curve_max_{metric}"] = p
        if "coverage" in metrics:
            fig = coverage_plot(summary, x, methods=res.methods)
            p = out / f"coverage_vs_{x}.png"
            fig.savefig(p, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written["fig_coverage"] = p
    return written
