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

.PHONY: demo test venv deps install dev bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q numpy scipy pandas scikit-learn statsmodels matplotlib jsonschema joblib \
		threadpoolctl tabulate pytest "doubleml>=0.9" "cvxpy>=1.4" \
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

test: install
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider .

bench: install
	$(PY) -m benchmarks.run_all

clean:
	rm -rf build $(DEMO_DIR) src/hetmtl/_core*.so
