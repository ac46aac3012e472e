"""Multi-site data: (y, d, X[, Z]) observed at several sites, validated on entry.

Covariate rule (shared with the CLI): the effect modifiers Z STAY among the nuisance covariates X
by default — a modifier may also confound, and leaving it out of the outcome and propensity
models would bias the effect. :meth:`MultiSiteData.from_dataframe` (all other columns, modifiers
included) and :meth:`MultiSiteData.from_formula` (the formula's terms plus the modifier columns)
apply it; pass ``modifiers_in_covariates=False`` to keep them out.

Treatment coding: a treatment coded 0/1 (or True/False) is used as is; any other two-level
treatment (strings, categories, other numbers) needs ``treated=`` naming the treated level,
which is stored (``treated``) and shown in every summary. A numeric treatment with more than two
values is a continuous treatment (PLR, CATE).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from hetmtl.data._arrays import MAX_ABS_DATA, as_float_array, format_rows as _rows
from hetmtl.exceptions import DataValidationError, ParameterError


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars (for storage and messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _level_key(value: Any) -> tuple:
    """Comparison key of a treatment level: numbers by value (1 == 1.0 == True), text as text
    (so "1" is not the level 1)."""
    value = _plain(value)
    if isinstance(value, numbers.Number):
        return ("number", float(value))  # type: ignore[arg-type]
    return (type(value).__name__, str(value))


def treatment_indicator(d: Any, treated: Any, name: str = "d") -> tuple[Any, Any]:
    """The treatment as D = 1{d == treated} when ``treated`` is given, else ``d`` unchanged.

    Parameters
    ----------
    d : array-like
        Treatment values (numbers, strings, categories).
    treated : object or None
        The treated level. Required when ``d`` is not numeric.
    name : str
        Name of the treatment in messages.

    Returns
    -------
    (array-like, object)
        The indicator (float 0/1) or ``d`` itself, and the treated level (None if not given).

    Raises
    ------
    DataValidationError
        A non-numeric treatment without ``treated``, a ``treated`` level that does not occur, a
        treatment with other than two levels, or a missing treatment value.
    """
    values = d.to_numpy(dtype=object) if isinstance(d, (pd.Series, pd.Index)) else np.asarray(d, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if treated is None:
        if values.size and any(isinstance(v, (str, bytes)) for v in values.ravel()[:10_000]) or isinstance(
                getattr(d, "dtype", None), pd.CategoricalDtype):
            levels = [str(_plain(v)) for v in pd.unique(pd.Series(values.ravel()).dropna())][:6]
            raise DataValidationError(
                f"treatment {name!r} is not coded 0/1 (levels {levels}); pass treated= naming the treated level"
            )
        return d, None
    if isinstance(treated, (list, tuple, np.ndarray, dict, set)):
        raise ParameterError(f"treated must be one level of the treatment, got {treated!r}")
    missing = pd.isna(pd.Series(values.ravel()))
    if missing.any():
        raise DataValidationError(f"treatment {name!r}: missing value(s) in row(s) {_rows(np.flatnonzero(missing.to_numpy()))}")
    levels = [_plain(v) for v in pd.unique(pd.Series(values.ravel()))]
    target = _level_key(treated)
    if not any(_level_key(v) == target for v in levels):
        raise DataValidationError(f"treated={treated!r} is not a level of treatment {name!r} (levels {levels[:6]})")
    if len(levels) != 2:
        raise DataValidationError(
            f"treated= needs a treatment with exactly two levels; {name!r} has {len(levels)} ({levels[:6]})"
        )
    indicator = np.array([float(_level_key(v) == target) for v in values.ravel()])
    return indicator, _plain(treated)


@dataclass(frozen=True)
class SiteArrays:
    """The rows of one site.

    Parameters
    ----------
    site : object
        The site label.
    y : numpy.ndarray
        Outcome, shape (n,).
    d : numpy.ndarray
        Treatment, shape (n,).
    X : numpy.ndarray
        Covariates, shape (n, p).
    Z : numpy.ndarray or None
        Effect modifiers, shape (n, q), or None.
    """

    site: object
    y: np.ndarray
    d: np.ndarray
    X: np.ndarray
    Z: np.ndarray | None

    @property
    def n(self) -> int:
        """Number of rows of the site."""
        return self.y.shape[0]


class MultiSiteData:
    """Outcome ``y``, treatment ``d``, covariates ``X`` and optional effect modifiers ``Z`` at
    several sites.

    Build it with :meth:`from_arrays`, :meth:`from_dataframe` (one frame with a site column),
    :meth:`from_formula` (a formula on one frame) or :meth:`from_site_frames` (one frame per site).
    Every value must be finite, real (complex, dates and text refused) and within ±``MAX_ABS_DATA``
    (1e40); each site needs at least two rows and a treatment that varies; site labels must be
    distinct as text (``1`` and ``"1"`` are refused as ambiguous). Errors name the site and column
    at fault. Nothing is dropped: rows with missing values are refused, not removed.

    Parameters
    ----------
    y : array-like
        Outcome, shape (n,), all sites stacked.
    d : array-like
        Treatment, shape (n,): binary 0/1 for the ATE and BLP scores, any numeric for PLR and CATE.
    X : array-like
        Covariates (confounders) of the nuisance models, shape (n, p).
    site : sequence or None
        Site label of every row, shape (n,); ``None``: all rows are one unlabelled site (messages
        then name columns and rows only).
    Z : array-like, optional
        Effect modifiers of the linear CATE, shape (n, q).
    x_cols, z_cols : sequence of str, optional
        Column names of ``X`` and ``Z`` (default ``x1, x2, ...`` and ``z1, z2, ...``).
    y_col, d_col : str
        Names of the outcome and treatment, used in messages and tables.
    treated : object, optional
        The treated level when ``d`` is not coded 0/1 (e.g. ``"active"``): D = 1{d == treated}.

    Attributes
    ----------
    sites : list
        Site labels in order of first appearance.
    notes : list of str
        Provenance, e.g. rows a loader excluded and why.
    treated : object or None
        The treated level given (shown in every summary), or None for a 0/1 or continuous treatment.
    formula : str or None
        The formula the data was built from (:meth:`from_formula`).
    """

    def __init__(
        self,
        y: np.ndarray,
        d: np.ndarray,
        X: np.ndarray,
        site: Sequence | np.ndarray | None,
        Z: np.ndarray | None = None,
        *,
        x_cols: Sequence[str] | None = None,
        z_cols: Sequence[str] | None = None,
        y_col: str = "y",
        d_col: str = "d",
        treated: Any = None,
    ) -> None:
        d, self.treated = treatment_indicator(d, treated, str(d_col))
        self.formula: str | None = None
        self.y = as_float_array(y, 1, repr(y_col))
        self.d = as_float_array(d, 1, repr(d_col))
        self.X = as_float_array(X, 2, "'X'")
        self.Z = None if Z is None else as_float_array(Z, 2, "'Z'")
        self.y_col, self.d_col = str(y_col), str(d_col)
        self.x_cols = [f"x{j + 1}" for j in range(self.X.shape[1])] if x_cols is None else [str(c) for c in x_cols]
        if self.Z is None:
            self.z_cols: list[str] = []
        else:
            self.z_cols = [f"z{j + 1}" for j in range(self.Z.shape[1])] if z_cols is None else [str(c) for c in z_cols]
        self._one_site = site is None
        site = np.zeros(self.y.shape[0], dtype=int).astype(object) if site is None else np.asarray(site, dtype=object)
        if site.ndim != 1:
            raise DataValidationError(f"site labels must be 1-dimensional, got shape {site.shape}")
        self.site = site
        self.notes: list[str] = []  # provenance, e.g. rows a loader excluded and why
        self._validate()
        self.sites: list = list(pd.unique(pd.Series(self.site)))
        self._index = {s: np.flatnonzero(self.site == s) for s in self.sites}
        self._validate_sites()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, y, d, X, site, Z=None, **kwargs) -> "MultiSiteData":
        """Build from arrays.

        Parameters
        ----------
        y, d : array-like
            Outcome and treatment, shape (n,).
        X : array-like
            Covariates, shape (n, p).
        site : sequence
            Site label of every row, shape (n,).
        Z : array-like, optional
            Effect modifiers, shape (n, q).
        **kwargs
            ``x_cols``, ``z_cols``, ``y_col``, ``d_col`` as in :class:`MultiSiteData`.

        Returns
        -------
        MultiSiteData
            The validated data.
        """
        return cls(y, d, X, site, Z, **kwargs)

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        y_col: str,
        d_col: str,
        site_col: str,
        x_cols: Sequence[str] | None = None,
        z_cols: Sequence[str] | None = None,
        *,
        treated: Any = None,
        modifiers_in_covariates: bool = True,
    ) -> "MultiSiteData":
        """Build from one DataFrame with a site column.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per observation; the used columns must be numeric (site labels, and the
            treatment when ``treated`` is given, excepted).
        y_col, d_col, site_col : str
            Outcome, treatment and site columns.
        x_cols : sequence of str, optional
            Covariate columns of the nuisance models; default every column other than the outcome,
            treatment and site — the effect modifiers included (the covariate rule, shared with
            the CLI: a modifier may confound).
        z_cols : sequence of str, optional
            Effect-modifier columns.
        treated : object, optional
            The treated level of ``d_col`` when it is not coded 0/1.
        modifiers_in_covariates : bool
            With the default ``x_cols``: keep the modifiers among the covariates (True, default)
            or leave them out (False).

        Returns
        -------
        MultiSiteData
            The validated data.
        """
        if not isinstance(df, pd.DataFrame):
            raise ParameterError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        z_cols = list(z_cols) if z_cols is not None else []
        if x_cols is None:
            skip = {y_col, d_col, site_col} | (set() if modifiers_in_covariates else set(z_cols))
            x_cols = [c for c in df.columns if c not in skip]
        x_cols = list(x_cols)
        missing = [c for c in [y_col, d_col, site_col, *x_cols, *z_cols] if c not in df.columns]
        if missing:
            raise DataValidationError(f"column(s) not in the data frame: {missing}")
        if df.shape[0] == 0:
            raise DataValidationError("the data frame has 0 rows")
        if df[site_col].isna().any():
            rows = np.flatnonzero(df[site_col].isna().to_numpy())
            raise DataValidationError(f"column {site_col!r}: missing site label in row(s) {_rows(rows)}")
        _check_numeric_columns(df, [y_col, *x_cols, *z_cols] + ([] if treated is not None else [d_col]))
        return cls(
            df[y_col],
            df[d_col],
            df[x_cols] if x_cols else np.zeros((df.shape[0], 0)),
            df[site_col].to_numpy(object),
            df[z_cols] if z_cols else None,
            x_cols=[str(c) for c in x_cols],
            z_cols=[str(c) for c in z_cols] or None,
            y_col=str(y_col),
            d_col=str(d_col),
            treated=treated,
        )

    @classmethod
    def from_formula(
        cls,
        formula: str,
        data: pd.DataFrame,
        *,
        treatment: str,
        site: str,
        modifiers: str | Sequence[str] | None = None,
        treated: Any = None,
        modifiers_in_covariates: bool = True,
    ) -> "MultiSiteData":
        """Build from a formula (formulaic, R/patsy syntax) on one DataFrame.

        ``MultiSiteData.from_formula("y ~ x1 + log(x2) + C(g)", df, treatment="d", site="site",
        modifiers="z1 + z2", treated="active")``: the left side is the outcome (transformations
        such as ``log(y)`` are applied), the right side the nuisance covariates (transformations,
        ``C()`` dummies with a reference level, interactions ``a:b``; no intercept column), and
        ``modifiers`` the effect modifiers (a right-hand side, or a list of column names). The
        model matrices are built on all rows at once, so every site gets the same encoding.

        Parameters
        ----------
        formula : str
            ``"outcome ~ covariates"``.
        data : pandas.DataFrame
            One row per observation.
        treatment, site : str
            Treatment and site columns (not part of the formula).
        modifiers : str or sequence of str, optional
            Effect modifiers, e.g. ``"z1 + z2"`` or ``["z1", "z2"]``.
        treated : object, optional
            The treated level when the treatment is not coded 0/1.
        modifiers_in_covariates : bool
            The covariate rule (shared with the CLI and :meth:`from_dataframe`): the modifier
            columns are added to the covariates when the right side does not have them (True,
            default); False keeps the right side as written.

        Returns
        -------
        MultiSiteData
            The validated data; ``formula`` holds the formula.

        Raises
        ------
        DataValidationError
            Missing values (nothing is dropped), unknown columns, the treatment or site inside the
            formula, an outcome with more than one column.
        """
        from hetmtl.data._formula import model_frame

        roles = [(treatment, "treatment"), (site, "site")]
        y, y_name, X = model_frame(formula, data, forbidden=roles, outcome="covariates")
        assert y is not None and y_name is not None  # a formula with a left side
        Z = None
        if modifiers is not None:
            rhs = modifiers if isinstance(modifiers, str) else " + ".join(f"`{c}`" for c in modifiers)
            _, _, Z = model_frame(rhs, data, forbidden=roles, what="modifiers")
            if Z.shape[1] == 0:
                raise DataValidationError(f"modifiers {modifiers!r} give no columns")
            if modifiers_in_covariates:
                extra = [c for c in Z.columns if c not in X.columns]
                X = pd.concat([X, Z[extra]], axis=1)
        if data[site].isna().any():
            rows = np.flatnonzero(data[site].isna().to_numpy())
            raise DataValidationError(f"column {site!r}: missing site label in row(s) {_rows(rows)}")
        out = cls(
            y, data[treatment],
            X if X.shape[1] else np.zeros((data.shape[0], 0)), data[site].to_numpy(object),
            Z, x_cols=list(X.columns), z_cols=None if Z is None else list(Z.columns), y_col=y_name,
            d_col=str(treatment), treated=treated,
        )
        out.formula = formula
        return out

    @classmethod
    def from_site_frames(
        cls,
        frames: Mapping[object, pd.DataFrame],
        y_col: str,
        d_col: str,
        x_cols: Sequence[str] | None = None,
        z_cols: Sequence[str] | None = None,
    ) -> "MultiSiteData":
        """Build from one DataFrame per site; all sites must have the same columns.

        Parameters
        ----------
        frames : mapping
            ``{site: DataFrame}``.
        y_col, d_col : str
            Outcome and treatment columns.
        x_cols : sequence of str, optional
            Covariate columns; default every column not named elsewhere.
        z_cols : sequence of str, optional
            Effect-modifier columns.

        Returns
        -------
        MultiSiteData
            The validated data.
        """
        if not frames:
            raise DataValidationError("no sites given")
        for s, f in frames.items():
            if not isinstance(f, pd.DataFrame):
                raise ParameterError(f"site {s!r}: expected a pandas DataFrame, got {type(f).__name__}")
            if f.shape[0] == 0:
                raise DataValidationError(f"site {s!r}: 0 rows")
        first_site, first = next(iter(frames.items()))
        if x_cols is None:
            x_cols = [c for c in first.columns if c not in {y_col, d_col, *(z_cols or [])}]
        reference = set(first.columns)
        for s, f in frames.items():
            if set(f.columns) != reference:
                extra, lacking = sorted(set(f.columns) - reference), sorted(reference - set(f.columns))
                raise DataValidationError(
                    f"site {s!r}: columns differ from site {first_site!r} (extra {extra}, missing {lacking})"
                )
        site_col = "__site__"
        df = pd.concat([f.assign(**{site_col: s}) for s, f in frames.items()], ignore_index=True)
        return cls.from_dataframe(df, y_col, d_col, site_col, x_cols, z_cols)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        n = self.y.shape[0]
        for name, arr in [(self.d_col, self.d), ("X", self.X), ("site", self.site)] + (
            [("Z", self.Z)] if self.Z is not None else []
        ):
            if arr.shape[0] != n:
                raise DataValidationError(f"{name!r} has {arr.shape[0]} rows but {self.y_col!r} has {n}")
        if len(self.x_cols) != self.X.shape[1]:
            raise DataValidationError(f"x_cols has {len(self.x_cols)} names for {self.X.shape[1]} covariate columns")
        if self.Z is not None and len(self.z_cols) != self.Z.shape[1]:
            raise DataValidationError(f"z_cols has {len(self.z_cols)} names for {self.Z.shape[1]} modifier columns")
        if n == 0:
            raise DataValidationError("the data have 0 rows")
        for what, cols in (("covariate", self.x_cols), ("effect-modifier", self.z_cols)):
            dup = sorted({c for c in cols if cols.count(c) > 1})
            if dup:
                raise DataValidationError(f"duplicate {what} name(s) {dup}")
        for role, name in (("outcome", self.y_col), ("treatment", self.d_col)):
            if name in self.x_cols or name in self.z_cols:
                raise DataValidationError(f"the {role} {name!r} is also among the covariates/modifiers; remove it there")
        if pd.isna(pd.Series(self.site)).any():
            rows = np.flatnonzero(pd.isna(pd.Series(self.site)).to_numpy())
            raise DataValidationError(f"missing site label in row(s) {_rows(rows)}")
        labels = list(pd.unique(pd.Series(self.site)))
        as_text: dict[str, object] = {}
        for lab in labels:
            other = as_text.setdefault(str(lab), lab)
            if other is not lab and other != lab:
                raise DataValidationError(
                    f"site labels {other!r} and {lab!r} are different values with the same text; they would be "
                    "exported under one name — use one type for the site labels"
                )

    def _columns(self) -> Iterator[tuple[str, np.ndarray]]:
        yield self.y_col, self.y
        yield self.d_col, self.d
        for j, c in enumerate(self.x_cols):
            yield c, self.X[:, j]
        for j, c in enumerate(self.z_cols):
            yield c, self.Z[:, j]  # type: ignore[index]

    def _lead(self, s: Any, column: str | None = None) -> str:
        """Message lead naming the site (unless the data are one unlabelled site) and column."""
        parts = ([] if self._one_site else [f"site {s!r}"]) + ([] if column is None else [f"column {column!r}"])
        return ", ".join(parts) + ": " if parts else ""

    def _validate_sites(self) -> None:
        for name, col in self._columns():
            bad = ~np.isfinite(col)
            if bad.any():
                first = np.flatnonzero(bad)
                s = self.site[first[0]]
                in_site = np.flatnonzero(bad[self._index[s]])
                raise DataValidationError(
                    f"{self._lead(s, name)}{int(bad[self._index[s]].sum())} non-finite value(s) (NaN/inf) "
                    f"at {'' if self._one_site else 'site '}row(s) {_rows(in_site)}; remove or impute them "
                    "explicitly"
                )
            big = np.abs(col) > MAX_ABS_DATA
            if big.any():
                s = self.site[np.flatnonzero(big)[0]]
                raise DataValidationError(
                    f"{self._lead(s, name)}values beyond ±{MAX_ABS_DATA:g} (largest {np.abs(col).max():.3g}); "
                    "rescale the column (score variances grow with its square)"
                )
        for s, idx in self._index.items():
            if idx.size < 2:
                raise DataValidationError(f"{self._lead(s)}only {idx.size} row(s)")
            if np.ptp(self.d[idx]) == 0:
                raise DataValidationError(
                    f"{self._lead(s, self.d_col)}treatment is constant ({self.d[idx][0]:g}) in this site"
                )

    def check_binary_treatment(self) -> None:
        """Raise unless the treatment is 0/1 at every site (needed for the ATE and BLP scores)."""
        for s, idx in self._index.items():
            values = np.unique(self.d[idx])
            if not np.all(np.isin(values, (0.0, 1.0))):
                raise DataValidationError(
                    f"{self._lead(s, self.d_col)}treatment must be binary 0/1 for this model, "
                    f"found values {values[:6].tolist()}"
                )

    def check_folds(self, n_folds: int, binary: bool) -> None:
        """Raise when a site has too few rows (or, for a binary treatment, too few per arm).

        Parameters
        ----------
        n_folds : int
            Number of cross-fitting folds: a site needs ``2 * n_folds`` rows.
        binary : bool
            Also require ``n_folds`` rows in each treatment arm.

        Raises
        ------
        DataValidationError
            Naming the site (and column) at fault.
        """
        for s, idx in self._index.items():
            if idx.size < 2 * n_folds:
                raise DataValidationError(
                    f"{self._lead(s)}{idx.size} rows are too few for {n_folds}-fold cross-fitting "
                    f"(need at least {2 * n_folds})"
                )
            if binary:
                for arm in (0.0, 1.0):
                    count = int(np.sum(self.d[idx] == arm))
                    if count < n_folds:
                        raise DataValidationError(
                            f"{self._lead(s, self.d_col)}{count} row(s) with treatment {arm:g}, "
                            f"fewer than the {n_folds} folds"
                        )

    # ------------------------------------------------------------------ access
    @property
    def n_obs(self) -> int:
        """Number of rows over all sites."""
        return self.y.shape[0]

    @property
    def n_sites(self) -> int:
        """Number of sites."""
        return len(self.sites)

    @property
    def site_sizes(self) -> dict:
        """Rows per site, ``{site: n_k}``."""
        return {s: idx.size for s, idx in self._index.items()}

    def site_rows(self, site) -> np.ndarray:
        """Row indices of one site in the stacked arrays.

        Parameters
        ----------
        site : object
            A site label.

        Returns
        -------
        numpy.ndarray
            Integer row indices.
        """
        try:
            return self._index[site]
        except KeyError:
            raise KeyError(f"unknown site {site!r}; sites are {self.sites}") from None

    def site_arrays(self, site) -> SiteArrays:
        """The rows of one site.

        Parameters
        ----------
        site : object
            A site label.

        Returns
        -------
        SiteArrays
            ``y``, ``d``, ``X`` (and ``Z``) of that site.
        """
        idx = self.site_rows(site)
        return SiteArrays(site, self.y[idx], self.d[idx], self.X[idx], None if self.Z is None else self.Z[idx])

    def __iter__(self) -> Iterator[SiteArrays]:
        return (self.site_arrays(s) for s in self.sites)

    def to_dataframe(self, site_col: str = "site") -> pd.DataFrame:
        """The data as one DataFrame (site, outcome, treatment, covariates, modifiers).

        Parameters
        ----------
        site_col : str
            Name of the site column.

        Returns
        -------
        pandas.DataFrame
            One row per observation.
        """
        df = pd.DataFrame(self.X, columns=self.x_cols)
        for j, c in enumerate(self.z_cols):
            df[c] = self.Z[:, j]  # type: ignore[index]
        df.insert(0, self.d_col, self.d)
        df.insert(0, self.y_col, self.y)
        df.insert(0, site_col, self.site)
        return df

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}: {n}" for s, n in self.site_sizes.items())
        notes = "".join(f"; {n}" for n in self.notes)
        treated = "" if self.treated is None else f"; treated level {self.treated!r}"
        return (
            f"MultiSiteData({self.n_sites} sites, {self.n_obs} rows, {len(self.x_cols)} covariates, "
            f"{len(self.z_cols)} modifiers; sizes {sizes}{treated}{notes})"
        )


def _check_numeric_columns(df: pd.DataFrame, cols: Sequence[str]) -> None:
    """Refuse text, categorical, date/time and complex columns, naming them."""
    dates = [c for c in cols if pd.api.types.is_datetime64_any_dtype(df[c]) or pd.api.types.is_timedelta64_dtype(df[c])]
    if dates:
        raise DataValidationError(f"column(s) {dates} hold dates/times; convert them to numbers explicitly "
                                  "(they are not turned into day counts)")
    cplx = [c for c in cols if pd.api.types.is_complex_dtype(df[c])]
    if cplx:
        raise DataValidationError(f"column(s) {cplx} are complex; only real numbers are accepted")
    non_numeric = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise DataValidationError(
            f"column(s) {non_numeric} are not numeric; encode categorical covariates (e.g. pd.get_dummies, or "
            "C(col) in from_formula) first, and pass treated= for a text treatment"
        )
