"""Recurrent layers over whole sequences: RNN, LSTM, GRU with PyTorch's signature.

A layer is a loop over time that calls the cell's step function (cells.py). The input's
share of the gates is one matmul for all time steps before the loop; inside it there is one
recurrent matmul per step for all gates. Stacked layers feed each other's outputs; the
reverse direction of a bidirectional layer runs the same loop backwards in time.

Beyond PyTorch, as keyword-only options (see cells.py for the variant parameters' names):
learned initial states, recurrent dropout, zoneout, the LSTM variants (peephole, cifg,
layer_norm, forget_bias), the GRU of Cho et al. (reset_after=False), and variable-length
batches through `forward(input, hx, lengths=...)`.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, ops
from .. import functional as F
from ..scan import scan, scan_loop
from ..tensor import Tensor, apply_op, cat, stack, where, zeros
from . import fast_path
from .cells import (
    NONLINEARITIES,
    LSTMOptions,
    broadcast_state,
    gru_reset_before_step,
    gru_step,
    init_variant_parameter,
    input_gates,
    lstm_step,
    lstm_variant_step,
    lstm_variant_weights,
    rnn_step,
    set_forget_bias,
)
from .layers import _check_positive_int, _empty
from .module import Module

FAST_CHOICES = (True, False, "scan")
# Below this many steps a sequence runs its step in a Python loop even with fast=True:
# recording and writing out the step (about 0.6 ms) would cost more than replaying saves.
SCAN_MIN_STEPS = 4


def _map_state(fn, *states):
    """Apply fn part by part to states that are a Tensor or a tuple of Tensors (LSTM)."""
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states, strict=True))
    return fn(*states)


def _check_probability(owner: str, name: str, p, high_inclusive: bool = True) -> float:
    ok = isinstance(p, (int, float)) and not isinstance(p, bool)
    if not ok or not (0.0 <= p <= 1.0) or (p == 1.0 and not high_inclusive):
        interval = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(f"{owner}: {name} must be in {interval}, got {p!r}")
    return float(p)


class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: parameters, checks, the loop over layers,
    directions and time. Subclasses give `num_gates` and the per-step math (`_step`).

    Keyword-only options, on all three layers:
      learn_initial_state: h_0 (and c_0) become parameters of shape
          (num_layers * num_directions, H), zeros at first, repeated over the batch when
          forward gets no state (an explicit state wins).
      recurrent_dropout=p: variational dropout (Gal & Ghahramani 2016) on the recurrent
          input h_{t-1} of the matmul: one mask per sequence, layer and direction, scaled by
          1/(1-p); training mode only.
      zoneout=p: (Krueger et al. 2016) each unit of the state (h and c) keeps its previous
          value with probability p at each step in training mode; in eval mode the state is
          the expectation p * previous + (1 - p) * new, as in the paper.

    How the loop over time runs (`fast=`, also the attribute `layer.fast`): the step is
    always the cell's equations in cells.py, wrapped by `_sequence_step`.
      fast=True (default): `tg.scan` records the step once and replays it over all steps as
          one graph node (BPTT from the graph, without a graph node per op and step). The
          plain RNN, LSTM (with or without proj_size), PyTorch's GRU and the layer-normalised
          LSTM run instead as one fused node with a hand-written BPTT (nn/fast_path.py,
          ops/fused.py), which is faster still for them (docs/design.md has the numbers).
      fast="scan": `tg.scan` for every cell, the plain ones included.
      fast=False: the composed per-step graph, a Python loop over the step (`tg.scan_loop`):
          the reference the other two are tested against.
    remat=True: the scan keeps only the state of each step and recomputes the rest in
    backward (gradient checkpointing per step: less memory, about one more forward); the
    fused layer-normalised LSTM keeps its normalised recurrent terms for a few steps at a
    time only and makes them again in backward (about the plain LSTM's memory, instead of
    1.34x, for about 1.16x the time). The other fused cells ignore it (with fast="scan"
    they get scan's remat).
    Sequences shorter than SCAN_MIN_STEPS (4) run the loop in Python whatever `fast` says
    (sampling one step at a time, say): the same numbers, without the cost of recording.
    """

    num_gates = 1
    state_names = ("h_0",)
    # b_hh only ever adds to the gates (RNN, LSTM): the layer folds it into b_ih
    recurrent_bias_adds = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *,
                 learn_initial_state: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, fast: bool | str = True, remat: bool = False):
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
        if fast not in FAST_CHOICES or isinstance(fast, int) and not isinstance(fast, bool):
            raise ValueError(f"{name}: fast must be one of {FAST_CHOICES}, got {fast!r}")
        self.fast = fast
        self.remat = bool(remat)
        self.learn_initial_state = bool(learn_initial_state)
        self.recurrent_dropout = _check_probability(name, "recurrent_dropout",
                                                    recurrent_dropout, high_inclusive=False)
        self.zoneout = _check_probability(name, "zoneout", zoneout)
        # Filled by _run_direction when set to a dict (diagnostics.hidden_grad_norms):
        # {(layer, reverse): [h_1, ..., h_T]}, the hidden states the recurrence carries.
        self._hidden_trace: dict | None = None
        rows = self.num_gates * hidden_size
        out_size = proj_size or hidden_size
        # PyTorch's parameters first, in PyTorch's order ...
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * self.num_directions
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}",
                        _empty(rows, layer_input, dtype=dtype, device=device))
                setattr(self, f"weight_hh_l{layer}{suffix}",
                        _empty(rows, out_size, dtype=dtype, device=device))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}",
                            _empty(rows, dtype=dtype, device=device))
                    setattr(self, f"bias_hh_l{layer}{suffix}",
                            _empty(rows, dtype=dtype, device=device))
                if proj_size:
                    setattr(self, f"weight_hr_l{layer}{suffix}",
                            _empty(proj_size, hidden_size, dtype=dtype, device=device))
        # ... then the variants' own, so a default state dict is exactly PyTorch's.
        for layer in range(num_layers):
            for suffix in self._suffixes():
                for param_name, shape in self._variant_parameters():
                    setattr(self, f"{param_name}_l{layer}{suffix}",
                            _empty(*shape, dtype=dtype, device=device))
        if learn_initial_state:
            layers = num_layers * self.num_directions
            for state_name, size in zip(self.state_names, self._state_sizes(), strict=True):
                setattr(self, state_name, _empty(layers, size, dtype=dtype, device=device))
        self.reset_parameters()

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"] if self.bidirectional else [""]

    def _variant_parameters(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of the extra per-layer, per-direction parameters of a variant."""
        return []

    def _state_sizes(self) -> list[int]:
        return [self.output_size]

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as PyTorch (and the peephole
        weights); layer-norm gains 1, layer-norm biases and learned initial states 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, param in self.named_parameters():
            init_variant_parameter(name, param, bound)

    def flatten_parameters(self) -> None:
        """Accepted for PyTorch compatibility; weights are always used as they are."""

    @property
    def output_size(self) -> int:
        """Features per direction in the output: proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def is_variant(self) -> bool:
        """True when the per-step math is not PyTorch's (LSTM variants, GRU reset_after=False).
        Learned initial states, recurrent dropout, zoneout and lengths are handled around the
        step, in `forward` and `_run_direction`."""
        return False

    def layer_weights(self, layer: int, reverse: bool = False) -> dict:
        """The parameters of one layer and direction: W_ih, W_hh, b_ih, b_hh, W_hr (None when
        absent), and for the LSTM variants "peephole" and "layer_norm" (None when off), in the
        form lstm_variant_step takes them."""
        suffix = f"l{layer}{'_reverse' if reverse else ''}"
        get = self._parameters.get
        weights = {"W_ih": get(f"weight_ih_{suffix}"), "W_hh": get(f"weight_hh_{suffix}"),
                   "b_ih": get(f"bias_ih_{suffix}"), "b_hh": get(f"bias_hh_{suffix}"),
                   "W_hr": get(f"weight_hr_{suffix}")}
        peephole, norm = lstm_variant_weights(lambda name: get(f"{name}_{suffix}"))
        weights["peephole"], weights["layer_norm"] = peephole, norm
        return weights

    # ----------------------------------------------------------------- input checks

    def _check_input(self, x: Tensor) -> bool:
        """Validate the input; return whether it is batched (3-D)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3):
            layout = ("(batch, seq_len, input_size)" if self.batch_first
                      else "(seq_len, batch, input_size)")
            raise ValueError(f"{name}: input must be 3-D {layout} or 2-D (seq_len, input_size), "
                             f"got shape {x.shape}")
        steps = x.shape[1] if x.ndim == 3 and self.batch_first else x.shape[0]
        if steps == 0:
            raise ValueError(f"{name}: input must have at least one time step, got shape {x.shape}")
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
                     batched: bool, like: Tensor, learned: str | None = None) -> Tensor:
        """An initial state of shape (num_layers * num_directions, batch, size); when None,
        the learned parameter named `learned` (learn_initial_state=True) repeated over the
        batch, else zeros."""
        name = type(self).__name__
        layers = self.num_layers * self.num_directions
        if state is None:
            learned = self._parameters.get(learned) if self.learn_initial_state else None
            if learned is not None:
                return broadcast_state(learned, batch)
            return zeros(layers, batch, size, dtype=like.dtype, device=like.device)
        expected = (layers, batch, size) if batched else (layers, size)
        if not isinstance(state, Tensor):
            raise TypeError(f"{name}: {arg} must be a Tensor, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ValueError(f"{name}: {arg}.shape must be {expected}, got {tuple(state.shape)}")
        if state.device != like.device:
            raise RuntimeError(f"{name}: {arg} is on '{state.device}' but input is on "
                               f"'{like.device}'")
        if state.dtype != like.dtype:
            raise TypeError(f"{name}: {arg}.dtype must be {like.dtype}, got {state.dtype}")
        return state if batched else state.unsqueeze(1)

    def _check_lengths(self, lengths, batched: bool, seq_len: int, batch: int):
        """lengths -> an int64 NumPy array (B,) with 1 <= lengths <= T, or None when absent."""
        if lengths is None:
            return None
        name = type(self).__name__
        if not batched:
            raise ValueError(f"{name}: lengths= needs a batched (3-D) input, got a 2-D input")
        if isinstance(lengths, Tensor):
            lengths = lengths.numpy()
        elif hasattr(lengths, "detach") and hasattr(lengths, "cpu"):  # a torch tensor
            lengths = lengths.detach().cpu().numpy()
        lengths = np.asarray(backend.to_numpy(lengths) if hasattr(lengths, "dtype") else lengths)
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"{name}: lengths must be integers, got dtype {lengths.dtype}")
        if lengths.shape != (batch,):
            raise ValueError(f"{name}: lengths.shape must be (batch,) = ({batch},), "
                             f"got {lengths.shape}")
        if lengths.min() < 1 or lengths.max() > seq_len:
            raise ValueError(f"{name}: lengths must be in [1, seq_len={seq_len}], got "
                             f"min {lengths.min()}, max {lengths.max()}")
        return lengths.astype(np.int64)

    # ----------------------------------------------------------------- the loop

    def forward(self, input: Tensor, hx=None, lengths=None):  # noqa: A002
        """input (T, B, I) (or (B, T, I) with batch_first, or unbatched (T, I)).

        lengths: optional (B,) integers (list, array or Tensor), each in [1, T], in any order:
        sequence b is input[:lengths[b], b]. Its outputs past its end are exact zeros (with no
        gradient), its final state is the state at its own last step, and the reverse
        direction starts at its own end (as PyTorch's packed sequences).
        """
        batched = self._check_input(input)
        x = input
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        lengths = self._check_lengths(lengths, batched, x.shape[0], batch)
        if lengths is not None and (lengths == x.shape[0]).all():
            lengths = None  # every sequence is full: nothing to mask
        states = self._initial_states(hx, batch, batched, x)  # list over layer*direction
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                reverse = direction == 1
                if lengths is None:
                    out, final = self._run_direction(x, states[index], layer, reverse)
                else:
                    out, final = self._run_direction(x, states[index], layer, reverse,
                                                     lengths=lengths)
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

    def _run_direction(self, x: Tensor, state, layer: int, reverse: bool, lengths=None):
        """Run one layer in one direction over all T steps. x: (T, B, features).

        With lengths ((B,) int array), sequence b only steps while t < lengths[b]; at the
        other steps its state is carried unchanged and its output is zero.
        """
        if fast_path.applies(self):
            return fast_path.run_direction(self, x, state, layer, reverse, lengths)
        w = self.layer_weights(layer, reverse)
        b_ih, b_hh = w["b_ih"], w["b_hh"]
        if self.recurrent_bias_adds and b_hh is not None:
            b_ih, b_hh = b_ih + b_hh, None  # one bias in the input's gates, for all steps
        h_mask = self._recurrent_dropout_mask(x.shape[1], x)
        use_scan = self.fast and self._hidden_trace is None and x.shape[0] >= SCAN_MIN_STEPS
        if use_scan:  # the step projects its x: scan runs that per chunk of steps, batched
            step = self._sequence_step(w, b_hh, h_mask, project=(w["W_ih"], b_ih))
            xs = x
        else:  # the Python loop: one input projection for all steps, done here
            step = self._sequence_step(w, b_hh, h_mask)
            xs = input_gates(x, w["W_ih"], b_ih, w["layer_norm"])
        if lengths is not None:
            T = x.shape[0]
            valid = np.arange(T)[:, None, None] < lengths[None, :, None]  # (T, B, 1)
            xs = (xs, Tensor._wrap(backend.to_device(valid, x.device)))
        if use_scan:
            final, outputs = scan(step, state, xs, reverse=reverse, remat=self.remat)
            return outputs, final
        on_step = None
        if self._hidden_trace is not None:
            trace = self._hidden_trace.setdefault((layer, reverse), [None] * x.shape[0])

            def on_step(t, carry):
                trace[t] = self._hidden(carry)
        final, outputs = scan_loop(step, state, xs, reverse=reverse, on_step=on_step)
        return outputs, final

    def _sequence_step(self, w: dict, b_hh: Tensor | None, h_mask: Tensor | None,
                       project: tuple | None = None):
        """The step that `scan` runs for one layer and direction: (state, x) -> (state, y).

        x is the step's share of the input gates (B, G*H), or, with project=(W_ih, b_ih),
        the step's input (B, I), which the step projects itself. With lengths= x is
        (x, valid), where valid (B, 1) says which sequences are still running: the others
        keep their state and output zeros. Zoneout acts on the new state.
        """
        W_hh_T = w["W_hh"].T
        W_hr_T = w["W_hr"].T if w["W_hr"] is not None else None

        def step(state, x):
            x, valid = x if isinstance(x, tuple) else (x, None)
            x_gates = x if project is None else input_gates(x, *project, w["layer_norm"])
            new_state = self._step(x_gates, state, W_hh_T, b_hh, W_hr_T, w=w, h_mask=h_mask)
            if self.zoneout:
                new_state = self._zoneout(state, new_state)
            if valid is None:
                return new_state, self._hidden(new_state)
            new_state = _map_state(lambda new, old: where(valid, new, old), new_state, state)
            return new_state, where(valid, self._hidden(new_state), 0.0)
        return step

    def _recurrent_dropout_mask(self, batch: int, like: Tensor) -> Tensor | None:
        """One variational dropout mask (B, H_out) for a whole sequence, or None."""
        if not (self.training and self.recurrent_dropout):
            return None
        mask = F.dropout_mask((batch, self.output_size), self.recurrent_dropout, like.dtype,
                              like.device)
        return Tensor._wrap(mask)

    def _zoneout(self, old, new):
        """Zoneout: keep each unit's previous value with probability p (its expectation
        p * old + (1 - p) * new in eval mode)."""
        p = self.zoneout
        if not self.training:
            return _map_state(lambda o, n: o * p + n * (1.0 - p), old, new)

        def zone(o, n):
            return where(apply_op(ops.BernoulliMask, n, p=p), o, n)
        return _map_state(zone, old, new)

    # subclass hooks --------------------------------------------------------------

    def _initial_states(self, hx, batch, batched, like):
        h0 = self._check_state(hx, "hx", batch, self.output_size, batched, like, "h_0")
        return list(h0.unbind(0))

    def _final_states(self, finals, batched):
        h_n = stack(finals, dim=0)
        return h_n if batched else h_n.squeeze(1)

    @staticmethod
    def _hidden(state) -> Tensor:
        return state

    def _step(self, x_gates, state, W_hh_T, b_hh, W_hr_T, w=None, h_mask=None):
        """One time step: the new state from x_gates (B, G*H) and the previous state.
        w: this layer's `layer_weights` (for the variants); h_mask: recurrent dropout."""
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
        if self.learn_initial_state:
            s += ", learn_initial_state=True"
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        if self.zoneout:
            s += f", zoneout={self.zoneout}"
        return s


class RNN(RNNBase):
    """Elman RNN over a sequence: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    forward(input, hx=None, lengths=None) -> (output, h_n); output (T, B, D*H),
    h_n (num_layers*D, B, H). Keyword options: see RNNBase.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 learn_initial_state: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, fast: bool | str = True, remat: bool = False):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {NONLINEARITIES}, "
                             f"got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype,
                         learn_initial_state=learn_initial_state,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, fast=fast,
                         remat=remat)
        self.nonlinearity = nonlinearity

    def _step(self, x_gates, h, W_hh_T, b_hh, W_hr_T, w=None, h_mask=None):
        # h only enters through W_hh, so recurrent dropout is just a masked h
        h_in = h if h_mask is None else h * h_mask
        return rnn_step(x_gates, h_in, W_hh_T, b_hh, self.nonlinearity)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + f", nonlinearity={self.nonlinearity!r}"


class GRU(RNNBase):
    """GRU over a sequence. forward(input, hx=None, lengths=None) -> (output, h_n).

    reset_after=True (default) is PyTorch's form; reset_after=False the original form of
    Cho et al. 2014, where the reset gate multiplies h before the matmul (same weights).
    Other keyword options: see RNNBase.
    """

    num_gates = 3
    recurrent_bias_adds = False  # b_hn sits inside r * (h W_hn^T + b_hn)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, reset_after: bool = True,
                 learn_initial_state: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, fast: bool | str = True, remat: bool = False):
        if not isinstance(reset_after, bool):
            raise TypeError(f"GRU: reset_after must be True or False, got {reset_after!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype,
                         learn_initial_state=learn_initial_state,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, fast=fast,
                         remat=remat)
        self.reset_after = reset_after

    @property
    def is_variant(self) -> bool:
        return not self.reset_after

    def _step(self, x_gates, h, W_hh_T, b_hh, W_hr_T, w=None, h_mask=None):
        step = gru_step if self.reset_after else gru_reset_before_step
        return step(x_gates, h, W_hh_T, b_hh, h_mask=h_mask)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.reset_after else s + ", reset_after=False"


class LSTM(LSTMOptions, RNNBase):
    """LSTM over a sequence. forward(input, (h_0, c_0)=None, lengths=None) -> (output, (h_n, c_n)).

    output (T, B, D*H_out), h_n (num_layers*D, B, H_out), c_n (num_layers*D, B, H), where
    H_out = proj_size if proj_size > 0 else hidden_size.

    Keyword options (all combine, also with proj_size, num_layers, bidirectional; see
    cells.lstm_variant_step for the equations and cells.py for the parameter names):
    peephole=True (weight_ci_l{k}, weight_cf_l{k}, weight_co_l{k}), cifg=True (gates
    [f, g, o], i = 1 - f; 3H weight rows), layer_norm=True (ln_weight_ih_l{k}, ln_bias_ih_l{k},
    ln_weight_hh_l{k}, ln_bias_hh_l{k}, ln_weight_c_l{k}, ln_bias_c_l{k}), forget_bias=v
    (needs bias=True), and RNNBase's learn_initial_state, recurrent_dropout, zoneout.
    """

    state_names = ("h_0", "c_0")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, peephole: bool = False,
                 cifg: bool = False, layer_norm: bool = False, forget_bias: float | None = None,
                 learn_initial_state: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, fast: bool | str = True, remat: bool = False):
        self._set_lstm_options("LSTM", bias, peephole, cifg, layer_norm, forget_bias)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype,
                         learn_initial_state=learn_initial_state,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, fast=fast,
                         remat=remat)

    def _state_sizes(self) -> list[int]:
        return [self.output_size, self.hidden_size]

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias is None:
            return
        for layer in range(self.num_layers):
            for suffix in self._suffixes():
                set_forget_bias(getattr(self, f"bias_ih_l{layer}{suffix}"),
                                getattr(self, f"bias_hh_l{layer}{suffix}"),
                                self.forget_bias, self.hidden_size, self.cifg)

    def _initial_states(self, hx, batch, batched, like):
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
        h0, c0 = hx if hx is not None else (None, None)
        h0 = self._check_state(h0, "h_0", batch, self.output_size, batched, like, "h_0")
        c0 = self._check_state(c0, "c_0", batch, self.hidden_size, batched, like, "c_0")
        return list(zip(h0.unbind(0), c0.unbind(0), strict=True))

    def _final_states(self, finals, batched):
        h_n = stack([h for h, _ in finals], dim=0)
        c_n = stack([c for _, c in finals], dim=0)
        return (h_n, c_n) if batched else (h_n.squeeze(1), c_n.squeeze(1))

    @staticmethod
    def _hidden(state) -> Tensor:
        return state[0]

    def _step(self, x_gates, state, W_hh_T, b_hh, W_hr_T, w=None, h_mask=None):
        h, c = state
        if h_mask is not None:
            h = h * h_mask  # h only enters through W_hh: recurrent dropout is a masked h
        if not self.is_variant:
            return lstm_step(x_gates, h, c, W_hh_T, b_hh, W_hr_T)
        return lstm_variant_step(x_gates, h, c, W_hh_T, b_hh, W_hr_T, peephole=w["peephole"],
                                 cifg=self.cifg, layer_norm=w["layer_norm"])
