"""Multi-site data: (y, d, X[, Z]) observed at several sites, validated on entry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from hetmtl.data._arrays import as_float_array, format_rows as _rows
from hetmtl.exceptions import DataValidationError


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

    Build it with :meth:`from_arrays`, :meth:`from_dataframe` (one frame with a site column) or
    :meth:`from_site_frames` (one frame per site). Every value must be finite; each site needs at
    least two rows and a treatment that varies. Errors name the site and column at fault.
    Nothing is dropped: rows with missing values are refused, not removed.

    Parameters
    ----------
    y : array-like
        Outcome, shape (n,), all sites stacked.
    d : array-like
        Treatment, shape (n,): binary 0/1 for the ATE and BLP scores, any numeric for PLR and CATE.
    X : array-like
        Covariates (confounders) of the nuisance models, shape (n, p).
    site : sequence
        Site label of every row, shape (n,).
    Z : array-like, optional
        Effect modifiers of the linear CATE, shape (n, q).
    x_cols, z_cols : sequence of str, optional
        Column names of ``X`` and ``Z`` (default ``x1, x2, ...`` and ``z1, z2, ...``).
    y_col, d_col : str
        Names of the outcome and treatment, used in messages and tables.

    Attributes
    ----------
    sites : list
        Site labels in order of first appearance.
    notes : list of str
        Provenance, e.g. rows a loader excluded and why.
    """

    def __init__(
        self,
        y: np.ndarray,
        d: np.ndarray,
        X: np.ndarray,
        site: Sequence | np.ndarray,
        Z: np.ndarray | None = None,
        *,
        x_cols: Sequence[str] | None = None,
        z_cols: Sequence[str] | None = None,
        y_col: str = "y",
        d_col: str = "d",
    ) -> None:
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
        site = np.asarray(site, dtype=object)
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
    ) -> "MultiSiteData":
        """Build from one DataFrame with a site column.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per observation; the used columns must be numeric (site labels excepted).
        y_col, d_col, site_col : str
            Outcome, treatment and site columns.
        x_cols : sequence of str, optional
            Covariate columns; default every column not named elsewhere.
        z_cols : sequence of str, optional
            Effect-modifier columns.

        Returns
        -------
        MultiSiteData
            The validated data.
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
        z_cols = list(z_cols) if z_cols is not None else []
        if x_cols is None:
            x_cols = [c for c in df.columns if c not in {y_col, d_col, site_col, *z_cols}]
        x_cols = list(x_cols)
        missing = [c for c in [y_col, d_col, site_col, *x_cols, *z_cols] if c not in df.columns]
        if missing:
            raise DataValidationError(f"column(s) not in the data frame: {missing}")
        if df[site_col].isna().any():
            rows = np.flatnonzero(df[site_col].isna().to_numpy())
            raise DataValidationError(f"column {site_col!r}: missing site label in row(s) {_rows(rows)}")
        non_numeric = [c for c in [y_col, d_col, *x_cols, *z_cols] if not pd.api.types.is_numeric_dtype(df[c])]
        if non_numeric:
            raise DataValidationError(
                f"column(s) {non_numeric} are not numeric; encode categorical covariates (e.g. pd.get_dummies) first"
            )
        return cls(
            df[y_col].to_numpy(float),
            df[d_col].to_numpy(float),
            df[x_cols].to_numpy(float),
            df[site_col].to_numpy(object),
            df[z_cols].to_numpy(float) if z_cols else None,
            x_cols=x_cols,
            z_cols=z_cols or None,
            y_col=y_col,
            d_col=d_col,
        )

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
        if len(set(self.x_cols)) != len(self.x_cols):
            raise DataValidationError(f"duplicate covariate names in {self.x_cols}")
        if pd.isna(pd.Series(self.site)).any():
            rows = np.flatnonzero(pd.isna(pd.Series(self.site)).to_numpy())
            raise DataValidationError(f"missing site label in row(s) {_rows(rows)}")

    def _columns(self) -> Iterator[tuple[str, np.ndarray]]:
        yield self.y_col, self.y
        yield self.d_col, self.d
        for j, c in enumerate(self.x_cols):
            yield c, self.X[:, j]
        for j, c in enumerate(self.z_cols):
            yield c, self.Z[:, j]  # type: ignore[index]

    def _validate_sites(self) -> None:
        for name, col in self._columns():
            bad = ~np.isfinite(col)
            if bad.any():
                first = np.flatnonzero(bad)
                s = self.site[first[0]]
                in_site = np.flatnonzero(bad[self._index[s]])
                raise DataValidationError(
                    f"site {s!r}, column {name!r}: {int(bad[self._index[s]].sum())} non-finite value(s) "
                    f"(NaN/inf) at site row(s) {_rows(in_site)}; remove or impute them explicitly"
                )
        for s, idx in self._index.items():
            if idx.size < 2:
                raise DataValidationError(f"site {s!r}: only {idx.size} row(s)")
            if np.ptp(self.d[idx]) == 0:
                raise DataValidationError(
                    f"site {s!r}, column {self.d_col!r}: treatment is constant ({self.d[idx][0]:g}) in this site"
                )

    def check_binary_treatment(self) -> None:
        """Raise unless the treatment is 0/1 at every site (needed for the ATE and BLP scores)."""
        for s, idx in self._index.items():
            values = np.unique(self.d[idx])
            if not np.all(np.isin(values, (0.0, 1.0))):
                raise DataValidationError(
                    f"site {s!r}, column {self.d_col!r}: treatment must be binary 0/1 for this model, "
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
                    f"site {s!r}: {idx.size} rows are too few for {n_folds}-fold cross-fitting "
                    f"(need at least {2 * n_folds})"
                )
            if binary:
                for arm in (0.0, 1.0):
                    count = int(np.sum(self.d[idx] == arm))
                    if count < n_folds:
                        raise DataValidationError(
                            f"site {s!r}, column {self.d_col!r}: {count} row(s) with treatment {arm:g}, "
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
        return (
            f"MultiSiteData({self.n_sites} sites, {self.n_obs} rows, {len(self.x_cols)} covariates, "
            f"{len(self.z_cols)} modifiers; sizes {sizes}{notes})"
        )
