"""Dual-encoder family: simulation generators, baselines/ablations, diagnostics, PDXE loader."""
import warnings

import numpy as np
import pytest

from hetmtl.data import MultiTaskData
from hetmtl.encoders import DualEncoderMTL
from hetmtl.encoders.baselines import METHODS, PooledMTL, compare_methods, make_method, select_by_validation
from hetmtl.encoders.diagnostics import NegativeTransferWarning, adaptivity_report, negative_transfer
from hetmtl.encoders.pdx import (METRICS_SHEET, RAW_SHEET, RNA_SHEET, load_pdxe, make_pdxe_like, pdxe_from_frames,
                                 top_variance_genes)
from hetmtl.encoders.simulate import simulate_latent, simulate_paper_like
from hetmtl.exceptions import DataValidationError

FAST = dict(hidden=(8,), n_shared=2, n_specific=2, max_epochs=30, patience=8)


def test_simulation_controls_shift_and_drift_separately():
    base = dict(n_tasks=4, n=[50, 80, 400, 1000], d=3, random_state=0)
    sim = simulate_latent(posterior_drift=0.0, covariate_shift=0.0, **base)
    assert list(sim.data.sizes) == [50, 80, 400, 1000]
    np.testing.assert_allclose(sim.beta, np.tile(sim.beta_center, (4, 1)))
    drift = simulate_latent(posterior_drift=2.0, covariate_shift=0.0, n_drifted=2, **base)
    np.testing.assert_allclose(np.linalg.norm(drift.beta - drift.beta_center, axis=1), [2, 2, 0, 0], atol=1e-12)
    # same seed: the drift leaves P(X) unchanged ...
    np.testing.assert_array_equal(drift.data["task4"].X, sim.data["task4"].X)
    shift = simulate_latent(posterior_drift=0.0, covariate_shift=3.0, **base)
    # ... and covariate shift leaves the coefficients unchanged while moving the feature means
    np.testing.assert_array_equal(shift.beta, sim.beta)
    means = np.array([t.X.mean(0) for t in shift.data])
    assert np.linalg.norm(means[3] - means[2]) > 2.0
    assert np.linalg.norm(np.array([t.X.mean(0) for t in sim.data])[3]) < 0.3
    test = sim.test_data(200, random_state=1)
    np.testing.assert_allclose(test["task1"].y, sim.mean_function(test["task1"].X, 0))
    pl = simulate_paper_like(n_tasks=3, n=60, d=5, rho=[0.1, 0.5, 0.9], shared_weight=1.0, random_state=0)
    X = pl.data["task1"].X
    np.testing.assert_allclose(pl.mean_function(X, 0), pl.mean_function(X, 2))  # a = 1: one shared posterior
    with pytest.raises(ValueError, match="one size >= 2"):
        simulate_latent(n_tasks=2, n=[10, 1])


def test_coefficients_fuse_as_posterior_drift_vanishes():
    """Spec §8.12: as the posterior shift goes to 0 the beta_r fuse to their centre."""
    kw = dict(n_tasks=6, n=150, d=5, n_drifted=3, noise=0.2, specific_strength=0.3, random_state=0)
    model = dict(n_shared=3, n_specific=2, hidden=(16,), lam_alpha=0.05, lam_beta=0.05, random_state=0,
                 training="joint", center_alpha=True, lr=1e-2, patience=30, max_epochs=500)
    no_drift = simulate_latent(posterior_drift=0.0, **kw)
    big = simulate_latent(posterior_drift=3.0, **kw)
    rep0 = adaptivity_report(DualEncoderMTL(**model).fit(no_drift.data), no_drift.data)
    rep3 = adaptivity_report(DualEncoderMTL(**model).fit(big.data), big.data)
    assert rep0.fused_beta.all()
    assert not rep3.fused_beta.all()
    assert rep3.fused_beta.iloc[3:].all()  # the undrifted tasks stay integrated
    assert (rep3.dist_beta.iloc[:2] > 0).all()
    assert rep3.max_abs_corr_SC.between(0, 1).all()


def test_methods_are_what_they_say():
    data = simulate_latent(n_tasks=3, n=40, d=4, random_state=1).data
    common = dict(FAST, random_state=0)
    m = {name: make_method(name, **common) for name in METHODS}
    assert m["shared_only"].n_specific == 0 and m["shared_only"].lam_beta > 0
    assert m["specific_only"].n_shared == 0 and m["specific_only"].lam_alpha > 0
    assert m["no_orth"].lam_orth == 0 and m["no_orth"].n_shared == 2
    assert m["no_integration"].lam_alpha == 0 and m["no_integration"].lam_beta == 0 and m["no_integration"].lam_orth > 0
    assert (m["stl"].n_shared, m["stl"].n_specific, m["stl"].lam_alpha, m["stl"].early_stopping) == (0, 4, 0.0, "per_task")
    assert (m["hps"].n_specific, m["hps"].lam_beta, m["hps"].lam_orth) == (0, 0.0, 0.0)
    assert isinstance(m["pooled"], PooledMTL)
    tr, va, te = data.split(random_state=0)
    res, models = compare_methods(tr, va, te, return_models=True, **common)
    assert set(res.method) == set(METHODS) and len(res) == len(METHODS) * 3
    assert np.isfinite(res.rmse).all()
    X = te["task1"].X
    # pooled ignores the task; HPS shares the encoder but not the heads
    np.testing.assert_array_equal(models["pooled"].predict(X, "task1"), models["pooled"].predict(X, "task3"))
    assert not np.allclose(models["hps"].predict(X, "task1"), models["hps"].predict(X, "task3"))
    assert models["stl"].shared_ is None and models["shared_only"].specific_ is None
    best, table = select_by_validation(tr, va, {"lam_beta": [0.0, 0.1]}, **common)
    assert len(table) == 2 and best.lam_beta == table.lam_beta[table.val_mse_sum.idxmin()]
    with pytest.raises(ValueError, match="unknown method"):
        make_method("no_such_method")


def test_negative_transfer_warning():
    """Tasks with opposite slopes fused by force: the MTL fit is worse than STL and says so."""
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(60, 2)) for _ in range(2)]
    ys = [2 * Xs[0][:, 0] + 0.1 * rng.normal(size=60), -2 * Xs[1][:, 0] + 0.1 * rng.normal(size=60)]
    data = MultiTaskData(Xs, ys, ["up", "down"])
    tr, va = data.split((0.7, 0.3), random_state=0)
    common = dict(FAST, max_epochs=80, patience=20, random_state=0)
    fused = DualEncoderMTL(**{**common, "n_specific": 0, "lam_beta": 1e3}).fit(tr, validation_data=va)
    stl = make_method("stl", **common).fit(tr, validation_data=va)
    assert adaptivity_report(fused).fused_beta.all()
    with pytest.warns(NegativeTransferWarning, match="up|down"):
        out = negative_transfer(fused, stl, va)
    assert out.negative_transfer.all() and (out.ratio > 2).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NegativeTransferWarning)
        negative_transfer(stl, stl, va)  # identical fits: no warning


def test_pdxe_frames_loader_and_errors(tmp_path):
    sheets = make_pdxe_like(random_state=0)
    with pytest.warns(UserWarning, match="excluded"):
        data, info = pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET], sheets[RAW_SHEET])
    assert data.tasks == ["BRCA", "CRC", "CM", "NSCLC", "PDAC"]
    assert data.n_features == 50 and data.y_col == "log_TimeToDouble"
    n_untreated = sheets[METRICS_SHEET].query("Treatment == 'untreated'").Model.str.contains("GC").__invert__().sum()
    assert data.n_total + info["n_dropped_bad_outcome"] + info["n_dropped_no_rnaseq"] == n_untreated
    # features are log2(max(FPKM, 1)) of the right model
    model0 = info["models"]["BRCA"][0]
    np.testing.assert_allclose(data["BRCA"].X[0], np.log2(np.maximum(sheets[RNA_SHEET][model0].to_numpy(), 1)))
    assert np.all(data["BRCA"].X >= 0)
    assert len(top_variance_genes(data, 10)) == 10
    with pytest.raises(DataValidationError, match="no rows with Treatment == 'placebo'"):
        pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET], sheets[RAW_SHEET], treatment="placebo")
    with pytest.raises(DataValidationError, match="Tumor Type"):
        pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET])
    with pytest.raises(DataValidationError, match=r"'PCT curve metrics': column\(s\) \['TimeToDouble'\]"):
        pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET].drop(columns="TimeToDouble"), sheets[RAW_SHEET])
    fake = tmp_path / "nm.3954-S2.xlsx"
    fake.write_bytes(b"not the workbook")
    with pytest.raises(DataValidationError, match="sha256"):
        load_pdxe(fake)
    with pytest.raises(FileNotFoundError, match="PDXE workbook not found"):
        load_pdxe(tmp_path / "missing.xlsx")
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="openpyxl"):
            load_pdxe(fake, sha256=None)


def test_dual_on_pdxe_like_runs():
    sheets = make_pdxe_like(random_state=1)
    with pytest.warns(UserWarning):
        data, _ = pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET], sheets[RAW_SHEET], n_genes=20)
    m = DualEncoderMTL(random_state=0, **FAST).fit(data)
    assert m.score_tasks(data).rmse.notna().all()


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    from hetmtl.plotting.encoders import plot_adaptivity, plot_method_comparison, plot_training_history

    data = simulate_latent(n_tasks=3, n=40, d=3, random_state=2).data
    m = DualEncoderMTL(random_state=0, **FAST).fit(data)
    rep = adaptivity_report(m, data)
    fig = plot_adaptivity(rep)
    assert len(fig.axes[0].patches) == 2 * 3
    tr, va, te = data.split(random_state=0)
    res = compare_methods(tr, va, te, ["dual", "stl"], **FAST)
    fig2 = plot_method_comparison(res)
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == res.groupby("method").rmse.mean().sort_values().index.tolist()
    fig3 = plot_training_history(m)
    assert len(fig3.axes[0].lines) == 4  # train, validation, kept epoch, start of stage 2 (staged training)
