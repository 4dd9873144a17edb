"""Shared fixtures: the one place that decides which backends the tests run on.

* `device`: every test that takes it runs once per backend, "cpu" always and "cuda" only
  when CuPy sees a GPU (otherwise that case is skipped with the reason).
* `torch`: the PyTorch module, or a clean skip when it is not installed (module-level
  users write `torch = pytest.importorskip("torch")` instead).
* Every test starts with gradients enabled and the default dtype float32, and whatever a
  test changes there is put back afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend

DEVICES = ("cpu", "cuda")


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device name to run on: "cpu", or "cuda" when a GPU is usable (else skipped)."""
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("device 'cuda' needs CuPy and a visible CUDA GPU")
    return request.param


@pytest.fixture
def torch():
    """PyTorch, for parity tests; skips the test cleanly when torch is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, so test inputs are the same on every run."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolate_global_modes():
    """Restore the engine's global state (grad mode, default dtype) after every test."""
    dtype = tg.get_default_dtype()
    with tg.enable_grad():
        yield
    tg.set_default_dtype(dtype)
