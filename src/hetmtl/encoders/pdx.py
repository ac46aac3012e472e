"""PDX Encyclopedia (Gao et al. 2015, Nat Med 21:1318) as a multi-task regression problem.

What to use when:

- :func:`load_pdxe` — you hold the supplement workbook ``nm.3954-S2.xlsx`` (not redistributable;
  needs ``openpyxl``, imported only here). Tasks are tumour types (default BRCA, CRC, CM, NSCLC,
  PDAC), rows are PDX models of one treatment arm (default ``"untreated"``), the outcome is
  log(TimeToDouble) and the features are log2(max(FPKM, 1)) RNA-seq values.
- :func:`pdxe_from_frames` — the same preprocessing from already-read sheets.
- :func:`make_pdxe_like` — synthetic sheets with the workbook's layout, for tests and demos.

Rows with a missing or non-positive TimeToDouble are excluded and *counted* in the returned
``info`` (a warning says how many); models without RNA-seq are excluded and counted likewise.
Values capped at ``Day_Last`` are effectively right-censored; the loader records how many rows
have TimeToDouble >= Day_Last. Gene selection (top-k variance) should be computed on training
rows only: use :func:`top_variance_genes` on the training split.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hetmtl.data.multitask import MultiTaskData
from hetmtl.exceptions import DataValidationError

PDXE_SHA256 = "c4b9a6903a4d1f76e3ddca4199039776d56bb99970aa5b7abe4f3abd732a0c6d"
FIVE_TYPES = ("BRCA", "CRC", "CM", "NSCLC", "PDAC")
RNA_SHEET, METRICS_SHEET, RAW_SHEET = "RNAseq_fpkm", "PCT curve metrics", "PCT raw data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pdxe(path: str | Path, *, sha256: str | None = PDXE_SHA256, **kwargs) -> tuple[MultiTaskData, dict]:
    """Read the user-supplied PDXE workbook (``nm.3954-S2.xlsx``; needs ``openpyxl``).

    Parameters
    ----------
    path : str or pathlib.Path
        The workbook.
    sha256 : str or None
        Expected checksum of the published workbook; ``None`` skips the check (e.g. for a
        re-saved copy).
    **kwargs
        Options of :func:`pdxe_from_frames` (``tumor_types``, ``treatment``, ``n_genes``).

    Returns
    -------
    data : MultiTaskData
        One task per tumour type.
    info : dict
        Outcome, counts of excluded rows, models per task.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PDXE workbook not found at {path}; download nm.3954-S2.xlsx (Gao et al. 2015 supplement)")
    if sha256 is not None:
        got = _sha256(path)
        if got != sha256:
            raise DataValidationError(f"{path}: sha256 {got} does not match the published PDXE workbook ({sha256}); "
                                      "pass sha256=None to accept a modified copy")
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise ImportError("reading the PDXE workbook needs the optional package 'openpyxl' (pip install openpyxl)") from None
    sheets = pd.read_excel(path, sheet_name=[RNA_SHEET, METRICS_SHEET, RAW_SHEET], engine="openpyxl")
    return pdxe_from_frames(sheets[RNA_SHEET], sheets[METRICS_SHEET], sheets[RAW_SHEET], **kwargs)


def pdxe_from_frames(
    rna: pd.DataFrame,
    metrics: pd.DataFrame,
    raw: pd.DataFrame | None = None,
    *,
    tumor_types: Sequence[str] = FIVE_TYPES,
    treatment: str = "untreated",
    n_genes: int | None = None,
) -> tuple[MultiTaskData, dict]:
    """Build the multi-task data from the three sheets of the workbook.

    Parameters
    ----------
    rna : pandas.DataFrame
        Sheet ``RNAseq_fpkm``: genes x models, gene symbol in column ``Sample``.
    metrics : pandas.DataFrame
        Sheet ``PCT curve metrics``: columns ``Model``, ``Treatment``, ``TimeToDouble``,
        ``Day_Last`` (and ``Tumor Type``, else taken from ``raw``).
    raw : pandas.DataFrame, optional
        Sheet ``PCT raw data`` (``Model``, ``Tumor Type``), for the tumour types.
    tumor_types : sequence of str
        Tumour types kept, one task each (default BRCA, CRC, CM, NSCLC, PDAC).
    treatment : str
        Treatment arm whose rows are used.
    n_genes : int, optional
        Keep the most variable genes over all loaded rows (convenience only: for honest
        evaluation select genes on training rows, :func:`top_variance_genes`).

    Returns
    -------
    data : MultiTaskData
        Outcome log(TimeToDouble), features log2(max(FPKM, 1)).
    info : dict
        Outcome, counts of excluded rows (a warning says how many), models per task.
    """
    for name, frame, cols in [("RNAseq_fpkm", rna, ["Sample"]), ("PCT curve metrics", metrics, ["Model", "Treatment", "TimeToDouble"])]:
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataValidationError(f"sheet {name!r}: column(s) {missing} not found")
    m = metrics[metrics["Treatment"] == treatment].copy()
    if m.empty:
        raise DataValidationError(f"sheet 'PCT curve metrics': no rows with Treatment == {treatment!r}")
    if "Tumor Type" not in m.columns:
        if raw is None or not {"Model", "Tumor Type"} <= set(raw.columns):
            raise DataValidationError("tumour types need a 'Tumor Type' column in 'PCT curve metrics' or 'PCT raw data'")
        types = raw[["Model", "Tumor Type"]].drop_duplicates("Model").set_index("Model")["Tumor Type"]
        m["Tumor Type"] = m["Model"].map(types)
    m = m[m["Tumor Type"].isin(tumor_types)]
    absent = [t for t in tumor_types if t not in set(m["Tumor Type"])]
    if absent:
        raise DataValidationError(f"tumour type(s) {absent} have no {treatment!r} rows")
    ttd = pd.to_numeric(m["TimeToDouble"], errors="coerce")
    bad = ~(ttd > 0)
    genes = rna["Sample"].astype(str).to_numpy()
    expr = rna.drop(columns="Sample").apply(pd.to_numeric, errors="coerce")
    no_rna = ~m["Model"].isin(expr.columns)
    info = {"treatment": treatment, "outcome": "log(TimeToDouble)", "n_dropped_bad_outcome": int(bad.sum()),
            "n_dropped_no_rnaseq": int((no_rna & ~bad).sum())}
    if "Day_Last" in m.columns:
        info["n_at_or_beyond_day_last"] = int((ttd[~bad] >= pd.to_numeric(m.loc[~bad, "Day_Last"], errors="coerce")).sum())
    if info["n_dropped_bad_outcome"] or info["n_dropped_no_rnaseq"]:
        warnings.warn(f"PDXE: excluded {info['n_dropped_bad_outcome']} row(s) with missing/non-positive TimeToDouble and "
                      f"{info['n_dropped_no_rnaseq']} without RNA-seq (see info)", stacklevel=2)
    m = m[~bad & ~no_rna]
    X_all = np.log2(np.maximum(expr[m["Model"].to_numpy()].to_numpy(float).T, 1.0))
    if np.isnan(X_all).any():
        j = int(np.flatnonzero(np.isnan(X_all).any(0))[0])
        raise DataValidationError(f"sheet 'RNAseq_fpkm': gene {genes[j]!r} has non-numeric or missing values")
    if n_genes is not None:
        keep = np.sort(np.argsort(-X_all.var(0), kind="stable")[: int(n_genes)])
        X_all, genes = X_all[:, keep], genes[keep]
    tt = m["Tumor Type"].to_numpy()
    y = np.log(ttd[m.index].to_numpy(float))
    data = MultiTaskData([X_all[tt == t] for t in tumor_types], [y[tt == t] for t in tumor_types], list(tumor_types),
                         x_cols=list(genes), y_col="log_TimeToDouble")
    info["models"] = {t: m.loc[m["Tumor Type"] == t, "Model"].tolist() for t in tumor_types}
    return data, info


def top_variance_genes(train: MultiTaskData, k: int) -> list[str]:
    """Names of the features with the largest variance over the training rows (all tasks).

    Parameters
    ----------
    train : MultiTaskData
        Training rows.
    k : int
        Number of features kept.

    Returns
    -------
    list of str
        Feature names, in column order.
    """
    X = np.vstack([t.X for t in train])
    keep = np.sort(np.argsort(-X.var(0), kind="stable")[: int(k)])
    return [train.x_cols[j] for j in keep]


def make_pdxe_like(n_models: dict[str, int] | None = None, n_genes: int = 50, n_missing_outcome: int = 2,
                   random_state=None) -> dict[str, pd.DataFrame]:
    """Synthetic sheets with the PDXE workbook's layout.

    Expression is log-normal FPKM with a tumour-type shift; log TimeToDouble depends on a few
    genes with a type-specific slope; some untreated rows have no TimeToDouble.

    Parameters
    ----------
    n_models : dict, optional
        Models per tumour type (default six types, 20–45 models each).
    n_genes : int
        Number of genes.
    n_missing_outcome : int
        Untreated rows without TimeToDouble.
    random_state : int, numpy.random.Generator or None
        Seed.

    Returns
    -------
    dict
        ``{"RNAseq_fpkm", "PCT curve metrics", "PCT raw data"}`` to DataFrames, the input of
        :func:`pdxe_from_frames`.
    """
    rng = np.random.default_rng(random_state)
    n_models = n_models or {"BRCA": 38, "CRC": 45, "CM": 32, "NSCLC": 27, "PDAC": 30, "GC": 20}
    models, types = [], []
    for t, n in n_models.items():
        for i in range(n):
            models.append(f"X-{t}{i:03d}")
            types.append(t)
    types = np.array(types)  # type: ignore[assignment]  # the labels as an array from here on
    type_shift = {t: rng.normal(0, 0.7, n_genes) for t in n_models}
    log_fpkm = 2.0 + rng.normal(0, 1.0, (len(models), n_genes)) + np.stack([type_shift[t] for t in types])
    fpkm = np.exp(log_fpkm) - 1.5  # some values below 1
    genes = [f"GENE{j + 1}" for j in range(n_genes)]
    rna = pd.DataFrame(fpkm.T, columns=models)
    rna.insert(0, "Sample", genes)
    x = np.log2(np.maximum(fpkm, 1.0))
    w_shared = np.zeros(n_genes)
    w_shared[:5] = rng.normal(0, 0.3, 5)
    slope = {t: rng.normal(0, 0.15) for t in n_models}
    log_ttd = 2.5 + (x - x.mean(0)) @ w_shared + np.array([slope[t] for t in types]) * (x[:, 5] - x[:, 5].mean()) \
        + 0.3 * rng.normal(size=len(models))
    ttd = np.exp(log_ttd)
    untreated = pd.DataFrame({"Model": models, "Tumor Type": types, "Treatment": "untreated", "Treatment target": "untreated",
                              "Treatment type": "single", "BestResponse": rng.normal(100, 50, len(models)),
                              "TimeToDouble": ttd, "Day_Last": np.maximum(ttd + rng.normal(10, 5, len(models)), 5.0),
                              "ResponseCategory": "PD"})
    miss = rng.choice(len(models), size=n_missing_outcome, replace=False)
    untreated.loc[miss, "TimeToDouble"] = np.nan
    treated = untreated.assign(Treatment="drugA", **{"Treatment target": "TGT"},
                               TimeToDouble=ttd * np.exp(rng.normal(0.3, 0.2, len(models))))
    metrics = pd.concat([untreated, treated], ignore_index=True)
    raw = pd.DataFrame({"Model": models, "Tumor Type": types, "Treatment": "untreated", "Volume": 200.0, "Days": 0})
    return {RNA_SHEET: rna, METRICS_SHEET: metrics.drop(columns="Tumor Type"), RAW_SHEET: raw}
