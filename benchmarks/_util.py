"""Helpers shared by the benchmark scripts: where results go and how the machine is described."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    import numpy
    import sklearn
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"scikit-learn {sklearn.__version__}, torch {torch.__version__}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def write_results(name: str, table: pd.DataFrame, title: str, notes: list[str]) -> None:
    """Write ``<name>.csv`` and a Markdown report ``<name>.md`` into benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / f"{name}.csv", index=False)
    lines = [f"# {title}", "", f"Machine: {machine()}", "", *[f"- {n}" for n in notes], "", table.to_markdown(index=False)]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def failed_replicates(store: Path, studies) -> list[tuple[str, pd.Series, float]]:
    """Per study with failed jobs in ``store``: (name, failed replicates per setting, share of the
    failed jobs that are a site with fewer treated/control units than folds)."""
    from hetmtl.studies import load_results

    out = []
    for study in studies:
        d = store / study.name
        if not (d / "results.sqlite").exists():
            continue
        f = load_results(d).failures
        if f.empty:
            continue
        fold = f.error.str.contains("fewer than the").mean()
        out.append((study.name, f.groupby("setting").replicate.nunique(), float(fold)))
    return out
