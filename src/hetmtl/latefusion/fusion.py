"""Late-fusion aggregation (Step 2 of late-fusion MTL, Bhattacharya, Chen & Liang, arXiv
2507.07941): fuse per-site DML estimates from their summaries.

What to use when:
- ``LateFusion()`` — the robust default: unsquared *group* penalty with the metric-matched norm,
  λ_k = C·√(d/n_k), C tuned by summary-statistic cross-validation when the summaries carry
  ``cv_folds``. Outlying sites are left unfused instead of dragging the centre. Its valid
  intervals are the robust empirical-Bayes intervals of the random-effects estimates, shown
  beside the group estimates (no interval centred at the group estimate with a coverage guarantee
  is shorter than the per-site DML one).
- ``LateFusion(penalty="squared", tau2="reml")`` — random-effects (BLUP) shrinkage (τ² by REML,
  ``"dl"``, ``"pm"`` or a number), with robust empirical-Bayes intervals around the fused
  estimates (Armstrong, Kolesár & Plagborg-Møller 2022, Econometrica 90(6)) and the centre's
  random-effects interval (HKSJ by default). Not robust: one outlier site moves every estimate.
- Published estimates (estimate and SE per study): pass a DataFrame or
  :meth:`SummaryTable.from_estimates`; without CV statistics "squared" takes τ² from the
  random-effects model (``tau2="eb"``; ``tau2="reml"`` gives metafor's numbers, to 1e-6).
- ``metric="euclidean"`` — ARMUL's unweighted norm ‖θ_k − θ_0‖ (for fidelity to ARMUL);
  ``loss_matrix="jacobian"`` — ARMUL on the per-site orthogonal loss (C → ∞ gives pooled DML).

The objective, with w_k = n_k/N::

    min  Σ_k w_k [ ½ (θ_k − θ̂_k)' H_k (θ_k − θ̂_k) + pen_k(θ_k − θ_0) ]

H_k = Σ̂_k⁻¹ = Ĵ_k' Ω̂_k⁻¹ Ĵ_k ("vcov"; note w_k H_k = V̂_k⁻¹/N), −sym(Ĵ_k) ("jacobian") or I.
pen_k(v) = λ_k‖v‖² ("squared"), λ_k‖H_k^{1/2} v‖ ("group", "matched") or λ_k‖v‖ ("group",
"euclidean"). Both group metrics are solved exactly on the profiled centre objective (per-site
minimisers in closed form; for "euclidean" up to a 1-D secular equation on H_k's eigenbasis,
warm-started along C paths and bootstrap draws). The solvers, the C path, the CV losses and the
bootstrap loop are C++ (``hetmtl._core.FusionProblem``); the summaries are held as arrays
(:class:`~hetmtl.latefusion.table.SummaryTable`), validated once; only summaries are used, never
individual data.

The default penalty ("group") is chosen by the simulation study in
``benchmarks/results/fusion_stats.md``: "squared" has lower MSE when no site is an outlier (up to
about 20 %), "group" is about 50 % better with 10 % outlier sites and has the smaller worst-case
regret. Interval coverage of every interval the summary reports: ``benchmarks/results/fusion_inference.md``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state as _sk_random_state

from hetmtl import _core
from hetmtl._parallel import resolve_n_jobs
from hetmtl._progress import check_verbose, progress_bar
from hetmtl._validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_is_fitted,
    check_level,
    check_random_state,
)
from hetmtl.latefusion._params import array_param
from hetmtl.exceptions import ConvergenceWarning, ParameterError, SummaryValidationError
from hetmtl.inference import _level_names, coef_table, cva_values, ebci_moments, make_summary, robust_ebci
from hetmtl.inference.joint import check_n_boot, draws_critical_value
from hetmtl.latefusion.meta import estimate_tau2, heterogeneity, random_effects
from hetmtl.latefusion.summary import ESTIMATES, SiteSummary
from hetmtl.latefusion.table import CENTRE, SummaryTable, as_table, site_matrices

PENALTIES = ("group", "squared")
METRICS = ("matched", "euclidean")
LOSS_MATRICES = ("vcov", "jacobian", "identity")
TAU2_METHODS = ("eb", "dl", "pm", "reml")
CI_METHODS = ("robust_eb", "bootstrap", "conditional")
CONDITIONAL_COLUMNS = {"std err": "conditional std err"}
CENTRE_CI = ("hksj", "wald")
MAX_BOOT_VALUES = 100_000_000  # K * d * n_boot kept in memory (800 MB)
#: Solver tolerance of the CV paths (or ``tol`` if larger): the held-out losses move by ~1e-13
#: relative between 1e-12 and 1e-9 (measured at K = 10,000, d = 5),
#: far below any CV standard error, at 40 % less work.
CV_TOL = 1e-9


def default_C_grid() -> np.ndarray:
    """{0} ∪ 30 geometric points from 0.05 to 20."""
    return np.concatenate([[0.0], np.geomspace(0.05, 20.0, 30)])


# ----------------------------------------------------------------------------- summaries
def check_table(table: SummaryTable) -> None:
    """Refuse summaries that cannot be fused together; messages name the site at fault."""
    if table.K < 2:
        raise SummaryValidationError(f"late fusion needs at least 2 sites, got {table.K}")
    if CENTRE in set(table.sites.tolist()):
        raise SummaryValidationError(f"site name {CENTRE!r} is reserved for the fused centre")


def eb_tau2(theta: np.ndarray, V: np.ndarray) -> float:
    """τ² of the τ²·I model by the robust-EB moment estimator (Armstrong, Kolesár &
    Plagborg-Møller 2022: μ₂ = mean of (θ̂_kj − θ̄_j)² − V_kjj with the posterior-mean-truncation
    finite-sample correction), averaged over the coefficients. With it the squared-penalty
    estimates are the EB estimates whose robust intervals are near their shortest."""
    se = np.sqrt(np.einsum("kjj->kj", V))
    return float(np.mean([ebci_moments(theta[:, j], se[:, j]).mu2[0] for j in range(theta.shape[1])]))


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
    C : λ_k = C·√(d/n_k); ``np.inf`` = complete pooling, 0 = no fusion. ``"cv"``: chosen by
        summary-statistic V-fold CV over ``C_grid`` (needs every site's ``cv_folds``). None (the
        default): "group" cross-validates (without CV statistics, e.g. published estimates, it falls
        back to C = 1 with a warning); "squared" takes τ² from the random-effects model (``tau2="eb"``).
    tau2 : "squared" only: τ² parametrisation λ_k = 1/(2 n_k τ²) (random-effects model
        θ_k ~ N(θ_0, τ² I) when loss_matrix="vcov"): a number, "reml", "dl", "pm" (as metafor), or
        "eb" (the robust-EB moment estimator, :func:`eb_tau2`; the default, because its robust EB
        intervals are the shortest: 0.54–0.72× the per-site width where CV-tuned C gives 0.81–0.97×,
        ``benchmarks/results/fusion_inference.md``).
    lambdas : explicit per-site λ_k (overrides C and tau2).
    C_grid : CV grid (default {0} ∪ geometric(0.05, 20, 30)).
    cv_rule : "min" or "1se" (largest C within one SE of the minimum).
    ci : intervals of the fused site estimates. "robust_eb" (default): robust empirical-Bayes
        intervals (Armstrong, Kolesár & Plagborg-Møller 2022) — for "squared" around the fused
        estimates themselves, for "group" around the random-effects (squared, ``tau2="eb"``) estimates
        shown beside the group estimates, since no interval centred at the group estimate with a
        coverage guarantee is shorter than the per-site DML one (see :meth:`summary_frame`);
        "bootstrap": percentile intervals of a parametric bootstrap at the same C (approximate,
        labelled so); "conditional" ("squared" only): delta-method Wald intervals conditional on
        the site effects (intervals for E[θ̃_k], not for θ_k).
    centre_ci : interval of the centre under the random-effects model: "hksj" (Knapp–Hartung /
        Sidik–Jonkman, t quantiles; default) or "wald" (normal).
    site_covariates : (K, p) site-level covariates: robust EB intervals then shrink toward a
        regression X_k'δ instead of the common centre (an intercept is added).
    kappa : kurtosis bound of the robust EB intervals (None: estimated; ``np.inf``: second moment only).
    n_boot : parametric-bootstrap draws (None: 1000 with ci="bootstrap", else 0).
    random_state : None (fresh randomness), an int in [0, 2**32) or a numpy Generator/RandomState:
        the bootstrap's seed.
    verbose : 0 (default) silent; 1 a tqdm progress bar over the CV rounds (C="cv") and the
        bootstrap (one step when its draws are done: they run in one C++ call).
    n_jobs : threads of the C++ per-site loops (joblib's convention: None = 1, −1 = all
        cores, −2 = all but one). They split the sites into contiguous blocks of at least 2000, so they matter only
        for thousands of sites; results agree with one thread to solver tolerance (the block sums
        are added in a fixed order, so a given thread count always gives the same numbers).

    tol, max_iter : solver tolerance and iteration cap.

    Attributes
    ----------
    coef_ : ndarray (K, d)
        Fused site estimates θ̃_k.
    centre_ : ndarray (d,)
        Fused centre θ̃_0.
    fused_ : ndarray (K,) of bool
        Sites fused with the centre (θ̃_k = θ̃_0).
    C_, tau2_ : float
        Tuning constant (λ_k = ``C_`` · shape_k) and, for "squared" with the τ² parametrisation, τ².
    sites_, coef_names_ : list of str
        Site and coefficient names.
    dml_coef_, dml_vcov_ : ndarray
        Per-site DML estimates (K, d) and covariances (K, d, d).
    vcov_, centre_vcov_ : ndarray or None
        "squared": exact delta-method covariances given the site effects.
    random_effects_ : RandomEffects or None
        The random-effects model of the site estimates (:mod:`hetmtl.latefusion.meta`).
    heterogeneity_ : dict
        Cochran's Q, df, p-value, I², DerSimonian–Laird τ².
    cv_results_ : DataFrame
        CV losses over ``C_grid`` (when C was cross-validated).
    boot_theta_, boot_centre_ : ndarray
        Bootstrap draws (``ci="bootstrap"``).
    table_ : SummaryTable
        The summaries fitted, as arrays.

    Notes
    -----
    Which intervals are valid:

    - per-site DML intervals (columns ``dml …``): valid by standard DML theory (asymptotic in n_k);
    - robust EB intervals: average coverage over sites ≥ the nominal level whatever the
      distribution of the site effects (asymptotically in K; with few sites the estimated
      moments cost some coverage — measured in ``benchmarks/results/fusion_inference.md``);
    - the centre under the random-effects model: Wald or HKSJ with the random-effects SE
      (weights 1/(V̂_k + τ̂²)); the within-study SE conditional on the site effects is reported as
      ``conditional std err`` and is not an interval for the mean effect when sites differ;
    - "group" centre: the post-fusion SE conditional on the fused set (labelled so);
    - ci="bootstrap" and ci="conditional" intervals are labelled approximate / conditional.

    Joint (simultaneous) intervals, ``confint(joint=True)``: fused estimates have no
    per-observation scores, so the sup-t critical value comes from their joint law instead —
    ci="bootstrap": the bootstrap draws (max over sites, coefficients and the centre of
    ``|draw - estimate| / bootstrap SD``); ci="conditional": simulation from N(0, Cov) of the fused
    estimates and the centre, Cov the exact delta-method covariance given the site effects (the
    squared-penalty map is linear). Robust EB intervals control average, not simultaneous,
    coverage: ci="robust_eb" has no joint version (a ParameterError says so).
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
        ci: str = "robust_eb",
        centre_ci: str = "hksj",
        site_covariates: np.ndarray | None = None,
        kappa: float | None = None,
        n_boot: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        tol: float = 1e-12,
        max_iter: int = 1000,
        n_jobs: int | None = None,
        verbose: int = 0,
    ):
        self.penalty = penalty
        self.loss_matrix = loss_matrix
        self.metric = metric
        self.C = C
        self.tau2 = tau2
        self.lambdas = lambdas
        self.C_grid = C_grid
        self.cv_rule = cv_rule
        self.ci = ci
        self.centre_ci = centre_ci
        self.site_covariates = site_covariates
        self.kappa = kappa
        self.n_boot = n_boot
        self.random_state = random_state
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def _threads(self) -> int:
        return resolve_n_jobs(self.n_jobs)

    @property
    def _max_iter(self) -> int:
        """max_iter as the int the C++ solver takes (2.0 → 2); validated with its name."""
        return int(check_int(self.max_iter, "max_iter", low=1, high=10_000_000))  # type: ignore[arg-type]

    @property
    def _n_boot(self) -> int:
        return (1000 if self.ci == "bootstrap" else 0) if self.n_boot is None else int(self.n_boot)

    def _check_params(self) -> None:
        """Validate every parameter (ParameterError naming it)."""
        self._threads()
        check_choice(self.penalty, "penalty", PENALTIES)
        check_choice(self.metric, "metric", METRICS)
        check_choice(self.loss_matrix, "loss_matrix", LOSS_MATRICES)
        check_choice(self.cv_rule, "cv_rule", ("min", "1se"))
        check_choice(self.ci, "ci", CI_METHODS)
        if self.ci == "conditional" and self.penalty != "squared":
            raise ParameterError("ci='conditional' (delta method) exists for penalty='squared' only")
        check_choice(self.centre_ci, "centre_ci", CENTRE_CI)
        check_float(self.kappa, "kappa", low=1.0, allow_none=True, allow_inf=True)
        if isinstance(self.C, str):
            check_choice(self.C, "C", ("cv",))
        else:
            check_float(self.C, "C", low=0.0, allow_none=True, allow_inf=True)
        if self.tau2 is not None:
            if self.penalty != "squared":
                raise ParameterError("tau2 applies to penalty='squared' only")
            if isinstance(self.tau2, str):
                check_choice(self.tau2, "tau2", TAU2_METHODS)
                if self.loss_matrix != "vcov":
                    raise ParameterError("estimating tau2 needs loss_matrix='vcov' (the random-effects model)")
            else:
                check_float(self.tau2, "tau2", low=0.0, allow_inf=True)
        if self.n_boot is not None:
            n_boot = check_int(self.n_boot, "n_boot", low=0, high=10_000_000)
            if n_boot == 1:
                raise ParameterError("n_boot must be 0 (no bootstrap) or >= 2 (a bootstrap SD needs two draws), got 1")
        if self.ci == "bootstrap" and self._n_boot < 2:
            raise ParameterError(f"ci='bootstrap' needs n_boot >= 2, got {self.n_boot!r}")
        check_float(self.tol, "tol", low=0.0, low_open=True, high=1.0)
        check_int(self.max_iter, "max_iter", low=1, high=10_000_000)
        check_verbose(self.verbose)
        if self.random_state is not None and not isinstance(self.random_state, (np.random.Generator, np.random.RandomState)):
            check_random_state(self.random_state)
        if self.C_grid is not None:
            try:
                grid = None if isinstance(self.C_grid, (str, bytes)) else np.asarray(self.C_grid)
                if grid is not None:
                    grid = None if grid.dtype.kind in "cmMUSV" else grid.astype(float)
            except (TypeError, ValueError, OverflowError):  # text, complex, huge integers
                grid = None
            if grid is None or grid.ndim != 1 or grid.size == 0 or np.any(~(grid >= 0)):
                raise ParameterError("C_grid must be a non-empty 1-d sequence of values >= 0 (np.inf allowed)")

    @property
    def _fixed_C(self) -> bool:
        return self.C is not None and not isinstance(self.C, str)

    def _check_table_params(self, table: SummaryTable) -> None:
        """Settings that need the sites' sample sizes are refused for estimates given without n."""
        if table.n_given:
            return
        if self.loss_matrix != "vcov":
            raise ParameterError(f"loss_matrix={self.loss_matrix!r} needs the sites' n; these summaries have none")
        if self.penalty == "group" and self.metric == "euclidean":
            raise ParameterError("metric='euclidean' needs the sites' n; these summaries have none (use 'matched')")
        if self.penalty == "squared" and (self._fixed_C or self.lambdas is not None):
            raise ParameterError("penalty='squared' with C or lambdas needs the sites' n; pass tau2 instead")

    # ------------------------------------------------------------------ fit
    def fit(self, summaries: "SummaryTable | pd.DataFrame | Sequence[SiteSummary | str | Path]") -> "LateFusion":
        """Fuse the site estimates. ``summaries``: a :class:`SummaryTable`, SiteSummary objects,
        summary JSON paths, or a long DataFrame of published estimates (site, [coefficient,]
        estimate, se)."""
        self._check_params()
        for stale in ("tau2_", "cv_results_", "cv_rounds_", "boot_theta_", "boot_centre_", "boot_fused_share_"):
            self.__dict__.pop(stale, None)  # a refit must not report the previous fit's tuning
        table = as_table(summaries)
        check_table(table)
        self._check_table_params(table)
        self.table_ = table
        self.sites_ = table.sites.tolist()
        self.coef_names_ = list(table.coef_names)
        K, d = table.K, table.d
        theta = table.theta
        n = table.n.astype(float)
        H, V = table.site_matrices(self.loss_matrix)
        self.n_ = n
        self.dml_coef_, self.dml_vcov_ = theta, V
        self.H_ = H
        self.weights_ = n / n.sum()
        self._lazy: dict[str, Any] = {}

        shape, C, how = self._tuning(table, theta, V, n, d)
        self.shape_, self.C_, self.tuning_ = shape, C, how
        self.lambda_ = C * shape if np.isfinite(C) else np.full(K, np.inf)
        self.problem_ = table.fusion_problem(self.loss_matrix, shape)
        sol = self.problem_.solve(
            C, self.penalty, self.metric, tol=self.tol, max_iter=self._max_iter, threads=self._threads()
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

    def _tuning(self, table: SummaryTable, theta, V, n, d):
        """(shape, C, description) with λ_k = C · shape_k."""
        K = table.K
        if self.lambdas is not None:
            lam = array_param(self.lambdas, "lambdas", ndim=(0, 1, 2))
            if lam.shape != (K,) or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
                raise ParameterError(f"lambdas must be {K} positive finite numbers")
            return lam, 1.0, "explicit lambdas"
        tau2_rule = self.tau2
        if tau2_rule is None and self.C is None and self.penalty == "squared":
            tau2_rule = "eb"  # the random-effects tuning whose robust EB intervals are near their shortest
        if tau2_rule is not None:
            if tau2_rule == "eb":
                tau2 = eb_tau2(theta, V)
            else:
                tau2 = estimate_tau2(theta, V, tau2_rule) if isinstance(tau2_rule, str) else float(tau2_rule)
            self.tau2_ = tau2
            C = np.inf if tau2 == 0 else (0.0 if np.isinf(tau2) else 1.0 / tau2)
            how = f"tau2 = {tau2:.4g}" + (f" ({tau2_rule.upper()})" if isinstance(tau2_rule, str) else "")
            if self.tau2 is None:
                how += ", the default of penalty='squared' (C='cv' cross-validates instead)"
            return 1.0 / (2.0 * n), C, how
        shape = np.sqrt(d / n)
        if self._fixed_C:
            return shape, float(self.C), "fixed C"  # type: ignore[arg-type]  # _fixed_C: C is a number
        if table.folds is None:
            warnings.warn(
                "the summaries carry no cv_folds (e.g. published estimates): using the fixed fallback C = 1 "
                "(pass C=, or penalty='squared' to take tau2 from the random-effects model)",
                UserWarning, stacklevel=3,
            )
            return shape, 1.0, "fallback C = 1 (no CV statistics in the summaries)"
        missing = table.sites[table.folds.counts == 0].tolist()
        if missing:
            raise SummaryValidationError(
                f"sites {missing} have no cv_folds; cross-validating C needs them at every site (or pass C=)"
            )
        self.cv_results_ = self._cross_validate(table, d)
        C = self._pick_C(self.cv_results_)
        return shape, C, f"{len(self.cv_rounds_)}-fold CV ({self.cv_rule})"

    # ------------------------------------------------------------------ CV
    def _cross_validate(self, table: SummaryTable, d: int) -> pd.DataFrame:
        """CV(C) = Σ_rounds Σ_k lw_k Q_k^{(v)}(θ̃_k^{(−v)}(C)).

        Round r uses fold r mod V_k of site k, so sites with fewer folds reuse theirs; a site's
        held-out losses are weighted by n_k/N × (fold size / site's held-out total) / (number of
        rounds that use the fold), so every site contributes its full held-out loss with weight w_k.
        """
        grid = np.asarray(default_C_grid() if self.C_grid is None else self.C_grid, float)
        if grid.ndim != 1 or grid.size == 0 or np.any(~(grid >= 0)):
            raise ParameterError("C_grid must be a non-empty 1-d sequence of values >= 0")
        folds = table.folds
        assert folds is not None  # cross-validation needs the fold tables (checked by the caller)
        counts = folds.counts
        n = table.n.astype(float)
        w = n / n.sum()
        R = int(counts.max())
        test_tot = np.add.reduceat(folds.n_test, folds.offsets[:-1]).astype(float)
        losses = np.empty((R, grid.size))
        bar = progress_bar(R, "LateFusion CV", self.verbose, unit="round")
        for r in range(R):
            fidx = r % counts
            f = folds.take(folds.offsets[:-1] + fidx)
            uses = (R - fidx + counts - 1) // counts  # rounds that use this fold of each site
            n_tr = f.n_train.astype(float)
            H, _ = site_matrices(f.J, f.Omega, n_tr, self.loss_matrix, self.sites_, what=f", cv fold {r}")
            prob = _core.FusionProblem(f.theta, H, n_tr / n_tr.sum(), np.sqrt(d / n_tr))
            lw = w * f.n_test / test_tot / uses
            losses[r] = prob.path_losses(
                list(grid), self.penalty, self.metric, f.A, f.b, f.c, lw,
                tol=max(self.tol, CV_TOL), max_iter=self._max_iter, threads=self._threads(),
            )
            bar.update(1)
        bar.close()
        self.cv_rounds_ = losses
        per_round = R * losses  # each round scaled to a full-data estimate
        return pd.DataFrame(
            {
                "C": grid,
                "cv_loss": losses.sum(0),
                "cv_se": per_round.std(0, ddof=1) / np.sqrt(R) if R > 1 else np.nan,
            }
        )

    def _pick_C(self, table: pd.DataFrame) -> float:
        i = int(np.argmin(table["cv_loss"].to_numpy()))
        if self.cv_rule == "1se" and np.isfinite(table["cv_se"].iloc[i]):
            ok = table["cv_loss"] <= table["cv_loss"].iloc[i] + table["cv_se"].iloc[i]
            return float(table.loc[ok, "C"].max())
        return float(table["C"].iloc[i])

    # ------------------------------------------------------------------ inference
    def _cached(self, key: str, make):
        """Summary-time quantities, computed on first use (a fit itself stays as cheap as the solve)."""
        self._check_fitted()
        if key not in self._lazy:
            self._lazy[key] = make()
        return self._lazy[key]

    @property
    def heterogeneity_(self) -> dict[str, float]:
        """Cochran's Q (df, p-value), I² and the DerSimonian–Laird τ² of the site estimates."""
        return self._cached("heterogeneity", lambda: heterogeneity(self.dml_coef_, self.dml_vcov_))

    @property
    def random_effects_(self):
        """The random-effects model θ_k ~ N(θ_0, τ² I) of the site estimates
        (:class:`~hetmtl.latefusion.meta.RandomEffects`; τ² from the fit for "squared" with tau2,
        else REML), or None with fewer than 3 sites."""

        def make():
            if len(self.sites_) < 3:
                return None
            tau2 = self.tau2_ if (self.penalty == "squared" and hasattr(self, "tau2_")) else "reml"
            return random_effects(
                self.dml_coef_, self.dml_vcov_, tau2=tau2, test="knha" if self.centre_ci == "hksj" else "z",
                coef_names=self.coef_names_, sites=self.sites_,
            )

        return self._cached("random_effects", make)

    @property
    def eb_fit_(self) -> "LateFusion | None":
        """"group": the squared-penalty (random-effects, ``tau2="eb"``) fit whose robust
        EB intervals are reported beside the group estimates; None otherwise."""

        def make():
            if self.penalty != "group" or len(self.sites_) < 3:
                return None
            return clone(self).set_params(
                penalty="squared", tau2="eb", C=None, lambdas=None, metric="matched", loss_matrix="vcov",
                n_boot=None,
            ).fit(self.table_)

        return self._cached("eb_fit", make)

    def _squared_covariance(self):
        if self.penalty != "squared":
            return None, None, None
        return self._cached("squared_cov", lambda: self.problem_.squared_covariance(self.C_, self.dml_vcov_))

    @property
    def vcov_(self) -> np.ndarray | None:
        """"squared": Cov(θ̃_k) (K, d, d) by the exact delta method, given the site effects; None for "group"."""
        return self._squared_covariance()[0]

    @property
    def centre_vcov_(self) -> np.ndarray | None:
        """"squared": Cov(θ̃_0) (d, d) given the site effects (the within-study, conditional one)."""
        return self._squared_covariance()[1]

    @property
    def centre_cross_(self) -> np.ndarray | None:
        """"squared": Cov(θ̃_k, θ̃_0) (K, d, d) given the site effects."""
        return self._squared_covariance()[2]

    def _inference(self, V: np.ndarray) -> None:
        K, d = self.coef_.shape
        self.inference_ = self.ci
        n_boot = self._n_boot
        if n_boot > 0:
            if K * d * n_boot > MAX_BOOT_VALUES:
                raise ParameterError(
                    f"n_boot={n_boot} would keep {K * d * n_boot} draws in memory; "
                    f"use n_boot <= {MAX_BOOT_VALUES // (K * d)} (or 0)"
                )
            if isinstance(self.random_state, np.random.Generator):
                seed = int(self.random_state.integers(np.iinfo(np.int32).max))
            else:  # an int seed gives the same draws as before (sklearn's RandomState)
                seed = int(_sk_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            with progress_bar(n_boot, "LateFusion bootstrap", self.verbose, unit="draw") as bar:
                bs = self.problem_.bootstrap(
                    V, self.C_, self.penalty, self.metric, n_boot=n_boot, seed=seed,
                    tol=max(self.tol, 1e-10), max_iter=self._max_iter, threads=self._threads(),
                )
                bar.update(n_boot)
            self.boot_theta_ = bs["theta"]
            self.boot_centre_ = bs["centre"]
            self.boot_fused_share_ = np.asarray(bs["fused_count"], float) / n_boot
            if bs["n_not_converged"]:
                warnings.warn(
                    f"{bs['n_not_converged']} of {n_boot} bootstrap refits did not converge",
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

    def __getstate__(self) -> dict:
        """Picklable (joblib, Dask, copy.deepcopy): the C++ problem and the caches are rebuilt on load."""
        state = self.__dict__.copy()
        state.pop("problem_", None)
        state["_lazy"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "table_" in state:
            self.problem_ = self.table_.fusion_problem(self.loss_matrix, self.shape_)

    def _check_fitted(self) -> None:
        check_is_fitted(self, "coef_")

    def _index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_product([self.sites_, self.coef_names_], names=["site", "coef"])

    def _site_covariates(self) -> np.ndarray | None:
        if self.site_covariates is None:
            return None
        X = array_param(self.site_covariates, "site_covariates", ndim=(0, 1, 2, 3))
        X = X[:, None] if X.ndim == 1 else X
        K = len(self.sites_)
        if X.ndim != 2 or X.shape[0] != K or not np.all(np.isfinite(X)):
            raise ParameterError(f"site_covariates must be a finite ({K}, p) array, one row per site")
        return np.column_stack([np.ones(K), X])

    def robust_eb_frame(self, level: float = 0.95, contrast: Sequence[float] | None = None, wopt: bool = False) -> pd.DataFrame:
        """Robust empirical-Bayes confidence intervals (Armstrong, Kolesár & Plagborg-Møller 2022)
        per site and coefficient, or for a contrast c'θ_k (``contrast``, length d).

        Shrinking toward the fitted centre (no ``site_covariates``, ``wopt=False``), the intervals
        surround the squared-penalty (random-effects) fused estimates θ̃_k = P_k θ̂_k + (I − P_k) θ̂_0
        themselves: with s² = Var(c'θ̃_k) (delta method) and the normalised bias
        t = c'(I − P_k)(Σ_j G_j δ_j − δ_k)/s of the site effects δ_k = θ_k − θ_0, whose second
        moment follows from μ₂ = E[δ_kj²] (per coefficient, estimated with the finite-sample
        correction), the interval is c'θ̃_k ± cva(E[t²], κ)·s. With ``site_covariates`` or
        ``wopt=True`` each coefficient (or the contrast) is a scalar robust EB problem of its own
        (:func:`hetmtl.inference.robust_ebci`), and ``estimate`` is its EB (or length-optimal)
        estimate. Columns: estimate, std err, m2, kappa, cva, CI bounds, dml std err.
        """
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        alpha = 1.0 - level
        theta, V = self.dml_coef_, self.dml_vcov_
        K, d = theta.shape
        if contrast is None:
            C = np.eye(d)
            names = list(self.coef_names_)
        else:
            c = np.asarray(contrast, float).ravel()
            if c.shape != (d,) or not np.all(np.isfinite(c)) or not np.any(c):
                raise ParameterError(f"contrast must be {d} finite numbers, not all zero")
            C = c[None, :]
            names = ["contrast"]
        m = C.shape[0]
        y = theta @ C.T  # (K, m)
        se = np.sqrt(np.einsum("ia,kab,ib->ki", C, V, C))
        index = pd.MultiIndex.from_product([self.sites_, names], names=["site", "coef"])
        if K < 3:
            nan = np.full(K * m, np.nan)
            return pd.DataFrame({"estimate": nan, "std err": nan, lo_name: nan, hi_name: nan}, index=index)
        X = self._site_covariates()
        if X is not None or wopt:
            est, s, m2, kap, cv, lo, hi = (np.empty((K, m)) for _ in range(7))
            for i in range(m):
                r = robust_ebci(y[:, i], se[:, i], X=X, alpha=alpha, kappa=self.kappa, wopt=wopt)
                f = r.frame
                w = f["w_opt" if wopt else "w_eb"].to_numpy()
                est[:, i] = f["th_op" if wopt else "th_eb"].to_numpy()
                half = f["len_op" if wopt else "len_eb"].to_numpy()
                s[:, i] = w * se[:, i]
                m2[:, i] = (1.0 / w - 1.0) ** 2 * r.mu2[0] / se[:, i] ** 2
                kap[:, i] = r.kappa[0]
                cv[:, i] = half / s[:, i]
                lo[:, i], hi[:, i] = est[:, i] - half, est[:, i] + half
        else:
            src = self if self.penalty == "squared" else self.eb_fit_
            assert src is not None  # a "group" fit of 3 sites or more (fewer returned above)
            P, G = src.problem_.squared_map(src.C_)
            est = src.coef_ @ C.T
            src_vcov = src.vcov_
            assert src_vcov is not None  # src is a "squared" fit
            s = np.sqrt(np.einsum("ia,kab,ib->ki", C, src_vcov, C))
            mu2 = np.empty(d)
            kap_coef = np.empty(d)
            for j in range(d):
                mom = ebci_moments(theta[:, j], np.sqrt(V[:, j, j]))
                mu2[j], kap_coef[j] = mom.mu2[0], mom.kappa[0]
            M = np.diag(mu2)
            R = np.eye(d) - P
            GMG = np.einsum("jab,b,jcb->ac", G, mu2, G)
            inner = GMG[None] - G @ M - M @ G.transpose(0, 2, 1) + M[None]
            Ebb = np.einsum("ia,kab,ib->ki", C, R @ inner @ R.transpose(0, 2, 1), C)
            with np.errstate(divide="ignore", invalid="ignore"):
                m2 = np.where(s > 0, np.maximum(Ebb, 0.0) / s**2, 0.0)
            if self.kappa is not None:
                kap = np.full((K, m), float(self.kappa))
            elif contrast is None:
                kap = np.broadcast_to(kap_coef, (K, m)).copy()
            else:
                kap = np.full((K, m), ebci_moments(y[:, 0], se[:, 0]).kappa[0])
            cv = cva_values(m2.ravel(), kap.ravel(), alpha).reshape(K, m)
            lo, hi = est - cv * s, est + cv * s
        return pd.DataFrame(
            {
                "estimate": est.ravel(), "std err": s.ravel(), "m2": m2.ravel(), "kappa": kap.ravel(),
                "cva": cv.ravel(), lo_name: lo.ravel(), hi_name: hi.ravel(), "dml std err": se.ravel(),
            },
            index=index,
        )

    def _bootstrap_ci(self, draws: np.ndarray, level: float):
        a = (1 - level) / 2
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        return draws.std(0, ddof=1), lo, hi

    # ------------------------------------------------------------------ results
    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        """Per-site table: the fused estimate ``coef`` and ``fused`` flag, the interval of the
        chosen ``ci`` method, and the per-site DML estimate (``dml coef``, ``dml std err``, ``dml``
        CI) beside it.

        - "squared", ci="robust_eb": ``std err`` (of the fused estimate) and the robust EB
          interval around ``coef``; no test statistic (the interval accounts for the shrinkage
          bias, a z test would not).
        - "group", ci="robust_eb": ``robust EB coef`` and its interval beside ``coef``. The group
          estimate itself has no interval shorter than per-site DML with a coverage guarantee: by
          its KKT conditions it moves θ̂_k by at most λ_k‖H_k^{-1/2}e_j‖ = C√d·se_kj (matched
          metric), so the only interval that covers whenever DML's does, θ̃_kj ± (z + C√d)·se_kj,
          is longer than DML's; the random-effects estimate's robust EB interval is the valid,
          shorter one, and the summary says so.
        - ci="bootstrap": ``boot std err`` and percentile bounds ``boot …`` (approximate).
        - ci="conditional": coef, std err, z, P>|z| and Wald CI from the delta method,
          conditional on the site effects (an interval for E[θ̃_k]).
        """
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        index = self._index()
        coef = self.coef_.ravel()
        if self.ci == "conditional":
            se = np.sqrt(np.einsum("kii->ki", self.vcov_)).ravel()  # type: ignore[arg-type]  # ci="conditional": "squared"
            table = coef_table(coef, se, index, level)
            table.index = index
            table.columns = [CONDITIONAL_COLUMNS.get(c, c) for c in table.columns]
        else:
            table = pd.DataFrame({"coef": coef}, index=index)
        table["fused"] = np.repeat(np.asarray(self.fused_, bool), len(self.coef_names_))
        if self.ci == "robust_eb":
            eb = self.robust_eb_frame(level)
            if self.penalty == "squared" and self.site_covariates is None:
                table["std err"] = eb["std err"].to_numpy()
                table[lo_name], table[hi_name] = eb[lo_name].to_numpy(), eb[hi_name].to_numpy()
            else:
                for col in ("estimate", "std err", lo_name, hi_name):
                    table[f"robust EB {'coef' if col == 'estimate' else col}"] = eb[col].to_numpy()
        elif self.ci == "bootstrap":
            se, lo, hi = self._bootstrap_ci(self.boot_theta_.reshape(self._n_boot, -1), level)
            table["boot std err"], table[f"boot {lo_name}"], table[f"boot {hi_name}"] = se, lo, hi
            table["boot fused share"] = np.repeat(self.boot_fused_share_, len(self.coef_names_))
        dml = coef_table(
            self.dml_coef_.ravel(), np.sqrt(np.einsum("kii->ki", self.dml_vcov_)).ravel(), index, level
        )
        for col in ("coef", "std err", lo_name, hi_name):
            table[f"dml {col}"] = dml[col].to_numpy()
        return table

    def centre_frame(self, level: float = 0.95) -> pd.DataFrame:
        """The centre θ̃_0 with its inference:

        - "squared" with the random-effects model (τ² estimated or given, loss_matrix="vcov"):
          ``std err`` is the random-effects SE (weights 1/(V̂_k + τ̂²)), HKSJ-scaled with t_{K−1}
          quantiles for ``centre_ci="hksj"``; ``conditional std err`` is the within-study SE given
          the site effects (exact delta method; not an interval for the mean effect when sites differ);
        - "squared" with C, and "group": the SE conditional on the site effects (``conditional std
          err``, delta method) or on the fused set (``post-fusion std err``) with their intervals —
          each labelled — and beside them the random-effects mean ``RE coef`` (REML) with its
          interval, the valid one for the mean effect;
        - ci="bootstrap": percentile bounds ``boot …`` added.
        """
        self._check_fitted()
        lo_name, hi_name = _level_names(level)
        names = pd.Index(self.coef_names_, name="coef")
        re = self.random_effects_
        table = pd.DataFrame({"coef": self.centre_}, index=names)
        if self.penalty == "squared" and hasattr(self, "tau2_") and re is not None:
            re_t = re.summary_frame(level)
            table = pd.concat([table, re_t.drop(columns=["coef"]).set_axis(names)], axis=1)
            table["conditional std err"] = np.sqrt(np.diag(self.centre_vcov_))  # type: ignore[arg-type]  # "squared"
        else:
            z = stats.norm.ppf(0.5 + level / 2)
            pre, cov = ("conditional", self.centre_vcov_) if self.penalty == "squared" else ("post-fusion", self.postfusion_vcov_)
            se = np.sqrt(np.diag(cov))  # type: ignore[arg-type]  # not None for the penalty
            table[f"{pre} std err"] = se
            table[f"{pre} {lo_name}"], table[f"{pre} {hi_name}"] = self.centre_ - z * se, self.centre_ + z * se
            if re is not None:
                re_t = re.summary_frame(level).set_axis(names)
                table["RE coef"] = re_t["coef"]
                table["RE std err"] = re_t["std err"]
                table[f"RE {lo_name}"], table[f"RE {hi_name}"] = re_t[lo_name], re_t[hi_name]
        if self.ci == "bootstrap":
            _, lo, hi = self._bootstrap_ci(self.boot_centre_, level)
            table[f"boot {lo_name}"], table[f"boot {hi_name}"] = lo, hi
        return table

    def confint(self, level: float = 0.95, joint: bool = False, n_boot: int = 1000,
                random_state: Any = None) -> pd.DataFrame:
        """The intervals the summary reports as valid or labelled: for the sites, the ``ci``
        method's (robust EB: around the estimate in column ``estimate``); for the centre (rows
        ``"(centre)"``), the random-effects interval where the random-effects model applies, else
        the conditional one.

        ``joint=True``: simultaneous intervals over every site's coefficients and the centre's,
        estimate ± c·SD with a sup-t critical value c — from the bootstrap draws (ci="bootstrap";
        ``n_boot``/``random_state`` unused, the fit's draws are used) or simulated from the
        delta-method covariance given the site effects (ci="conditional"; ``n_boot`` draws from
        ``random_state``). Not available for ci="robust_eb" (average coverage, no joint version).
        """
        self._check_fitted()
        level = check_level(level)
        if check_bool(joint, "joint"):
            return self._joint_confint(level, n_boot, random_state)
        lo_name, hi_name = _level_names(level)
        t = self.summary_frame(level)
        if self.ci == "robust_eb" and f"robust EB {lo_name}" in t:
            sites = pd.DataFrame({"estimate": t["robust EB coef"], lo_name: t[f"robust EB {lo_name}"],
                                  hi_name: t[f"robust EB {hi_name}"]})
        elif self.ci == "bootstrap":
            sites = pd.DataFrame({"estimate": t["coef"], lo_name: t[f"boot {lo_name}"], hi_name: t[f"boot {hi_name}"]})
        else:
            sites = t[["coef", lo_name, hi_name]].rename(columns={"coef": "estimate"})
        c = self.centre_frame(level)
        if lo_name in c:
            cl = c[["coef", lo_name, hi_name]].rename(columns={"coef": "estimate"})
        elif f"RE {lo_name}" in c:
            cl = pd.DataFrame({"estimate": c["RE coef"], lo_name: c[f"RE {lo_name}"], hi_name: c[f"RE {hi_name}"]})
        else:
            pre = "post-fusion" if self.penalty == "group" else "conditional"
            cl = pd.DataFrame({"estimate": c["coef"], lo_name: c[f"{pre} {lo_name}"], hi_name: c[f"{pre} {hi_name}"]})
        cl.index = pd.MultiIndex.from_product([[CENTRE], self.coef_names_], names=["site", "coef"])
        return pd.concat([sites, cl])

    def _joint_index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_tuples(
            [*self._index().tolist(), *[(CENTRE, c) for c in self.coef_names_]], names=["site", "coef"]
        )

    def _joint_confint(self, level: float, n_boot: Any, random_state: Any) -> pd.DataFrame:
        """Sup-t simultaneous intervals (see :meth:`confint`)."""
        est = np.concatenate([self.coef_.ravel(), self.centre_])
        if self.ci == "bootstrap":
            draws = np.concatenate([self.boot_theta_.reshape(self._n_boot, -1), self.boot_centre_], axis=1)
            sd = draws.std(axis=0, ddof=1)
            c = draws_critical_value(draws, est, sd, level)
        elif self.ci == "conditional":
            n_boot = check_n_boot(n_boot)
            rng = check_random_state(random_state)
            sd = np.concatenate([np.sqrt(np.einsum("kii->ki", self.vcov_)).ravel(),  # type: ignore[arg-type]
                                 np.sqrt(np.diag(self.centre_vcov_))])  # type: ignore[arg-type]
            c = self._conditional_sup_t(sd, level, n_boot, rng)
        else:
            raise ParameterError(
                "joint=True needs ci='bootstrap' or ci='conditional': robust EB intervals control average coverage "
                "over sites and have no simultaneous version"
            )
        lo_name, hi_name = _level_names(level)
        return pd.DataFrame({"estimate": est, lo_name: est - c * sd, hi_name: est + c * sd}, index=self._joint_index())

    def _conditional_sup_t(self, sd: np.ndarray, level: float, n_boot: int, rng: np.random.Generator) -> float:
        """Sup-t critical value of the squared-penalty estimates given the site effects: the map
        θ̂ ↦ (θ̃_k = P_k θ̂_k + (I − P_k) θ̂_0, θ̃_0 = Σ_j G_j θ̂_j) is linear, so the draws are that
        map applied to ξ_k ~ N(0, V̂_k), independent over sites."""
        P, G = self.problem_.squared_map(self.C_)
        K, d = self.coef_.shape
        L = np.linalg.cholesky(self.dml_vcov_)
        I = np.eye(d)
        ok = sd > 0
        stats_ = np.empty(n_boot)
        chunk = max(1, 2_000_000 // max(1, K * d))
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            xi = np.einsum("kab,nkb->nka", L, rng.standard_normal((b, K, d)))
            c0 = np.einsum("kab,nkb->na", G, xi)
            site = np.einsum("kab,nkb->nka", P, xi) + np.einsum("kab,nb->nka", I[None] - P, c0)
            t = np.concatenate([site.reshape(b, -1), c0], axis=1)
            stats_[start:start + b] = (np.abs(t[:, ok]) / sd[ok]).max(axis=1)
        return float(np.quantile(stats_, level))

    def prediction_interval(self, level: float = 0.95) -> pd.DataFrame:
        """BLUP prediction intervals for θ_k ("squared" with loss_matrix="vcov"): under θ_k ~
        N(θ_0, τ_k² I) with τ_k² = 1/(2 n_k λ_k), Var(θ̃_k − θ_k) = (V̂_k⁻¹ + τ_k⁻² I)⁻¹ +
        (I − P_k) W (I − P_k)', W = (Σ_j (V̂_j + τ_j² I)⁻¹)⁻¹ . Conditional
        on τ² (or C); valid under the random-effects model, not for arbitrary fixed θ_k."""
        self._check_fitted()
        if self.penalty != "squared" or self.loss_matrix != "vcov":
            raise ParameterError("prediction intervals need penalty='squared' and loss_matrix='vcov'")
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
            pos = tau2 > 0  # posterior covariance (V̂_k⁻¹ + I/τ_k²)⁻¹; 0 where τ_k² = 0
            post = np.linalg.inv(np.linalg.inv(V) + I / np.where(pos, tau2, 1.0)[:, None, None]) * pos[:, None, None]
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
            list(grid), self.penalty, self.metric, tol=self.tol, max_iter=self._max_iter, threads=self._threads()
        )
        out["C"] = np.asarray(out["C"])
        return out

    def _interval_note(self) -> str:
        if self.ci == "robust_eb":
            if len(self.sites_) < 3:
                return "robust EB intervals need at least 3 sites: none reported"
            where = "around the fused estimates" if self.penalty == "squared" else (
                "around the random-effects estimates ('robust EB coef'); the group estimate has no valid "
                "interval shorter than per-site DML")
            toward = "a regression on site covariates" if self.site_covariates is not None else "the centre"
            return f"robust empirical Bayes (AKP 2022), {where}, shrinking toward {toward}"
        if self.ci == "bootstrap":
            return f"parametric bootstrap percentiles ({self._n_boot} draws, same C): approximate"
        return "delta method conditional on the site effects: intervals for E[fused], not for theta_k"

    def _summary_header(self) -> dict[str, object]:
        h = self.heterogeneity_
        N = f"N = {int(self.n_.sum())}" if self.table_.n_given else "n not given"
        head: dict[str, object] = {
            "penalty": self.penalty + (f" ({self.metric})" if self.penalty == "group" else ""),
            "loss matrix": self.loss_matrix,
            "input": "published estimates" if self.table_.model == ESTIMATES else f"DML summaries ({self.table_.model})",
            "sites": f"{len(self.sites_)} ({N})",
            "tuning": f"{self.tuning_}; C = {self.C_:.4g}",
            "fused sites": f"{int(np.sum(self.fused_))} of {len(self.sites_)}",
            "heterogeneity": f"Q = {h['Q']:.4g} (df {h['df']:.0f}, p = {h['p-value']:.3g}), "
            f"I2 = {100 * h['I2']:.1f} %, tau2 (DL) = {h['tau2']:.4g}",
            "site intervals": self._interval_note(),
        }
        re = self.random_effects_
        if re is not None:
            how = "the fit's tuning value" if re.tau2_method == "fixed" else re.tau2_method.upper()
            if self.tau2 in (None, "eb") and re.tau2_method == "fixed":
                how = "robust-EB moment estimate: a tuning value, biased upward when sites agree"
            head["tau2 (random effects)"] = (
                f"{re.tau2:.4g} ({how}); Q-profile {100 * re.level:g}% CI [{re.tau2_ci[0]:.4g}, {re.tau2_ci[1]:.4g}]"
            )
            kind = "HKSJ (t, K - 1 df)" if self.centre_ci == "hksj" else "Wald (z)"
            head["centre interval"] = (
                f"random-effects model, {kind}" if self.penalty == "squared" and hasattr(self, "tau2_")
                else f"'RE' columns: random-effects mean (REML), {kind}; the "
                + ("conditional SE (given the site effects)" if self.penalty == "squared"
                   else "post-fusion SE (given the fused set)") + " is not an interval for the mean effect"
            )
        return head

    def summary(self, level: float = 0.95):
        """Summary (a statsmodels ``Summary``: ``as_text``/``as_html``/``as_latex``; ``print``
        shows the text): settings, heterogeneity, the per-site table (:meth:`summary_frame`) and
        the centre (:meth:`centre_frame`)."""
        self._check_fitted()
        level = check_level(level)
        notes = ["z and P>|z| from the normal law; the random-effects centre under HKSJ uses t (K - 1 df)."]
        return make_summary("LateFusion", self._summary_header(),
                            [("Sites", self.summary_frame(level)), ("Fused centre", self.centre_frame(level))], notes)
