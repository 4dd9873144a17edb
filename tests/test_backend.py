"""backend.py: which array module, moving arrays, device names and their error messages."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend

needs_cuda = pytest.mark.skipif(not backend.cuda_available(),
                                reason="needs CuPy and a visible CUDA GPU")


def test_cpu_array_module_and_conversions():
    array = np.arange(3.0)
    assert backend.get_array_module(array) is np
    assert backend.get_array_module(array, np.ones(2)) is np
    assert tg.get_array_module(array) is np
    moved = backend.to_device([1.0, 2.0], "cpu")
    assert isinstance(moved, np.ndarray) and moved.tolist() == [1.0, 2.0]
    assert backend.to_device(array, "cpu") is array  # already there: no copy
    assert backend.to_numpy(array) is array
    assert isinstance(tg.to_numpy([1, 2]), np.ndarray)
    assert backend.device_of(array) == "cpu"


def test_device_helpers(device):
    assert backend.xp_for(device) is backend.get_array_module(backend.to_device(np.ones(2), device))
    t = tg.Tensor(np.ones(2), device=device)
    assert t.device == device and backend.device_of(t.data) == device
    assert isinstance(backend.to_numpy(t.data), np.ndarray)


def test_available_devices_lists_cpu_first():
    devices = tg.available_devices()
    assert devices[0] == "cpu"
    assert ("cuda" in devices) == tg.cuda_available()


@pytest.mark.parametrize("name", ["cpu", "CPU", None])
def test_cpu_names_are_normalised(name):
    assert backend.normalize_device(name) == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "metal"])
def test_unknown_device_raises_value_error_naming_it(name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        backend.normalize_device(name)
    with pytest.raises(ValueError, match=f"'{name}'"):
        tg.Tensor([1.0], device=name)
    with pytest.raises(ValueError, match=f"'{name}'"):
        tg.zeros(2, device=name)


def test_only_one_gpu_index_is_supported():
    with pytest.raises(ValueError, match="cuda:1"):
        backend.normalize_device("cuda:1")


def _assert_cupy_missing_message(excinfo):
    message = str(excinfo.value)
    assert "CuPy" in message and "not installed" in message
    assert "pip install cupy-cuda12x" in message


def test_cuda_without_cupy_says_how_to_install(cupy_missing):
    for make in (lambda: tg.Tensor([1.0], device="cuda"),
                 lambda: tg.zeros(2, device="cuda"),
                 lambda: tg.randn(2, device="cuda"),
                 lambda: tg.Tensor([1.0]).to("cuda"),
                 lambda: tg.Tensor([1.0]).cuda()):
        with pytest.raises(RuntimeError, match="cuda") as excinfo:
            make()
        if "not installed" in str(excinfo.value):  # CuPy may be installed with no GPU
            _assert_cupy_missing_message(excinfo)


def test_missing_cupy_message_even_where_cupy_exists(monkeypatch):
    """Simulate a machine without CuPy (importing it fails) on any machine."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", None)
    assert not backend.cuda_available()
    assert backend.available_devices() == ["cpu"]
    with pytest.raises(RuntimeError, match="device 'cuda' is not available") as excinfo:
        backend.require_cuda()
    _assert_cupy_missing_message(excinfo)
    with pytest.raises(RuntimeError) as excinfo:
        tg.Tensor([1.0], device="cuda:0")
    _assert_cupy_missing_message(excinfo)


@needs_cuda
def test_mixing_devices_names_both():
    on_cpu = tg.Tensor(np.ones(2), requires_grad=True)
    on_gpu = tg.Tensor(np.ones(2), device="cuda")
    for combine in (lambda: on_cpu + on_gpu, lambda: on_gpu * on_cpu,
                    lambda: tg.cat([on_cpu, on_gpu])):
        with pytest.raises(RuntimeError, match="'cpu' and 'cuda'|'cuda' and 'cpu'"):
            combine()


@needs_cuda
def test_cuda_round_trip_keeps_values_and_dtype():
    x = tg.Tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and y.dtype == np.float32
    assert isinstance(y.numpy(), np.ndarray)
    (y * 2.0).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), np.full(4, 2.0, dtype=np.float32))


@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (4, 5)), ((3,), (2,)), ((2, 2, 3), (2, 4))])
def test_matmul_shape_mismatch_names_both_shapes(shape_a, shape_b, device):
    a = tg.Tensor(np.ones(shape_a), device=device)
    b = tg.Tensor(np.ones(shape_b), device=device)
    with pytest.raises(ValueError, match=re.escape(str(shape_a)) + ".*" + re.escape(str(shape_b))):
        a @ b


def test_matmul_rejects_scalars():
    with pytest.raises(ValueError, match="at least one dimension"):
        tg.Tensor(2.0) @ tg.Tensor(np.ones(2))
