"""IHDP: 8 sites, 985 children, treatment ``treat`` (home visits + child development centre),
outcome IQ at 36 months (``iqsb.36``, missing for 77 children).

Source and licence: ``data/IHDP_LICENSE.txt`` (econml's MIT-licensed ``example.csv``). The columns
``ncdctt`` and ``dose400`` look like treatment-intensity / compliance measures (post-treatment), so
they are excluded from the covariates.
"""
from __future__ import annotations

from importlib import resources
from typing import Sequence

import numpy as np
import pandas as pd

from hetmtl.data.multisite import MultiSiteData
from hetmtl.exceptions import DataValidationError

OUTCOME, TREATMENT = "iqsb.36", "treat"
POST_TREATMENT = ("ncdctt", "dose400")
SITE_COLUMNS = tuple(f"site{k}" for k in range(1, 9))
#: The 26 pre-treatment covariates used by default (site dummies and post-treatment columns excluded).
IHDP_COVARIATES = (
    "bw", "momage", "nnhealth", "birth.o", "parity", "moreprem", "cigs", "alcohol", "ppvt.imp", "bwg", "sex",
    "mlt.birt", "b.marr", "livwho", "language", "whenpren", "drugs", "othstudy", "mom.lths", "mom.hs", "mom.coll",
    "mom.scoll", "momblack", "momhisp", "momwhite", "workdur",
)


def load_ihdp_frame() -> pd.DataFrame:
    """The full analysis file (985 rows) with a ``site`` column (1–8) replacing the site dummies.

    Returns
    -------
    pandas.DataFrame
        Every column of the shipped file, outcome ``iqsb.36`` missing for 77 children.
    """
    with resources.files("hetmtl.datasets").joinpath("data/ihdp.csv").open() as fh:
        df = pd.read_csv(fh)
    dummies = df[list(SITE_COLUMNS)].to_numpy()
    if not np.all(dummies.sum(axis=1) == 1):
        raise DataValidationError("IHDP file: every child must belong to exactly one site")
    df.insert(0, "site", dummies.argmax(axis=1) + 1)
    return df.drop(columns=list(SITE_COLUMNS))


def load_ihdp(
    modifiers: Sequence[str] = (), missing_outcome: str = "drop", covariates: Sequence[str] = IHDP_COVARIATES
) -> MultiSiteData:
    """IHDP as :class:`~hetmtl.data.MultiSiteData` (sites 1–8, y = IQ at 36 months, d = treat).

    Parameters
    ----------
    modifiers : sequence of str
        Covariates to use as effect modifiers ``Z`` for a linear CATE (default none).
    missing_outcome : {"drop", "raise"}
        ``"drop"`` keeps the 908 children with an observed outcome (complete case; the number
        dropped per site is recorded in ``data.notes``); ``"raise"`` refuses the file.
    covariates : sequence of str
        Pre-treatment covariates ``X`` (default :data:`IHDP_COVARIATES`; the post-treatment
        ``ncdctt`` and ``dose400`` are refused).

    Returns
    -------
    MultiSiteData
        8 sites, outcome ``iqsb.36``, treatment ``treat``.
    """
    df = load_ihdp_frame()
    unknown = [c for c in [*covariates, *modifiers] if c not in df.columns or c in POST_TREATMENT]
    if unknown:
        raise DataValidationError(f"IHDP has no usable (pre-treatment) column(s) {unknown}")
    missing = df[OUTCOME].isna()
    notes = []
    if missing.any():
        if missing_outcome == "raise":
            raise DataValidationError(f"column {OUTCOME!r}: {int(missing.sum())} children have no outcome")
        if missing_outcome != "drop":
            raise ValueError(f"missing_outcome must be 'drop' or 'raise', got {missing_outcome!r}")
        per_site = df.loc[missing, "site"].value_counts().sort_index()
        notes.append(
            f"complete-case: dropped {int(missing.sum())} children with missing {OUTCOME} "
            f"(per site: {', '.join(f'{s}: {c}' for s, c in per_site.items())})"
        )
        df = df.loc[~missing].reset_index(drop=True)
    data = MultiSiteData.from_dataframe(
        df, y_col=OUTCOME, d_col=TREATMENT, site_col="site", x_cols=list(covariates), z_cols=list(modifiers) or None
    )
    data.notes = notes
    return data
