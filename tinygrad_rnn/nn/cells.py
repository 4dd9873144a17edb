"""Recurrent cells, written as their equations on Tensors.

Each step function below is the whole math of one time step. The cell modules call it once;
the layers in recurrent.py call it in a loop over time. Because every line is an ordinary
Tensor op, the graph recorded over a sequence is the unrolled network and `loss.backward()`
on it is backpropagation through time.

Shapes: x (B, I), h (B, H), c (B, H); gate weights are stacked along the first axis in
PyTorch's order: LSTM [i, f, g, o] -> (4H, I); GRU [r, z, n] -> (3H, I); RNN -> (H, I).
`x_gates` is the input's share of the pre-activations, x W_ih^T + b_ih, which the layers
compute for all time steps at once before the loop.
"""

from __future__ import annotations

import math

from ..tensor import Tensor, zeros
from . import init
from .layers import _check_positive_int, _empty, check_last_dim
from .module import Module

NONLINEARITIES = ("tanh", "relu")


def rnn_step(x_gates: Tensor, h: Tensor, W_hh_T: Tensor, b_hh: Tensor | None,
             nonlinearity: str = "tanh") -> Tensor:
    """Elman RNN:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    pre = x_gates + h @ W_hh_T
    if b_hh is not None:
        pre = pre + b_hh
    return pre.tanh() if nonlinearity == "tanh" else pre.relu()


def lstm_step(x_gates: Tensor, h: Tensor, c: Tensor, W_hh_T: Tensor, b_hh: Tensor | None,
              W_hr_T: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000):

        i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')            (then h' W_hr^T with a projection)
    """
    gates = x_gates + h @ W_hh_T
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    if W_hr_T is not None:
        h = h @ W_hr_T
    return h, c


def gru_step(x_gates: Tensor, h: Tensor, W_hh_T: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU (Cho et al. 2014), PyTorch's form with the reset gate applied after the matmul:

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
        h' = (1 - z) * n + z * h
    """
    h_gates = h @ W_hh_T
    if b_hh is not None:
        h_gates = h_gates + b_hh
    x_r, x_z, x_n = x_gates.chunk(3, dim=1)
    h_r, h_z, h_n = h_gates.chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return (1 - z) * n + z * h


def input_gates(x: Tensor, W_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """x W_ih^T + b_ih for x of any leading shape (one matmul for all time steps)."""
    lead = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]) @ W_ih.T
    if b_ih is not None:
        y = y + b_ih
    return y.reshape(*lead, W_ih.shape[0])


class RNNCellBase(Module):
    """Weights of one recurrent cell: weight_ih (G*H, I), weight_hh (G*H, H), biases (G*H,),
    all initialised U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does."""

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_positive_int("input_size", name, input_size)
        _check_positive_int("hidden_size", name, hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = self.num_gates * hidden_size
        self.weight_ih = _empty(rows, input_size, dtype=dtype, device=device)
        self.weight_hh = _empty(rows, hidden_size, dtype=dtype, device=device)
        if bias:
            self.bias_ih = _empty(rows, dtype=dtype, device=device)
            self.bias_hh = _empty(rows, dtype=dtype, device=device)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _prepare(self, x: Tensor, state: Tensor | None, state_name: str = "hx"):
        """Check input and state; add a batch axis to unbatched (1-D) input as PyTorch does."""
        name = type(self).__name__
        check_last_dim(name, "input", x, self.input_size, "input_size")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: input must be 1-D (input_size,) or 2-D (batch, "
                             f"input_size), got shape {x.shape}")
        if x.dtype != self.weight_ih.dtype:
            raise TypeError(f"{name}: input.dtype must be {self.weight_ih.dtype} (the parameters' "
                            f"dtype), got {x.dtype}")
        if x.device != self.weight_ih.device:
            raise RuntimeError(f"{name}: input is on '{x.device}' but the parameters are on "
                               f"'{self.weight_ih.device}'")
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size)
        if state is None:
            state = zeros(expected, dtype=x.dtype, device=x.device)
        else:
            if not batched and state.ndim == 1:
                state = state.unsqueeze(0)
            if tuple(state.shape) != expected:
                want = expected if batched else expected[1:]
                raise ValueError(f"{name}: {state_name}.shape must be {want}, got {tuple(state.shape)}")
        return x, state, batched

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias else s + ", bias=False"


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu). forward(input, hx=None) -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, h, batched = self._prepare(input, hx)
        h = rnn_step(input_gates(x, self.weight_ih, self.bias_ih), h, self.weight_hh.T,
                     self.bias_hh, self.nonlinearity)
        return h if batched else h.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step. forward(input, (h, c)=None) -> (h', c'). Gate order [i, f, g, o]."""

    num_gates = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):  # noqa: A002
        h, c = (None, None) if hx is None else hx
        x, h, batched = self._prepare(input, h, "hx[0]")
        _, c, _ = self._prepare(input, c, "hx[1]")
        h, c = lstm_step(input_gates(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh.T,
                         self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step (PyTorch's form). forward(input, hx=None) -> h'. Gate order [r, z, n]."""

    num_gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, h, batched = self._prepare(input, hx)
        h = gru_step(input_gates(x, self.weight_ih, self.bias_ih), h, self.weight_hh.T,
                     self.bias_hh)
        return h if batched else h.squeeze(0)


