"""Data containers, one per data layout.

- :class:`MultiSiteData` — outcome, treatment, covariates (and optional effect modifiers) from
  several sites; input of the late-fusion family.
"""
from hetmtl.data.multisite import MultiSiteData, SiteArrays

__all__ = ["MultiSiteData", "SiteArrays"]
