"""The gate math of one LSTM / GRU step as fused CUDA elementwise kernels (CuPy).

fused.py runs a step's elementwise math as a dozen array ops; on the GPU each is a kernel
launch and a trip through memory. Here each step's forward and backward is ONE kernel
(`cupy.ElementwiseKernel`), with the same interface as `fused._LSTMMath` / `fused._GRUMath`,
so the layer loop in fused.py does not change. The kernels are compiled on first use; this
module never imports CuPy itself (it receives the module as `xp`), so it imports fine, and
does nothing, on machines without CuPy. tests/ops/test_fused_cuda.py compares them with the
generic path on the GPU.

Index space: one thread per (batch row b, hidden unit j) of the (B, H) state arrays; the
(B, G*H) gate rows are passed "raw" and indexed as row * G*H + gate * H + j.
"""

from __future__ import annotations

import functools


def is_cupy(xp) -> bool:
    """True when the array module is CuPy (the ops receive it as `self.xp`)."""
    return getattr(xp, "__name__", "") == "cupy"


_SIGMOID = "T(0.5) * tanh(T(0.5) * ({a})) + T(0.5)"

_LSTM_FORWARD = (
    "raw T recurrent, T c_prev, int32 H",
    "raw T gates, T c, T tanh_c, T h",
    f"""
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 4 * H + i % H;
    const T gi = {_SIGMOID.format(a="gates[row] + recurrent[row]")};
    const T gf = {_SIGMOID.format(a="gates[row + H] + recurrent[row + H]")};
    const T gg = tanh(gates[row + 2 * H] + recurrent[row + 2 * H]);
    const T go = {_SIGMOID.format(a="gates[row + 3 * H] + recurrent[row + 3 * H]")};
    gates[row] = gi; gates[row + H] = gf; gates[row + 2 * H] = gg; gates[row + 3 * H] = go;
    c = gf * c_prev + gi * gg;
    tanh_c = tanh(c);
    h = go * tanh_c;
    """,
    "tinygrad_rnn_lstm_step_forward",
)

_LSTM_BACKWARD = (  # gates: activations in, gradients of the pre-activations out
    "T c_prev, T tanh_c, T dh, int32 H",
    "T dc, raw T gates",
    """
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 4 * H + i % H;
    const T gi = gates[row], gf = gates[row + H], gg = gates[row + 2 * H];
    const T go = gates[row + 3 * H];
    const T dc_total = dc + dh * go * (T(1) - tanh_c * tanh_c);
    gates[row] = dc_total * gg * gi * (T(1) - gi);
    gates[row + H] = dc_total * c_prev * gf * (T(1) - gf);
    gates[row + 2 * H] = dc_total * gi * (T(1) - gg * gg);
    gates[row + 3 * H] = dh * tanh_c * go * (T(1) - go);
    dc = dc_total * gf;
    """,
    "tinygrad_rnn_lstm_step_backward",
)

_GRU_FORWARD = (  # x_gates, recurrent: (B, 3H) rows; rz: (2, B, H), r then z
    "raw T x_gates, raw T recurrent, raw T b_hn, T h_prev, int32 H, int32 BH",
    "raw T rz, T n, T h_n, T h",
    f"""
    const int j = i % H;
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 3 * H + j;
    const T r = {_SIGMOID.format(a="x_gates[row] + recurrent[row]")};
    const T z = {_SIGMOID.format(a="x_gates[row + H] + recurrent[row + H]")};
    h_n = recurrent[row + 2 * H] + b_hn[j];
    n = tanh(x_gates[row + 2 * H] + r * h_n);
    rz[i] = r; rz[i + BH] = z;
    h = n + z * (h_prev - n);
    """,
    "tinygrad_rnn_gru_step_forward",
)

_GRU_BACKWARD = (
    "raw T rz, T n, T h_n, T h_prev, int32 H, int32 BH",
    "T dh, raw T dh_gates, T dx_n",
    """
    const ptrdiff_t row = (ptrdiff_t)(i / H) * 3 * H + i % H;
    const T r = rz[i], z = rz[i + BH];
    const T dn = dh * (T(1) - z) * (T(1) - n * n);
    dh_gates[row] = dn * h_n * r * (T(1) - r);
    dh_gates[row + H] = dh * (h_prev - n) * z * (T(1) - z);
    dh_gates[row + 2 * H] = dn * r;
    dx_n = dn;
    dh = dh * z;
    """,
    "tinygrad_rnn_gru_step_backward",
)


@functools.cache
def _kernel(cupy, spec):
    in_params, out_params, body, name = spec
    return cupy.ElementwiseKernel(in_params, out_params, body, name)


class LSTMKernels:
    """Drop-in for fused._LSTMMath on CuPy arrays: one kernel per step and direction."""

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.H = hidden
        self._forward = _kernel(xp, _LSTM_FORWARD)
        self._backward = _kernel(xp, _LSTM_BACKWARD)

    def forward(self, gates, recurrent, c_prev, c, tanh_c, h):
        self._forward(recurrent, c_prev, self.H, gates, c, tanh_c, h)

    def backward(self, gates, c_prev, tanh_c, dh, dc):
        self._backward(c_prev, tanh_c, dh, self.H, dc, gates)


class GRUKernels:
    """Drop-in for fused._GRUMath on CuPy arrays: one kernel per step and direction."""

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.H = hidden
        self._zero_bias = xp.zeros(hidden, dtype=dtype)
        self._forward = _kernel(xp, _GRU_FORWARD)
        self._backward = _kernel(xp, _GRU_BACKWARD)

    def forward(self, x_gates, recurrent, b_hn, h_prev, rz, n, h_n, h):
        bias = self._zero_bias if b_hn is None else b_hn
        self._forward(x_gates, recurrent, bias, h_prev, self.H, h.size, rz, n, h_n, h)

    def backward(self, rz, n, h_n, h_prev, dh, dh_gates, dx_n):
        self._backward(rz, n, h_n, h_prev, self.H, dh.size, dh, dh_gates, dx_n)
