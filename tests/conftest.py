"""Shared fixtures: the one place that decides which backends the tests run on.

* `device`: every test that takes it runs once per backend, "cpu" and "cuda".
* "cuda" is the real CuPy when it sees a GPU; otherwise (and with `--emulate-cuda`) it is the
  emulated CuPy of tests/emulated_cuda: the folder is put first on sys.path and on the
  PYTHONPATH of the subprocesses the tests start, so the library's own `import cupy` finds
  it. `--no-emulate-cuda` runs the "cuda" cases on a real GPU only (make gpu-check), skipping
  them where there is none.
* `cupy_missing`: for the tests of what a user without CuPy sees, whatever this machine has.
* `torch`: the PyTorch module, or a clean skip when it is not installed (module-level
  users write `torch = pytest.importorskip("torch")` instead).
* Every test starts with gradients enabled and the default dtype float32, and whatever a
  test changes there is put back afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend

DEVICES = ("cpu", "cuda")
EMULATED_CUDA = Path(__file__).parent / "emulated_cuda"


def pytest_addoption(parser):
    group = parser.getgroup("tinygrad_rnn")
    group.addoption("--emulate-cuda", action="store_true", default=None,
                    help="run the 'cuda' tests on the emulated CuPy (the default when no "
                         "real GPU is usable)")
    group.addoption("--no-emulate-cuda", action="store_false", dest="emulate_cuda",
                    help="run the 'cuda' tests on a real GPU only (skipped without one)")


def _forget_cupy() -> None:
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupy_"))]:
        del sys.modules[name]
    backend._cupy, backend._cupy_error = None, None
    backend._generators.pop("cuda", None)


def use_emulated_cupy() -> None:
    """Make `import cupy` (here and in subprocesses) find the emulated CuPy."""
    _forget_cupy()
    sys.path.insert(0, str(EMULATED_CUDA))
    paths = [str(EMULATED_CUDA), str(Path(__file__).parent)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ["TINYGRAD_RNN_EMULATED_CUDA"] = "1"
    assert backend.cuda_available(), backend._cupy_error


def pytest_configure(config):
    emulate = config.getoption("emulate_cuda")
    if emulate is None:  # real CuPy with a GPU when there is one, else the emulator
        emulate = not backend.cuda_available()
    if emulate:
        use_emulated_cupy()
    config.cuda_emulated = bool(emulate)


def pytest_report_header(config):
    if getattr(config, "cuda_emulated", False):
        return "device 'cuda': emulated CuPy (tests/emulated_cuda), kernels built for the host"
    if backend.cuda_available():
        return f"device 'cuda': CuPy {backend.require_cuda().__version__} on a real GPU"
    return "device 'cuda': unavailable (no CuPy/GPU, emulation off): 'cuda' tests skip"


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device name to run on: "cpu", or "cuda" (a real or the emulated GPU)."""
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("device 'cuda' needs CuPy and a visible CUDA GPU (or --emulate-cuda)")
    return request.param


@pytest.fixture
def cupy_missing(monkeypatch):
    """The library as it behaves where CuPy is not installed (whatever this machine has)."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(backend, "_generators",
                        {k: v for k, v in backend._generators.items() if k == "cpu"})


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
