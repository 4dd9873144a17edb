"""Recurrent layers over whole sequences: RNN, LSTM, GRU with PyTorch's signature.

A layer is a loop over time that calls the cell's step function (cells.py). The input's
share of the gates is one matmul for all time steps before the loop; inside it there is one
recurrent matmul per step for all gates. Stacked layers feed each other's outputs; the
reverse direction of a bidirectional layer runs the same loop backwards in time.
"""

from __future__ import annotations

import math

from .. import functional as F
from ..tensor import Tensor, cat, stack, zeros
from . import init
from .cells import NONLINEARITIES, gru_step, input_gates, lstm_step, rnn_step
from .layers import _check_positive_int, _empty
from .module import Module


class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: parameters, checks, the loop over layers,
    directions and time. Subclasses give `num_gates` and the per-step math (`_step`)."""

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_positive_int("input_size", name, input_size)
        _check_positive_int("hidden_size", name, hidden_size)
        _check_positive_int("num_layers", name, num_layers)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError(f"{name}: proj_size must be 0 or in [1, hidden_size={hidden_size}), "
                             f"got {proj_size}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.num_directions = 2 if bidirectional else 1
        rows = self.num_gates * hidden_size
        out_size = proj_size or hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * self.num_directions
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}",
                        _empty(rows, layer_input, dtype=dtype, device=device))
                setattr(self, f"weight_hh_l{layer}{suffix}",
                        _empty(rows, out_size, dtype=dtype, device=device))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _empty(rows, dtype=dtype, device=device))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _empty(rows, dtype=dtype, device=device))
                if proj_size:
                    setattr(self, f"weight_hr_l{layer}{suffix}",
                            _empty(proj_size, hidden_size, dtype=dtype, device=device))
        self.reset_parameters()

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"] if self.bidirectional else [""]

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def flatten_parameters(self) -> None:
        """Accepted for PyTorch compatibility; weights are always used as they are."""

    @property
    def output_size(self) -> int:
        """Features per direction in the output: proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def layer_weights(self, layer: int, reverse: bool = False) -> dict:
        suffix = f"l{layer}{'_reverse' if reverse else ''}"
        get = self._parameters.get
        return {"W_ih": get(f"weight_ih_{suffix}"), "W_hh": get(f"weight_hh_{suffix}"),
                "b_ih": get(f"bias_ih_{suffix}"), "b_hh": get(f"bias_hh_{suffix}"),
                "W_hr": get(f"weight_hr_{suffix}")}

    # ----------------------------------------------------------------- input checks

    def _check_input(self, x: Tensor) -> bool:
        """Validate the input; return whether it is batched (3-D)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3):
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise ValueError(f"{name}: input must be 3-D {layout} or 2-D (seq_len, input_size), "
                             f"got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input.shape[-1] must be input_size={self.input_size}, "
                             f"got {x.shape[-1]}")
        weight = self.weight_ih_l0
        if x.device != weight.device:
            raise RuntimeError(f"{name}: input is on '{x.device}' but the parameters are on "
                               f"'{weight.device}'")
        if x.dtype != weight.dtype:
            raise TypeError(f"{name}: input.dtype must be {weight.dtype} (the parameters' dtype), "
                            f"got {x.dtype}")
        return x.ndim == 3

    def _check_state(self, state: Tensor | None, arg: str, batch: int, size: int,
                     batched: bool, like: Tensor) -> Tensor:
        """An initial state of shape (num_layers * num_directions, batch, size), zeros if None."""
        name = type(self).__name__
        layers = self.num_layers * self.num_directions
        if state is None:
            return zeros(layers, batch, size, dtype=like.dtype, device=like.device)
        expected = (layers, batch, size) if batched else (layers, size)
        if not isinstance(state, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ValueError(f"{name}: {arg}.shape must be {expected}, got {tuple(state.shape)}")
        if state.device != like.device:
            raise RuntimeError(f"{name}: {arg} is on '{state.device}' but input is on '{like.device}'")
        if state.dtype != like.dtype:
            raise TypeError(f"{name}: {arg}.dtype must be {like.dtype}, got {state.dtype}")
        return state if batched else state.unsqueeze(1)

    # ----------------------------------------------------------------- the loop

    def forward(self, input: Tensor, hx=None):  # noqa: A002
        batched = self._check_input(input)
        x = input
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        states = self._initial_states(hx, batch, batched, x)  # list over layer*direction
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                out, final = self._run_direction(x, states[index], layer, reverse=direction == 1)
                outputs.append(out)
                finals.append(final)
            x = outputs[0] if len(outputs) == 1 else cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        output = x
        if not batched:
            output = output.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, self._final_states(finals, batched)

    def _run_direction(self, x: Tensor, state, layer: int, reverse: bool):
        """Run one layer in one direction over all T steps. x: (T, B, features)."""
        w = self.layer_weights(layer, reverse)
        x_gates = input_gates(x, w["W_ih"], w["b_ih"]).unbind(0)
        steps = range(len(x_gates) - 1, -1, -1) if reverse else range(len(x_gates))
        W_hh_T = w["W_hh"].T
        W_hr_T = w["W_hr"].T if w["W_hr"] is not None else None
        outputs = [None] * len(x_gates)
        for t in steps:
            state = self._step(x_gates[t], state, W_hh_T, w["b_hh"], W_hr_T)
            outputs[t] = self._hidden(state)
        return stack(outputs, dim=0), state

    # subclass hooks --------------------------------------------------------------

    def _initial_states(self, hx, batch, batched, like):
        h0 = self._check_state(hx, "hx", batch, self.output_size, batched, like)
        return list(h0.unbind(0))

    def _final_states(self, finals, batched):
        h_n = stack(finals, dim=0)
        return h_n if batched else h_n.squeeze(1)

    @staticmethod
    def _hidden(state) -> Tensor:
        return state

    def _step(self, x_gates, state, W_hh_T, b_hh, W_hr_T):
        raise NotImplementedError

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(RNNBase):
    """Elman RNN over a sequence: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    forward(input, hx=None) -> (output, h_n); output (T, B, D*H), h_n (num_layers*D, B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _step(self, x_gates, h, W_hh_T, b_hh, W_hr_T):
        return rnn_step(x_gates, h, W_hh_T, b_hh, self.nonlinearity)


class GRU(RNNBase):
    """GRU over a sequence (PyTorch's form). forward(input, hx=None) -> (output, h_n)."""

    num_gates = 3

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)

    def _step(self, x_gates, h, W_hh_T, b_hh, W_hr_T):
        return gru_step(x_gates, h, W_hh_T, b_hh)


class LSTM(RNNBase):
    """LSTM over a sequence. forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n)).

    output (T, B, D*H_out), h_n (num_layers*D, B, H_out), c_n (num_layers*D, B, H), where
    H_out = proj_size if proj_size > 0 else hidden_size.
    """

    num_gates = 4

    def _initial_states(self, hx, batch, batched, like):
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
        h0, c0 = hx if hx is not None else (None, None)
        h0 = self._check_state(h0, "h_0", batch, self.output_size, batched, like)
        c0 = self._check_state(c0, "c_0", batch, self.hidden_size, batched, like)
        return list(zip(h0.unbind(0), c0.unbind(0)))

    def _final_states(self, finals, batched):
        h_n = stack([h for h, _ in finals], dim=0)
        c_n = stack([c for _, c in finals], dim=0)
        return (h_n, c_n) if batched else (h_n.squeeze(1), c_n.squeeze(1))

    @staticmethod
    def _hidden(state) -> Tensor:
        return state[0]

    def _step(self, x_gates, state, W_hh_T, b_hh, W_hr_T):
        return lstm_step(x_gates, state[0], state[1], W_hh_T, b_hh, W_hr_T)
