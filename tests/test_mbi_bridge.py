"""R bridge of MBI: a clear error without R/rpy2; bit-identical reruns of the fixtures with R."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hetmtl.blockwise import MBI
from hetmtl.blockwise._r_bridge import r_mbi_available

AVAILABLE, REASON = r_mbi_available()
REPO = Path(__file__).resolve().parents[1]


def test_missing_r_gives_clear_error():
    if AVAILABLE:
        pytest.skip("R, rpy2 and BlockMissingData are installed")
    X = np.random.default_rng(0).normal(size=(20, 4))
    y = X[:, 0]
    with pytest.raises(ImportError, match="rpy2|BlockMissingData"):
        MBI(engine="r").fit(X, y, [(0, 2), (2, 4)])


@pytest.mark.skipif(not AVAILABLE, reason=f"R engine unavailable: {REASON}")
def test_r_engine_reproduces_manpage_fixture_bit_for_bit():
    fixdir = Path(os.environ.get("HETMTL_FIXTURES", REPO / ".." / "shared" / "fixtures" / "mbi"))
    if not fixdir.is_dir():
        pytest.skip("MBI golden fixtures not found (set HETMTL_FIXTURES)")
    d = np.load(fixdir / "manpage_example.npz")
    json.loads((fixdir / "manpage_example.json").read_text())
    est = MBI(engine="r", nlam=15, r_seed=int(d["r_seeds"][0])).fit(
        d["X"], d["y"], [(0, 2), (2, 4)])
    np.testing.assert_array_equal(est.lambdas_, d["lam"][0])
    np.testing.assert_array_equal(est.coef_path_, d["beta"][0])
    np.testing.assert_array_equal(est.bic1_, d["bic1"][0])
    # the native objective evaluates R's solution
    assert np.isfinite(est.penalized_objective(est.coef_, est.lambda_))
