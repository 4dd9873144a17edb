PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per set of extras; each is redone whenever pyproject.toml changes.
DEMO_STAMP := $(VENV)/.installed-train
TEST_STAMP := $(VENV)/.installed-test

.DEFAULT_GOAL := test
.PHONY: demo test bench lint docs clean gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs only the training extras (tqdm, matplotlib).
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[train]"
	touch $@

# Tests, benchmarks and lint: everything (pytest, hypothesis, torch for parity, ruff, dask).
$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,train,dev,sweep]"
	touch $@ $(DEMO_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest

# One BLAS thread: the demo's matrices are small, so a second thread gains nothing and,
# on a busy machine, threads waiting for each other can slow every step down many times.
demo: $(DEMO_STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m tinygrad_rnn demo --out runs/demo

bench: $(TEST_STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_recurrent.py
	$(PY) benchmarks/bench_variants.py --threads 1
	$(PY) benchmarks/bench_variants.py --out benchmarks/results/variants_default_threads.md

# For a machine with an NVIDIA GPU, CuPy and PyTorch already installed (no venv, no network):
# the cuda tests on the real device, the fused kernels against the generic path there, and
# the LSTM/GRU training step against cuDNN and the CPU -> benchmarks/results/gpu.md.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check tinygrad_rnn tests benchmarks examples

docs: $(TEST_STAMP)
	$(PY) -m pytest tests/test_docs.py

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
