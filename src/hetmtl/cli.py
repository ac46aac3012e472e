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

The covariate rule (the same as :meth:`hetmtl.data.MultiSiteData.from_dataframe`, through which
``summarize`` builds its data): without ``--x`` the nuisance covariates are every column but the
outcome, the treatment and the site column, so the effect modifiers (``--z``) stay among the
covariates (they may confound).

Errors: a user error (a missing or unreadable file, a bad option value, data or summaries that
are refused) prints one line ``hetmtl: error: ...`` naming the file or option on stderr and exits
with code 1; a malformed command line exits with code 2; anything else is a bug in hetmtl and
exits with code 3 after one line (``--debug`` or ``HETMTL_DEBUG=1`` shows the traceback).
Input paths are checked with ``os.stat`` before they are opened: directories, FIFOs and other
special files are refused without blocking. Arguments are all checked before any fitting, and a
failed ``--out`` leaves nothing behind.
"""
from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any, Sequence

from hetmtl._jsonio import regular_file
from hetmtl.exceptions import InputError

#: Exit codes.
EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3
#: The exception behind the last non-zero exit of :func:`main` (for tests and debugging).
last_error: BaseException | None = None


class CliError(InputError):
    """A command-line error already phrased for the user (file or option named)."""


def _input_file(path: str, what: str) -> Path:
    """An existing, readable regular file, checked before anything opens it."""
    p = Path(path)
    regular_file(p, what, CliError)
    if not os.access(p, os.R_OK):
        raise CliError(f"{p}: cannot read the {what} (permission denied)")
    return p


def _output_file(path: str, option: str) -> Path:
    """A writable output path: its directory exists, and it is not a directory or special file."""
    p = Path(path)
    if str(path).strip() == "":
        raise CliError(f"{option}: empty path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(f"{option} {p}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{option} {p}: the directory {parent} is not writable")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return p
    except OSError as exc:
        raise CliError(f"{option} {p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CliError(f"{option} {p}: is a directory; give a file path")
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"{option} {p}: not a regular file")
    return p


def _read_csv(path: Path, what: str):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, MemoryError) as exc:  # ParserError/EmptyDataError: ValueError
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CliError(f"{path}: cannot read the {what} as CSV ({text})") from None


def _int(value: Any, option: str, low: int | None = None, high: int | None = None, allow_none: bool = False):
    from hetmtl._validation import check_int

    return check_int(value, option, low=low, high=high if high is not None else 2**31 - 1, allow_none=allow_none)


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
        _input_file(ref, "study file")
        study = Study.from_file(path)
        if study.reference and not Path(study.reference).is_absolute() and (path.parent / study.reference).exists():
            from dataclasses import replace

            study = replace(study, reference=str((path.parent / study.reference).resolve()))  # relative to the file
        return study
    try:
        return get_study(ref)
    except ValueError as exc:
        raise CliError(f"{exc}; or give a study file ending in .yaml, .yml or .toml") from None


def _cmd_study_run(args: argparse.Namespace) -> int:
    from hetmtl._validation import check_float, check_n_jobs
    from hetmtl.studies.runner import run_study

    reps = _int(args.reps, "--reps", low=1, allow_none=True)
    jobs = check_n_jobs(args.jobs, "--jobs")
    threads = _int(args.threads, "--threads", low=1, high=4096)
    seed = _int(args.seed, "--seed", low=0, high=2**63 - 1, allow_none=True)
    timeout = check_float(args.timeout, "--timeout", low=0.0, low_open=True, allow_none=True)
    if args.out is not None:
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise CliError(f"--out {out_dir}: exists and is not a directory")
    study = _load_study(args.name)
    if seed is not None:
        from dataclasses import replace

        study = replace(study, seed=seed)
    out = Path(args.out or Path("studies") / study.name)
    res = run_study(study, out, n_reps=reps, n_jobs=1 if args.scheduler else jobs, scheduler=args.scheduler,
                    threads_per_worker=threads, progress=not args.no_progress, retry_failed=args.retry_failed,
                    timeout=timeout, only=parse_only(args.only, study), methods=args.methods)
    print(f"study {res.study}: {res.n_jobs} jobs, {res.n_skipped} already done, {res.n_run} run, "
          f"{res.n_failed} with failures, {res.seconds:.1f} s; results in {res.path}")
    if res.n_elsewhere:
        print(f"{res.n_elsewhere} pending jobs were taken by another runner on the same directory")
    if not args.no_report:
        written = _report(out, figures=not args.no_figures)
        print(f"report: {written['report']}")
    if res.n_failed_stored:
        print(f"hetmtl: error: study {res.study}: {res.n_failed_stored} of {res.n_jobs} jobs have failed methods "
              f"({res.n_failed} in this run); see the report's failures.csv, rerun with --retry-failed",
              file=sys.stderr)
        return EXIT_USER
    return 0


def _report(directory, **kw) -> dict:
    """write_report with damaged-row warnings as one stderr line each."""
    import warnings

    from hetmtl.studies.report import write_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_report(directory, **kw)
    for w in caught:
        if "damaged row" in str(w.message):
            print(f"hetmtl: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return written


def parse_only(items: Sequence[str] | None, study) -> dict | None:
    """``["eta=0.5,1", "n=100"]`` -> ``{"eta": [0.5, 1], "n": [100]}`` (values parsed as JSON
    where possible, e.g. numbers, ``true``, ``[100,100]``; ``;`` separates list-valued ones)."""
    if not items:
        return None
    only: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise CliError(f"--only must be PARAM=VALUE[,VALUE...], got {item!r}")
        sep_values = ";" if values.lstrip().startswith("[") else ","
        only.setdefault(key.strip(), []).extend(_parse_value(v.strip()) for v in values.split(sep_values))
    return only


def _cmd_study_report(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CliError(f"no results store in {directory}: no such directory; run the study first")
    if args.reference is not None:
        _input_file(args.reference, "reference table")
    written = _report(directory, out=args.out, reference=args.reference, baseline=args.baseline,
                      figures=not args.no_figures, study=args.study)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    import numpy as np

    from hetmtl._validation import check_choice
    from hetmtl.data.multisite import MultiSiteData
    from hetmtl.exceptions import DataValidationError
    from hetmtl.latefusion import SiteDML

    # every argument is checked before the data are read or anything is fitted
    data_path = _input_file(args.data, "data file")
    out = _output_file(args.out, "--out")
    model = check_choice(args.model, "--model", ("plr", "ate", "cate", "blp"))
    folds = _int(args.folds, "--folds", low=2, high=10_000)
    n_rep = _int(args.n_rep, "--n-rep", low=1, high=10_000, allow_none=True)
    seed = _int(args.seed, "--seed", low=0, high=2**32 - 1)
    if not str(args.site).strip():
        raise CliError("--site must be a non-empty label")
    z_cols = list(args.z or [])
    if len(set(z_cols)) != len(z_cols):
        raise CliError(f"--z names a column twice: {z_cols}")
    if args.x is not None and len(set(args.x)) != len(args.x):
        raise CliError(f"--x names a column twice: {args.x}")
    center = _float_list(args.basis_center, "--basis-center", len(z_cols))
    scale = _float_list(args.basis_scale, "--basis-scale", len(z_cols))
    if scale is not None and any(v <= 0 for v in scale):
        raise CliError(f"--basis-scale must be positive numbers, got {args.basis_scale!r}")
    if model in ("plr", "ate") and z_cols:
        raise CliError(f"--z is for --model cate or blp; --model {model} has no effect modifiers")

    df = _read_csv(data_path, "data file")
    wanted = {"--y": [args.y], "--d": [args.d], "--x": list(args.x or []), "--z": z_cols,
              "--site-col": [args.site_col] if args.site_col is not None else []}
    for option, cols in wanted.items():
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise CliError(f"{data_path}: {option} names column(s) {missing} not in the file; "
                           f"columns are {[str(c) for c in df.columns][:30]}")
    if df.columns.duplicated().any():
        raise CliError(f"{data_path}: duplicate column names {sorted(set(df.columns[df.columns.duplicated()]))}")
    site = str(args.site)
    if args.site_col is not None:
        df = df[df[args.site_col].astype(str) == site]
        if df.empty:
            raise DataValidationError(f"{data_path}: no rows of site {site!r} in column {args.site_col!r}")
        site_col = args.site_col
    else:
        site_col = "site"
        while site_col in df.columns:
            site_col = "_" + site_col
    df = df.assign(**{site_col: site})
    try:
        # one covariate rule with the Python API: default x = every column but y, d and the site's
        data = MultiSiteData.from_dataframe(df, args.y, args.d, site_col, x_cols=args.x, z_cols=z_cols or None,
                                            treated=args.treated)
    except DataValidationError as exc:
        raise DataValidationError(f"{data_path}: site {site!r}: {exc}") from None
    try:  # the site's own checks, with this file's site label and column names (SiteDML only knows arrays)
        from hetmtl.latefusion.dml import BINARY_MODELS

        if model in BINARY_MODELS:
            data.check_binary_treatment()
    except DataValidationError as exc:
        raise DataValidationError(f"{data_path}: {exc} (--d {args.d}, --model {model})") from None
    try:
        data.check_folds(folds, binary=bool(np.all(np.isin(data.d, (0.0, 1.0)))))
    except DataValidationError as exc:
        raise DataValidationError(f"{data_path}: {exc} (--folds {folds})") from None
    s = data.site_arrays(data.sites[0])
    est = SiteDML(model=model, n_folds=folds, n_rep=n_rep, tuning_folds=args.tuning_folds,
                  basis_center=center, basis_scale=scale, random_state=seed)
    try:
        est.fit(s.y, s.d, s.X, s.Z)
    except DataValidationError as exc:
        raise DataValidationError(f"{data_path}: site {site!r}: {exc}") from None
    if z_cols:
        est.coef_names_ = ["const", *z_cols]
    summary = est.to_summary(site=site)
    summary.to_json(out)
    print(est.summary())
    print(f"summary written to {out}")
    return 0


def _float_list(text: str | None, option: str, length: int) -> list[float] | None:
    """Comma-separated numbers, one per effect modifier."""
    import math

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CliError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise CliError(f"{option} must be finite numbers, got {text!r}")
    if len(values) != length:
        raise CliError(f"{option} has {len(values)} values for {length} effect modifier(s) (--z)")
    return values


def _cmd_fuse(args: argparse.Namespace) -> int:
    try:
        from hetmtl.latefusion import LateFusion
    except ImportError:
        print("hetmtl fuse: the late-fusion estimator (hetmtl.latefusion.LateFusion) is not available in this "
              "installation; update hetmtl to a version that includes it", file=sys.stderr)
        return 2
    import inspect

    from hetmtl._validation import check_level
    from hetmtl.latefusion.table import SummaryTable

    # every argument is checked before any file is read or anything is fitted
    level = check_level(args.level, "--level")
    if bool(args.summaries) == bool(args.estimates):
        raise CliError("give summary JSON files or --estimates TABLE.csv (one of the two)")
    allowed = sorted(p for p in inspect.signature(LateFusion).parameters)
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--option must be KEY=VALUE, got {item!r}")
        if key not in allowed:
            raise CliError(f"--option {key!r} is not a LateFusion option; known options: {', '.join(allowed)}")
        if key in options:
            raise CliError(f"--option {key!r} is given twice")
        options[key] = _parse_value(value)
    try:
        est = LateFusion(**options)
        check = getattr(est, "_check_params", None)
        if check is not None:
            check()
    except (TypeError, ValueError) as exc:
        raise CliError(f"--option: {' '.join(str(exc).split())}") from None
    out = _output_file(args.out, "--out") if args.out else None
    if args.estimates:
        path = _input_file(args.estimates, "estimates table")
        summaries = SummaryTable.from_frame(_read_csv(path, "estimates table"), source=str(path))
    else:
        for f in args.summaries:
            _input_file(f, "summary file")
        summaries = SummaryTable.read_json(args.summaries)
    fused = est.fit(summaries)
    print(fused.summary(level=level) if hasattr(fused, "summary") else fused.summary_frame(level))
    if out is not None:
        from hetmtl._jsonio import write_atomic

        table = fused.summary_frame(level)
        write_atomic(out, table.to_csv(index_label=["site", "term"]))  # "coef" is also a column name
        print(f"fused estimates written to {out}")
    return 0


def _parse_value(text: str):
    import json

    try:
        return json.loads(text, parse_constant=lambda name: float(name))  # NaN/Infinity reach the validation
    except (ValueError, RecursionError):  # not JSON: the text itself
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``hetmtl CMD: error: ...``) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from hetmtl import __version__

    p = _Parser(prog="hetmtl", description="hetmtl: comparison studies and federated late fusion. "
                "User errors print one line and exit 1; a malformed command line exits 2.")
    p.add_argument("--version", action="version", version=f"hetmtl {__version__}", help="print the version and exit")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (also: environment variable HETMTL_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    study = sub.add_parser("study", help="comparison studies")
    ssub = study.add_subparsers(dest="study_command", required=True, parser_class=_Parser)
    ssub.add_parser("list", help="list built-in studies").set_defaults(func=_cmd_study_list)

    run = ssub.add_parser("run", help="run or resume a study (exit code 1 if any job has a failed method)",
                          description="Run or resume a study. Study files name Python functions as "
                                      "'module:function' and run them: use only study files you trust.")
    run.add_argument("name", help="built-in study name or a .yaml/.toml study file (trusted input: it runs code)")
    run.add_argument("--reps", type=int, default=None, help="replicates per setting (default: the study's)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=1,
                       help="local worker processes (default 1; -1 all cores, -2 all but one)")
    where.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    run.add_argument("--out", default=None, help="study directory (default: studies/NAME); several runners may "
                                                 "share it and split the jobs")
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
    rep.add_argument("dir", help="the study directory (holding results.sqlite)")
    rep.add_argument("--out", default=None, help="report directory (default DIR/report)")
    rep.add_argument("--reference", default=None, help="CSV of reference values (method, metric, value, ...)")
    rep.add_argument("--baseline", default=None, help="method the paired differences are taken against")
    rep.add_argument("--study", default=None, help="study name, if the directory holds several")
    rep.add_argument("--no-figures", action="store_true", help="tables only, no PNG figures")
    rep.set_defaults(func=_cmd_study_report)

    summ = sub.add_parser(
        "summarize", help="site side: per-site DML on a CSV, written as SiteSummary JSON",
        description="Site side of federated late fusion: per-site DML on this site's rows of a CSV, written as "
                    "SiteSummary JSON. Covariate rule (the same as MultiSiteData.from_dataframe in Python): without "
                    "--x the nuisance covariates are every column but --y, --d and --site-col, so the effect "
                    "modifiers (--z) stay among the covariates (they may confound).")
    summ.add_argument("data", help="CSV file with this site's rows")
    summ.add_argument("--y", required=True, help="outcome column")
    summ.add_argument("--d", required=True, help="treatment column (0/1, or give --treated)")
    summ.add_argument("--treated", default=None,
                      help="the treated level of a text treatment column (e.g. active); default: --d coded 0/1")
    summ.add_argument("--x", nargs="+", default=None,
                      help="covariate columns (default: every column but --y, --d and --site-col, --z included)")
    summ.add_argument("--z", nargs="+", default=None, help="effect-modifier columns (models cate, blp)")
    summ.add_argument("--site", required=True, help="site label written into the summary")
    summ.add_argument("--site-col", default=None, help="keep only rows whose SITE_COL equals --site")
    summ.add_argument("--basis-center", default=None,
                      help="comma-separated centres of the --z columns agreed by all sites (e.g. pooled means); "
                           "default: this site's means, which makes CATE coefficients site-specific")
    summ.add_argument("--basis-scale", default=None, help="comma-separated scales of the --z columns (pooled SDs)")
    summ.add_argument("--model", default="plr", choices=["plr", "ate", "cate", "blp"],
                      help="plr: partially linear effect; ate: average effect (interactive model); cate/blp: "
                           "effect linear in the --z columns (default plr)")
    summ.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default 5)")
    summ.add_argument("--n-rep", type=int, default=None,
                      help="cross-fitting repetitions (default: SiteDML's, chosen with its default learners)")
    summ.add_argument("--tuning-folds", default="reuse", choices=["reuse", "nested"],
                      help="learner tuning on the cross-fitting folds (reuse) or nested inside each (default reuse)")
    summ.add_argument("--seed", type=int, default=0, help="random seed of folds and learners, 0 to 2**32-1 (default 0)")
    summ.add_argument("--out", required=True, help="summary JSON path (written atomically)")
    summ.set_defaults(func=_cmd_summarize)

    fuse = sub.add_parser("fuse", help="coordinator side: late fusion of site summaries or published estimates")
    fuse.add_argument("summaries", nargs="*", help="SiteSummary JSON files")
    fuse.add_argument("--estimates", default=None, metavar="TABLE.csv",
                      help="published estimates instead of summaries: a CSV with columns site, estimate, se "
                           "(and coefficient for several per site; optional n)")
    fuse.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="LateFusion option KEY=VALUE, VALUE read as JSON when it parses (repeatable); "
                           "unknown keys are refused with the list of known ones")
    fuse.add_argument("--level", type=float, default=0.95, help="confidence level of every interval (0 < level < 1)")
    fuse.add_argument("--out", default=None, help="CSV of the fused estimates (written atomically)")
    fuse.set_defaults(func=_cmd_fuse)
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:1997] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    0: success; 1: a user error (one line ``hetmtl: error: ...`` on stderr naming the file or
    option; also a study with failed jobs); 2: a malformed command line; 3: an internal error
    (one line; ``--debug`` or ``HETMTL_DEBUG=1`` re-raises it with its traceback).
    """
    global last_error
    from hetmtl.exceptions import HetmtlError

    last_error = None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HETMTL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, message printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (CliError, HetmtlError, OSError, ImportError, ValueError) as exc:
        # ValueError: the package's older checks (InputError is one too); OSError: named files
        last_error = exc
        if debug:
            raise
        print(f"hetmtl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("hetmtl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        last_error = exc
        if debug:
            raise
        print(f"hetmtl: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the "
              f"traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
