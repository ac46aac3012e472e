# hetmtl: `make demo` runs the main job end to end; `make test` runs every test.
# Both create .venv/ and install what they need (Python deps, the C++ build).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
DEMO_DIR ?= demo_output
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2

R_DEBS := r-base-core r-cran-reticulate r-cran-testthat r-cran-generics r-cran-knitr r-cran-rmarkdown
R_NEEDED := reticulate testthat generics knitr rmarkdown
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-python test-r test-vignettes r-deps venv deps install dev bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q numpy scipy pandas scikit-learn statsmodels matplotlib jsonschema joblib \
		threadpoolctl tabulate pyyaml tqdm pytest "doubleml>=0.9" "cvxpy>=1.4" "dask[distributed]" \
		"scikit-build-core>=0.11" "pybind11>=3.0" cmeel-eigen ninja cmake
	touch $@

deps: $(VENV)/.deps

# A normal (non-editable) install, exactly what a user's `pip install .` does.
install: deps
	$(PIP) install -q --no-deps --force-reinstall .

# Developer build: compile the extension into build/dev and drop it next to the sources,
# then run with PYTHONPATH=src. Uses an existing venv (VENV=...) and installs nothing.
dev:
	@test -x $(PY) || { echo "no virtualenv at $(VENV): run 'make deps' first"; exit 1; }
	$(PY) -m cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DPython_EXECUTABLE=$(abspath $(PY)) \
		-Dpybind11_DIR=$$($(PY) -c 'import pybind11; print(pybind11.get_cmake_dir())') >/dev/null
	$(PY) -m cmake --build build/dev
	cp build/dev/_core*.so src/hetmtl/

demo: install
	$(PY) -m hetmtl.demo --out $(DEMO_DIR)

test: test-python test-r test-vignettes

test-python: install
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider .

# R from Debian's packages (CRAN is not needed): installed only when something is missing.
r-deps:
	@if command -v Rscript >/dev/null 2>&1 && Rscript -e 'for (p in strsplit("$(R_NEEDED)", " ")[[1]]) if (!requireNamespace(p, quietly = TRUE)) quit(status = 1)' >/dev/null 2>&1; then \
		echo "R and its packages are present"; \
	else \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(R_DEBS) >/dev/null; \
	fi

# R CMD check of the R front end (runs its testthat suite against this venv's hetmtl).
test-r: install r-deps
	rm -rf build/R && mkdir -p build/R
	cd build/R && R CMD build --no-build-vignettes ../../R >/dev/null && \
		RETICULATE_PYTHON=$(abspath $(PY)) R CMD check --no-manual hetmtl_*.tar.gz > check.log 2>&1; \
		status=$$?; tail -n 40 check.log; \
		if [ $$status -ne 0 ] || grep -qE "^Status: .*(ERROR|WARNING)" check.log; then echo "R CMD check failed"; exit 1; fi

# Vignettes run in CI: each fails loudly if a reproduced number leaves its stated band.
test-vignettes: install r-deps
	cd vignettes/python && for v in *.py; do case $$v in _*) continue;; esac; \
		echo "=== vignette $$v"; MPLBACKEND=Agg ../../$(PY) $$v || exit 1; done
	rm -rf build/vignettes && mkdir -p build/vignettes && cp vignettes/R/*.Rmd build/vignettes/
	mkdir -p build/Rlib && R CMD INSTALL -l build/Rlib R >/dev/null
	cd build/vignettes && for v in *.Rmd; do echo "=== vignette $$v"; \
		R_LIBS=$(abspath build/Rlib) RETICULATE_PYTHON=$(abspath $(PY)) \
		Rscript -e "knitr::knit('$$v', quiet = TRUE)" || exit 1; grep -h "\[check\]" $${v%.Rmd}.md; done

bench: install
	$(PY) -m benchmarks.run_all

clean:
	rm -rf build $(DEMO_DIR) src/hetmtl/_core*.so
