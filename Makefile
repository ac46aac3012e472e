# hetmtl: `make demo` runs the main job end to end; `make test` runs every test.
# Both create .venv/ and install what they need (Python deps, the C++ build); `make test` also
# installs R and the R packages the tests use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
DEMO_DIR ?= demo_output
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

# torch: the CPU build, pinned. From stock PyPI an unpinned torch is the multi-GB CUDA build;
# elsewhere use TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_PIN ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# Extras of pyproject.toml (the one list of dependencies) installed by `make install` and by the
# test targets; `r` (rpy2) is added to the test extras once R is installed.
EXTRAS ?= nets
TEST_EXTRAS ?= nets,test
DOCS_EXTRAS ?= nets,docs
# Build: no build isolation, a persistent build directory (a second install recompiles nothing),
# a portable instruction set unless HETMTL_NATIVE_ARCH=ON.
HETMTL_NATIVE_ARCH ?= OFF
BUILD_DIR ?= build/{wheel_tag}
SKBUILD_ARGS := -C build-dir=$(BUILD_DIR) -C cmake.define.HETMTL_NATIVE_ARCH=$(HETMTL_NATIVE_ARCH)

# R: Debian's packages, then the CRAN-only packages from the vendored sources (../shared/vendor/r,
# in install order), or from CRAN where that folder is absent.
R_DEBS := r-base-core r-base-dev r-cran-reticulate r-cran-testthat r-cran-generics r-cran-knitr \
	r-cran-rmarkdown r-cran-metafor r-cran-glmnet r-cran-doparallel r-cran-foreach r-cran-mass \
	r-cran-matrix r-cran-rcpp r-cran-stringr r-cran-lobstr r-cran-codetools
R_NEEDED := reticulate testthat generics knitr rmarkdown metafor glmnet doParallel foreach MASS \
	Matrix Rcpp stringr lobstr codetools
R_VENDOR ?= ../shared/vendor/r
R_VENDORED := glmnetcr pryr BlockMissingData ebci
CRAN ?= https://cloud.r-project.org
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test typecheck test-python test-r test-vignettes docs r-deps r-debs r-vendored venv deps install \
	install-test install-docs dev bench clean

# Build requirements from pyproject.toml ([build-system] requires, then what the backend asks for
# on this machine, e.g. cmake and ninja when they are missing): installed into the venv, since
# the build runs without isolation.
define BUILD_REQS_PY
import sys
try:
    import tomllib
except ImportError:
    from pip._vendor import tomli as tomllib
if sys.argv[-1] == "static":
    print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))
else:
    from scikit_build_core.build import get_requires_for_build_wheel
    print("\n".join(get_requires_for_build_wheel()))
endef
export BUILD_REQS_PY

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(PY)

# torch first (the CPU pin), then the build requirements.
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_PIN)"
	$(PY) -c "$$BUILD_REQS_PY" static > $(VENV)/build-requirements.txt
	$(PIP) install -q -r $(VENV)/build-requirements.txt
	$(PY) -c "$$BUILD_REQS_PY" dynamic > $(VENV)/build-requirements-dynamic.txt
	$(PIP) install -q -r $(VENV)/build-requirements-dynamic.txt
	touch $@

deps: $(VENV)/.deps

# A normal (non-editable) install of the package with its runtime dependencies and EXTRAS,
# what a user's `pip install ".[nets]"` does, but compiled in $(BUILD_DIR) and kept there.
install: deps
	$(PIP) install -q --no-build-isolation $(SKBUILD_ARGS) ".[$(EXTRAS)]"

# The same with the test extras, plus rpy2 (extra `r`) once R is installed.
install-test: deps r-deps
	@command -v R >/dev/null 2>&1 || echo "R not found: rpy2 (extra 'r') not installed; the rpy2 tests will skip"
	@$(MAKE) --no-print-directory install EXTRAS="$(TEST_EXTRAS)$$(command -v R >/dev/null 2>&1 && echo ,r)"

# Developer build: compile the extension into build/dev and drop it next to the sources,
# then run with PYTHONPATH=src. Uses an existing venv (VENV=...) and installs nothing.
# The copy goes by rename: a running process keeps its mapped copy of the old file.
dev:
	@test -x $(PY) || { echo "no virtualenv at $(VENV): run 'make deps' first"; exit 1; }
	@cmake=$$(command -v $(abspath $(VENV))/bin/cmake || command -v cmake) || { echo "no cmake: run 'make deps'"; exit 1; }; \
	ninja=$$(command -v $(abspath $(VENV))/bin/ninja || command -v ninja); \
	set -x; $$cmake -S . -B build/dev $${ninja:+-G Ninja -DCMAKE_MAKE_PROGRAM=$$ninja} -DCMAKE_BUILD_TYPE=Release \
		-DHETMTL_NATIVE_ARCH=$(HETMTL_NATIVE_ARCH) -DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR=$$($(PY) -c 'import pybind11; print(pybind11.get_cmake_dir())') >/dev/null \
		&& $$cmake --build build/dev
	@for f in build/dev/_core*.so build/dev/_build_config.json; do \
		name=$$(basename $$f); cp $$f src/hetmtl/.$$name.tmp && mv -f src/hetmtl/.$$name.tmp src/hetmtl/$$name || exit 1; \
		echo "$$f -> src/hetmtl/$$name"; done

demo: install
	$(PY) -m hetmtl.demo --out $(DEMO_DIR)

test: typecheck test-python test-r test-vignettes docs

# Static types of the package (pyproject's [tool.mypy]); part of `make test`.
typecheck: install-test
	$(PY) -m mypy src/hetmtl

test-python: install-test
	cd tests && $(abspath $(PY)) -m pytest -q -p no:cacheprovider .

# R from Debian's packages (CRAN is not needed), then the vendored CRAN sources. Both steps do
# nothing when everything is installed.
r-deps: r-debs r-vendored

r-debs:
	@if command -v Rscript >/dev/null 2>&1 && command -v R >/dev/null 2>&1 \
		&& [ -f "$$(R RHOME)/etc/Makeconf" ] && command -v g++ >/dev/null 2>&1 \
		&& Rscript -e 'for (p in strsplit("$(R_NEEDED)", " +")[[1]]) if (!requireNamespace(p, quietly = TRUE)) quit(status = 1)' >/dev/null 2>&1; then \
		echo "R and its Debian packages are present"; \
	else \
		echo "installing R from Debian: $(R_DEBS)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends $(R_DEBS) >/dev/null; \
	fi

# Into the first writable library of R's .libPaths() (as root: /usr/local/lib/R/site-library),
# else into R_LIBS_USER, which every later R session of this user searches: Rscript children of
# the tests, rpy2 and R CMD check all see the packages without extra settings. A package that
# cannot be installed is reported and skipped; the tests that need it then skip with the reason.
r-vendored:
	@command -v Rscript >/dev/null 2>&1 || { echo "no R: vendored R packages not installed"; exit 0; }; \
	missing=$$(Rscript -e 'cat(Filter(function(p) !requireNamespace(p, quietly = TRUE), strsplit("$(R_VENDORED)", " ")[[1]]))' 2>/dev/null); \
	[ -z "$$missing" ] && { echo "vendored R packages present: $(R_VENDORED)"; exit 0; }; \
	lib=$$(Rscript -e 'l <- .libPaths()[file.access(.libPaths(), 2) == 0]; cat(if (length(l)) l[1] else Sys.getenv("R_LIBS_USER"))'); \
	mkdir -p "$$lib"; \
	for p in $$missing; do \
		tarball=$$(ls $(R_VENDOR)/$${p}_*.tar.gz 2>/dev/null | tail -n 1); \
		if [ -n "$$tarball" ]; then \
			echo "R CMD INSTALL $$tarball -> $$lib"; \
			mkdir -p build && R CMD INSTALL -l "$$lib" "$$tarball" > build/r-install-$$p.log 2>&1 \
				&& rm -f build/r-install-$$p.log || { echo "  failed (log: build/r-install-$$p.log)"; continue; }; \
		else \
			echo "$$p: no source in $(R_VENDOR); trying CRAN ($(CRAN))"; \
			Rscript -e "options(timeout = 30); install.packages('$$p', lib = '$$lib', repos = '$(CRAN)', quiet = TRUE)" >/dev/null 2>&1; \
		fi; \
		Rscript -e "quit(status = !requireNamespace('$$p', quietly = TRUE))" >/dev/null 2>&1 \
			|| echo "  R package $$p is not installed: tests that need it will skip with the reason"; \
	done

# R CMD check of the R front end (runs its testthat suite against this venv's hetmtl). The
# vignettes are knitted (and their numbers checked) by test-vignettes.
test-r: install-test
	rm -rf build/R && mkdir -p build/R
	cd build/R && R CMD build --no-build-vignettes ../../R >/dev/null && \
		RETICULATE_PYTHON=$(abspath $(PY)) R CMD check --no-manual --ignore-vignettes hetmtl_*.tar.gz > check.log 2>&1; \
		status=$$?; tail -n 40 check.log; \
		if [ $$status -ne 0 ] || grep -qE "^Status: .*(ERROR|WARNING)" check.log; then echo "R CMD check failed"; exit 1; fi

# Vignettes run in CI: each fails loudly if a reproduced number leaves its stated band.
test-vignettes: install-test
	cd vignettes/python && for v in *.py; do case $$v in _*) continue;; esac; \
		echo "=== vignette $$v"; MPLBACKEND=Agg $(abspath $(PY)) $$v || exit 1; done
	rm -rf build/vignettes && mkdir -p build/vignettes && cp R/vignettes/*.Rmd build/vignettes/
	mkdir -p build/Rlib && R CMD INSTALL -l build/Rlib R >/dev/null
	cd build/vignettes && for v in *.Rmd; do echo "=== vignette $$v"; \
		R_LIBS=$(abspath build/Rlib) RETICULATE_PYTHON=$(abspath $(PY)) \
		Rscript -e "knitr::knit('$$v', quiet = TRUE)" || exit 1; \
		grep -h "^## \[check\]" $${v%.Rmd}.md || { echo "no [check] ran in $$v: hetmtl not importable from $(PY)?"; exit 1; }; done

# The documentation site (docs/, Sphinx); every warning is an error.
install-docs: deps
	@$(MAKE) --no-print-directory install EXTRAS="$(DOCS_EXTRAS)"

docs: install-docs
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "site: docs/_build/html/index.html"

bench: deps
	$(MAKE) install EXTRAS=bench
	$(PY) -m benchmarks.run_all

clean:
	rm -rf build docs/_build $(DEMO_DIR) src/hetmtl/_core*.so src/hetmtl/_build_config.json
