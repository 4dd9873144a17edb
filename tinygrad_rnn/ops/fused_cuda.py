"""The gate math of one LSTM / GRU step as fused CUDA elementwise kernels (CuPy).

fused.py runs a step's elementwise math as a dozen array ops; on the GPU each is a kernel
launch and a trip through memory. Here each step's forward and backward is ONE kernel
(`cupy.ElementwiseKernel`), with the same interface as `fused._LSTMMath` / `fused._GRUMath`,
so the layer loop in fused.py does not change. The kernels are compiled on first use; this
module never imports CuPy itself (it receives the module as `xp`), so it imports fine, and
does nothing, on machines without CuPy. tests/ops/test_fused_cuda.py compares them with the
generic path (on the GPU, or on the emulated CuPy of the tests), and
tests/ops/test_kernel_arithmetic.py compiles them with nvcc for sm_80 and sm_90 and runs the
arithmetic of fused_kernels.cuh, built for the host, against the NumPy step math.

Index space: one thread per (batch row b, hidden unit j) of the (B, H) state arrays; the
(B, G*H) gate rows are passed "raw" and indexed as row * G*H + gate * H + j.
"""

from __future__ import annotations

import functools
from importlib import resources


def is_cupy(xp) -> bool:
    """True when the array module is CuPy (the ops receive it as `self.xp`)."""
    return getattr(xp, "__name__", "") == "cupy"


def kernel_source() -> str:
    """The `__host__ __device__` step arithmetic (fused_kernels.cuh), every kernel's preamble."""
    return resources.files(__package__).joinpath("fused_kernels.cuh").read_text()


# Each kernel: (in_params, out_params, body, name), the arguments of cupy.ElementwiseKernel.
# The bodies only locate a thread's elements; the arithmetic is in fused_kernels.cuh.

LSTM_FORWARD = (  # gates: x-part of the pre-activations in, activations out
    "raw T recurrent, T c_prev, int32 H",
    "raw T gates, T c, T tanh_c, T h",
    """
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 4 * H + i % H;
    tinygrad_rnn::lstm_forward(gates[row], gates[row + H], gates[row + 2 * H],
                               gates[row + 3 * H], recurrent[row], recurrent[row + H],
                               recurrent[row + 2 * H], recurrent[row + 3 * H], c_prev,
                               c, tanh_c, h);
    """,
    "tinygrad_rnn_lstm_step_forward",
)

LSTM_BACKWARD = (  # gates: activations in, gradients of the pre-activations out
    "T c_prev, T tanh_c, T dh, int32 H",
    "T dc, raw T gates",
    """
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 4 * H + i % H;
    tinygrad_rnn::lstm_backward(gates[row], gates[row + H], gates[row + 2 * H],
                                gates[row + 3 * H], c_prev, tanh_c, dh, dc);
    """,
    "tinygrad_rnn_lstm_step_backward",
)

GRU_FORWARD = (  # x_gates, recurrent: (B, 3H) rows; rz: (2, B, H), r then z
    "raw T x_gates, raw T recurrent, raw T b_hn, T h_prev, int32 H, int32 BH",
    "raw T rz, T n, T h_n, T h",
    """
    const int j = i % H;
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 3 * H + j;
    tinygrad_rnn::gru_forward(x_gates[row], x_gates[row + H], x_gates[row + 2 * H],
                              recurrent[row], recurrent[row + H], recurrent[row + 2 * H],
                              b_hn[j], h_prev, rz[i], rz[i + BH], n, h_n, h);
    """,
    "tinygrad_rnn_gru_step_forward",
)

GRU_BACKWARD = (
    "raw T rz, T n, T h_n, T h_prev, int32 H, int32 BH",
    "T dh, raw T dh_gates, T dx_n",
    """
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 3 * H + i % H;
    tinygrad_rnn::gru_backward(rz[i], rz[i + BH], n, h_n, h_prev, dh, dh_gates[row],
                               dh_gates[row + H], dh_gates[row + 2 * H], dx_n);
    """,
    "tinygrad_rnn_gru_step_backward",
)

KERNELS = (LSTM_FORWARD, LSTM_BACKWARD, GRU_FORWARD, GRU_BACKWARD)


@functools.cache
def _kernel(cupy, spec):
    in_params, out_params, body, name = spec
    return cupy.ElementwiseKernel(in_params, out_params, body, name, preamble=kernel_source())


class LSTMKernels:
    """Drop-in for fused._LSTMMath on CuPy arrays: one kernel per step and direction."""

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.H = hidden
        self._forward = _kernel(xp, LSTM_FORWARD)
        self._backward = _kernel(xp, LSTM_BACKWARD)

    def forward(self, t, gates, recurrent, c_prev, c, tanh_c, h):
        self._forward(recurrent, c_prev, self.H, gates, c, tanh_c, h)

    def backward(self, t, gates, c_prev, c, tanh_c, dh, dc):
        self._backward(c_prev, tanh_c, dh, self.H, dc, gates)
        return gates


class GRUKernels:
    """Drop-in for fused._GRUMath on CuPy arrays: one kernel per step and direction."""

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.H = hidden
        self._zero_bias = xp.zeros(hidden, dtype=dtype)
        self._forward = _kernel(xp, GRU_FORWARD)
        self._backward = _kernel(xp, GRU_BACKWARD)

    def forward(self, x_gates, recurrent, b_hn, h_prev, rz, n, h_n, h):
        bias = self._zero_bias if b_hn is None else b_hn
        self._forward(x_gates, recurrent, bias, h_prev, self.H, h.size, rz, n, h_n, h)

    def backward(self, rz, n, h_n, h_prev, dh, dh_gates, dx_n):
        self._backward(rz, n, h_n, h_prev, self.H, dh.size, dh, dh_gates, dx_n)
