"""The per-site DML coverage benchmark driver: a one-replicate run writes its tables under the
benchmark's own name (not a configuration's), fits every configuration on the same data, and
``--summarize`` rebuilds the same table from the raw rows."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks/

import benchmarks._util as util  # noqa: E402
import benchmarks.bench_fusion_dml_coverage as bench  # noqa: E402


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    return tmp_path


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    bench.main()


def test_tagged_run_writes_benchmark_files_and_pairs_configs(results_dir, monkeypatch):
    _run(monkeypatch, "--reps", "1", "--etas", "0.0", "--configs", "itl-alpha1", "itl", "--tag", "tiny")
    files = sorted(p.name for p in results_dir.iterdir())
    assert files == ["fusion_dml_coverage_tiny.csv", "fusion_dml_coverage_tiny.md", "fusion_dml_coverage_tiny_raw.csv"]
    raw = pd.read_csv(results_dir / "fusion_dml_coverage_tiny_raw.csv")
    assert sorted(raw.config.unique()) == ["itl", "itl-alpha1"]
    a, b = (raw[raw.config == c].set_index("site") for c in ("itl-alpha1", "itl"))
    np.testing.assert_array_equal(a.n, b.n)  # same simulated sites
    assert not np.allclose(a.err, b.err)  # different penalties, different estimates
    table = pd.read_csv(results_dir / "fusion_dml_coverage_tiny.csv")
    assert len(table) == 2 * len(bench.VARIANTS)
    # the t(n - d) interval is wider than the normal one, HC1 + t the widest
    w = table[table.config == "itl"].set_index("variant").mean_width
    assert w["none"] < w["t"] < w["hc1+t"] and w["none"] < w["hc1"] < w["hc1+t"]

    _run(monkeypatch, "--summarize", "--tag", "tiny")
    rebuilt = pd.read_csv(results_dir / "fusion_dml_coverage_tiny.csv")
    pd.testing.assert_frame_equal(rebuilt, table)
