# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench gpu-check clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Every CUDA path on the real data, one table (about 5 minutes on one H100). Runs with the Python
# that has your CUDA build of torch (not .venv's CPU wheel): make gpu-check GPU_PY=/path/to/python
GPU_PY ?= python3
SALT_REAL_DATA ?= ../shared/tgs
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py --data_dir $(SALT_REAL_DATA) --device cuda

clean:
	rm -rf demo_data experiments/demo
