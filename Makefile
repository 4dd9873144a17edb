PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,train,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# One BLAS thread: the demo's matrices are small, so a second thread gains nothing and,
# on a busy machine, threads waiting for each other can slow every step down many times.
demo: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m tinygrad_rnn demo --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_recurrent.py

lint: $(STAMP)
	$(VENV)/bin/ruff check tinygrad_rnn tests benchmarks examples

docs: $(STAMP)
	$(PY) -m pytest tests/test_docs.py

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
