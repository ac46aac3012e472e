"""MultiSiteData validation: each error names the site and column at fault."""
import numpy as np
import pandas as pd
import pytest

from hetmtl.data import MultiSiteData
from hetmtl.exceptions import DataValidationError


def frame(rng, sites=("A", "B", "C"), n=20):
    parts = []
    for s in sites:
        parts.append(
            pd.DataFrame(
                {"site": s, "y": rng.normal(size=n), "d": np.tile([0.0, 1.0], n // 2), "age": rng.normal(size=n),
                 "bmi": rng.normal(size=n)}
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_round_trip_from_dataframe(rng):
    df = frame(rng)
    data = MultiSiteData.from_dataframe(df, "y", "d", "site")
    assert data.sites == ["A", "B", "C"]
    assert data.x_cols == ["age", "bmi"]
    assert data.site_sizes == {"A": 20, "B": 20, "C": 20}
    site_b = data.site_arrays("B")
    np.testing.assert_array_equal(site_b.y, df.loc[df.site == "B", "y"].to_numpy())
    back = data.to_dataframe()
    np.testing.assert_array_equal(back[["age", "bmi"]].to_numpy(), df[["age", "bmi"]].to_numpy())


def test_nan_names_site_and_column(rng):
    df = frame(rng)
    df.loc[df.index[df.site == "B"][3], "bmi"] = np.nan
    with pytest.raises(DataValidationError, match=r"site 'B', column 'bmi'.*non-finite.*row\(s\) 3"):
        MultiSiteData.from_dataframe(df, "y", "d", "site")


def test_inf_outcome_names_site_and_column(rng):
    df = frame(rng)
    df.loc[df.index[df.site == "C"][0], "y"] = np.inf
    with pytest.raises(DataValidationError, match=r"site 'C', column 'y'"):
        MultiSiteData.from_dataframe(df, "y", "d", "site")


def test_constant_treatment_in_a_site(rng):
    df = frame(rng)
    df.loc[df.site == "A", "d"] = 1.0
    with pytest.raises(DataValidationError, match=r"site 'A', column 'd': treatment is constant"):
        MultiSiteData.from_dataframe(df, "y", "d", "site")


def test_non_binary_treatment_for_ate(rng):
    df = frame(rng)
    df.loc[df.index[df.site == "B"][:2], "d"] = 0.5
    data = MultiSiteData.from_dataframe(df, "y", "d", "site")
    with pytest.raises(DataValidationError, match=r"site 'B', column 'd': treatment must be binary"):
        data.check_binary_treatment()


def test_too_few_rows_for_folds(rng):
    df = frame(rng, n=8)
    data = MultiSiteData.from_dataframe(df, "y", "d", "site")
    with pytest.raises(DataValidationError, match=r"site 'A': 8 rows are too few for 5-fold"):
        data.check_folds(5, binary=True)
    data.check_folds(2, binary=True)


def test_too_few_treated_for_folds(rng):
    df = frame(rng)
    df.loc[df.site == "C", "d"] = 0.0
    df.loc[df.index[df.site == "C"][:3], "d"] = 1.0
    data = MultiSiteData.from_dataframe(df, "y", "d", "site")
    with pytest.raises(DataValidationError, match=r"site 'C', column 'd': 3 row\(s\) with treatment 1"):
        data.check_folds(5, binary=True)


def test_covariates_differ_across_sites(rng):
    df = frame(rng)
    frames = {s: g.drop(columns="site") for s, g in df.groupby("site")}
    frames["B"] = frames["B"].rename(columns={"bmi": "weight"})
    with pytest.raises(DataValidationError, match=r"site 'B': columns differ from site 'A' \(extra \['weight'\], missing \['bmi'\]\)"):
        MultiSiteData.from_site_frames(frames, "y", "d")


def test_missing_site_label_and_unknown_column(rng):
    df = frame(rng)
    df.loc[5, "site"] = None
    with pytest.raises(DataValidationError, match=r"missing site label in row\(s\) 5"):
        MultiSiteData.from_dataframe(df, "y", "d", "site")
    with pytest.raises(DataValidationError, match=r"not in the data frame: \['height'\]"):
        MultiSiteData.from_dataframe(frame(rng), "y", "d", "site", x_cols=["height"])


def test_non_numeric_covariate_is_refused(rng):
    df = frame(rng).assign(group=lambda f: np.where(f.age > 0, "hi", "lo"))
    with pytest.raises(DataValidationError, match=r"\['group'\] are not numeric"):
        MultiSiteData.from_dataframe(df, "y", "d", "site")


def test_shape_mismatch(rng):
    with pytest.raises(DataValidationError, match=r"'X' has 9 rows but 'y' has 10"):
        MultiSiteData(np.zeros(10), np.tile([0, 1], 5), np.zeros((9, 2)), np.zeros(10))
