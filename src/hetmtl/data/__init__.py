"""Data containers, one per data layout.

- :class:`MultiSiteData` — outcome, treatment, covariates (and optional effect modifiers) from
  several sites; input of the late-fusion family.
"""
from hetmtl.data.multisite import MultiSiteData, SiteArrays
from hetmtl.data.multitask import MultiTaskData, TaskArrays

__all__ = ["MultiSiteData", "SiteArrays", "MultiTaskData", "TaskArrays"]
