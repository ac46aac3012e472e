"""Figure-5-style boxplots (average test RMSE by method, per setting) from the reproduction raw CSV.

    PYTHONPATH=src python benchmarks/plot_blockwise_repro.py  ->  results/blockwise_repro_<setting>.png
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from hetmtl.blockwise import SETTINGS  # noqa: E402
from hetmtl.plotting.blockwise import rmse_boxplot  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    raw = pd.read_csv(RESULTS / "blockwise_repro_raw.csv", dtype={"value": str})
    for setting, sub in raw.groupby("setting"):
        grids = sorted(set(zip(sub.grid, sub.max_epochs)))
        fig = rmse_boxplot(sub, x="value", method="method", y="rmse_avg",
                           title=f"Setting {setting} (grid {', '.join(g for g, _ in grids)}; "
                                 f"{sub.groupby(['value', 'method']).size().min()}+ reps)",
                           xlabel=SETTINGS[setting]["vary"])
        fig.savefig(RESULTS / f"blockwise_repro_{setting}.png", dpi=110)


if __name__ == "__main__":
    main()
