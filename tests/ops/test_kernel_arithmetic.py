"""The CUDA kernels without a GPU: compiled by nvcc for sm_80 and sm_90, and their arithmetic
(tinygrad_rnn/ops/fused_kernels.cuh plus each kernel's indexing body, the same source text)
built for the host and compared with the NumPy step math of fused.py.

The kernel classes of fused_cuda.py are driven through `HostCuda`, a stand-in for the two
things they take from CuPy (ElementwiseKernel, zeros) that launches the host build: so the
launch code (argument order, the index arithmetic, the raw/non-raw layout) is the code
under test too, not a copy of it.
"""

import kernel_build
import numpy as np
import pytest

from tinygrad_rnn.ops import fused, fused_cuda

B, H = 5, 7
TYPES = {np.float32: "float", np.float64: "double"}
TOLERANCE = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}


def _specs():
    return [kernel_build.KernelSpec(*k, preamble=fused_cuda.kernel_source())
            for k in fused_cuda.KERNELS]


class HostCuda:
    """What fused_cuda's kernel classes use of CuPy, on NumPy arrays, run by the host build."""

    zeros = staticmethod(np.zeros)

    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name, preamble=""):
            self.spec = kernel_build.KernelSpec(in_params, out_params, operation, name,
                                                preamble)

        def __call__(self, *args):
            return kernel_build.run_on_host(self.spec, list(args))


needs_nvcc = pytest.mark.skipif(kernel_build.nvcc() is None,
                                reason="nvcc (the CUDA toolkit) is not installed")
needs_cxx = pytest.mark.skipif(kernel_build.host_compiler() is None,
                               reason="no C++ compiler (g++) to build the kernels for the host")


@needs_nvcc
def test_every_kernel_compiles_for_sm80_and_sm90():
    units = [(spec, {"T": c}) for spec in _specs() for c in ("float", "double")]
    fatbin = kernel_build.compile_for_gpus(units, architectures=("sm_80", "sm_90"))
    assert fatbin.stat().st_size > 1000


@needs_nvcc
def test_a_kernel_that_does_not_compile_fails():
    spec = _specs()[0]
    broken = kernel_build.KernelSpec(spec.in_params, spec.out_params,
                                     spec.operation.replace("c_prev,", "c_previous,"),
                                     spec.name, spec.preamble)
    with pytest.raises(RuntimeError, match="c_previous"):
        kernel_build.compile_for_gpus([(broken, {"T": "float"})])


def _values(rng, shape, dtype, saturated=True):
    """Normal values, with about a third pushed far into saturation (|x| in [20, 60])."""
    x = rng.standard_normal(shape) * 2
    if saturated:
        far = rng.random(shape) < 0.3
        x[far] = np.sign(x[far]) * rng.uniform(20, 60, far.sum())
    return x.astype(dtype)


def _close(kernel, numpy, dtype):
    for a, b in zip(kernel, numpy, strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_step_arithmetic_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    gates, recurrent = _values(rng, (B, 4 * H), dtype), _values(rng, (B, 4 * H), dtype)
    c_prev, dh, dc = (_values(rng, (B, H), dtype, saturated=False) for _ in range(3))
    results = []
    for math in (fused_cuda.LSTMKernels(HostCuda, B, H, dtype), fused._LSTMMath(np, B, H, dtype)):
        g, d = gates.copy(), dc.copy()
        c, tanh_c, h = (np.empty((B, H), dtype) for _ in range(3))
        math.forward(0, g, recurrent, c_prev, c, tanh_c, h)
        forward = [g.copy(), c, tanh_c, h]
        math.backward(0, g, c_prev, c, tanh_c, dh, d)
        results.append(forward + [g, d])
    _close(*results, dtype)
    assert results[0][0].dtype == dtype


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_step_arithmetic_matches_numpy(dtype, bias):
    rng = np.random.default_rng(1)
    x_gates, recurrent = _values(rng, (B, 3 * H), dtype), _values(rng, (B, 3 * H), dtype)
    b_hn = _values(rng, (H,), dtype) if bias else None
    h_prev, dh = (_values(rng, (B, H), dtype, saturated=False) for _ in range(2))
    results = []
    for math in (fused_cuda.GRUKernels(HostCuda, B, H, dtype), fused._GRUMath(np, B, H, dtype)):
        rz = np.empty((2, B, H), dtype)
        n, h_n, h = (np.empty((B, H), dtype) for _ in range(3))
        math.forward(x_gates, recurrent, b_hn, h_prev, rz, n, h_n, h)
        d, dh_gates, dx_n = dh.copy(), np.empty((B, 3 * H), dtype), np.empty((B, H), dtype)
        math.backward(rz, n, h_n, h_prev, d, dh_gates, dx_n)
        results.append([rz, n, h_n, h, d, dh_gates, dx_n])
    _close(*results, dtype)


@needs_cxx
def test_a_launch_with_a_mismatched_dtype_is_refused():
    kernels = fused_cuda.LSTMKernels(HostCuda, B, H, np.float32)
    c = np.empty((B, H), np.float32)
    with pytest.raises(TypeError, match="mismatched"):
        kernels.forward(0, np.zeros((B, 4 * H), np.float32), np.zeros((B, 4 * H), np.float64),
                        c, c.copy(), c.copy(), c.copy())
