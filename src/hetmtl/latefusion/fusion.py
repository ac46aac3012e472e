"""Late-fusion aggregation (LF-MTL Step 2): fuse per-site DML estimates from their summaries.

What to use when:
- ``LateFusion()`` — the robust default: unsquared *group* penalty with the metric-matched norm,
  λ_k = C·√(d/n_k), C tuned by summary-statistic cross-validation when the summaries carry
  ``cv_folds`` (C = 1 otherwise). Outlying sites are left unfused instead of dragging the centre;
  inference by a summary-level parametric bootstrap (approximate) and a post-fusion SE.
- ``LateFusion(penalty="squared", tau2="dl")`` — random-effects (BLUP) shrinkage with a
  DerSimonian–Laird τ² (also ``"pm"``, ``"reml"`` or a number): linear in the site estimates, so
  its covariance is exact by the delta method (conditional on τ²); also gives BLUP prediction
  intervals. Not robust: one outlier site moves every estimate.
- ``metric="euclidean"`` — ARMUL's unweighted norm ‖θ_k − θ_0‖ (for fidelity to ARMUL);
  ``loss_matrix="jacobian"`` — ARMUL on the per-site orthogonal loss (C → ∞ gives pooled DML).

The objective (``latefusion.md`` §3.3), with w_k = n_k/N::

    min  Σ_k w_k [ ½ (θ_k − θ̂_k)' H_k (θ_k − θ̂_k) + pen_k(θ_k − θ_0) ]

H_k = Σ̂_k⁻¹ = Ĵ_k' Ω̂_k⁻¹ Ĵ_k ("vcov"; note w_k H_k = V̂_k⁻¹/N), −sym(Ĵ_k) ("jacobian") or I.
pen_k(v) = λ_k‖v‖² ("squared"), λ_k‖H_k^{1/2} v‖ ("group", "matched") or λ_k‖v‖ ("group",
"euclidean"). Both group metrics are solved exactly on the profiled centre objective (per-site
minimisers in closed form; for "euclidean" up to a 1-D secular equation on H_k's eigenbasis,
warm-started along C paths and bootstrap draws). The solvers, the C path, the CV losses and the
bootstrap loop are C++
(``hetmtl._core.FusionProblem``); only summaries are used, never individual data.

The default penalty ("group") is chosen by the simulation study in
``benchmarks/results/fusion_stats.md``: "squared" has lower MSE when no site is an outlier (up to
about 20 %), "group" is about 50 % better with 10 % outlier sites and has the smaller worst-case
regret. The fused intervals of both penalties under-cover there (0.65–0.92 at nominal 0.95).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from hetmtl import _core
from hetmtl._parallel import resolve_n_jobs
from hetmtl.exceptions import ConvergenceWarning, SummaryValidationError
from hetmtl.inference import _level_names, coef_table, format_table
from hetmtl.latefusion.summary import SiteSummary

CENTRE = "(centre)"
PENALTIES = ("group", "squared")
METRICS = ("matched", "euclidean")
LOSS_MATRICES = ("vcov", "jacobian", "identity")
TAU2_METHODS = ("dl", "pm", "reml")
MAX_BOOT_VALUES = 10_000_000  # K * d * n_boot kept in memory
#: Solver tolerance of the CV paths (or ``tol`` if larger): the held-out losses move by ~1e-13
#: relative between 1e-12 and 1e-9 (K = 10,000, d = 5; ``benchmarks/results/fusion_speed_cv.md``),
#: far below any CV standard error, at 40 % less work.
CV_TOL = 1e-9


def default_C_grid() -> np.ndarray:
    """{0} ∪ 30 geometric points from 0.05 to 20 (``latefusion.md`` §3.5)."""
    return np.concatenate([[0.0], np.geomspace(0.05, 20.0, 30)])


# ----------------------------------------------------------------------------- summaries
def load_summaries(summaries: Sequence[SiteSummary | str | Path]) -> list[SiteSummary]:
    """SiteSummary objects, or paths of summary JSON files (validated on reading)."""
    if isinstance(summaries, (SiteSummary, str, Path)):
        raise TypeError("summaries must be a list of SiteSummary objects or file paths, not a single one")
    out = []
    for i, s in enumerate(summaries):
        if isinstance(s, SiteSummary):
            out.append(s)
        elif isinstance(s, (str, Path)):
            out.append(SiteSummary.read_json(s))
        else:
            raise TypeError(f"summaries[{i}] is a {type(s).__name__}; expected a SiteSummary or a file path")
    return out


def check_summaries(summaries: list[SiteSummary]) -> None:
    """Refuse summaries that cannot be fused together; messages name the site at fault."""
    if len(summaries) < 2:
        raise SummaryValidationError(f"late fusion needs at least 2 sites, got {len(summaries)}")
    names = [s.site for s in summaries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SummaryValidationError(f"duplicate site names: {dup}")
    if CENTRE in names:
        raise SummaryValidationError(f"site name {CENTRE!r} is reserved for the fused centre")
    ref = summaries[0]
    for s in summaries:
        where = f"site {s.site!r}"
        s.validate()  # re-check objects that may have been altered after construction
        if not isinstance(s.n, (int, np.integer)) or s.n <= 0:
            raise SummaryValidationError(f"{where}: n must be a positive integer, got {s.n!r}")
        if s.d != ref.d:
            raise SummaryValidationError(f"{where}: {s.d} coefficients, but site {ref.site!r} has {ref.d}")
        if list(s.coef_names) != list(ref.coef_names):
            raise SummaryValidationError(
                f"{where}: coef_names {list(s.coef_names)} differ from site {ref.site!r}'s {list(ref.coef_names)}"
            )
        if s.model != ref.model:
            raise SummaryValidationError(f"{where}: model {s.model!r} differs from site {ref.site!r}'s {ref.model!r}")
        if (s.basis is None) != (ref.basis is None) or (
            s.basis is not None
            and (
                list(s.basis["names"]) != list(ref.basis["names"])
                or not np.allclose(s.basis["center"], ref.basis["center"])
                or not np.allclose(s.basis["scale"], ref.basis["scale"])
            )
        ):
            raise SummaryValidationError(
                f"{where}: its basis standardisation differs from site {ref.site!r}'s; "
                "all sites must use one common (pooled) transform"
            )


def site_matrices(J: np.ndarray, Omega: np.ndarray, n: np.ndarray, loss_matrix: str, sites: Sequence[str], what: str = ""):
    """(H, V) of every site via the C++ kernel; a failing site raises with its name."""
    H, V, bad, reason = _core.fusion_site_matrices(J, Omega, np.asarray(n, float), loss_matrix)
    if bad >= 0:
        raise SummaryValidationError(f"site {sites[bad]!r}{what}: {reason}")
    return H, V


# ----------------------------------------------------------------------------- heterogeneity
def _re_pieces(theta: np.ndarray, V: np.ndarray, tau2: float):
    K, d = theta.shape
    W = np.linalg.inv(V + tau2 * np.eye(d))
    S = W.sum(0)
    mu = np.linalg.solve(S, np.einsum("kij,kj->i", W, theta))
    r = theta - mu
    Q = float(np.einsum("ki,kij,kj->", r, W, r))
    return W, S, mu, Q


def heterogeneity(theta: np.ndarray, V: np.ndarray) -> dict[str, float]:
    """Cochran's Q (multivariate: Σ_k (θ̂_k − θ̂_FE)' V̂_k⁻¹ (θ̂_k − θ̂_FE)), df = d(K − 1), its
    χ² p-value, I² = max(0, (Q − df)/Q) and the DerSimonian–Laird τ² of a common τ²·I
    (moment estimator; the classical DL for d = 1)."""
    K, d = theta.shape
    W, S, _, Q = _re_pieces(theta, V, 0.0)
    df = d * (K - 1)
    denom = np.trace(S) - np.trace(np.linalg.solve(S, np.einsum("kij,kjl->il", W, W)))
    tau2 = max(0.0, (Q - df) / denom) if denom > 0 else 0.0
    return {
        "Q": Q,
        "df": float(df),
        "p-value": float(stats.chi2.sf(Q, df)),
        "I2": max(0.0, (Q - df) / Q) if Q > 0 else 0.0,
        "tau2": tau2,
    }


def estimate_tau2(theta: np.ndarray, V: np.ndarray, method: str) -> float:
    """Between-site variance τ² (of θ_k ~ N(θ_0, τ² I)) by "dl" (DerSimonian–Laird), "pm"
    (Paule–Mandel: generalised Q(τ²) = d(K − 1)) or "reml" (restricted likelihood)."""
    K, d = theta.shape
    if method == "dl":
        return heterogeneity(theta, V)["tau2"]
    df = d * (K - 1)
    scale = float(np.var(theta, axis=0).sum() + np.trace(V, axis1=1, axis2=2).max()) + 1e-300
    if method == "pm":
        f = lambda t: _re_pieces(theta, V, t)[3] - df  # noqa: E731  (decreasing in t)
        if f(0.0) <= 0:
            return 0.0
        hi = scale
        while f(hi) > 0:
            hi *= 4.0
        return float(optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-12))
    if method == "reml":

        def nll(t: float) -> float:
            W, S, _, Q = _re_pieces(theta, V, t)
            return 0.5 * (-np.linalg.slogdet(W)[1].sum() + np.linalg.slogdet(S)[1] + Q)

        hi = 10.0 * scale
        res = optimize.minimize_scalar(nll, bounds=(0.0, hi), method="bounded", options={"xatol": 1e-12 * hi})
        return float(res.x) if nll(res.x) < nll(0.0) else 0.0
    raise ValueError(f"tau2 method must be one of {TAU2_METHODS}, got {method!r}")


# ----------------------------------------------------------------------------- estimator
class LateFusion(BaseEstimator):
    """Late-fusion aggregation of site summaries (see the module docs for the objective).

    Parameters
    ----------
    penalty : "group" (robust; the default, see the module docs) or "squared" (random-effects / BLUP).
    loss_matrix : "vcov" (H_k = Σ̂_k⁻¹, efficient; C → ∞ gives the fixed-effect GLS pool),
        "jacobian" (H_k = −sym(Ĵ_k); C → ∞ gives pooled DML) or "identity".
    metric : for "group": "matched" (‖H_k^{1/2}v‖; C is in "standard errors per √d") or
        "euclidean" (‖v‖, ARMUL).
    C : λ_k = C·√(d/n_k). None: chosen by summary-statistic V-fold CV over ``C_grid`` when every
        site has ``cv_folds`` (else C = 1 with a warning). ``np.inf`` = complete pooling,
        0 = no fusion.
    tau2 : "squared" only: τ² parametrisation λ_k = 1/(2 n_k τ²) (random-effects model
        θ_k ~ N(θ_0, τ² I) when loss_matrix="vcov"): a number, or "dl", "pm", "reml".
    lambdas : explicit per-site λ_k (overrides C and tau2).
    C_grid : CV grid (default {0} ∪ geometric(0.05, 20, 30)).
    cv_rule : "min" or "1se" (largest C within one SE of the minimum).
    n_boot : parametric-bootstrap draws for "group" inference (0: none).
    random_state : seed of the bootstrap.
    n_jobs : threads of the C++ per-site loops (scikit-learn convention: None = 1, −1 = all
        cores). They split the sites into contiguous blocks of at least 2000, so they matter only
        for thousands of sites; results agree with one thread to solver tolerance (the block sums
        are added in a fixed order, so a given thread count always gives the same numbers).

    Fitted attributes
    -----------------
    coef_ (K, d) fused θ̃_k; centre_ (d,) θ̃_0; fused_ (K,) θ̃_k == θ̃_0; C_ (λ_k = C_·shape_k);
    tau2_ (squared with tau2); sites_, coef_names_; dml_coef_, dml_vcov_ (per-site DML);
    vcov_ (K, d, d) and centre_vcov_ (squared: exact delta method); boot_* (group);
    heterogeneity_ (Q, df, p-value, I2, tau2); cv_results_ (DataFrame, when CV ran).

    Which intervals are valid (documented honestly):
    - per-site DML intervals (columns ``dml …``): valid by standard DML theory (asymptotic in
      n_k). At n_k = 40–80 only with ``n_rep >= 5`` or multi-task nuisances; with ``n_rep=1``
      and per-site learners they are liberal (measured coverage: :class:`~hetmtl.latefusion.SiteDML`);
    - "squared": Wald intervals from the exact delta-method covariance, *conditional on C / τ²*
      (estimation error of Ĥ_k and a data-driven C or τ² are ignored). They are intervals for
      E[θ̃_k], which is shrunk toward θ_0: when sites differ they are biased for θ_k. The BLUP
      prediction interval (:meth:`prediction_interval`) targets θ_k under the random-effects
      model the penalty encodes (loss_matrix="vcov" only);
    - "group": percentile intervals of the parametric bootstrap θ̂_k* ~ N(θ̂_k, V̂_k) at the same C
      — approximate: shrinkage estimators are non-regular near the fusion threshold, so coverage
      is not uniform; and the post-fusion SE of the centre, (Σ_{k∈S} w_k H_k)⁻¹(Σ_S w_k² H_k V̂_k
      H_k)(Σ_S w_k H_k)⁻¹ over the fused set S (= (Σ_S V̂_k⁻¹)⁻¹ for "vcov") — conditional on the
      selected grouping, ignoring the selection.
    """

    def __init__(
        self,
        penalty: str = "group",
        loss_matrix: str = "vcov",
        metric: str = "matched",
        C: float | None = None,
        tau2: float | str | None = None,
        lambdas: Sequence[float] | None = None,
        C_grid: Sequence[float] | None = None,
        cv_rule: str = "min",
        n_boot: int = 1000,
        random_state: int | np.random.RandomState | None = None,
        tol: float = 1e-12,
        max_iter: int = 1000,
        n_jobs: int | None = None,
    ):
        self.penalty = penalty
        self.loss_matrix = loss_matrix
        self.metric = metric
        self.C = C
        self.tau2 = tau2
        self.lambdas = lambdas
        self.C_grid = C_grid
        self.cv_rule = cv_rule
        self.n_boot = n_boot
        self.random_state = random_state
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ checks
    def _threads(self) -> int:
        return resolve_n_jobs(self.n_jobs)

    def _check_params(self) -> None:
        self._threads()
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.loss_matrix not in LOSS_MATRICES:
            raise ValueError(f"loss_matrix must be one of {LOSS_MATRICES}, got {self.loss_matrix!r}")
        if self.cv_rule not in ("min", "1se"):
            raise ValueError(f"cv_rule must be 'min' or '1se', got {self.cv_rule!r}")
        if self.C is not None and not (float(self.C) >= 0):
            raise ValueError(f"C must be >= 0 (or np.inf), got {self.C!r}")
        if self.tau2 is not None:
            if self.penalty != "squared":
                raise ValueError("tau2 applies to penalty='squared' only")
            if isinstance(self.tau2, str):
                if self.tau2 not in TAU2_METHODS:
                    raise ValueError(f"tau2 must be a number or one of {TAU2_METHODS}, got {self.tau2!r}")
                if self.loss_matrix != "vcov":
                    raise ValueError("estimating tau2 needs loss_matrix='vcov' (the random-effects model)")
            elif not (float(self.tau2) >= 0):
                raise ValueError(f"tau2 must be >= 0, got {self.tau2!r}")
        if int(self.n_boot) < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, summaries: Sequence[SiteSummary | str | Path]) -> "LateFusion":
        """Fuse the site estimates. ``summaries``: SiteSummary objects or summary JSON paths."""
        self._check_params()
        sums = load_summaries(summaries)
        check_summaries(sums)
        self.summaries_ = sums
        self.sites_ = [s.site for s in sums]
        self.coef_names_ = list(sums[0].coef_names)
        K, d = len(sums), sums[0].d
        theta = np.stack([s.theta for s in sums])
        J = np.stack([s.J for s in sums])
        Omega = np.stack([s.Omega for s in sums])
        n = np.array([s.n for s in sums], dtype=float)
        H, V = site_matrices(J, Omega, n, self.loss_matrix, self.sites_)
        self.n_ = n
        self.dml_coef_, self.dml_vcov_ = theta, V
        self.H_ = H
        self.weights_ = n / n.sum()
        self.heterogeneity_ = heterogeneity(theta, V)

        shape, C, how = self._tuning(sums, theta, V, n, d)
        self.shape_, self.C_, self.tuning_ = shape, C, how
        self.lambda_ = C * shape if np.isfinite(C) else np.full(K, np.inf)
        self.problem_ = _core.FusionProblem(theta, H, self.weights_, shape)
        sol = self.problem_.solve(
            C, self.penalty, self.metric, tol=self.tol, max_iter=self.max_iter, threads=self._threads()
        )
        if not sol["converged"]:
            warnings.warn(
                f"fusion solver stopped after {sol['n_iter']} iterations before reaching tol={self.tol}",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.coef_ = sol["theta"]
        self.centre_ = sol["centre"]
        self.fused_ = sol["fused"]
        self.objective_ = sol["objective"]
        self.n_iter_ = sol["n_iter"]
        self._inference(V)
        return self

    def _tuning(self, sums, theta, V, n, d):
        """(shape, C, description) with λ_k = C · shape_k."""
        K = len(sums)
        if self.lambdas is not None:
            lam = np.asarray(self.lambdas, float)
            if lam.shape != (K,) or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
                raise ValueError(f"lambdas must be {K} positive finite numbers")
            return lam, 1.0, "explicit lambdas"
        if self.tau2 is not None:
            tau2 = estimate_tau2(theta, V, self.tau2) if isinstance(self.tau2, str) else float(self.tau2)
            self.tau2_ = tau2
            C = np.inf if tau2 == 0 else (0.0 if np.isinf(tau2) else 1.0 / tau2)
            how = f"tau2 = {tau2:.4g}" + (f" ({self.tau2.upper()})" if isinstance(self.tau2, str) else "")
            return 1.0 / (2.0 * n), C, how
        shape = np.sqrt(d / n)
        if self.C is not None:
            return shape, float(self.C), "fixed C"
        missing = [s.site for s in sums if not s.cv_folds]
        if len(missing) == K:
            warnings.warn("no site summary has cv_folds: using the fixed fallback C = 1", UserWarning, stacklevel=3)
            return shape, 1.0, "fallback C = 1 (no cv_folds)"
        if missing:
            raise SummaryValidationError(
                f"sites {missing} have no cv_folds; cross-validating C needs them at every site (or pass C=)"
            )
        self.cv_results_ = self._cross_validate(sums, d)
        C = self._pick_C(self.cv_results_)
        return shape, C, f"{len(self.cv_rounds_)}-fold CV ({self.cv_rule})"

    # ------------------------------------------------------------------ CV
    def _cross_validate(self, sums: list[SiteSummary], d: int) -> pd.DataFrame:
        """CV(C) = Σ_rounds Σ_k lw_k Q_k^{(v)}(θ̃_k^{(−v)}(C)) (``latefusion.md`` §3.5).

        Round r uses fold r mod V_k of site k, so sites with fewer folds reuse theirs; a site's
        held-out losses are weighted by n_k/N × (fold size / site's held-out total) / (number of
        rounds that use the fold), so every site contributes its full held-out loss with weight w_k.
        """
        grid = np.asarray(default_C_grid() if self.C_grid is None else self.C_grid, float)
        if grid.ndim != 1 or grid.size == 0 or np.any(~(grid >= 0)):
            raise ValueError("C_grid must be a non-empty 1-d sequence of values >= 0")
        K = len(sums)
        n = np.array([s.n for s in sums], float)
        w = n / n.sum()
        R = max(len(s.cv_folds) for s in sums)
        uses = [np.bincount(np.arange(R) % len(s.cv_folds), minlength=len(s.cv_folds)) for s in sums]
        test_tot = [sum(f.n_test for f in s.cv_folds) for s in sums]
        losses = np.empty((R, grid.size))
        for r in range(R):
            folds = [s.cv_folds[r % len(s.cv_folds)] for s in sums]
            fidx = [r % len(s.cv_folds) for s in sums]
            n_tr = np.array([f.n_train for f in folds], float)
            H, _ = site_matrices(
                np.stack([f.J for f in folds]), np.stack([f.Omega for f in folds]), n_tr, self.loss_matrix,
                self.sites_, what=f", cv fold {r}",
            )
            prob = _core.FusionProblem(np.stack([f.theta for f in folds]), H, n_tr / n_tr.sum(), np.sqrt(d / n_tr))
            lw = np.array(
                [w[k] * folds[k].n_test / test_tot[k] / uses[k][fidx[k]] for k in range(K)]
            )
            losses[r] = prob.path_losses(
                list(grid), self.penalty, self.metric,
                np.stack([f.A for f in folds]), np.stack([f.b for f in folds]),
                np.array([f.c for f in folds], float), lw, tol=max(self.tol, CV_TOL), max_iter=self.max_iter,
                threads=self._threads(),
            )
        self.cv_rounds_ = losses
        per_round = R * losses  # each round scaled to a full-data estimate
        table = pd.DataFrame(
            {
                "C": grid,
                "cv_loss": losses.sum(0),
                "cv_se": per_round.std(0, ddof=1) / np.sqrt(R) if R > 1 else np.nan,
            }
        )
        return table

    def _pick_C(self, table: pd.DataFrame) -> float:
        i = int(np.argmin(table["cv_loss"].to_numpy()))
        if self.cv_rule == "1se" and np.isfinite(table["cv_se"].iloc[i]):
            ok = table["cv_loss"] <= table["cv_loss"].iloc[i] + table["cv_se"].iloc[i]
            return float(table.loc[ok, "C"].max())
        return float(table["C"].iloc[i])

    # ------------------------------------------------------------------ inference
    def _inference(self, V: np.ndarray) -> None:
        K, d = self.coef_.shape
        self.inference_ = "delta" if self.penalty == "squared" else ("bootstrap" if self.n_boot > 0 else "none")
        if self.penalty == "squared":
            cov_sites, cov_centre, cross = self.problem_.squared_covariance(self.C_, V)
            self.vcov_, self.centre_vcov_, self.centre_cross_ = cov_sites, cov_centre, cross
        else:
            self.vcov_ = None
            self.centre_vcov_ = None
            if self.n_boot > 0:
                if K * d * self.n_boot > MAX_BOOT_VALUES:
                    raise ValueError(
                        f"n_boot={self.n_boot} would keep {K * d * self.n_boot} draws in memory; "
                        f"use n_boot <= {MAX_BOOT_VALUES // (K * d)} (or 0)"
                    )
                seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
                bs = self.problem_.bootstrap(
                    V, self.C_, self.penalty, self.metric, n_boot=int(self.n_boot), seed=seed,
                    tol=max(self.tol, 1e-10), max_iter=self.max_iter, threads=self._threads(),
                )
                self.boot_theta_ = bs["theta"]
                self.boot_centre_ = bs["centre"]
                self.boot_fused_share_ = np.asarray(bs["fused_count"], float) / self.n_boot
                if bs["n_not_converged"]:
                    warnings.warn(
                        f"{bs['n_not_converged']} of {self.n_boot} bootstrap refits did not converge",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        # post-fusion covariance of the centre over the fused set (any penalty; NaN if S empty)
        S = np.asarray(self.fused_, bool)
        if S.any():
            wH = self.weights_[S, None, None] * self.H_[S]
            A = np.linalg.inv(wH.sum(0))
            meat = np.einsum("kij,kjl,kml->im", wH, V[S], wH)
            self.postfusion_vcov_ = A @ meat @ A.T
        else:
            self.postfusion_vcov_ = np.full((d, d), np.nan)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This LateFusion instance is not fitted yet; call fit first.")

    def _index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_product([self.sites_, self.coef_names_], names=["site", "coef"])

    def _site_se_ci(self, level: float):
        """SE and CI bounds (K*d,) of the fused site estimates, by the penalty's method."""
        if self.penalty == "squared":
            se = np.sqrt(np.einsum("kii->ki", self.vcov_)).ravel()
            z = stats.norm.ppf(0.5 + level / 2)
            c = self.coef_.ravel()
            return se, c - z * se, c + z * se
        if self.inference_ == "bootstrap":
            a = (1 - level) / 2
            draws = self.boot_theta_.reshape(self.n_boot, -1)
            lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
            return draws.std(0, ddof=1), lo, hi
        nan = np.full(self.coef_.size, np.nan)
        return nan, nan, nan

    def _centre_se_ci(self, level: float):
        if self.penalty == "squared":
            se = np.sqrt(np.diag(self.centre_vcov_))
            z = stats.norm.ppf(0.5 + level / 2)
            return se, self.centre_ - z * se, self.centre_ + z * se
        if self.inference_ == "bootstrap":
            a = (1 - level) / 2
            lo, hi = np.quantile(self.boot_centre_, [a, 1 - a], axis=0)
            return self.boot_centre_.std(0, ddof=1), lo, hi
        nan = np.full(len(self.centre_), np.nan)
        return nan, nan, nan

    # ------------------------------------------------------------------ results
    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Per-site table: fused estimate (coef, std err, t, P>|t|, CI), ``fused`` flag, and the
        per-site DML estimate for comparison (``dml coef``, ``dml std err``, ``dml`` CI).

        Intervals: "squared" — Wald from the exact delta method (conditional on C); "group" —
        parametric-bootstrap SE and percentile CI (approximate; t and P>|t| use the bootstrap SE
        with a normal reference)."""
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        se, lo, hi = self._site_se_ci(level)
        table = coef_table(self.coef_.ravel(), se, self._index(), level)
        table.index = self._index()
        table[lo_name], table[hi_name] = lo, hi
        table["fused"] = np.repeat(np.asarray(self.fused_, bool), len(self.coef_names_))
        if self.inference_ == "bootstrap":
            table["boot fused share"] = np.repeat(self.boot_fused_share_, len(self.coef_names_))
        dml = coef_table(
            self.dml_coef_.ravel(), np.sqrt(np.einsum("kii->ki", self.dml_vcov_)).ravel(), self._index(), level
        )
        for col in ("coef", "std err", lo_name, hi_name):
            table[f"dml {col}"] = dml[col].to_numpy()
        return table

    def centre_frame(self, level: float = 0.95) -> pd.DataFrame:
        """The centre θ̃_0: coef, std err, t, P>|t|, CI (delta method for "squared", bootstrap for
        "group"), plus the post-fusion SE and Wald CI conditional on the fused set."""
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        se, lo, hi = self._centre_se_ci(level)
        table = coef_table(self.centre_, se, self.coef_names_, level)
        table[lo_name], table[hi_name] = lo, hi
        pse = np.sqrt(np.diag(self.postfusion_vcov_))
        z = stats.norm.ppf(0.5 + level / 2)
        table["post-fusion std err"] = pse
        table[f"post-fusion {lo_name}"] = self.centre_ - z * pse
        table[f"post-fusion {hi_name}"] = self.centre_ + z * pse
        table.index.name = "coef"
        return table

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Intervals of the fused site estimates and, in the last rows (site ``"(centre)"``), of
        the centre — by the penalty's inference method (see :meth:`summary_frame`)."""
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        _, lo, hi = self._site_se_ci(level)
        sites = pd.DataFrame({lo_name: lo, hi_name: hi}, index=self._index())
        _, clo, chi = self._centre_se_ci(level)
        centre = pd.DataFrame(
            {lo_name: clo, hi_name: chi},
            index=pd.MultiIndex.from_product([[CENTRE], self.coef_names_], names=["site", "coef"]),
        )
        return pd.concat([sites, centre])

    def prediction_interval(self, level: float = 0.95) -> pd.DataFrame:
        """BLUP prediction intervals for θ_k ("squared" with loss_matrix="vcov"): under θ_k ~
        N(θ_0, τ_k² I) with τ_k² = 1/(2 n_k λ_k), Var(θ̃_k − θ_k) = (V̂_k⁻¹ + τ_k⁻² I)⁻¹ +
        (I − P_k) W (I − P_k)', W = (Σ_j (V̂_j + τ_j² I)⁻¹)⁻¹ (``latefusion.md`` §5). Conditional
        on τ² (or C); valid under the random-effects model, not for arbitrary fixed θ_k."""
        self._check_fitted()
        if self.penalty != "squared" or self.loss_matrix != "vcov":
            raise ValueError("prediction intervals need penalty='squared' and loss_matrix='vcov'")
        K, d = self.coef_.shape
        I = np.eye(d)
        V = self.dml_vcov_
        if self.C_ == 0:
            var = V.copy()
        else:
            lam = self.lambda_
            tau2 = np.where(np.isinf(lam), 0.0, 1.0 / (2.0 * self.n_ * np.where(np.isinf(lam), 1.0, lam)))
            P, _ = self.problem_.squared_map(self.C_)
            W = np.linalg.inv(np.linalg.inv(V + tau2[:, None, None] * I).sum(0))
            R = I - P
            post = np.stack(
                [np.zeros((d, d)) if t == 0 else np.linalg.inv(np.linalg.inv(V[k]) + I / t) for k, t in enumerate(tau2)]
            )
            var = post + R @ W @ R.transpose(0, 2, 1)
        se = np.sqrt(np.einsum("kii->ki", var)).ravel()
        lo_name, hi_name = _level_names(level)
        z = stats.norm.ppf(0.5 + level / 2)
        c = self.coef_.ravel()
        return pd.DataFrame({"coef": c, "pred se": se, lo_name: c - z * se, hi_name: c + z * se}, index=self._index())

    def path(self, C_grid: Sequence[float] | None = None) -> dict[str, np.ndarray]:
        """Fused estimates along a grid of C (warm-started), for the shrinkage-path plot:
        dict(C, centre (nC, d), theta (nC, K, d), fused (nC, K))."""
        self._check_fitted()
        grid = default_C_grid() if C_grid is None else np.asarray(C_grid, float)
        out = self.problem_.path(
            list(grid), self.penalty, self.metric, tol=self.tol, max_iter=self.max_iter, threads=self._threads()
        )
        out["C"] = np.asarray(out["C"])
        return out

    def _summary_header(self) -> dict[str, object]:
        h = self.heterogeneity_
        head = {
            "penalty": self.penalty + (f" ({self.metric})" if self.penalty == "group" else ""),
            "loss matrix": self.loss_matrix,
            "sites": f"{len(self.sites_)} (N = {int(self.n_.sum())})",
            "tuning": f"{self.tuning_}; C = {self.C_:.4g}",
            "fused sites": f"{int(np.sum(self.fused_))} of {len(self.sites_)}",
            "heterogeneity": f"Q = {h['Q']:.4g} (df {h['df']:.0f}, p = {h['p-value']:.3g}), "
            f"I2 = {100 * h['I2']:.1f} %, tau2 (DL) = {h['tau2']:.4g}",
            "inference": {
                "delta": "exact delta method, conditional on C (intervals for the shrunk estimator)",
                "bootstrap": f"parametric bootstrap ({self.n_boot} draws, same C), approximate",
                "none": "none (n_boot = 0)",
            }[self.inference_],
        }
        return head

    def summary(self, level: float = 0.95) -> str:
        """Readable text: settings, heterogeneity, the centre and the per-site table."""
        self._check_fitted()
        centre = format_table("Fused centre", {}, self.centre_frame(level))
        return format_table("LateFusion", self._summary_header(), self.summary_frame(level)) + "\n" + centre
