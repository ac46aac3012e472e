"""Data containers, one per data layout; each validates on entry and names the site, task, block or
column at fault.

What to use when:

- :class:`MultiSiteData` — outcome, treatment, covariates (and optional effect modifiers) from
  several sites; input of the late-fusion family. ``MultiSiteData.from_formula("log(y) ~ x1 +
  C(g)", df, treatment="arm", site="site", modifiers="z1 + z2", treated="active")`` builds it
  from a formula; effect modifiers stay among the nuisance covariates by default (the rule the
  CLI shares).
- :class:`MultiTaskData` — features and outcomes of several regression tasks on one feature
  space; input of the dual-encoder family (also :meth:`MultiTaskData.from_formula`).
- :class:`BlockwiseData` — T tasks sharing an anchoring source, one private source per task,
  missing blocks explicit; input of the block-wise (MTL-HMB, MBI) family.
"""
from hetmtl.data.blockwise import BlockwiseData, StackedDesign
from hetmtl.data.multisite import MultiSiteData, SiteArrays
from hetmtl.data.multitask import MultiTaskData, TaskArrays

__all__ = ["MultiSiteData", "SiteArrays", "MultiTaskData", "TaskArrays", "BlockwiseData", "StackedDesign"]
