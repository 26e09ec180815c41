# Two entry points: `make demo` and `make test`. Both create .venv on first use.
#   make test-fast                  the tests without the slow ones and without the real data
#   make demo SYSTEM_SITE=1 PYTHON=/usr/bin/python3
#                                   a venv that sees that Python's packages: an installed torch
#                                   (a CUDA build, say) in requirements.txt's range is kept
#   make lock                       regenerate requirements.lock (after changing requirements*.txt)
PYTHON ?= python3
SYSTEM_SITE ?=
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
CONSTRAINTS := $(VENV)/constraints.txt
RUNTIME := $(VENV)/.runtime-installed
PROJECT := $(VENV)/.project-installed
DEV := $(VENV)/.dev-installed

.PHONY: demo test test-fast bench gpu-check gpu-recipe gpu-ablation lock clean

$(PY):
	$(PYTHON) -m venv $(if $(filter-out 0 no false,$(SYSTEM_SITE)),--system-site-packages) $(VENV)

# The lock's pins, less the packages this venv already sees from outside it (SYSTEM_SITE=1).
$(CONSTRAINTS): requirements.lock requirements.txt requirements-dev.txt tools/pins.py | $(PY)
	$(PY) tools/pins.py constraints $@

$(RUNTIME): requirements.txt $(CONSTRAINTS)
	$(PIP) -r requirements.txt -c $(CONSTRAINTS)
	touch $@

# The project itself, editable (pyproject.toml): tests, tools and benchmarks import net/ and utils/
# from any folder. Its requirements are in already, with the lock's pins (hence --no-deps).
$(PROJECT): pyproject.toml $(RUNTIME)
	$(PIP) --no-deps -e .
	touch $@

$(DEV): $(PROJECT) requirements-dev.txt
	$(PIP) -r requirements-dev.txt -c $(CONSTRAINTS)
	touch $@

demo: $(PROJECT)
	$(PY) tools/demo.py

# One pytest-xdist worker per core (TEST_WORKERS=0: one process); a test file's tests share a worker, so
# its module fixtures are built once. tests/conftest.py gives each worker one thread.
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(DEV)
	$(PY) -m pytest -q --durations=15 $(XDIST) tests

test-fast: $(DEV)
	$(PY) -m pytest -q $(XDIST) -m "not slow and not real_data" tests

bench: $(DEV)
	$(PY) benchmarks/run_all.py

# A fresh venv, the newest releases inside the ranges of requirements*.txt, their versions
# written to requirements.lock. Run the tests (make test) before committing a new lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	.venv-lock/bin/python tools/pins.py lock
	rm -rf .venv-lock

# Every CUDA path on the real data, one table (timings: benchmarks/results.md). Runs with the Python
# that has your CUDA build of torch (not .venv's CPU wheel): make gpu-check GPU_PY=/path/to/python.
# The project need not be installed there: PYTHONPATH points it (and the scripts it starts) here.
GPU_PY ?= python3
GPU_RUN := PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY)
SALT_REAL_DATA ?= ../shared/tgs
gpu-check:
	$(GPU_RUN) benchmarks/gpu_check.py --data_dir $(SALT_REAL_DATA) --device cuda

# The GPU recipe whole (5 folds, submission, out-of-fold score), and the GPU-budget ablation on
# fold 0; the data folder may be read-only (it is linked into /tmp). Tables: benchmarks/ablation_gpu.md
gpu-recipe:
	$(GPU_RUN) benchmarks/ablation_gpu.py --data_dir $(SALT_REAL_DATA) --device cuda --folds 0-4 --rows base \
		--out benchmarks/gpu_recipe.md
gpu-ablation:
	$(GPU_RUN) benchmarks/ablation_gpu.py --data_dir $(SALT_REAL_DATA) --device cuda --folds 0

clean:
	rm -rf demo_data experiments/demo
