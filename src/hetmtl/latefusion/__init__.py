"""Late-fusion multi-task learning for semiparametric inference (seed 000).

What to use when:
- one site, one DML fit (PLR slope, ATE, linear CATE): :class:`SiteDML`;
- several sites in one :class:`~hetmtl.data.MultiSiteData`: :class:`MultiSiteDML`, which fits
  :class:`SiteDML` at every site and exports one :class:`SiteSummary` per site;
- sites that only share summary files: :meth:`SiteSummary.read_json`, then the fusion step;
- the fusion step itself (Step 2, summaries only): :class:`LateFusion`;
- nuisances that borrow strength across sites (needs pooled rows): :func:`fit_multitask_dml`,
  :class:`MultiTaskNuisance` (:mod:`hetmtl.latefusion.nuisance`).
"""
from hetmtl.latefusion.dml import MultiSiteDML, SiteDML
from hetmtl.latefusion.fusion import LateFusion
from hetmtl.latefusion.nuisance import MultiTaskNuisance, fit_multitask_dml
from hetmtl.latefusion.summary import CVFold, SiteSummary

__all__ = ["CVFold", "LateFusion", "MultiSiteDML", "MultiTaskNuisance", "SiteDML", "SiteSummary", "fit_multitask_dml"]
