"""Packaging: one version, the licence in the installed distribution, a portable extension (no
AVX-512), the Makefile installing what pyproject.toml declares, the base install working without
torch. Also the wheels' smoke test (cibuildwheel runs this file against an installed wheel)."""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hetmtl
from hetmtl import _core

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"
PKG_DIR = Path(hetmtl.__file__).resolve().parent


def _installed_dist():
    """The installed distribution when it is the hetmtl being tested, else None (e.g. PYTHONPATH=src
    in front of another install, or no install at all)."""
    try:
        dist = md.distribution("hetmtl")
    except md.PackageNotFoundError:
        return None
    init = dist.locate_file("hetmtl/__init__.py")
    if not Path(init).exists() or Path(init).resolve() != Path(hetmtl.__file__).resolve():
        return None
    return dist


def _repo_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.name} not found (tests run outside the source tree)")
    return path


def _pyproject() -> dict:
    return tomllib.loads(_repo_file(PYPROJECT).read_text())


def _build_config() -> dict | None:
    cfg = PKG_DIR / "_build_config.json"
    return json.loads(cfg.read_text()) if cfg.exists() else None


# ------------------------------------------------------------------------------------- version
def test_version_is_single_sourced():
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?(\.post\d+)?(\.dev\d+)?", hetmtl.__version__)
    dist = _installed_dist()
    if dist is not None:
        assert dist.version == hetmtl.__version__
    cfg = _build_config()
    if cfg is not None:  # the version CMake compiled with (scikit-build-core or the __init__ line)
        assert hetmtl.__version__.startswith(cfg["version"])
    if PYPROJECT.exists():
        project = _pyproject()["project"]
        assert "version" not in project and "version" in project.get("dynamic", [])
        assert not re.search(r"set\(SKBUILD_PROJECT_VERSION \d", (ROOT / "CMakeLists.txt").read_text())
    citation = ROOT / "CITATION.cff"
    if citation.exists():
        m = re.search(r"^version:\s*\"?([^\s\"]+)", citation.read_text(), re.M)
        assert m and m.group(1) == hetmtl.__version__, "CITATION.cff version differs from hetmtl.__version__"
    changelog = ROOT / "CHANGELOG.md"
    if changelog.exists():
        assert f"## [{hetmtl.__version__}]" in changelog.read_text() or "## [Unreleased]" in changelog.read_text()


# ------------------------------------------------------------------------------------- licence
def test_license_in_installed_distribution():
    dist = _installed_dist()
    if dist is None:
        pytest.skip("hetmtl is not installed as a distribution here (e.g. PYTHONPATH=src)")
    meta = dist.metadata
    assert meta.get("License-Expression") == "MIT" or meta.get("License") == "MIT"
    files = [str(f) for f in (dist.files or [])]
    licence = [f for f in files if f.endswith("licenses/LICENSE") or f.endswith("/LICENSE")]
    assert licence, f"no LICENSE among the installed files of hetmtl {dist.version}"
    text = Path(dist.locate_file(licence[0])).read_text()
    assert "MIT License" in text and "hetmtl developers" in text
    assert any(f.endswith("IHDP_LICENSE.txt") for f in files)
    # typing: the marker and the stub of the C++ module are installed next to the extension
    assert any(f.endswith("hetmtl/py.typed") for f in files)
    assert any(f.endswith("hetmtl/_core.pyi") for f in files)


def test_license_and_citation_in_source_tree():
    licence = _repo_file(ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "hetmtl developers" in licence
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and "LICENSE" in project["license-files"]
    cff = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in cff and "references:" in cff


# ------------------------------------------------------------------------- portable extension
def test_portable_build_has_no_avx512():
    """A portable build (the default; every wheel) must not contain AVX-512 instructions: it
    would die with SIGILL on CPUs without them."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"AVX-512 is an x86-64 question (machine: {platform.machine()})")
    cfg = _build_config()
    if cfg is None:
        pytest.skip("build configuration unknown (_build_config.json missing: built before it existed)")
    if cfg.get("native"):
        pytest.skip("built with HETMTL_NATIVE_ARCH=ON on purpose (-march=native)")
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not found (binutils)")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", _core.__file__], capture_output=True,
                         text=True, check=True).stdout
    assert len(out) > 10_000, "objdump printed no disassembly"
    zmm = sum(1 for line in out.splitlines() if "%zmm" in line)
    assert zmm == 0, f"{zmm} instructions use zmm (AVX-512) registers in {_core.__file__} ({cfg})"
    if cfg.get("arch") == "x86-64-v3":  # the baseline is in effect: AVX2 code is present
        assert "%ymm" in out


# --------------------------------------------------------------------- Makefile vs pyproject
def _make_var(text: str, name: str) -> str:
    m = re.search(rf"^{name}\s*\?=\s*(.*)$", text, re.M)
    assert m, f"{name} not set in the Makefile"
    return m.group(1).strip()


def test_makefile_installs_from_pyproject_extras():
    text = _repo_file(MAKEFILE).read_text()
    extras = _pyproject()["project"]["optional-dependencies"]
    for var in ("EXTRAS", "TEST_EXTRAS", "DOCS_EXTRAS"):
        for extra in _make_var(text, var).split(","):
            assert extra in extras, f"Makefile {var} names extra {extra!r} that pyproject.toml lacks"
    assert extras["r"] == ["rpy2>=3.5,<3.6"]
    for extra in ("nets", "test", "docs"):
        assert extra in extras
    # every pip install in the Makefile installs the project with extras, a requirements file
    # generated from pyproject.toml, pip itself or the torch pin: no copied dependency list
    for line in re.findall(r"\$\(PIP\) install([^\n]*)", text):
        args = [a for a in line.split() if not a.startswith("-") and not a.startswith("$(SKBUILD_ARGS")
                and not a.startswith("$(TORCH_PIP_ARGS")]
        assert all(a in ("pip", '"$(TORCH_PIN)"', "$(VENV)/build-requirements.txt",
                         "$(VENV)/build-requirements-dynamic.txt")
                   or a.startswith('".[') for a in args), f"Makefile installs a package list: {line}"
    # the torch pin satisfies the nets extra
    from packaging.requirements import Requirement

    pin = Requirement(_make_var(text, "TORCH_PIN"))
    (torch_req,) = [Requirement(r) for r in extras["nets"] if Requirement(r).name == "torch"]
    (pinned,) = [s.version for s in pin.specifier if s.operator == "=="]
    assert torch_req.specifier.contains(pinned), f"TORCH_PIN {pin} outside the nets extra {torch_req}"
    # the test extras cover what the tests import from outside the package
    test_names = {Requirement(r).name.lower() for r in extras["test"]}
    base_names = {Requirement(r).name.lower() for r in _pyproject()["project"]["dependencies"]}
    assert {"pytest", "doubleml", "cvxpy", "dask", "tabulate", "hypothesis"} <= test_names
    assert {"statsmodels", "formulaic"} <= base_names  # summary() objects, formula constructors


def test_base_dependencies_are_light():
    """torch and rpy2 are not core dependencies (extras `nets`, `r`)."""
    deps = " ".join(_pyproject()["project"]["dependencies"]).lower()
    assert "torch" not in deps and "rpy2" not in deps
    assert re.search(r"joblib>=1\.4", deps)
    assert "tomli" in deps


# ------------------------------------------------------------------- smoke test without torch
SMOKE = textwrap.dedent("""
    import sys

    class _NoTorch:  # torch absent, as after a plain `pip install hetmtl`
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, _NoTorch())
    import numpy as np
    from hetmtl import _core
    from hetmtl.latefusion import LateFusion, SiteSummary

    rng = np.random.default_rng(0)
    sums = []
    for k in range(4):
        n = 60
        phi = np.column_stack([np.ones(n), rng.normal(size=n)])
        y = phi @ np.array([1.0, 0.5]) + 0.2 * k + rng.normal(size=n)
        m = _core.linear_score_moments(phi, y, np.ones(n))
        sums.append(SiteSummary(site=f"s{k}", model="blp", coef_names=["const", "x1"], n=n,
                                theta=m["theta"], J=m["J"], Omega=m["Omega"], n_folds=2))
    fit = LateFusion(penalty="group", C=1.0).fit(sums)
    assert np.all(np.isfinite(fit.centre_)) and fit.coef_.shape == (4, 2)
    fit.summary()  # robust EB and random-effects tables
    # MBI, the block-wise simulators and the CLI work without torch too
    import warnings
    import hetmtl.cli, hetmtl.studies
    from hetmtl.blockwise import MBI, make_split, simulate_blockwise
    sim = simulate_blockwise(n=80, p0=6, p_private=3, linear=True, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mbi = MBI(nlam=5).fit(sim.data)
    assert np.all(np.isfinite(mbi.coef_))
    # the neural families say which extra they need
    for name in ("hetmtl.encoders", "hetmtl.serialization"):
        try:
            __import__(name)
        except ImportError as exc:
            assert "hetmtl[nets]" in str(exc), exc
        else:
            raise AssertionError(name + " imported without torch")
    import hetmtl.blockwise as bw
    try:
        bw.MTLHMB
    except ImportError as exc:
        assert "hetmtl[nets]" in str(exc), exc
    assert "torch" not in sys.modules
    print("late fusion without torch: ok", fit.centre_)
""")


def test_tiny_late_fusion_without_torch():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "late fusion without torch: ok" in res.stdout
