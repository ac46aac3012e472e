"""Block-wise estimators: rounding-robust selection, parameter validation, refusal of untrained
models, random_state semantics, progress, the complete-case lasso and forged exports."""
import json

import numpy as np
import pytest

from hetmtl.blockwise.baselines import HPS, HTL, STL, CCLasso
from hetmtl.blockwise.hbi import HBImputer
from hetmtl.blockwise.model import MTLHMB
from hetmtl.blockwise.selection import check_grid, make_split, select_config, step2_grid
from hetmtl.blockwise.simulate import simulate_blockwise
from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import (ConvergenceWarning, DataValidationError, NotFittedError, ParameterError,
                               TrainingError)

HBI = [dict(width=4, depth=1)]
GRID = [dict(width=8, depth=2, lambda_orth=0.01, lambda_imp=0.01, lambda_dr=0.1),
        dict(width=16, depth=3, lambda_orth=0.1, lambda_imp=0.1, lambda_dr=0.1)]
FAST = dict(max_epochs=15, hbi_max_epochs=10, patience=3, random_state=0)


@pytest.fixture(scope="module")
def sim():
    return simulate_blockwise(n=(60, 50), p0=8, p_private=(3, 4), rho=(0.95, 0.7), seed=1)


@pytest.fixture(scope="module")
def split(sim):
    return make_split(sim.data, seed=0)


# ------------------------------------------------------------------------------ selection rule
def test_one_se_rule_is_robust_to_rounding_level_perturbations():
    configs = step2_grid("small")  # 8: h {32, 64} x L {2, 3} x two lambda levels
    rng = np.random.default_rng(0)
    losses = 1.0 + 1e-4 * rng.standard_normal(len(configs))  # near ties, far inside one SE
    ses = np.full(len(configs), 0.05)
    base = select_config(losses, ses, configs, "1se")
    # the smallest architecture (h 32, L 2), the larger regularisation of the two
    assert configs[base]["width"] == 32 and configs[base]["depth"] == 2 and configs[base]["lambda_orth"] == 0.1
    default = select_config(losses, ses, configs)  # 0.25 SE
    assert default == base
    for k in range(50):
        noisy = losses * (1 + 1e-6 * np.random.default_rng(k).standard_normal(len(configs)))
        assert select_config(noisy, ses, configs, "1se") == base
        assert select_config(noisy, ses, configs, 0.25) == base
    # the lowest-loss rule is what rounding can flip when two losses tie to 1e-6
    tied = losses.copy()
    tied[3] = tied.min() * (1 + 1e-7)
    i, j = int(np.argmin(losses)), 3
    a = select_config(tied, ses, configs, "min")
    tied2 = tied.copy()
    tied2[j] = tied[i] * (1 - 1e-7)
    assert select_config(tied2, ses, configs, "min") != a
    assert select_config(tied, ses, configs, "1se") == select_config(tied2, ses, configs, "1se") == base


def test_one_se_rule_keeps_the_best_when_others_are_clearly_worse():
    configs = step2_grid("small")
    losses = np.linspace(2.0, 1.0, len(configs))  # the last (largest) configuration is best by far
    ses = np.full(len(configs), 0.01)
    assert select_config(losses, ses, configs, "1se") == len(configs) - 1
    losses[0] = np.nan  # never trained: never selected
    assert select_config(losses, ses, configs, "1se") == len(configs) - 1
    with pytest.raises(ValueError, match="no configuration has a finite validation loss"):
        select_config(np.full(3, np.inf), ses[:3], configs[:3])
    with pytest.raises(ParameterError, match="selection must be 'min', '1se' or a number"):
        select_config(losses, ses, configs, "best")
    with pytest.raises(ParameterError, match="selection must be >= 0"):
        select_config(losses, ses, configs, -0.5)
    # a tolerance of 0.5 SE keeps the smallest configuration within 0.005 of the best
    losses = np.full(len(configs), 2.0)
    losses[[0, 5, 7]] = [1.006, 1.004, 1.0]
    assert select_config(losses, ses, configs, 0.5) == 5 and select_config(losses, ses, configs, 0.7) == 0


def test_selection_uses_float64_losses_and_their_standard_errors(sim, split):
    m = MTLHMB(grid=GRID, hbi_grid=HBI, **FAST).fit(sim.data, split)
    fit = m.fit_
    assert fit.val_loss.dtype == np.float64 and fit.rule == 0.25
    assert np.all(np.isfinite(fit.val_se)) and np.all(fit.val_se > 0)
    # the recomputed loss of the selected configuration = the summed per-task validation MSE of
    # its predictions
    X = [np.hstack([sim.data.x0(t), sim.data.x_private(t)])[split.val[t]] for t in range(2)]
    mse = sum(np.mean((m.predict(X[t], t) - sim.data.y(t)[split.val[t]]) ** 2) for t in range(2))
    assert fit.val_loss[fit.selected] == pytest.approx(mse, rel=1e-5)
    assert fit.selected == select_config(fit.val_loss, fit.val_se, fit.configs, 0.25)
    tab = m.selection_table()
    assert {"val_loss", "val_se", "selected"} <= set(tab.columns) and tab["selected"].sum() == 1
    # the rule travels with the export
    back = MTLHMB.from_json(m.to_json())
    assert back.fit_.rule == 0.25 and back.selected_config_ == m.selected_config_


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("cls", [MTLHMB, STL, HTL, HPS])
@pytest.mark.parametrize("bad, name", [
    (dict(lr=float("nan")), "lr"), (dict(lr=0.0), "lr"), (dict(lr=float("inf")), "lr"),
    (dict(max_epochs=0), "max_epochs"), (dict(max_epochs=2.5), "max_epochs"), (dict(patience=0), "patience"),
    (dict(grid=[]), "grid"), (dict(grid=[dict(width=0, depth=2)]), r"grid\[0\].width"),
    (dict(grid=[dict(width=8, depth=-1)]), r"grid\[0\].depth"), (dict(lr_gamma=0.0), "lr_gamma"),
    (dict(random_state=-1), "random_state"), (dict(random_state="x"), "random_state"),
    (dict(selection="best"), "selection"), (dict(selection=-1.0), "selection"), (dict(verbose=-1), "verbose"),
    (dict(n_threads=0), "n_threads"),
])
def test_parameters_are_validated_in_fit(sim, split, cls, bad, name):
    est = cls(**{**dict(max_epochs=2), **bad})
    with pytest.raises(ParameterError, match=name):
        est.fit(sim.data, split)


def test_hbi_parameters_and_lambda_values_are_validated(sim):
    with pytest.raises(ParameterError, match="lr"):
        HBImputer(grid=HBI, lr=float("nan")).fit(sim.data)
    with pytest.raises(ParameterError, match=r"hbi_grid\[0\].width"):
        HBImputer(grid=[dict(width=0, depth=1)]).fit(sim.data)
    with pytest.raises(ParameterError, match="max_epochs"):
        HBImputer(grid=HBI, max_epochs=0).fit(sim.data)
    with pytest.raises(ParameterError, match=r"grid\[1\].lambda_dr"):
        check_grid([GRID[0], {**GRID[1], "lambda_dr": float("nan")}])
    with pytest.raises(ParameterError, match="has no 'depth'"):
        check_grid([dict(width=8)])


def test_not_fitted_error(sim):
    for est in (MTLHMB(), STL(), HTL(), HPS(), CCLasso(), HBImputer()):
        with pytest.raises(NotFittedError):
            if isinstance(est, HBImputer):
                est.impute_block(np.zeros((2, 8)), 1)
            else:
                est.predict(np.zeros((2, 11)), 0)


# ------------------------------------------------------------------------------ untrained models
def _huge(sim) -> BlockwiseData:
    blocks = [[None if sim.data.block(t, s) is None else sim.data.block(t, s) * 1e30 for s in range(3)]
              for t in range(2)]
    return BlockwiseData(blocks, [sim.data.y(t) for t in range(2)])


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_no_finite_validation_loss_raises_training_error(sim, split, engine):
    """Inputs of 1e30 overflow float32 in the first layer: no epoch gives a finite validation loss."""
    grid = [dict(width=8, depth=2, lambda_orth=1.0, lambda_imp=0.0, lambda_dr=1.0)]
    with pytest.raises(TrainingError, match=r"HTL: no epoch produced a finite validation loss .*'width': 8|width=8"):
        HTL(grid=grid, max_epochs=3, engine=engine, random_state=0).fit(_huge(sim), split)
    with pytest.raises(TrainingError, match=r"HBImputer \(block 'x1'\)"):
        MTLHMB(grid=GRID[:1], hbi_grid=HBI, max_epochs=3, hbi_max_epochs=3, engine=engine,
               random_state=0).fit(_huge(sim), split)


def test_configurations_without_finite_loss_are_left_out_with_a_warning(sim, split, monkeypatch):
    from hetmtl.blockwise import model as model_mod

    real = model_mod.fit_grid

    def one_diverged(*args, **kwargs):
        fit = real(*args, **kwargs)
        fit.val_loss[0] = np.inf  # as if configuration 0 had produced only NaN losses
        return fit

    monkeypatch.setattr(model_mod, "fit_grid", one_diverged)
    with pytest.warns(ConvergenceWarning, match="1 configuration"):
        m = MTLHMB(grid=GRID, hbi_grid=HBI, **FAST).fit(sim.data, split)
    assert m.fit_.selected == 1 and not np.isfinite(m.fit_.val_loss[0])


# ------------------------------------------------------------------------------ random_state, verbose
def test_random_state_none_means_fresh_randomness(sim, split):
    kw = dict(grid=GRID[:1], hbi_grid=HBI, max_epochs=4, hbi_max_epochs=3)
    a, b = (MTLHMB(**kw).fit(sim.data, split) for _ in range(2))
    assert a.seed_ != b.seed_ and a.random_state is None  # the parameter is not overwritten
    assert not np.allclose(a.fit_.val_loss, b.fit_.val_loss)
    c, d = (MTLHMB(**kw, random_state=7).fit(sim.data, split) for _ in range(2))
    assert c.seed_ == 7 and np.array_equal(c.fit_.val_loss, d.fit_.val_loss)
    assert HTL(grid=[dict(width=8, depth=2)], max_epochs=2).fit(sim.data).seed_ >= 0


def test_verbose_shows_progress_over_configurations(sim, split, capsys):
    MTLHMB(grid=GRID, hbi_grid=HBI, verbose=1, **FAST).fit(sim.data, split)
    err = capsys.readouterr().err
    assert "MTLHMB Step 2" in err and "HBI (Step 1)" in err and "config" in err
    MTLHMB(grid=GRID, hbi_grid=HBI, **FAST).fit(sim.data, split)
    assert capsys.readouterr().err == ""


def test_verbose_native_chunks_give_the_same_fits(sim, split):
    kw = dict(grid=GRID, hbi_grid=HBI, n_threads=2, **FAST)
    quiet = MTLHMB(**kw).fit(sim.data, split)
    loud = MTLHMB(verbose=1, **kw).fit(sim.data, split)
    np.testing.assert_array_equal(quiet.fit_.val_loss, loud.fit_.val_loss)


# ------------------------------------------------------------------------------ complete-case lasso
def test_cc_lasso_per_task_on_blockwise_data(sim, split):
    cc = CCLasso(per_task=True, random_state=0).fit(sim.data, split)
    assert list(cc.test_table_.index) == ["task1", "task2", "average"]
    assert cc.n_complete_ == [len(split.train[t]) + len(split.val[t]) for t in range(2)]
    X = np.hstack([sim.data.x0(1), sim.data.x_private(1)])[split.test[1]]
    np.testing.assert_allclose(cc.predict(X, task="task2"), cc.models_[1].predict(X))
    assert cc.test_rmse_avg_ == pytest.approx(cc.evaluate(sim.data, split.test)["rmse"].iloc[-1])
    with pytest.raises(DataValidationError, match="no row of this BlockwiseData observes every block"):
        CCLasso().fit(sim.data, split)


def test_cc_lasso_on_a_layout_with_a_complete_group():
    rng = np.random.default_rng(0)
    n, p = 240, 9
    X = rng.standard_normal((n, p))
    beta = np.r_[1.5, -2.0, 0, 0, 1.0, 0, 0, 0, 0.5]
    y = X @ beta + 0.1 * rng.standard_normal(n)
    Xm = X.copy()
    Xm[80:160, 3:6] = np.nan  # group 2 misses source 1
    Xm[160:, 6:] = np.nan     # group 3 misses source 2
    cc = CCLasso(random_state=0).fit(Xm, y)
    assert cc.n_complete_ == [80]
    coef = cc.models_[0][-1].coef_ / cc.models_[0][0].scale_
    np.testing.assert_allclose(coef, beta, atol=0.1)
    # rows missing a block: filled from the complete rows, predictions finite and close
    pred = cc.predict(Xm[160:])
    assert np.all(np.isfinite(pred)) and np.sqrt(np.mean((pred - y[160:]) ** 2)) < 1.0
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")  # two tasks, each with rows of every pattern
    per = CCLasso(per_task=True, random_state=0).fit(Xm, y, groups=groups)
    assert per.groups_ == ["a", "b"] and per.n_complete_ == [40, 40]
    assert np.all(np.isfinite(per.predict(Xm[groups == "b"], task="b")))
    with pytest.raises(ParameterError, match="groups"):
        per.predict(Xm[:3], task="z")
    with pytest.raises(DataValidationError, match="group 'b': 0 complete row"):
        CCLasso(per_task=True).fit(Xm[80:], y[80:], groups=np.repeat(["b", "c"], 80))
    with pytest.raises(ParameterError, match="cv"):
        CCLasso(cv=1).fit(Xm, y)


# ------------------------------------------------------------------------------ forged exports
def test_forged_export_is_refused_before_building_the_network(sim, split, tmp_path):
    import tracemalloc

    from hetmtl.serialization import ModelFormatError, canonical_digest

    def _retamper(text, edit):
        obj = json.loads(text)
        edit(obj["payload"])
        obj["sha256"] = canonical_digest(obj["payload"])
        return json.dumps(obj)

    text = MTLHMB(grid=GRID[:1], hbi_grid=HBI, **FAST).fit(sim.data, split).to_json()

    def huge(p):
        p["fitted"]["step2"]["net"]["width"] = 20000
        p["fitted"]["step2"]["net"]["depth"] = 6
        p["fitted"]["step2"]["configs"][0].update(width=20000, depth=6)

    tracemalloc.start()
    with pytest.raises(ModelFormatError, match=r"(?i)step.?2"):
        MTLHMB.from_json(_retamper(text, huge))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6

    def huge_hbi(p):
        src = p["fitted"]["imputer"]["fitted"]["sources"]["1"]
        src["net"]["width"] = 50000

    with pytest.raises(ModelFormatError, match="width"):
        MTLHMB.from_json(_retamper(text, huge_hbi))

    def many_tasks(p):
        p["fitted"]["step2"]["net"]["T"] = 10**6

    with pytest.raises(ModelFormatError, match=r"u0.W|T\b|tasks"):
        MTLHMB.from_json(_retamper(text, many_tasks))
    # errors name the file
    path = tmp_path / "forged.json"
    path.write_text(_retamper(text, huge_hbi))
    with pytest.raises(ModelFormatError, match="forged.json"):
        MTLHMB.from_json(path)



def test_predict_on_zero_rows_is_refused_naming_the_task(sim, split):
    m = MTLHMB(grid=GRID[:1], hbi_grid=HBI, **{**FAST, "max_epochs": 3, "hbi_max_epochs": 3}).fit(sim.data, split)
    X = np.hstack([sim.data.x0(0), sim.data.x_private(0)])
    for method in (m.predict, m.transform):
        with pytest.raises(DataValidationError, match=rf"task {m.task_names_[0]!r}: X has 0 rows"):
            method(X[:0], 0)
        with pytest.raises(DataValidationError, match=rf"task {m.task_names_[0]!r}: X has values beyond"):
            method(X * 1e300, 0)


@pytest.mark.parametrize("edit", ["one_task_name", "task_names_string", "sources_list", "source_key", "source_net",
                                  "private_source", "n_threads", "imputer_n_threads"])
def test_forged_export_sizes_and_types_are_refused_at_load(sim, split, tmp_path, edit):
    from hetmtl.serialization import ModelFormatError, canonical_digest

    m = MTLHMB(grid=GRID[:1], hbi_grid=HBI, **{**FAST, "max_epochs": 3, "hbi_max_epochs": 3}).fit(sim.data, split)
    obj = json.loads(m.to_json())
    f = obj["payload"]["fitted"]
    srcs = f["imputer"]["fitted"]["sources"]
    if edit == "one_task_name":
        f["task_names"] = f["task_names"][:1]
    elif edit == "task_names_string":
        f["task_names"] = "\u00fb"
    elif edit == "sources_list":
        f["imputer"]["fitted"]["sources"] = list(srcs.values())
    elif edit == "source_key":
        srcs["\u00fb"] = srcs.pop(next(iter(srcs)))
    elif edit == "source_net":
        next(iter(srcs.values()))["net"] = "\u00fb"
    elif edit == "n_threads":  # torch.set_num_threads(10**6) crashes the process at predict
        obj["payload"]["params"]["n_threads"] = 10**6
    elif edit == "imputer_n_threads":
        f["imputer"]["params"]["n_threads"] = -1
    else:
        f["private_source"] = [0] * len(f["private_source"])
    obj["sha256"] = canonical_digest(obj["payload"])
    path = tmp_path / "forged_hmb.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelFormatError, match=r"forged_hmb\.json"):
        MTLHMB.from_json(path)


# ------------------------------------------------------------------------------ study runner
def test_study_runner_registers_the_complete_case_lasso():
    from hetmtl.studies.builtin import BLOCKWISE_METHODS, blockwise_method_specs, blockwise_study

    assert "cc_lasso" in BLOCKWISE_METHODS and "cc_lasso_task" in BLOCKWISE_METHODS
    specs = {s.name: s for s in blockwise_method_specs(["cc_lasso_task", "stl", "mbi"])}
    assert specs["cc_lasso_task"].options == {"name": "cc_lasso_task"}
    assert specs["stl"].options["selection"] == "min"  # the reproduction protocol: the authors' rule
    study = blockwise_study("D", methods=["mtl-hmb", "cc_lasso_task"], n_reps=1, grid="small")
    assert [m.name for m in study.methods] == ["mtl-hmb", "cc_lasso_task"]
    assert json.dumps(study.methods[0].options)  # serialisable options
