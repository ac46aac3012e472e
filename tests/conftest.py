"""Shared fixtures. Plots use the Agg backend; tests never need a display."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def simulate_site(rng: np.random.Generator, n: int = 400, p: int = 5, theta: float = 1.0, cate: bool = False):
    """One site with confounded binary treatment and a nonlinear outcome."""
    X = rng.normal(size=(n, p))
    e = 1.0 / (1.0 + np.exp(-(0.5 * X[:, 0] - 0.25 * X[:, 1])))
    d = (rng.random(n) < e).astype(float)
    tau = theta + (0.5 * X[:, 0] - 0.3 * X[:, 2] if cate else 0.0)
    y = tau * d + np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + X[:, 3] + rng.normal(size=n)
    return y, d, X


def subprocess_env() -> dict:
    """Environment for child Pythons: the same hetmtl this test process imported (installed or
    the developer's src/), plus the tests folder for helper modules."""
    import os
    from pathlib import Path

    import hetmtl

    package_parent = Path(hetmtl.__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_parent), str(Path(__file__).parent)])}


def doubleml_folds(n: int, n_folds: int, n_rep: int, seed: int) -> list:
    """Random K-fold splits in DoubleML's layout: per repetition, a list of (train, test) index
    arrays (passed to both DoubleML's ``set_sample_splitting`` and our ``folds=``)."""
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_rep):
        ids = rng.permutation(np.arange(n) % n_folds)
        reps.append([(np.flatnonzero(ids != k), np.flatnonzero(ids == k)) for k in range(n_folds)])
    return reps
