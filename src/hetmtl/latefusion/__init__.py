"""Late-fusion multi-task learning for semiparametric inference (Bhattacharya, Chen & Liang,
arXiv 2507.07941).

What to use when:

- one site, one DML fit (PLR slope, ATE, linear CATE): :class:`SiteDML`;
- several sites in one :class:`~hetmtl.data.MultiSiteData`: :class:`MultiSiteDML`, which fits
  :class:`SiteDML` at every site and exports one :class:`SiteSummary` per site;
- sites that only share summary files: :meth:`SiteSummary.read_json`, then the fusion step;
- the fusion step itself (Step 2, summaries only): :class:`LateFusion`, on SiteSummary objects,
  summary files, a :class:`SummaryTable` (K sites as arrays), or published estimates
  (:meth:`SummaryTable.from_estimates`, :meth:`SiteSummary.from_estimates`, a DataFrame);
- the random-effects model of the site estimates (metafor's estimators, HKSJ, Q-profile τ² CI,
  BLUPs): :func:`~hetmtl.latefusion.meta.random_effects`;
- nuisances that borrow strength across sites (needs pooled rows): :func:`fit_multitask_dml`,
  :class:`MultiTaskNuisance` (:mod:`hetmtl.latefusion.nuisance`);
- simultaneous intervals over several coefficients (or sites): ``confint(joint=True)`` on
  :class:`SiteDML` / :class:`MultiSiteDML` (multiplier bootstrap of the scores, as DoubleML) and
  on :class:`LateFusion` with ``ci="bootstrap"`` or ``"conditional"`` (sup-t).

Every ``summary()`` returns a statsmodels ``Summary`` (``print`` it, or ``as_html``/``as_latex``);
the tables are ``summary_frame()``. Long fits take ``verbose=1`` (tqdm progress).
"""
from hetmtl.latefusion.dml import MultiSiteDML, SiteDML
from hetmtl.latefusion.fusion import LateFusion
from hetmtl.latefusion.nuisance import MultiTaskNuisance, fit_multitask_dml
from hetmtl.latefusion.meta import RandomEffects, random_effects
from hetmtl.latefusion.summary import CVFold, SiteSummary
from hetmtl.latefusion.table import SummaryTable

__all__ = ["CVFold", "LateFusion", "MultiSiteDML", "MultiTaskNuisance", "RandomEffects", "SiteDML", "SiteSummary",
           "SummaryTable", "fit_multitask_dml", "random_effects"]
