"""ADNI application of the MTL-HMB paper (arXiv 2505.24413, §4.3): loader for a user-held file and a
synthetic stand-in of the same shape.

ADNI data need an approved ADNI data-use application and may not be redistributed, so nothing is
shipped. :func:`load_adni_mtlhmb` reads a CSV laid out like the authors' processed file (columns
``domain`` in {"target", "source"}, ``X_1_*`` MRI anchor (267), ``X_2_*`` PET (113, target only),
``X_3_*`` gene expression (300, source only), ``y`` = MMSE) into a
:class:`~hetmtl.data.BlockwiseData` with Task 1 = "target" (MRI + PET) and Task 2 = "source"
(MRI + GENE). :func:`simulate_adni_like` draws data of that shape (72 and 69 subjects) for tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hetmtl.data.blockwise import BlockwiseData
from hetmtl.exceptions import DataValidationError

ADNI_BLOCKS = {"MRI": "X_1_", "PET": "X_2_", "GENE": "X_3_"}


def adni_from_frame(df: pd.DataFrame) -> BlockwiseData:
    """BlockwiseData from a frame in the authors' layout (see the module notes).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``domain``, ``X_1_*``, ``X_2_*``, ``X_3_*`` and ``y``.

    Returns
    -------
    BlockwiseData
        Task 1 = "target" (MRI + PET), Task 2 = "source" (MRI + GENE).
    """
    for col in ("domain", "y"):
        if col not in df.columns:
            raise DataValidationError(f"column {col!r} not in the ADNI file")
    bmap = {name: [c for c in df.columns if str(c).startswith(prefix)] for name, prefix in ADNI_BLOCKS.items()}
    empty = [k for k, v in bmap.items() if not v]
    if empty:
        raise DataValidationError(f"no columns for block(s) {empty} (expected prefixes {ADNI_BLOCKS})")
    domains = set(df["domain"].astype(str))
    if domains != {"target", "source"}:
        raise DataValidationError(f"column 'domain' must hold 'target' and 'source', found {sorted(domains)}")
    order = pd.Categorical(df["domain"].astype(str), categories=["target", "source"], ordered=True)
    df = df.assign(domain=order).sort_values("domain", kind="stable")
    df = df.assign(domain=df["domain"].astype(str))
    return BlockwiseData.from_dataframe(df, bmap, task_col="domain", y_col="y", anchor="MRI")


def load_adni_mtlhmb(path: str | Path) -> BlockwiseData:
    """Read the user's ADNI CSV (the authors' processed layout, 141 x 682).

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file.

    Returns
    -------
    BlockwiseData
        Task 1 = "target" (MRI + PET), Task 2 = "source" (MRI + GENE).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: ADNI data are not shipped; obtain them through https://adni.loni.usc.edu")
    return adni_from_frame(pd.read_csv(path))


def simulate_adni_like(seed: int | None = None, n: tuple[int, int] = (72, 69), p: tuple[int, int, int] = (267, 113, 300)) -> pd.DataFrame:
    """A synthetic frame with the ADNI file's shape, block scales and MMSE-like response.

    Parameters
    ----------
    seed : int or None
        Seed.
    n : tuple of int
        Subjects of the target and source tasks.
    p : tuple of int
        Widths of the MRI, PET and gene-expression blocks.

    Returns
    -------
    pandas.DataFrame
        In the layout :func:`load_adni_mtlhmb` reads.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for t, (dom, nt) in enumerate(zip(("target", "source"), n)):
        f = rng.normal(size=(nt, 3))
        mri = 0.3 + 0.42 * np.tanh(f[:, :1] @ rng.normal(size=(1, p[0])) + 0.5 * rng.normal(size=(nt, p[0])) + 0.3 * t)
        pet = 1.32 + 0.33 * (f[:, 1:2] + 0.5 * rng.normal(size=(nt, p[1])))
        gene = 5.6 + 2.3 * (f[:, 2:3] + 0.5 * rng.normal(size=(nt, p[2])))
        pet = pet if t == 0 else np.full_like(pet, np.nan)
        gene = gene if t == 1 else np.full_like(gene, np.nan)
        signal = 2.0 * f[:, 0] + (f[:, 1] if t == 0 else f[:, 2])
        y = np.clip(np.round(27.0 + signal + rng.normal(0, 1.0, nt)), 9, 30)
        cols = (["domain"] + [f"X_1_{j + 1}" for j in range(p[0])] + [f"X_2_{j + 1}" for j in range(p[1])]
                + [f"X_3_{j + 1}" for j in range(p[2])] + ["y"])
        df = pd.DataFrame(np.hstack([mri, pet, gene, y[:, None]]), columns=cols[1:])
        df.insert(0, "domain", dom)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
