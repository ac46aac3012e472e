"""The ``hetmtl`` command line (also ``python -m hetmtl.cli``).

What to use when:
- ``hetmtl study list``: built-in studies and whether their method family is installed;
- ``hetmtl study run NAME|FILE [--reps N] [--jobs N | --scheduler ADDR] [--out DIR]
  [--timeout SECONDS] [--only PARAM=V1,V2]``: run or resume a study (built-in name or a YAML/TOML
  description), then write its report;
- ``hetmtl study report DIR [--reference CSV]``: tables and figures of a study directory;
- ``hetmtl summarize DATA.csv --y Y --d D [--x X1 X2 ...] --site NAME --out S.json``: the site
  side of federated late fusion: per-site DML on this site's rows, written as SiteSummary JSON;
- ``hetmtl fuse S1.json S2.json ...``: the coordinator side: read the summaries, fit late fusion.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _cmd_study_list(args: argparse.Namespace) -> int:
    from hetmtl.studies.builtin import list_studies

    rows = list_studies()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        flag = "" if r["available"] else f"  [needs family '{r['family']}']"
        print(f"{r['name']:<{width}}  {r['description']}{flag}")
    return 0


def _load_study(ref: str):
    from hetmtl.studies.builtin import get_study
    from hetmtl.studies.spec import Study

    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".toml"):
        if not path.exists():
            raise FileNotFoundError(f"study file {ref} does not exist")
        study = Study.from_file(path)
        if study.reference and not Path(study.reference).is_absolute() and (path.parent / study.reference).exists():
            from dataclasses import replace

            study = replace(study, reference=str((path.parent / study.reference).resolve()))  # relative to the file
        return study
    return get_study(ref)


def _cmd_study_run(args: argparse.Namespace) -> int:
    from hetmtl.studies.report import write_report
    from hetmtl.studies.runner import run_study

    study = _load_study(args.name)
    if args.seed is not None:
        from dataclasses import replace

        study = replace(study, seed=int(args.seed))
    out = Path(args.out or Path("studies") / study.name)
    res = run_study(study, out, n_reps=args.reps, n_jobs=1 if args.scheduler else args.jobs, scheduler=args.scheduler,
                    threads_per_worker=args.threads, progress=not args.no_progress, retry_failed=args.retry_failed,
                    timeout=args.timeout, only=parse_only(args.only, study), methods=args.methods)
    print(f"study {res.study}: {res.n_jobs} jobs, {res.n_skipped} already done, {res.n_run} run, "
          f"{res.n_failed} with failures, {res.seconds:.1f} s; results in {res.path}")
    if not args.no_report:
        written = write_report(out, figures=not args.no_figures)
        print(f"report: {written['report']}")
    return 0


def parse_only(items: Sequence[str] | None, study) -> dict | None:
    """``["eta=0.5,1", "n=100"]`` -> ``{"eta": [0.5, 1], "n": [100]}`` (values parsed as JSON
    where possible, e.g. numbers, ``true``, ``[100,100]``; ``;`` separates list-valued ones)."""
    if not items:
        return None
    only: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--only must be PARAM=VALUE[,VALUE...], got {item!r}")
        sep_values = ";" if values.lstrip().startswith("[") else ","
        only.setdefault(key.strip(), []).extend(_parse_value(v.strip()) for v in values.split(sep_values))
    return only


def _cmd_study_report(args: argparse.Namespace) -> int:
    from hetmtl.studies.report import write_report

    written = write_report(args.dir, out=args.out, reference=args.reference, baseline=args.baseline,
                           figures=not args.no_figures, study=args.study)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    import pandas as pd

    from hetmtl.data.multisite import MultiSiteData
    from hetmtl.exceptions import DataValidationError
    from hetmtl.latefusion import SiteDML

    df = pd.read_csv(args.data)
    if args.site_col is not None:
        if args.site_col not in df.columns:
            raise DataValidationError(f"column {args.site_col!r} not in {args.data}")
        df = df[df[args.site_col].astype(str) == str(args.site)]
        if df.empty:
            raise DataValidationError(f"no rows of site {args.site!r} in column {args.site_col!r} of {args.data}")
    z_cols = list(args.z or [])
    skip = {args.y, args.d, args.site_col}  # effect modifiers stay covariates (they may confound)
    x_cols = list(args.x) if args.x else [c for c in df.columns if c not in skip]
    data = MultiSiteData.from_dataframe(df.assign(_site=str(args.site)), args.y, args.d, "_site", x_cols=x_cols,
                                        z_cols=z_cols or None)
    s = data.site_arrays(data.sites[0])
    center = _float_list(args.basis_center, "--basis-center", len(z_cols))
    scale = _float_list(args.basis_scale, "--basis-scale", len(z_cols))
    est = SiteDML(model=args.model, n_folds=args.folds, n_rep=args.n_rep, tuning_folds=args.tuning_folds,
                  basis_center=center, basis_scale=scale, random_state=args.seed).fit(s.y, s.d, s.X, s.Z)
    if z_cols:
        est.coef_names_ = ["const", *z_cols]
    summary = est.to_summary(site=str(args.site))
    summary.to_json(args.out)
    print(est.summary())
    print(f"summary written to {args.out}")
    return 0


def _float_list(text: str | None, option: str, length: int) -> list[float] | None:
    """Comma-separated numbers, one per effect modifier."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if len(values) != length:
        raise ValueError(f"{option} has {len(values)} values for {length} effect modifier(s) (--z)")
    return values


def _cmd_fuse(args: argparse.Namespace) -> int:
    try:
        from hetmtl.latefusion import LateFusion
    except ImportError:
        print("hetmtl fuse: the late-fusion estimator (hetmtl.latefusion.LateFusion) is not available in this "
              "installation; update hetmtl to a version that includes it", file=sys.stderr)
        return 2
    import inspect

    from hetmtl.latefusion.table import SummaryTable

    if not 0.0 < args.level < 1.0:
        raise ValueError(f"--level must be strictly between 0 and 1 (e.g. 0.95), got {args.level}")
    if bool(args.summaries) == bool(args.estimates):
        raise ValueError("give summary JSON files or --estimates TABLE.csv (one of the two)")
    allowed = sorted(p for p in inspect.signature(LateFusion).parameters)
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option must be KEY=VALUE, got {item!r}")
        if key not in allowed:
            raise ValueError(f"--option {key!r} is not a LateFusion option; known options: {', '.join(allowed)}")
        options[key] = _parse_value(value)
    LateFusion(**options)._check_params()
    if args.estimates:
        import pandas as pd

        path = args.estimates
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the estimates table ({exc})") from None
        summaries = SummaryTable.from_frame(frame, source=str(path))
    else:
        summaries = SummaryTable.read_json(args.summaries)
    fused = LateFusion(**options).fit(summaries)
    print(fused.summary(level=args.level) if hasattr(fused, "summary") else fused.summary_frame(args.level))
    if args.out:
        table = fused.summary_frame(args.level)
        table.to_csv(args.out, index_label=["site", "term"])  # "coef" is also a column name
        print(f"fused estimates written to {args.out}")
    return 0


def _parse_value(text: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hetmtl", description="hetmtl: comparison studies and federated late fusion")
    sub = p.add_subparsers(dest="command", required=True)

    study = sub.add_parser("study", help="comparison studies")
    ssub = study.add_subparsers(dest="study_command", required=True)
    ssub.add_parser("list", help="list built-in studies").set_defaults(func=_cmd_study_list)

    run = ssub.add_parser("run", help="run or resume a study")
    run.add_argument("name", help="built-in study name or a .yaml/.toml study file")
    run.add_argument("--reps", type=int, default=None, help="replicates per setting (default: the study's)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    where.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    run.add_argument("--out", default=None, help="study directory (default: studies/NAME)")
    run.add_argument("--seed", type=int, default=None, help="override the study's master seed")
    run.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per job (default 1)")
    run.add_argument("--retry-failed", action="store_true", help="re-run methods recorded as failed")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="per-job time limit: a job running longer is recorded as failed ('timed out after N s') "
                          "and the others go on (default: the study's, usually none)")
    run.add_argument("--only", action="append", default=None, metavar="PARAM=V1,V2",
                     help="run only the settings whose grid parameter PARAM takes one of these values (repeatable)")
    run.add_argument("--methods", nargs="+", default=None, help="run only these methods of the study now")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    run.add_argument("--no-figures", action="store_true", help="report without figures")
    run.set_defaults(func=_cmd_study_run)

    rep = ssub.add_parser("report", help="tables and figures of a study directory")
    rep.add_argument("dir")
    rep.add_argument("--out", default=None, help="report directory (default DIR/report)")
    rep.add_argument("--reference", default=None, help="CSV of reference values (method, metric, value, ...)")
    rep.add_argument("--baseline", default=None, help="method the paired differences are taken against")
    rep.add_argument("--study", default=None, help="study name, if the directory holds several")
    rep.add_argument("--no-figures", action="store_true")
    rep.set_defaults(func=_cmd_study_report)

    summ = sub.add_parser("summarize", help="site side: per-site DML on a CSV, written as SiteSummary JSON")
    summ.add_argument("data", help="CSV file with this site's rows")
    summ.add_argument("--y", required=True, help="outcome column")
    summ.add_argument("--d", required=True, help="treatment column")
    summ.add_argument("--x", nargs="+", default=None,
                      help="covariate columns (default: every column but --y, --d and --site-col, --z included)")
    summ.add_argument("--z", nargs="+", default=None, help="effect-modifier columns (models cate, blp)")
    summ.add_argument("--site", required=True, help="site label written into the summary")
    summ.add_argument("--site-col", default=None, help="keep only rows whose SITE_COL equals --site")
    summ.add_argument("--basis-center", default=None,
                      help="comma-separated centres of the --z columns agreed by all sites (e.g. pooled means); "
                           "default: this site's means, which makes CATE coefficients site-specific")
    summ.add_argument("--basis-scale", default=None, help="comma-separated scales of the --z columns (pooled SDs)")
    summ.add_argument("--model", default="plr", choices=["plr", "ate", "cate", "blp"])
    summ.add_argument("--folds", type=int, default=5)
    summ.add_argument("--n-rep", type=int, default=None,
                      help="cross-fitting repetitions (default: SiteDML's, chosen with its default learners)")
    summ.add_argument("--tuning-folds", default="reuse", choices=["reuse", "nested"])
    summ.add_argument("--seed", type=int, default=0)
    summ.add_argument("--out", required=True, help="summary JSON path")
    summ.set_defaults(func=_cmd_summarize)

    fuse = sub.add_parser("fuse", help="coordinator side: late fusion of site summaries or published estimates")
    fuse.add_argument("summaries", nargs="*", help="SiteSummary JSON files")
    fuse.add_argument("--estimates", default=None, metavar="TABLE.csv",
                      help="published estimates instead of summaries: a CSV with columns site, estimate, se "
                           "(and coefficient for several per site; optional n)")
    fuse.add_argument("--option", action="append", help="LateFusion option KEY=VALUE (repeatable)")
    fuse.add_argument("--level", type=float, default=0.95, help="confidence level of every interval (0 < level < 1)")
    fuse.add_argument("--out", default=None, help="CSV of the fused estimates")
    fuse.set_defaults(func=_cmd_fuse)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (errors in user input give a message and code 1)."""
    from hetmtl.exceptions import DataValidationError, SummaryValidationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, DataValidationError, SummaryValidationError) as exc:
        print(f"hetmtl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
