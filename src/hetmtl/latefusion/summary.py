"""Site summaries: the only thing a site shares in late fusion.

A :class:`SiteSummary` holds aggregates of one site's DML fit — n_k, θ̂_k, Ĵ_k, Ω̂_k — and, for
tuning the fusion from summaries alone, per-fold statistics (the fold-out fit and the held-out
quadratic-loss coefficients). No row of data is stored. Summaries travel as versioned JSON with a
schema and a SHA-256 checksum; :func:`SiteSummary.read_json` refuses malformed, inconsistent or
edited files. (Never exchange pickles.)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from hetmtl._jsonio import canonical_digest, read_text_capped, write_atomic
from hetmtl.exceptions import SummaryValidationError

FORMAT = "hetmtl.site_summary"
VERSION = 1
#: Label of summaries built from published estimates (meta-analysis input, :meth:`SiteSummary.from_estimates`).
ESTIMATES = "estimates"
MODELS = ("plr", "ate", "cate", "blp", ESTIMATES)
#: Largest absolute value accepted in a summary's arrays: keeps every fusion quantity finite.
MAX_ABS_VALUE = 1e100
#: Largest summary file read (bytes); a site summary is a few kB even with its CV folds.
MAX_FILE_BYTES = 16 * 2**20

_matrix = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_vector = {"type": "array", "items": {"type": "number"}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "version", "payload", "sha256"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "payload": {
            "type": "object",
            "additionalProperties": False,
            "required": ["site", "model", "coef_names", "n", "theta", "J", "Omega", "n_folds", "n_rep"],
            "properties": {
                "site": {"type": "string", "minLength": 1},
                "model": {"enum": list(MODELS)},
                "coef_names": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "n": {"type": ["integer", "null"], "minimum": 1},
                "theta": _vector,
                "J": _matrix,
                "Omega": _matrix,
                "n_folds": {"type": "integer", "minimum": 2},
                "n_rep": {"type": "integer", "minimum": 1},
                "basis": {
                    "type": ["object", "null"],
                    "additionalProperties": False,
                    "required": ["names", "center", "scale"],
                    "properties": {
                        "names": {"type": "array", "items": {"type": "string"}},
                        "center": _vector,
                        "scale": _vector,
                    },
                },
                "cv_folds": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["n_train", "theta", "J", "Omega", "n_test", "A", "b", "c"],
                        "properties": {
                            "n_train": {"type": "integer", "minimum": 1},
                            "theta": _vector,
                            "J": _matrix,
                            "Omega": _matrix,
                            "n_test": {"type": "integer", "minimum": 1},
                            "A": _matrix,
                            "b": _vector,
                            "c": {"type": "number"},
                        },
                    },
                },
            },
        },
    },
}


def _check_matrix(name: str, M: np.ndarray, d: int, where: str, *, symmetric: bool, psd: bool) -> None:
    if M.shape != (d, d):
        raise SummaryValidationError(f"{where}: {name} has shape {M.shape}, expected ({d}, {d})")
    if not np.all(np.isfinite(M)):
        raise SummaryValidationError(f"{where}: {name} has non-finite entries")
    if np.any(np.abs(M) > MAX_ABS_VALUE):
        raise SummaryValidationError(f"{where}: {name} has entries beyond ±{MAX_ABS_VALUE:g}")
    if symmetric:
        scale = max(1.0, float(np.max(np.abs(M))))
        if np.max(np.abs(M - M.T)) > 1e-8 * scale:
            raise SummaryValidationError(f"{where}: {name} is not symmetric")
        if psd:
            eig = np.linalg.eigvalsh(0.5 * (M + M.T))
            if eig.min() <= 1e-12 * max(1.0, eig.max()):
                raise SummaryValidationError(
                    f"{where}: {name} is not positive definite (smallest eigenvalue {eig.min():.3g})"
                )


@dataclass(frozen=True)
class CVFold:
    """Tuning statistics of one cross-fitting fold v.

    The fit without fold v and the held-out loss on fold v, Q(θ) = c − 2 b'θ + θ' A θ.

    Parameters
    ----------
    n_train : int
        Rows used by the fit without fold v.
    theta : numpy.ndarray
        The fit without fold v, shape (d,).
    J, Omega : numpy.ndarray
        Its score Jacobian and score variance, shape (d, d).
    n_test : int
        Rows of fold v.
    A : numpy.ndarray
        Quadratic coefficient of the held-out loss, shape (d, d).
    b : numpy.ndarray
        Linear coefficient of the held-out loss, shape (d,).
    c : float
        Constant of the held-out loss.
    """

    n_train: int
    theta: np.ndarray
    J: np.ndarray
    Omega: np.ndarray
    n_test: int
    A: np.ndarray
    b: np.ndarray
    c: float

    @property
    def vcov(self) -> np.ndarray:
        """Covariance of the fold-out fit, J⁻¹ Ω J⁻ᵀ / n_train."""
        Jinv = np.linalg.inv(self.J)
        return Jinv @ self.Omega @ Jinv.T / self.n_train

    def loss(self, theta: np.ndarray) -> float:
        """Held-out loss Q(θ) = c − 2 b'θ + θ' A θ on fold v.

        Parameters
        ----------
        theta : array-like
            A coefficient vector, shape (d,).

        Returns
        -------
        float
            The loss.
        """
        theta = np.asarray(theta, float)
        return float(self.c - 2.0 * self.b @ theta + theta @ self.A @ theta)


@dataclass(frozen=True)
class SiteSummary:
    """Aggregates of one site's DML fit (see the module notes); ``vcov = J⁻¹ Ω J⁻ᵀ / n``.

    Build it with :meth:`SiteDML.to_summary <hetmtl.latefusion.SiteDML.to_summary>`,
    :meth:`MultiSiteDML.summaries <hetmtl.latefusion.MultiSiteDML.summaries>`,
    :meth:`from_estimates` (a published estimate) or :meth:`read_json`. It is validated on
    construction (:meth:`validate`).

    Parameters
    ----------
    site : str
        Site label.
    model : {"plr", "ate", "cate", "blp", "estimates"}
        The DML score, or ``"estimates"`` for a published estimate.
    coef_names : list of str
        Names of the d coefficients.
    n : int or None
        Rows of the site (``None`` only for published estimates).
    theta : array-like
        Estimate θ̂, shape (d,).
    J, Omega : array-like
        Score Jacobian Ĵ and score variance Ω̂, shape (d, d).
    n_folds, n_rep : int
        Cross-fitting folds and repetitions of the fit.
    basis : dict, optional
        Standardisation of the effect modifiers (``names``, ``center``, ``scale``) for the CATE.
    cv_folds : list of CVFold
        Per-fold tuning statistics (empty: the fusion cannot cross-validate C from this site).
    """

    site: str
    model: str
    coef_names: list[str]
    n: int | None
    theta: np.ndarray
    J: np.ndarray
    Omega: np.ndarray
    n_folds: int = 5
    n_rep: int = 1
    basis: dict | None = None
    cv_folds: list[CVFold] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", str(self.site))
        for name in ("theta", "J", "Omega"):
            object.__setattr__(self, name, np.atleast_1d(np.asarray(getattr(self, name), dtype=float)))
        object.__setattr__(self, "J", np.atleast_2d(self.J))
        object.__setattr__(self, "Omega", np.atleast_2d(self.Omega))
        self.validate()

    @property
    def d(self) -> int:
        """Number of coefficients d."""
        return self.theta.shape[0]

    @property
    def Sigma(self) -> np.ndarray:
        """Asymptotic covariance of √n θ̂, Ĵ⁻¹ Ω̂ Ĵ⁻ᵀ (symmetrised)."""
        Jinv = np.linalg.inv(self.J)
        S = Jinv @ self.Omega @ Jinv.T
        return 0.5 * (S + S.T)

    @property
    def vcov(self) -> np.ndarray:
        """Covariance of θ̂, Σ̂ / n (Σ̂ itself for published estimates without n)."""
        return self.Sigma / (1 if self.n is None else self.n)

    @classmethod
    def from_estimates(
        cls,
        theta,
        vcov=None,
        n: int | None = None,
        site: str = "study",
        coef_names: list[str] | None = None,
        *,
        se=None,
    ) -> "SiteSummary":
        """A summary of a published estimate (meta-analysis input).

        Stored as J = I, Ω = n·V (so V = J⁻¹ΩJ⁻ᵀ/n), model ``"estimates"``.

        Parameters
        ----------
        theta : array-like
            Estimate, shape (d,).
        vcov : array-like, optional
            Its covariance, shape (d, d); give exactly one of ``vcov`` and ``se``.
        n : int, optional
            Sample size; without it the fusion weights come from the covariance alone.
        site : str
            Study label.
        coef_names : list of str, optional
            Coefficient names (default ``theta`` or ``theta0, theta1, ...``).
        se : array-like, optional
            Standard error(s): a scalar for d = 1; a vector gives uncorrelated coefficients.

        Returns
        -------
        SiteSummary
            The validated summary.
        """
        from hetmtl.latefusion.table import SummaryTable  # the table imports this module

        theta = np.atleast_1d(np.asarray(theta, float))
        table = SummaryTable.from_estimates(
            theta[None], None if vcov is None else np.asarray(vcov, float)[None],
            se=None if se is None else np.atleast_1d(np.asarray(se, float))[None],
            n=None if n is None else [n], sites=[site], coef_names=coef_names,
        )
        return table.to_summaries()[0]

    @property
    def se(self) -> np.ndarray:
        """Standard errors of θ̂, shape (d,)."""
        return np.sqrt(np.diag(self.vcov))

    def validate(self) -> None:
        """Check shapes, finiteness, n > 0, invertible J and positive-definite Ω."""
        s = self.site
        if self.model not in MODELS:
            raise SummaryValidationError(f"site {s!r}: unknown model {self.model!r}; expected one of {MODELS}")
        if self.n is None:
            if self.model != ESTIMATES:
                raise SummaryValidationError(f"site {s!r}: n is required for a DML summary (model {self.model!r})")
        elif isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or not 0 < self.n < 2**53:
            raise SummaryValidationError(f"site {s!r}: n must be a positive integer below 2**53, got {self.n!r}")
        d = self.theta.shape[0]
        if self.theta.ndim != 1 or not np.all(np.isfinite(self.theta)) or np.any(np.abs(self.theta) > MAX_ABS_VALUE):
            raise SummaryValidationError(
                f"site {s!r}: theta must be a finite vector within ±{MAX_ABS_VALUE:g}, got {self.theta!r}"
            )
        if len(self.coef_names) != d:
            raise SummaryValidationError(f"site {s!r}: {len(self.coef_names)} coef_names for {d} coefficients")
        _check_matrix("J", self.J, d, f"site {s!r}", symmetric=False, psd=False)
        if abs(np.linalg.det(self.J)) < 1e-300 or np.linalg.cond(self.J) > 1e12:
            raise SummaryValidationError(f"site {s!r}: J is singular or ill-conditioned")
        _check_matrix("Omega", self.Omega, d, f"site {s!r}", symmetric=True, psd=True)
        for v, f in enumerate(self.cv_folds):
            where = f"site {s!r}, cv fold {v}"
            if f.theta.shape != (d,) or not np.all(np.isfinite(f.theta)):
                raise SummaryValidationError(f"{where}: theta must be a finite vector of length {d}")
            _check_matrix("J", f.J, d, where, symmetric=False, psd=False)
            _check_matrix("Omega", f.Omega, d, where, symmetric=True, psd=True)
            _check_matrix("A", f.A, d, where, symmetric=True, psd=False)
            if f.b.shape != (d,) or not np.isfinite(f.c):
                raise SummaryValidationError(f"{where}: b must have length {d} and c be finite")
            if self.n is not None and f.n_train + f.n_test != self.n:
                raise SummaryValidationError(
                    f"{where}: n_train + n_test = {f.n_train} + {f.n_test} does not equal the site's n = {self.n}"
                )

    # ------------------------------------------------------------------ JSON
    def _payload(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "site": self.site,
            "model": self.model,
            "coef_names": list(self.coef_names),
            "n": None if self.n is None else int(self.n),
            "theta": self.theta.tolist(),
            "J": self.J.tolist(),
            "Omega": self.Omega.tolist(),
            "n_folds": int(self.n_folds),
            "n_rep": int(self.n_rep),
        }
        if self.basis is not None:
            p["basis"] = {k: (list(map(str, v)) if k == "names" else np.asarray(v, float).tolist()) for k, v in self.basis.items()}
        if self.cv_folds:
            p["cv_folds"] = [
                {
                    "n_train": int(f.n_train),
                    "theta": f.theta.tolist(),
                    "J": f.J.tolist(),
                    "Omega": f.Omega.tolist(),
                    "n_test": int(f.n_test),
                    "A": f.A.tolist(),
                    "b": f.b.tolist(),
                    "c": float(f.c),
                }
                for f in self.cv_folds
            ]
        return p

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: format, version, payload and its SHA-256 checksum.

        Returns
        -------
        dict
            A JSON-serialisable dict.
        """
        payload = self._payload()
        return {"format": FORMAT, "version": VERSION, "payload": payload, "sha256": canonical_digest(payload)}

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; write it to ``path`` (atomically) when given.

        Parameters
        ----------
        path : str or pathlib.Path, optional
            File to write.

        Returns
        -------
        str
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, obj: Any, source: str = "summary") -> "SiteSummary":
        """Validate a JSON document (schema and checksum) and build the summary.

        Parameters
        ----------
        obj : dict
            A document as written by :meth:`to_dict`.
        source : str
            Name of the source, used in error messages.

        Returns
        -------
        SiteSummary
            The validated summary.

        Raises
        ------
        SummaryValidationError
            When the document does not match the schema, the checksum or itself.
        """
        try:
            jsonschema.validate(obj, SCHEMA)
        except jsonschema.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "(top level)"
            raise SummaryValidationError(f"{source}: does not match the site-summary schema at {where}: {exc.message}") from None
        payload = obj["payload"]
        if canonical_digest(payload) != obj["sha256"]:
            raise SummaryValidationError(f"{source}: checksum mismatch — the file was edited or corrupted after export")
        folds = [
            CVFold(
                n_train=f["n_train"],
                theta=np.asarray(f["theta"], float),
                J=np.asarray(f["J"], float),
                Omega=np.asarray(f["Omega"], float),
                n_test=f["n_test"],
                A=np.asarray(f["A"], float),
                b=np.asarray(f["b"], float),
                c=float(f["c"]),
            )
            for f in payload.get("cv_folds", [])
        ]
        try:
            return cls(
                site=payload["site"],
                model=payload["model"],
                coef_names=list(payload["coef_names"]),
                n=payload["n"],
                theta=payload["theta"],
                J=payload["J"],
                Omega=payload["Omega"],
                n_folds=payload["n_folds"],
                n_rep=payload["n_rep"],
                basis=payload.get("basis"),
                cv_folds=folds,
            )
        except SummaryValidationError as exc:
            raise SummaryValidationError(f"{source}: {exc}") from None
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise SummaryValidationError(f"{source}: inconsistent arrays: {exc}") from None

    @classmethod
    def read_json(cls, path: str | Path, max_bytes: int | None = None) -> "SiteSummary":
        """Read and validate a summary file written by :meth:`to_json`.

        Parameters
        ----------
        path : str or pathlib.Path
            A regular file; directories, FIFOs and other special files are refused.
        max_bytes : int, optional
            Largest file accepted; default ``HETMTL_MAX_FILE_BYTES`` from the environment, else
            :data:`MAX_FILE_BYTES` (both read at call time).

        Returns
        -------
        SiteSummary
            The validated summary.
        """
        path = Path(path)
        return cls.from_json(read_text_capped(path, "summary file", summary_max_bytes(max_bytes),
                                              SummaryValidationError), source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str = "summary") -> "SiteSummary":
        """Parse and validate JSON text written by :meth:`to_json`.

        Parameters
        ----------
        text : str
            The JSON text (NaN and infinity are refused).
        source : str
            Name of the source, used in error messages.

        Returns
        -------
        SiteSummary
            The validated summary.
        """
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise SummaryValidationError(f"{source}: not valid JSON ({str(exc)[:200]})") from None
        return cls.from_dict(obj, source=source)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def summary_max_bytes(max_bytes: int | None = None) -> int:
    """Size cap for a summary file: ``max_bytes`` if given, else ``HETMTL_MAX_FILE_BYTES`` from the
    environment (as :func:`hetmtl.serialization.max_file_bytes`), else :data:`MAX_FILE_BYTES`;
    read at call time. A bad value raises SummaryValidationError naming it."""
    from hetmtl.serialization import ModelFormatError, max_file_bytes

    if max_bytes is None and os.environ.get("HETMTL_MAX_FILE_BYTES") is None:
        return int(MAX_FILE_BYTES)
    try:
        return max_file_bytes(max_bytes)
    except ModelFormatError as exc:
        raise SummaryValidationError(str(exc)) from None
