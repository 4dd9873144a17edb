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

demo: $(STAMP)
	$(PY) -m tinygrad_rnn demo --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_recurrent.py

lint: $(STAMP)
	$(VENV)/bin/ruff check tinygrad_rnn tests benchmarks examples

docs: $(STAMP)
	$(PY) -m pytest tests/test_docs.py

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
