"""Sphinx configuration of the hetmtl documentation.

Build (warnings are errors; ``make docs``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API pages are generated from the docstrings (autodoc + autosummary, rendered by numpydoc).
Two strictness layers run on every object the API pages document:

* every Sphinx/docutils warning fails the build (``-W``);
* numpydoc validation, restricted to :data:`NUMPYDOC_CHECKS`, fails the build too.

Both are relaxed, and only for the modules in :data:`EXEMPT_MODULES`: their docstrings are edited
elsewhere at the moment, so their numpydoc findings are not checked and their docutils warnings
are printed as a list at the end of the build without failing it. Remove a module from the list
once its docstrings pass.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the working tree when it holds the compiled extension (``make dev``); otherwise the
# installed package (``make test`` installs it from this tree before building the site).
_SRC = ROOT / "src"
if any(p.suffix in {".so", ".pyd"} for p in (_SRC / "hetmtl").glob("_core*")):
    sys.path.insert(0, str(_SRC))
os.environ.setdefault("MPLBACKEND", "Agg")

import hetmtl  # noqa: E402

project = "hetmtl"
author = "hetmtl developers"
copyright = "hetmtl developers (MIT licence)"
release = hetmtl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build"]
html_static_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {
    "description": "Multi-task learning and inference on heterogeneous multi-site data",
    "page_width": "1180px",
    "sidebar_width": "250px",
    "fixed_sidebar": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False

# ----------------------------------------------------------------------------- autodoc
autosummary_generate = False          # the family pages list their objects; tables link to them
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True      # show ``np.geomspace(...)`` defaults as written, not as values

# ----------------------------------------------------------------------------- numpydoc
numpydoc_show_class_members = False   # autodoc's :members: lists them; no second table
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

#: numpydoc validation checks that fail the build (https://numpydoc.readthedocs.io/en/latest/validation.html):
#: GL06 unknown section (numpydoc drops the section's text), GL07 sections in the wrong order,
#: GL08 public object without a docstring, PR01 parameter not documented, PR02 documented
#: parameter that does not exist, PR10 ``name: type`` without the space before the colon,
#: SS01 no summary line. The style checks (SS05/SS06 summary wording, RT01 Returns section,
#: ES01/SA01/EX01 optional sections, PR07/PR08 descriptions) are not enforced.
NUMPYDOC_CHECKS = {"GL06", "GL07", "GL08", "PR01", "PR02", "PR10", "SS01"}
numpydoc_validation_checks = set(NUMPYDOC_CHECKS)

#: Modules whose docstrings other work is editing right now (do not edit them from the docs
#: side). Objects defined in them are excluded from numpydoc validation, and docutils warnings
#: raised inside their docstrings are listed at the end of the build instead of failing it.
EXEMPT_MODULES = [
    "hetmtl.latefusion.dml",
    "hetmtl.latefusion.simulate",
    "hetmtl.latefusion.fusion",
    "hetmtl.latefusion.table",
    "hetmtl.latefusion.meta",
    "hetmtl.inference.ebci",
    "hetmtl.rinterop",
    "hetmtl.cli",
]


def _hetmtl_modules() -> list:
    """Every importable hetmtl module (optional dependencies such as rpy2 may be missing)."""
    import pkgutil

    modules = [hetmtl]
    for info in pkgutil.walk_packages(hetmtl.__path__, "hetmtl."):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001
            continue
    return modules


def _validation_exclude() -> set[str]:
    """Regexes of the names numpydoc must not validate.

    * every name (and member) under which an object defined in an exempt module is documented:
      its defining module or a package re-exporting it, e.g. ``hetmtl.latefusion.LateFusion``;
    * names hetmtl modules import from other packages (e.g. matplotlib's ``Figure`` in the
      plotting modules): autodoc reads their docstrings while it filters a module's members.
    """
    modules = _hetmtl_modules()
    exempt_objects = []
    for mod in EXEMPT_MODULES:
        module = importlib.import_module(mod)
        for obj in vars(module).values():
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", None) == mod:
                exempt_objects.append(obj)
    patterns: set[str] = set()
    for module in modules:
        for attr, obj in vars(module).items():
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            name = re.escape(f"{module.__name__}.{attr}")
            if any(obj is o for o in exempt_objects):
                patterns.add(rf"^{name}(\.\w+)*$")
            elif not str(getattr(obj, "__module__", "") or "").startswith("hetmtl"):
                patterns.add(rf"^{name}$")
    return patterns


numpydoc_validation_exclude = _validation_exclude()
#: Source files of the exempt modules, as they appear in docstring warning locations.
EXEMPT_FILES = [str(Path(importlib.import_module(m).__file__)) for m in EXEMPT_MODULES]

# ----------------------------------------------------------------------------- vignettes
# The vignette pages show each vignette's source and the output recorded by
# docs/record_vignettes.py (executing them here would add 1-1.5 min to every build).
sys.path.insert(0, str(DOCS))
from _vignettes import OUTPUT_DIR as VIGNETTE_OUTPUT, VIGNETTES, vignette_sha256  # noqa: E402

_logger = logging.getLogger("sphinx.hetmtl_docs")


def check_vignette_outputs(app) -> None:
    """Fail (warn, -W) when a recorded vignette output is missing, stale or has a failed check.

    The pages show each vignette's source and the output recorded by ``docs/record_vignettes.py``;
    a recording is stale when the vignette (or ``_check.py``) changed after it was made.
    """
    for name in VIGNETTES:
        out = VIGNETTE_OUTPUT / f"{name}.txt"
        if not out.exists():
            _logger.warning("vignette %s: no recorded output %s; run docs/record_vignettes.py", name, out)
            continue
        text = out.read_text(encoding="utf-8")
        m = re.search(r"^# source sha256: ([0-9a-f]{64})$", text, re.M)
        if not m or m.group(1) != vignette_sha256(name):
            _logger.warning("vignette %s: recorded output %s is stale (the vignette changed); "
                            "run docs/record_vignettes.py %s", name, out.name, name)
        checks = re.findall(r"^\[check\] .*$", text, re.M)
        if not checks:
            _logger.warning("vignette %s: recorded output has no [check] line", name)
        for line in checks:
            if not line.endswith(" ok"):
                _logger.warning("vignette %s: recorded check failed: %s", name, line)


# ----------------------------------------------------------------------------- exempt warnings
class _ExemptDocstringFilter(logging.Filter):
    """Hold back warnings located in docstrings of :data:`EXEMPT_MODULES` (listed at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        location = getattr(record, "location", None)
        if not isinstance(location, str):
            try:
                from sphinx.util.nodes import get_node_location

                location = get_node_location(location) if location is not None else None
            except Exception:  # noqa: BLE001 - a location we cannot read is not exempt
                location = None
        if location and ":docstring of " in location and location.split(":docstring of ")[0] in EXEMPT_FILES:
            try:
                message = record.msg % record.args if record.args else str(record.msg)
            except (TypeError, ValueError):
                message = str(record.msg)
            self.held.append(f"{location}: {message}")
            return False
        return True


_exempt_filter = _ExemptDocstringFilter()


def _route_numpydoc_warnings() -> None:
    """numpydoc reports an unknown docstring section as a Python warning and drops the section's
    text: hold it for the end-of-build list when the docstring is in an exempt module, fail the
    build otherwise (numpydoc validation reports it as GL06 too)."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if "numpydoc" in str(filename) and text.startswith("Unknown section"):
            if any(text.rstrip(".").endswith(f) for f in EXEMPT_FILES):
                _exempt_filter.held.append(f"numpydoc: {text}")
            else:
                _logger.warning("numpydoc: %s (the section's text is not rendered)", text)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _install_exempt_filter(app) -> None:
    from sphinx.util.logging import WarningStreamHandler

    for handler in logging.getLogger("sphinx").handlers:
        if isinstance(handler, WarningStreamHandler):
            handler.filters.insert(0, _exempt_filter)


def _report_exempt(app, exception) -> None:
    if _exempt_filter.held:
        print(f"\n{len(dict.fromkeys(_exempt_filter.held))} warning(s) in docstrings of exempt modules "
              "(EXEMPT_MODULES in docs/conf.py; not failing the build):")
        for line in dict.fromkeys(_exempt_filter.held):
            print("  " + line)


def _exempt_unknown_sections(app, what, name, obj, options, lines) -> None:
    """Keep the text of an unknown section (e.g. "Fitted attributes") in an exempt module's
    docstring: numpydoc would drop it, so it is shown verbatim under "Notes" (to the next known
    section) when the docstring has no Notes section. Runs before numpydoc; docstrings outside the exempt modules are untouched
    (there numpydoc validation reports the section as GL06)."""
    if what == "module":  # numpydoc leaves module docstrings alone
        return
    try:
        source = inspect.getsourcefile(inspect.unwrap(obj))
    except TypeError:
        return
    if source is None or str(Path(source)) not in EXEMPT_FILES:
        return
    from numpydoc.docscrape import NumpyDocString

    known = set(NumpyDocString.sections)
    titles = [i for i in range(len(lines) - 1)
              if lines[i].strip() and re.fullmatch(r"\s*-{3,}\s*", lines[i + 1])]
    if any(lines[i].strip() == "Notes" for i in titles):
        return
    for k, i in enumerate(titles):
        title = lines[i].strip()
        if title not in known:
            end = titles[k + 1] if k + 1 < len(titles) else len(lines)
            body = [f"    {line}" if line.strip() else "" for line in lines[i + 2:end]]
            # verbatim: the section was not written as reStructuredText
            lines[i:end] = ["Notes", "-----", f"**{title}** (as written in the docstring)::", "", *body, ""]
            _exempt_filter.held.append(f"{name}: unknown section {title!r} shown verbatim under Notes")
            return


def _resolve_alias(app, env, node, contnode):
    """Link a Python reference that names an object by another path than the documented one.

    Module docstrings refer to objects relative to their own module (``:func:`make_split``` in
    :mod:`hetmtl.blockwise.selection`), while the pages document them under the package that
    re-exports them (``hetmtl.blockwise.make_split``). Unresolved references are matched on
    their trailing name components; a unique match is linked, anything else stays unresolved.
    """
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    from sphinx.util.nodes import make_refnode

    objects = env.get_domain("py").objects
    parts = node["reftarget"].lstrip(".~").split(".")
    for k in range(len(parts), 0, -1):
        suffix = ".".join(parts[-k:])
        matches = [name for name in objects if name == suffix or name.endswith("." + suffix)]
        # autodoc also registers an object's canonical path as an alias of the same target
        targets = {(objects[name].docname, objects[name].node_id): name for name in matches}
        if len(targets) == 1:
            (docname, node_id), name = next(iter(targets.items()))
            return make_refnode(app.builder, node["refdoc"], docname, node_id, contnode, name)
        if targets:  # ambiguous: do not guess
            return None
    return None


_SKLEARN_ROUTING = re.compile(r"^set_\w+_request$")


def _skip_member(app, what, name, obj, skip, options):
    """Skip the ``set_*_request`` methods scikit-learn adds to every estimator (metadata routing)."""
    if _SKLEARN_ROUTING.match(name):
        return True
    return None


def setup(app):
    _install_exempt_filter(app)
    _route_numpydoc_warnings()
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _exempt_unknown_sections, priority=400)
    app.connect("builder-inited", check_vignette_outputs)
    app.connect("missing-reference", _resolve_alias)
    app.connect("build-finished", _report_exempt)
