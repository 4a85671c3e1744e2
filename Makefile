# `make test` and `make demo` create .venv when it is missing or older than the packaging
# files, install the package with its test extras, and run. Nothing else needs installing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast test-numeric lint demo gpu-check venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

# the inner loop: everything but the tests that train models or start processes (about 2 min)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# the tests that compare numbers within a tolerance (marker `numeric`), again on ATen's generic
# kernels with oneDNN at SSE4.1, then on AVX2 where the CPU has it: a tolerance tuned to one
# vector unit fails here, not on a user's machine (about 3 min)
test-numeric: $(STAMP)
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 $(PY) -m pytest -q -m numeric
	@if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then \
		echo "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"; \
		ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q -m numeric; \
	else echo "this CPU has no AVX2: the AVX2 pass is skipped"; fi

# ruff (lint + format check) and mypy on the library and its CLI, as CI runs them before the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/mlkd-cache demo

# every CUDA path once on one GPU (a few minutes); one line and nothing run without CUDA
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info runs
