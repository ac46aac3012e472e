"""Formula handling for the data containers (formulaic: R/patsy syntax).

``model_frame("log(y) ~ x1 + C(g)", df)`` gives the outcome column (transformed), its name and
the right-hand side's model matrix without the intercept column (``C()`` dummies coded against a
reference level). Missing values are refused (nothing is dropped); errors name the formula.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from hetmtl.exceptions import DataValidationError, ParameterError


def model_frame(formula: str, data: pd.DataFrame, forbidden: Sequence[tuple[Any, str]] = (),
                what: str = "formula", outcome: str | None = None
                ) -> tuple[pd.Series | None, str | None, pd.DataFrame]:
    """(outcome or None, outcome name or None, covariate matrix) of ``formula`` on ``data``.

    Parameters
    ----------
    formula : str
        ``"lhs ~ rhs"`` or a right-hand side alone (``"z1 + z2"``).
    data : pandas.DataFrame
        The rows; every row is kept (missing values raise).
    forbidden : sequence of (column, role), optional
        Columns with their own argument (``[("d", "treatment")]``): each must be a column name of
        ``data`` and must not appear in the formula.
    what : str
        Name of the formula in messages.
    outcome : str, optional
        When given, the formula must have a left side (``"y ~ <outcome>"`` in the message, e.g.
        ``"covariates"``).

    Returns
    -------
    tuple
        Outcome (Series, or None without a left side), its name, and the right side as a float
        DataFrame (no intercept column).
    """
    from formulaic import Formula, model_matrix
    from formulaic.errors import FormulaicError

    if not isinstance(data, pd.DataFrame):
        raise ParameterError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    for col, role in forbidden:
        if not isinstance(col, str) or col not in data.columns:
            raise DataValidationError(f"{role} column {col!r} is not in the data frame")
    if not isinstance(formula, str) or not formula.strip():
        raise ParameterError(f"{what} must be a non-empty formula string, got {formula!r}")
    if outcome is not None and "~" not in formula:
        raise DataValidationError(f"{what} {formula!r} needs an outcome: 'y ~ {outcome}'")
    try:
        spec = Formula(formula)
    except (FormulaicError, ValueError, SyntaxError) as exc:
        raise DataValidationError(f"{what} {formula!r} cannot be parsed: {exc}") from None
    used = {str(v) for v in spec.required_variables}
    for col, role in forbidden:
        if col in used:
            raise DataValidationError(f"{what} {formula!r} uses the {role} column {col!r}; it has its own argument")
    has_lhs = "~" in formula
    if has_lhs:
        lhs_vars = {str(v) for v in spec.lhs.required_variables}
        rhs_vars = {str(v) for v in spec.rhs.required_variables}
        both = sorted(lhs_vars & rhs_vars)
        if both:
            raise DataValidationError(f"{what} {formula!r}: the outcome variable(s) {both} also appear on the right side")
    try:
        mm = model_matrix(spec, data, na_action="raise")
    except ValueError as exc:
        if "null values" in str(exc):
            raise DataValidationError(
                f"{what} {formula!r}: {exc} Rows with missing values are not dropped; remove or impute them explicitly"
            ) from None
        raise DataValidationError(f"{what} {formula!r}: {exc}") from None
    except (FormulaicError, NameError, TypeError, KeyError) as exc:
        raise DataValidationError(f"{what} {formula!r}: {exc}") from None
    lhs = mm.lhs if has_lhs else None
    rhs = mm.rhs if has_lhs else mm
    y = name = None
    if lhs is not None:
        lhs = pd.DataFrame(lhs)
        if lhs.shape[1] != 1:
            raise DataValidationError(f"{what} {formula!r}: the left side must be one numeric column, got "
                                      f"{list(lhs.columns)}")
        name = str(lhs.columns[0])
        y = lhs.iloc[:, 0]
    X = pd.DataFrame(rhs)
    X = X.drop(columns=[c for c in X.columns if str(c) == "Intercept"])
    X.columns = [str(c) for c in X.columns]
    if X.shape[0] != data.shape[0]:
        raise DataValidationError(f"{what} {formula!r} kept {X.shape[0]} of {data.shape[0]} rows")
    return y, name, X.astype(float) if X.shape[1] else X


__all__ = ["model_frame"]
