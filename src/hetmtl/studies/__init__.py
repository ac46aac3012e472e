"""Comparison studies: settings × methods × replicates, resumable, local or on a Dask cluster.

What to use when:

- run a built-in study: ``hetmtl study run latefusion-eta --reps 20 --jobs 2`` or
  ``run_study(get_study("latefusion-eta"), "out/")``;
- your own study: build a :class:`Study` (or write YAML/TOML, :meth:`Study.from_file`) with a
  generator, a parameter grid and methods (callables ``method(rep, **options) -> dict``);
- tables and figures: :func:`write_report` (``hetmtl study report DIR``).
"""
from hetmtl.studies.builtin import available_studies, get_study, list_studies
from hetmtl.studies.report import (compare_reference, load_results, paired_differences, replicate_frame,
                                   summary_table, unit_summary, write_report)
from hetmtl.studies.runner import RunResult, run_job, run_study
from hetmtl.studies.spec import MethodSpec, Replicate, Study, register_generator, register_method
from hetmtl.studies.store import ResultStore, StoreError

__all__ = [
    "MethodSpec", "Replicate", "ResultStore", "RunResult", "StoreError", "Study", "available_studies", "compare_reference",
    "get_study", "list_studies", "load_results", "paired_differences", "register_generator", "register_method",
    "replicate_frame", "run_job", "run_study", "summary_table", "unit_summary", "write_report",
]
