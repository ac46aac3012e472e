"""Columnar site summaries: K sites held as arrays, validated once, fed to the fusion kernel.

What to use when:
- :meth:`SummaryTable.from_summaries` — :class:`SiteSummary` objects (from ``SiteDML.to_summary``
  or ``MultiSiteDML.summaries``) stacked into arrays;
- :meth:`SummaryTable.read_json` — many summary JSON files at once (schema, checksum and
  consistency checked; errors name the file);
- :meth:`SummaryTable.from_estimates` / :meth:`SummaryTable.from_frame` — published estimates
  with their standard errors or covariance matrices (meta-analysis input: no n, no folds);
- :class:`~hetmtl.latefusion.LateFusion` accepts any of them; a table is validated when it is
  built and its arrays are read-only, so fitting it again costs no re-validation.

Shapes: ``theta`` (K, d), ``J``/``Omega`` (K, d, d), ``n`` (K,); the per-fold tuning statistics
are stacked over all folds of all sites (site k's folds are rows ``fold_offsets[k]`` to
``fold_offsets[k + 1]``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from hetmtl import _core
from hetmtl._jsonio import canonical_digest, read_text_capped
from hetmtl._validation import check_array
from hetmtl.exceptions import DataValidationError, SummaryValidationError
from hetmtl.latefusion.summary import (
    ESTIMATES,
    FORMAT,
    MAX_ABS_VALUE,
    MODELS,
    VERSION,
    CVFold,
    SiteSummary,
    summary_max_bytes,
)

CENTRE = "(centre)"
#: Largest spread of a coefficient over sites, in units of the smallest standard error (1e12):
#: e.g. theta = 1e308 (or 1e30 beside estimates near 1 with SE 1) is refused instead of fusing into
#: SEs of inf and 0.
MAX_STANDARDISED_SPREAD = 1e12


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True)
class FoldTable:
    """Per-fold tuning statistics of all sites, stacked (M folds in all)."""

    offsets: np.ndarray  # (K + 1,)
    n_train: np.ndarray  # (M,)
    theta: np.ndarray  # (M, d)
    J: np.ndarray  # (M, d, d)
    Omega: np.ndarray  # (M, d, d)
    n_test: np.ndarray  # (M,)
    A: np.ndarray  # (M, d, d)
    b: np.ndarray  # (M, d)
    c: np.ndarray  # (M,)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> "FoldTable":
        """The folds at ``rows`` (one per site), as a table with offsets 0..K."""
        return FoldTable(
            np.arange(rows.size + 1), self.n_train[rows], self.theta[rows], self.J[rows], self.Omega[rows],
            self.n_test[rows], self.A[rows], self.b[rows], self.c[rows],
        )


def _check_square(name: str, M: np.ndarray, where, *, psd: bool, symmetric: bool, spectral: bool = True) -> None:
    """Vectorised: finite, bounded, symmetric where asked, and (``spectral``) positive definite or
    well-conditioned."""
    bad = ~np.isfinite(M).all(axis=(1, 2))
    if bad.any():
        raise SummaryValidationError(f"{where(_first(bad))}: {name} has non-finite entries")
    big = (np.abs(M) > MAX_ABS_VALUE).any(axis=(1, 2))
    if big.any():
        raise SummaryValidationError(f"{where(_first(big))}: {name} has entries beyond ±{MAX_ABS_VALUE:g}")
    if symmetric:
        scale = np.maximum(1.0, np.abs(M).max(axis=(1, 2)))
        asym = np.abs(M - M.transpose(0, 2, 1)).max(axis=(1, 2)) > 1e-8 * scale
        if asym.any():
            raise SummaryValidationError(f"{where(_first(asym))}: {name} is not symmetric")
    if not spectral:
        return
    if psd:
        eig = np.linalg.eigvalsh(0.5 * (M + M.transpose(0, 2, 1)))
        notpd = eig[:, 0] <= 1e-12 * np.maximum(1.0, eig[:, -1])
        if notpd.any():
            k = _first(notpd)
            raise SummaryValidationError(
                f"{where(k)}: {name} is not positive definite (smallest eigenvalue {eig[k, 0]:.3g})"
            )
    elif M.shape[0]:
        with np.errstate(all="ignore"):
            cond = np.linalg.cond(M)
        ill = ~(cond <= 1e12)
        if ill.any():
            raise SummaryValidationError(f"{where(_first(ill))}: {name} is singular or ill-conditioned")


class SummaryTable:
    """K site summaries as arrays (see the module docs). Built by the ``from_*`` constructors.

    Attributes: ``sites`` (K,) str, ``model``, ``coef_names``, ``n`` (K,) int (1 where not
    given), ``n_given`` (bool: every site's n is known), ``theta``, ``J``, ``Omega``,
    ``n_folds``/``n_rep`` (K,), ``basis`` (dict or None), ``folds`` (:class:`FoldTable` or None).
    """

    def __init__(
        self,
        sites: Sequence[str],
        model: str,
        coef_names: Sequence[str],
        n: np.ndarray,
        theta: np.ndarray,
        J: np.ndarray,
        Omega: np.ndarray,
        *,
        n_given: bool = True,
        n_folds: np.ndarray | None = None,
        n_rep: np.ndarray | None = None,
        basis: dict | None = None,
        folds: FoldTable | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.sites = np.asarray([str(s) for s in sites], dtype=object)
        K = self.sites.size
        self.model = str(model)
        self.coef_names = [str(c) for c in coef_names]
        self.n = np.asarray(n)
        self.theta = np.asarray(theta, float)
        self.J = np.asarray(J, float)
        self.Omega = np.asarray(Omega, float)
        self.n_given = bool(n_given)
        self.n_folds = np.full(K, 0, np.int64) if n_folds is None else np.asarray(n_folds, np.int64)
        self.n_rep = np.full(K, 1, np.int64) if n_rep is None else np.asarray(n_rep, np.int64)
        self.basis = basis
        self.folds = folds
        self.sources = list(sources) if sources is not None else None
        self._matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._problems: list = []
        self._validate()
        for a in (self.n, self.theta, self.J, self.Omega, self.n_folds, self.n_rep):
            a.setflags(write=False)

    # ------------------------------------------------------------------ validation
    def _where(self, k: int) -> str:
        if self.sources is not None:
            return f"{self.sources[k]} (site {self.sites[k]!r})"
        return f"site {self.sites[k]!r}"

    def _validate(self) -> None:
        K = self.sites.size
        if K == 0:
            raise SummaryValidationError("no site summaries given")
        if self.theta.ndim != 2 or self.theta.shape[0] != K:
            raise SummaryValidationError(f"theta must have shape (K, d) = ({K}, d), got {self.theta.shape}")
        d = self.theta.shape[1]
        if d == 0 or len(self.coef_names) != d:
            raise SummaryValidationError(f"{len(self.coef_names)} coef_names for {d} coefficients")
        if len(set(self.coef_names)) != d:
            raise SummaryValidationError(f"duplicate coefficient names: {self.coef_names}")
        empty = np.array([len(s) == 0 for s in self.sites])
        if empty.any():
            raise SummaryValidationError(f"site {_first(empty)} has an empty name")
        names, counts = np.unique(self.sites.astype(str), return_counts=True)
        if (counts > 1).any():
            raise SummaryValidationError(f"duplicate site names: {sorted(names[counts > 1].tolist())}")
        if self.n.shape != (K,) or not np.issubdtype(self.n.dtype, np.integer):
            raise SummaryValidationError("n must be K positive integers")
        bad_n = self.n <= 0
        if bad_n.any():
            k = _first(bad_n)
            raise SummaryValidationError(f"{self._where(k)}: n must be a positive integer, got {self.n[k]}")
        for name in ("J", "Omega"):
            if getattr(self, name).shape != (K, d, d):
                raise SummaryValidationError(f"{name} must have shape ({K}, {d}, {d}), got {getattr(self, name).shape}")
        bad = ~np.isfinite(self.theta).all(axis=1) | (np.abs(self.theta) > MAX_ABS_VALUE).any(axis=1)
        if bad.any():
            k = _first(bad)
            raise SummaryValidationError(
                f"{self._where(k)}: theta must be finite and within ±{MAX_ABS_VALUE:g}, got {self.theta[k]}"
            )
        _check_square("J", self.J, self._where, psd=False, symmetric=False, spectral=False)
        _check_square("Omega", self.Omega, self._where, psd=True, symmetric=True, spectral=False)
        _, V = self.site_matrices("vcov")  # the kernel checks J's conditioning and Ω's definiteness on the way
        self._check_spread(V)
        if self.folds is not None:
            self._validate_folds(K, d)

    def _check_spread(self, V: np.ndarray) -> None:
        """Magnitude limit that keeps the fusion finite: for every coefficient, the spread of the
        site estimates in units of the smallest standard error is at most ``MAX_STANDARDISED_SPREAD``
        (beyond it the solvers lose all precision and the EB moments overflow)."""
        se = np.sqrt(np.einsum("kjj->kj", V))
        spread = np.ptp(self.theta, axis=0) / se.min(axis=0)
        bad = ~(spread <= MAX_STANDARDISED_SPREAD)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            k = int(np.argmax(np.abs(self.theta[:, j] - np.median(self.theta[:, j]))))
            raise SummaryValidationError(
                f"{self._where(k)}: coefficient {self.coef_names[j]!r} lies {spread[j]:.3g} standard errors from "
                f"another site's; beyond {MAX_STANDARDISED_SPREAD:g} the fusion is not finite-precision "
                "(check the units and the standard errors)"
            )

    def _validate_folds(self, K: int, d: int) -> None:
        f = self.folds
        assert f is not None  # called only when folds are given
        if f.offsets.shape != (K + 1,) or f.offsets[0] != 0 or (np.diff(f.offsets) < 0).any():
            raise SummaryValidationError("fold offsets must rise from 0 over K + 1 entries")
        M = int(f.offsets[-1])
        site_of = np.repeat(np.arange(K), f.counts)
        order = np.arange(M) - f.offsets[site_of]
        where = lambda m: f"{self._where(site_of[m])}, cv fold {order[m]}"  # type: ignore[arg-type]  # noqa: E731
        for name, shape in (("theta", (M, d)), ("b", (M, d)), ("J", (M, d, d)), ("Omega", (M, d, d)), ("A", (M, d, d))):
            if getattr(f, name).shape != shape:
                raise SummaryValidationError(f"cv fold {name} must have shape {shape}")
        bad = ~np.isfinite(f.theta).all(axis=1) | ~np.isfinite(f.b).all(axis=1) | ~np.isfinite(f.c)
        if bad.any():
            raise SummaryValidationError(f"{where(_first(bad))}: theta, b and c must be finite")
        incons = (f.n_train <= 0) | (f.n_test <= 0) | (f.n_train + f.n_test != self.n[site_of])
        if incons.any():
            m = _first(incons)
            raise SummaryValidationError(
                f"{where(m)}: n_train + n_test = {f.n_train[m]} + {f.n_test[m]} does not equal the site's n = "
                f"{self.n[site_of[m]]}"
            )
        _check_square("J", f.J, where, psd=False, symmetric=False)
        _check_square("Omega", f.Omega, where, psd=True, symmetric=True)
        scale = np.maximum(1.0, np.abs(f.A).max(axis=(1, 2)))
        asym = ~np.isfinite(f.A).all(axis=(1, 2)) | (np.abs(f.A - f.A.transpose(0, 2, 1)).max(axis=(1, 2)) > 1e-8 * scale)
        if asym.any():
            raise SummaryValidationError(f"{where(_first(asym))}: A must be finite and symmetric")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_problems"] = []  # C++ handles: rebuilt on demand
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for a in (self.n, self.theta, self.J, self.Omega, self.n_folds, self.n_rep):
            a.setflags(write=False)

    # ------------------------------------------------------------------ shape
    @property
    def K(self) -> int:
        return self.sites.size

    @property
    def d(self) -> int:
        return self.theta.shape[1]

    def __len__(self) -> int:
        return self.K

    def __repr__(self) -> str:
        return f"SummaryTable(K={self.K}, d={self.d}, model={self.model!r}, folds={self.folds is not None})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_summaries(cls, summaries: Sequence[SiteSummary], sources: Sequence[str] | None = None) -> "SummaryTable":
        """Stack :class:`SiteSummary` objects; they must share model, coefficients and basis."""
        summaries = list(summaries)
        if not summaries:
            raise SummaryValidationError("no site summaries given")
        for i, s in enumerate(summaries):
            if not isinstance(s, SiteSummary):
                raise TypeError(f"summaries[{i}] is a {type(s).__name__}; expected a SiteSummary")
        ref = summaries[0]
        where = (lambda i: sources[i]) if sources is not None else (lambda i: f"site {summaries[i].site!r}")
        for i, s in enumerate(summaries):
            if s.model != ref.model:
                raise SummaryValidationError(f"{where(i)}: model {s.model!r} differs from site {ref.site!r}'s {ref.model!r}")
            if list(s.coef_names) != list(ref.coef_names):
                raise SummaryValidationError(
                    f"{where(i)}: coef_names {list(s.coef_names)} differ from site {ref.site!r}'s {list(ref.coef_names)}"
                )
            if not _same_basis(s.basis, ref.basis):
                raise SummaryValidationError(
                    f"{where(i)}: its basis standardisation differs from site {ref.site!r}'s; "
                    "all sites must use one common (pooled) transform"
                )
        n_given = all(s.n is not None for s in summaries)
        if not n_given and any(s.n is not None for s in summaries):
            raise SummaryValidationError("some summaries give n and some do not; give n for all sites or none")
        folds = None
        if any(s.cv_folds for s in summaries):
            counts = np.array([len(s.cv_folds) for s in summaries])
            allf = [f for s in summaries for f in s.cv_folds]
            folds = FoldTable(
                np.concatenate([[0], np.cumsum(counts)]),
                np.array([f.n_train for f in allf], np.int64), np.stack([f.theta for f in allf]),
                np.stack([f.J for f in allf]), np.stack([f.Omega for f in allf]),
                np.array([f.n_test for f in allf], np.int64), np.stack([f.A for f in allf]),
                np.stack([f.b for f in allf]), np.array([f.c for f in allf], float),
            )
        return cls(
            [s.site for s in summaries], ref.model, ref.coef_names,
            np.array([1 if s.n is None else s.n for s in summaries], np.int64),
            np.stack([s.theta for s in summaries]), np.stack([s.J for s in summaries]),
            np.stack([s.Omega for s in summaries]), n_given=n_given,
            n_folds=np.array([s.n_folds for s in summaries]), n_rep=np.array([s.n_rep for s in summaries]),
            basis=ref.basis, folds=folds, sources=sources,
        )

    @classmethod
    def read_json(cls, paths: Iterable[str | Path], max_bytes: int | None = None) -> "SummaryTable":
        """Read summary files: size cap, envelope and checksum per file, then the arrays are
        stacked and validated in one vectorised pass. Any file that does not fit the fast path is
        re-read by :meth:`SiteSummary.read_json` (full schema check), so every error names its file."""
        max_bytes = summary_max_bytes(max_bytes)
        paths = [Path(p) for p in paths]
        if not paths:
            raise SummaryValidationError("no summary files given")
        sources = [str(p) for p in paths]
        try:
            payloads = [_fast_payload(p, max_bytes) for p in paths]  # type: ignore[arg-type]  # Path above
            return cls._from_payloads(payloads, sources)
        except _SlowPath:
            summaries = [SiteSummary.read_json(p, max_bytes=max_bytes) for p in paths]
            return cls.from_summaries(summaries, sources=sources)

    @classmethod
    def _from_payloads(cls, payloads: list[dict], sources: list[str]) -> "SummaryTable":
        ref = payloads[0]
        try:
            for p in payloads:
                if p["model"] != ref["model"] or p["coef_names"] != ref["coef_names"] or p.get("basis") != ref.get("basis"):
                    raise _SlowPath
            n_raw = [p["n"] for p in payloads]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in n_raw if v is not None):
                raise _SlowPath
            n_given = all(v is not None for v in n_raw)
            if not n_given and any(v is not None for v in n_raw):
                raise _SlowPath
            folds = None
            counts = np.array([len(p.get("cv_folds", ())) for p in payloads])
            if counts.any():
                allf = [f for p in payloads for f in p.get("cv_folds", ())]
                folds = FoldTable(
                    np.concatenate([[0], np.cumsum(counts)]),
                    _int_array([f["n_train"] for f in allf]), np.array([f["theta"] for f in allf], float),
                    np.array([f["J"] for f in allf], float), np.array([f["Omega"] for f in allf], float),
                    _int_array([f["n_test"] for f in allf]), np.array([f["A"] for f in allf], float),
                    np.array([f["b"] for f in allf], float), np.array([f["c"] for f in allf], float),
                )
            table = cls(
                [p["site"] for p in payloads], ref["model"], ref["coef_names"],
                np.array([1 if v is None else v for v in n_raw], np.int64),
                np.array([p["theta"] for p in payloads], float), np.array([p["J"] for p in payloads], float),
                np.array([p["Omega"] for p in payloads], float), n_given=n_given,
                n_folds=_int_array([p["n_folds"] for p in payloads]), n_rep=_int_array([p["n_rep"] for p in payloads]),
                basis=ref.get("basis"), folds=folds, sources=sources,
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise _SlowPath from None  # the full reader names the file at fault
        if (table.n_folds < 2).any() or (table.n_rep < 1).any():
            raise _SlowPath
        return table

    @classmethod
    def from_estimates(
        cls,
        theta: Any,
        vcov: Any = None,
        *,
        se: Any = None,
        n: Any = None,
        sites: Sequence[str] | None = None,
        coef_names: Sequence[str] | None = None,
    ) -> "SummaryTable":
        """Published estimates (meta-analysis input): ``theta`` (K,) or (K, d) with ``vcov``
        (K, d, d) or standard errors ``se`` ((K,) for d = 1; (K, d) gives a diagonal covariance,
        i.e. uncorrelated coefficients). ``n`` (sample sizes) is optional: without it the fusion
        weights come from the covariances alone (model label ``"estimates"``)."""
        theta = _real(theta, "theta")
        if theta.ndim == 1:
            theta = theta[:, None]
        if theta.ndim != 2:
            raise SummaryValidationError(f"theta must be (K,) or (K, d), got shape {theta.shape}")
        K, d = theta.shape
        sites = [f"study {k + 1}" for k in range(K)] if sites is None else [str(s) for s in sites]
        if len(sites) != K:
            raise SummaryValidationError(f"{len(sites)} site names for {K} estimates")
        if (vcov is None) == (se is None):
            raise SummaryValidationError("give exactly one of vcov (K, d, d) and se (K,) or (K, d)")
        if se is not None:
            se = _real(se, "se")
            se = se.reshape(K, -1) if se.size == K * d else se
            if se.shape != (K, d):
                raise SummaryValidationError(f"se must have shape ({K},) or ({K}, {d}), got {np.shape(se)}")
            bad = ~(np.isfinite(se) & (se > 0)).all(axis=1)
            if bad.any():
                k = _first(bad)
                raise SummaryValidationError(f"site {sites[k]!r}: se must be positive and finite, got {se[k]}")
            V = np.zeros((K, d, d))
            V[:, np.arange(d), np.arange(d)] = se**2
        else:
            V = _real(vcov, "vcov")
            if d == 1 and V.shape in ((K,), (K, 1)):
                V = V.reshape(K, 1, 1)
            if V.shape != (K, d, d):
                raise SummaryValidationError(f"vcov must have shape ({K}, {d}, {d}), got {V.shape}")
        if n is None:
            n_arr, n_given = np.ones(K, np.int64), False
        else:
            n_raw = np.asarray(n)
            if (n_raw.shape != (K,) or n_raw.dtype.kind not in "iuf" or np.any(n_raw != np.round(n_raw))
                    or np.any(np.abs(n_raw) > _MAX_N)):
                raise SummaryValidationError(f"n must be {K} positive integers")
            n_arr, n_given = n_raw.astype(np.int64), True
        names = [f"theta{j}" if d > 1 else "theta" for j in range(d)] if coef_names is None else list(coef_names)
        eye = np.broadcast_to(np.eye(d), (K, d, d))
        return cls(sites, ESTIMATES, names, n_arr, theta, eye, V * n_arr[:, None, None], n_given=n_given)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "estimates table") -> "SummaryTable":
        """Long table of published estimates: columns ``site``, ``estimate``, ``se`` and, for
        several coefficients, ``coefficient`` (optional ``n``). Coefficients of one site are taken
        as uncorrelated (their covariances are not in such a table)."""
        missing = [c for c in ("site", "estimate", "se") if c not in frame.columns]
        if missing:
            raise SummaryValidationError(f"{source}: missing column(s) {missing}; need site, estimate, se "
                                         "(and coefficient for several coefficients per site)")
        unknown = sorted(set(frame.columns) - {"site", "coefficient", "estimate", "se", "n"})
        if unknown:
            raise SummaryValidationError(f"{source}: unknown column(s) {unknown}")
        df = frame.copy()
        for col in ("estimate", "se") + (("n",) if "n" in df.columns else ()):
            values = _numeric_column(df[col])
            bad = values.isna() | ~np.isfinite(values)
            if col == "n":
                bad |= (values != np.round(values)) | (values < 1) | (values > _MAX_N)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                what = "a positive integer" if col == "n" else "a finite number"
                raise SummaryValidationError(f"{source}: row {i + 1}: {col} {_short(frame[col].iloc[i])} is not {what}")
            df[col] = values.astype(np.int64) if col == "n" else values.astype(float)
        df["site"] = df["site"].astype(str)
        if "coefficient" not in df.columns:
            df["coefficient"] = "theta"
        df["coefficient"] = df["coefficient"].astype(str)
        dup = df.duplicated(["site", "coefficient"])
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise SummaryValidationError(
                f"{source}: row {i + 1}: site {df['site'].iloc[i]!r}, coefficient {df['coefficient'].iloc[i]!r} appears twice"
            )
        sites = list(dict.fromkeys(df["site"]))
        coefs = list(dict.fromkeys(df["coefficient"]))
        est = df.pivot(index="site", columns="coefficient", values="estimate").reindex(index=sites, columns=coefs)
        se = df.pivot(index="site", columns="coefficient", values="se").reindex(index=sites, columns=coefs)
        if est.isna().any().any():
            k, j = np.argwhere(est.isna().to_numpy())[0]
            raise SummaryValidationError(f"{source}: site {sites[k]!r} has no row for coefficient {coefs[j]!r}")
        n = None
        if "n" in df.columns:
            per_site = df.groupby("site", sort=False)["n"].nunique()
            if (per_site > 1).any():
                raise SummaryValidationError(f"{source}: site {per_site.index[per_site > 1][0]!r} has several n")
            n = df.groupby("site", sort=False)["n"].first().reindex(sites).to_numpy()
        return cls.from_estimates(est.to_numpy(), se=se.to_numpy(), n=n, sites=sites, coef_names=coefs)

    # ------------------------------------------------------------------ exports
    def site_matrices(self, loss_matrix: str = "vcov") -> tuple[np.ndarray, np.ndarray]:
        """(H, V): the fusion loss matrices H_k and V̂_k = Ĵ_k⁻¹Ω̂_kĴ_k⁻ᵀ/n_k, (K, d, d) each,
        computed once per loss matrix by the C++ kernel (the table is immutable)."""
        if loss_matrix not in self._matrices:
            H, V, bad, reason = _core.fusion_site_matrices(self.J, self.Omega, self.n.astype(float), loss_matrix)
            if bad >= 0:
                if reason.startswith("the sandwich covariance"):  # J is invertible, so Ω is the culprit
                    reason = "Omega is not positive definite (" + reason + ")"
                raise SummaryValidationError(f"{self._where(bad)}: {reason}")
            H.setflags(write=False)
            V.setflags(write=False)
            self._matrices[loss_matrix] = (H, V)
        return self._matrices[loss_matrix]

    def fusion_problem(self, loss_matrix: str, shape: np.ndarray):
        """The C++ fusion problem (θ̂, H, w = n/N, λ-shape) of this table, built once per loss matrix
        and shape and then reused (refits at other C start from its factorisations)."""
        H, _ = self.site_matrices(loss_matrix)
        for key_loss, key_shape, prob in self._problems:
            if key_loss == loss_matrix and np.array_equal(key_shape, shape):
                return prob
        n = self.n.astype(float)
        prob = _core.FusionProblem(self.theta, H, n / n.sum(), shape)
        self._problems = [*self._problems[-3:], (loss_matrix, np.array(shape), prob)]
        return prob

    def to_summaries(self) -> list[SiteSummary]:
        """One :class:`SiteSummary` per site (for JSON export)."""
        out = []
        for k in range(self.K):
            folds = []
            if self.folds is not None:
                f = self.folds
                folds = [
                    CVFold(int(f.n_train[m]), f.theta[m], f.J[m], f.Omega[m], int(f.n_test[m]), f.A[m], f.b[m], float(f.c[m]))
                    for m in range(f.offsets[k], f.offsets[k + 1])
                ]
            out.append(
                SiteSummary(
                    site=self.sites[k], model=self.model, coef_names=list(self.coef_names),
                    n=int(self.n[k]) if self.n_given else None, theta=self.theta[k], J=self.J[k], Omega=self.Omega[k],
                    n_folds=int(self.n_folds[k]) if self.n_folds[k] >= 2 else 5, n_rep=int(self.n_rep[k]),
                    basis=self.basis, cv_folds=folds,
                )
            )
        return out


def site_matrices(J: np.ndarray, Omega: np.ndarray, n: np.ndarray, loss_matrix: str, sites: Sequence[str], what: str = ""):
    """(H, V) of every site via the C++ kernel; a failing site raises with its name."""
    H, V, bad, reason = _core.fusion_site_matrices(J, Omega, np.asarray(n, float), loss_matrix)
    if bad >= 0:
        raise SummaryValidationError(f"site {sites[bad]!r}{what}: {reason}")
    return H, V


class _SlowPath(Exception):
    """A file the fast reader does not vouch for: re-read it with the full schema check."""


_PAYLOAD_KEYS = frozenset({"site", "model", "coef_names", "n", "theta", "J", "Omega", "n_folds", "n_rep", "basis", "cv_folds"})


def _fast_payload(path: Path, max_bytes: int) -> dict:
    """The checked payload of one summary file (envelope, checksum, keys); structural detail is
    left to the vectorised validation, and anything unusual goes to the full reader."""
    text = read_text_capped(path, "summary file", max_bytes, SummaryValidationError)
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _SlowPath from None
    if not isinstance(obj, dict) or set(obj) != {"format", "version", "payload", "sha256"}:
        raise _SlowPath
    payload = obj["payload"]
    if obj["format"] != FORMAT or obj["version"] != VERSION or not isinstance(payload, dict):
        raise _SlowPath
    if not _PAYLOAD_KEYS.issuperset(payload) or canonical_digest(payload) != obj["sha256"]:
        raise _SlowPath
    if not isinstance(payload.get("site"), str) or payload.get("model") not in MODELS:
        raise _SlowPath
    return payload


_MAX_N = 2**53  # sample sizes stay exact as floats


def _short(v: Any) -> str:
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= 40 else text[:37] + "..."


def _real(x: Any, name: str) -> np.ndarray:
    """``x`` as a float array; text, complex, ragged input or huge integers → SummaryValidationError."""
    try:
        return check_array(x, name, ndim=(0, 1, 2, 3), min_rows=0, allow_nan=True)
    except DataValidationError as exc:
        if "infinite" not in str(exc):
            raise SummaryValidationError(str(exc)) from None
        return np.asarray(x, float)  # inf: refused below with the site named
    except (OverflowError, TypeError, ValueError) as exc:
        raise SummaryValidationError(f"{name} is not an array of real numbers: {exc}") from None


def _numeric_column(col: pd.Series) -> pd.Series:
    """Column as floats; text, complex and integers too large for a float become NaN (refused by
    the caller, naming the row)."""
    def one(v: Any) -> float:
        if isinstance(v, (bool, np.bool_, complex, np.complexfloating)):
            return np.nan
        try:
            return float(v)
        except (TypeError, ValueError, OverflowError):
            return np.nan
    if col.dtype.kind in "biuf":
        return col.astype(float)
    return col.map(one).astype(float)


def _no_constant(name: str):
    raise ValueError(name)


def _int_array(values: list) -> np.ndarray:
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise _SlowPath
    return np.array(values, np.int64)


def _same_basis(a: dict | None, b: dict | None) -> bool:
    if (a is None) != (b is None):
        return False
    if a is None:
        return True
    assert b is not None  # both or neither are None (checked above)
    return (
        list(a["names"]) == list(b["names"])
        and np.allclose(a["center"], b["center"])
        and np.allclose(a["scale"], b["scale"])
    )


def as_table(summaries: Any) -> SummaryTable:
    """A :class:`SummaryTable` from a table, a list of SiteSummary objects or file paths, or a
    long DataFrame of published estimates."""
    if isinstance(summaries, SummaryTable):
        return summaries
    if isinstance(summaries, pd.DataFrame):
        return SummaryTable.from_frame(summaries)
    if isinstance(summaries, (SiteSummary, str, Path)):
        raise TypeError("summaries must be a list of SiteSummary objects or file paths, not a single one")
    items = list(summaries)
    if items and all(isinstance(s, (str, Path)) for s in items):
        return SummaryTable.read_json(items)
    for i, s in enumerate(items):
        if not isinstance(s, (SiteSummary, str, Path)):
            raise TypeError(f"summaries[{i}] is a {type(s).__name__}; expected a SiteSummary or a file path")
    objs = [SiteSummary.read_json(s) if isinstance(s, (str, Path)) else s for s in items]
    for s in objs:
        s.validate()  # objects may have been altered after construction
    return SummaryTable.from_summaries(objs)
