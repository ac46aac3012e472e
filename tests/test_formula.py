"""Formula interface of the data containers, the covariate rule shared with the CLI, treatment
coding with treated=, and the hostile-input findings of issue #25 item 8."""
import numpy as np
import pandas as pd
import pytest

from hetmtl.data import BlockwiseData, MultiSiteData, MultiTaskData
from hetmtl.exceptions import DataValidationError, ParameterError


@pytest.fixture
def df():
    rng = np.random.default_rng(0)
    n = 80
    return pd.DataFrame({
        "y": rng.uniform(1.0, 3.0, n), "x1": rng.normal(size=n), "x2": rng.uniform(1.0, 4.0, n),
        "g": rng.choice(["a", "b", "c"], n), "z1": rng.normal(size=n), "z2": rng.normal(size=n),
        "arm": np.tile(["active", "placebo"], n // 2), "d": np.tile([1, 0], n // 2),
        "site": np.repeat(["north", "south"], n // 2),
    })


def test_from_formula_transforms_and_dummies(df):
    data = MultiSiteData.from_formula("log(y) ~ x1 + log(x2) + C(g)", df, treatment="d", site="site")
    np.testing.assert_allclose(data.y, np.log(df["y"]))
    assert data.y_col == "log(y)" and data.x_cols == ["x1", "log(x2)", "C(g)[T.b]", "C(g)[T.c]"]
    np.testing.assert_allclose(data.X[:, 1], np.log(df["x2"]))
    np.testing.assert_array_equal(data.X[:, 2], (df["g"] == "b").to_numpy(float))
    assert data.formula == "log(y) ~ x1 + log(x2) + C(g)" and data.sites == ["north", "south"]
    pre = df.assign(logy=np.log(df["y"]), logx2=np.log(df["x2"]))
    same = MultiSiteData.from_formula("logy ~ x1 + logx2 + C(g)", pre, treatment="d", site="site")
    np.testing.assert_allclose(same.X, data.X) and np.testing.assert_allclose(same.y, data.y)
    inter = MultiSiteData.from_formula("y ~ x1 * x2 + I(x1 ** 2)", df, treatment="d", site="site")
    assert "x1:x2" in inter.x_cols and "I(x1 ** 2)" in inter.x_cols


def test_covariate_rule_modifiers_stay(df):
    f = MultiSiteData.from_formula("y ~ x1 + x2", df, treatment="d", site="site", modifiers="z1 + z2")
    assert f.x_cols == ["x1", "x2", "z1", "z2"] and f.z_cols == ["z1", "z2"]
    kept_out = MultiSiteData.from_formula("y ~ x1 + x2", df, treatment="d", site="site", modifiers=["z1"],
                                          modifiers_in_covariates=False)
    assert kept_out.x_cols == ["x1", "x2"] and kept_out.z_cols == ["z1"]
    num = df.drop(columns=["g", "arm"])
    frame = MultiSiteData.from_dataframe(num, "y", "d", "site", z_cols=["z1", "z2"])
    assert frame.x_cols == ["x1", "x2", "z1", "z2"]  # the same rule as the CLI: modifiers stay
    out = MultiSiteData.from_dataframe(num, "y", "d", "site", z_cols=["z1", "z2"], modifiers_in_covariates=False)
    assert out.x_cols == ["x1", "x2"]


def test_treated_level_explicit(df):
    with pytest.raises(DataValidationError, match="treated="):
        MultiSiteData.from_formula("y ~ x1", df, treatment="arm", site="site")
    active = MultiSiteData.from_formula("y ~ x1", df, treatment="arm", site="site", treated="active")
    np.testing.assert_array_equal(active.d, (df["arm"] == "active").to_numpy(float))
    assert active.treated == "active" and "treated level 'active'" in repr(active)
    placebo = MultiSiteData.from_formula("y ~ x1", df, treatment="arm", site="site", treated="placebo")
    np.testing.assert_array_equal(placebo.d, 1.0 - active.d)
    cat = df.assign(arm=pd.Categorical(df["arm"], categories=["placebo", "active"]))
    with pytest.raises(DataValidationError, match="not coded 0/1"):
        MultiSiteData.from_formula("y ~ x1", cat, treatment="arm", site="site")
    assert MultiSiteData.from_formula("y ~ x1", cat, treatment="arm", site="site", treated="active").d.sum() == 40
    with pytest.raises(DataValidationError, match="not a level"):
        MultiSiteData.from_formula("y ~ x1", df, treatment="arm", site="site", treated="Active")
    with pytest.raises(DataValidationError, match="not a level"):
        MultiSiteData.from_formula("y ~ x1", df, treatment="d", site="site", treated="1")  # text is not the number 1
    coded = MultiSiteData.from_formula("y ~ x1", df.assign(d=df["d"] + 1), treatment="d", site="site", treated=2)
    np.testing.assert_array_equal(coded.d, df["d"].to_numpy(float))
    three = df.assign(arm=np.tile(["a", "b", "c", "a"], 20))
    with pytest.raises(DataValidationError, match="exactly two levels"):
        MultiSiteData.from_formula("y ~ x1", three, treatment="arm", site="site", treated="a")


def test_formula_errors_name_the_problem(df):
    with pytest.raises(DataValidationError, match="treatment column 'd'"):
        MultiSiteData.from_formula("y ~ x1 + d", df, treatment="d", site="site")
    with pytest.raises(DataValidationError, match="site column"):
        MultiSiteData.from_formula("y ~ x1 + site", df, treatment="d", site="site")
    with pytest.raises(DataValidationError, match="nope"):
        MultiSiteData.from_formula("y ~ x1 + nope", df, treatment="d", site="site")
    with pytest.raises(DataValidationError, match="not dropped"):
        MultiSiteData.from_formula("y ~ x1", df.assign(x1=np.r_[np.nan, df["x1"][1:]]), treatment="d", site="site")
    with pytest.raises(DataValidationError, match="right side"):
        MultiSiteData.from_formula("y ~ x1 + y", df, treatment="d", site="site")
    with pytest.raises(DataValidationError, match="log\\(z1\\)"):  # log of negatives: NaN, named
        MultiSiteData.from_formula("y ~ log(z1)", df.assign(z1=-df["z1"].abs() - 1), treatment="d", site="site")
    with pytest.raises(DataValidationError, match="column 'log\\(z1\\)'.*non-finite"):  # log(0) = -inf, named
        MultiSiteData.from_formula("y ~ log(z1)", df.assign(z1=0.0), treatment="d", site="site")
    with pytest.raises(ParameterError, match="formula"):
        MultiSiteData.from_formula("", df, treatment="d", site="site")
    with pytest.raises(DataValidationError, match="'missing'"):
        MultiSiteData.from_formula("y ~ x1", df, treatment="missing", site="site")


def test_container_hostile_inputs(df):
    num = df.drop(columns=["g", "arm"])
    with pytest.raises(DataValidationError, match="0 rows"):
        MultiSiteData.from_dataframe(num.iloc[:0], "y", "d", "site")
    with pytest.raises(DataValidationError, match="site 'east': 0 rows"):
        MultiSiteData.from_site_frames({"north": num.iloc[:40].drop(columns="site"),
                                        "east": num.iloc[:0].drop(columns="site")}, "y", "d")
    with pytest.raises(DataValidationError, match="dates/times"):
        MultiSiteData.from_dataframe(num.assign(when=pd.date_range("2020-01-01", periods=80)), "y", "d", "site")
    with pytest.raises(DataValidationError, match="dates/times"):
        MultiSiteData(num["y"], num["d"], np.array(pd.date_range("2020-01-01", periods=80))[:, None], num["site"])
    with pytest.raises(DataValidationError, match="complex"):
        MultiSiteData.from_dataframe(num.assign(x1=num["x1"] + 1j), "y", "d", "site")
    with pytest.raises(DataValidationError, match="complex"):
        MultiSiteData(num["y"].to_numpy() + 0j, num["d"], num[["x1"]], num["site"])
    with pytest.raises(DataValidationError, match="duplicate effect-modifier"):
        MultiSiteData.from_dataframe(num, "y", "d", "site", z_cols=["z1", "z1"])
    with pytest.raises(DataValidationError, match="duplicate covariate"):
        MultiSiteData(num["y"], num["d"], num[["x1", "x2"]], num["site"], x_cols=["a", "a"])
    with pytest.raises(DataValidationError, match="treatment 'd' is also among"):
        MultiSiteData.from_dataframe(num, "y", "d", "site", x_cols=["x1", "d"])
    mixed = np.array([1] * 40 + ["1"] * 40, dtype=object)
    with pytest.raises(DataValidationError, match="same text"):
        MultiSiteData(num["y"], num["d"], num[["x1"]], mixed)
    with pytest.raises(DataValidationError, match="1e\\+40"):
        MultiSiteData(num["y"] * 1e154, num["d"], num[["x1"]], num["site"])


def test_multitask_formula_and_checks(df):
    data = MultiTaskData.from_formula("log(y) ~ x1 + log(x2) + C(g)", df, task="site")
    assert data.tasks == ["north", "south"] and data.y_col == "log(y)"
    assert data.x_cols == ["x1", "log(x2)", "C(g)[T.b]", "C(g)[T.c]"]
    np.testing.assert_allclose(data["north"].y, np.log(df["y"][:40]))
    assert data.formula.startswith("log(y)")
    with pytest.raises(DataValidationError, match="task column"):
        MultiTaskData.from_formula("y ~ x1 + site", df, task="site")
    with pytest.raises(DataValidationError, match="needs an outcome"):
        MultiTaskData.from_formula("x1 + x2", df, task="site")
    with pytest.raises(DataValidationError, match="complex"):
        MultiTaskData([np.ones((3, 2)) + 1j], [np.ones(3)])
    with pytest.raises(DataValidationError, match="dates/times"):
        MultiTaskData.from_dataframe(df[["y", "x1", "site"]].assign(t=pd.date_range("2020", periods=80)), "y", "site")
    with pytest.raises(DataValidationError, match="same text"):
        MultiTaskData([np.ones((3, 1)), np.ones((3, 1))], [np.ones(3), np.ones(3)], tasks=[1, "1"])
    with pytest.raises(DataValidationError, match="0 rows"):
        MultiTaskData.from_dataframe(df[["y", "x1", "site"]].iloc[:0], "y", "site")


def test_blockwise_refuses_complex_and_dates():
    rng = np.random.default_rng(1)
    blocks = [[rng.normal(size=(10, 2)), rng.normal(size=(10, 1)), None],
              [rng.normal(size=(10, 2)), None, rng.normal(size=(10, 1))]]
    y = [rng.normal(size=10), rng.normal(size=10)]
    assert BlockwiseData.from_arrays(blocks, y).n_tasks == 2
    bad = [[blocks[0][0] + 1j, blocks[0][1], None], blocks[1]]
    with pytest.raises(DataValidationError, match="complex"):
        BlockwiseData.from_arrays(bad, y)
    with pytest.raises(DataValidationError, match="text|real numbers"):
        BlockwiseData.from_arrays(blocks, [np.array(["a"] * 10), y[1]])
