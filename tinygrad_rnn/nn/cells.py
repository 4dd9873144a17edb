"""Recurrent cells, written as their equations on Tensors.

Each step function below is the whole math of one time step. The cell modules call it once;
the layers in recurrent.py call it in a loop over time. Because every line is an ordinary
Tensor op, the graph recorded over a sequence is the unrolled network and `loss.backward()`
on it is backpropagation through time.

Shapes: x (B, I), h (B, H), c (B, H); gate weights are stacked along the first axis in
PyTorch's order: LSTM [i, f, g, o] -> (4H, I); GRU [r, z, n] -> (3H, I); RNN -> (H, I).
`x_gates` is the input's share of the pre-activations, x W_ih^T + b_ih, which the layers
compute for all time steps at once before the loop.

The plain `rnn_step`, `lstm_step` and `gru_step` are PyTorch's cells and the reference to read
first. The variants (peephole, CIFG and layer-normalised LSTM; the GRU of Cho et al. with the
reset gate before the matmul) are written out beside them in `lstm_variant_step` and
`gru_reset_before_step`.

Variant parameters (registered after PyTorch's, so default state dicts are PyTorch's):

    weight_ci, weight_cf, weight_co   (H,)   peephole weights of the i, f, o gates
                                             (no weight_ci with cifg=True)
    ln_weight_ih, ln_bias_ih          (GH,)  gain/bias of LN(x W_ih^T)  (layer_norm=True)
    ln_weight_hh, ln_bias_hh          (GH,)  gain/bias of LN(h W_hh^T)
    ln_weight_c, ln_bias_c            (H,)   gain/bias of LN(c) before its tanh
    h_0 (and c_0 for the LSTM)        (H,)   learned initial state (learn_initial_state=True)

where G is the number of gate blocks: 4 for the LSTM, 3 with cifg=True ([f, g, o]).
The layers use the same names with PyTorch's suffixes (`weight_ci_l0`, `ln_bias_c_l1_reverse`).
"""

from __future__ import annotations

import math

from .. import functional as F
from ..tensor import Tensor, zeros
from . import init
from .layers import _check_positive_int, _empty, check_last_dim
from .module import Module

NONLINEARITIES = ("tanh", "relu")
LAYER_NORM_EPS = 1e-5


def rnn_step(x_gates: Tensor, h: Tensor, W_hh_T: Tensor, b_hh: Tensor | None,
             nonlinearity: str = "tanh") -> Tensor:
    """Elman RNN:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""
    if b_hh is not None:
        x_gates = x_gates + b_hh  # does not depend on h: tg.scan runs it once for all steps
    pre = x_gates + h @ W_hh_T
    return pre.tanh() if nonlinearity == "tanh" else pre.relu()


def lstm_step(x_gates: Tensor, h: Tensor, c: Tensor, W_hh_T: Tensor, b_hh: Tensor | None,
              W_hr_T: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000):

        i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')            (then h' W_hr^T with a projection)
    """
    if b_hh is not None:
        x_gates = x_gates + b_hh  # does not depend on h: tg.scan runs it once for all steps
    gates = x_gates + h @ W_hh_T
    i, f, g, o = gates.chunk(4, dim=1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    if W_hr_T is not None:
        h = h @ W_hr_T
    return h, c


def normalize(x: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
    """LN(x; gain, bias) = (x - mean) / sqrt(var + eps) * gain + bias over the last axis."""
    return F.layer_norm(x, x.shape[-1], gain, bias, LAYER_NORM_EPS)


def lstm_variant_step(x_gates: Tensor, h: Tensor, c: Tensor, W_hh_T: Tensor,
                      b_hh: Tensor | None, W_hr_T: Tensor | None = None, *,
                      peephole: tuple | None = None, cifg: bool = False,
                      layer_norm: dict | None = None) -> tuple[Tensor, Tensor]:
    """The LSTM with its optional variants; with none of them it computes `lstm_step`.

    peephole = (w_ci, w_cf, w_co): diagonal peephole weights (Gers & Schmidhuber 2000); the
        input and forget gates look at c_{t-1}, the output gate at the new c_t.
    cifg: coupled input and forget gate: the gates are [f, g, o] and i = 1 - f
        (w_ci is then None).
    layer_norm = {"ih": (gain, bias), "hh": (gain, bias), "c": (gain, bias)}: the layer-
        normalised LSTM of Ba et al. 2016, eqs. (20)-(22). The input term is normalised by
        the caller (`input_gates(..., layer_norm=...)`): x_gates = LN(x W_ih^T) + b_ih.

        i, f, g, o = split(x_gates + LN(h W_hh^T) + b_hh)      (no i with cifg)
        f  = sigmoid(f + w_cf * c)
        i  = sigmoid(i + w_ci * c)          or  i = 1 - f with cifg
        c' = f * c + i * tanh(g)
        o  = sigmoid(o + w_co * c')
        h' = o * tanh(LN(c'))               (then h' W_hr^T with a projection)

    Peephole terms are added after the normalisation, so they keep their meaning.
    """
    recurrent = h @ W_hh_T
    if layer_norm is not None:
        recurrent = normalize(recurrent, *layer_norm["hh"])
    if b_hh is not None:
        x_gates = x_gates + b_hh  # does not depend on h: tg.scan runs it once for all steps
    gates = x_gates + recurrent
    if cifg:
        f, g, o = gates.chunk(3, dim=1)
    else:
        i, f, g, o = gates.chunk(4, dim=1)
    if peephole is not None:
        w_ci, w_cf, w_co = peephole
        f = f + w_cf * c
        if not cifg:
            i = i + w_ci * c
    f = f.sigmoid()
    i = 1 - f if cifg else i.sigmoid()
    c = f * c + i * g.tanh()
    if peephole is not None:
        o = o + w_co * c
    cell_out = normalize(c, *layer_norm["c"]) if layer_norm is not None else c
    h = o.sigmoid() * cell_out.tanh()
    if W_hr_T is not None:
        h = h @ W_hr_T
    return h, c


def gru_step(x_gates: Tensor, h: Tensor, W_hh_T: Tensor, b_hh: Tensor | None, *,
             h_mask: Tensor | None = None) -> Tensor:
    """GRU (Cho et al. 2014), PyTorch's form with the reset gate applied after the matmul:

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
        h' = (1 - z) * n + z * h

    h_mask: recurrent dropout mask; the matmuls then see h * h_mask, the update h itself.
    """
    h_in = h if h_mask is None else h * h_mask
    h_gates = h_in @ W_hh_T
    if b_hh is not None:
        h_gates = h_gates + b_hh
    x_r, x_z, x_n = x_gates.chunk(3, dim=1)
    h_r, h_z, h_n = h_gates.chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return n + z * (h - n)  # = (1 - z) * n + z * h, in three ops instead of four


def gru_reset_before_step(x_gates: Tensor, h: Tensor, W_hh_T: Tensor, b_hh: Tensor | None, *,
                          h_mask: Tensor | None = None) -> Tensor:
    """GRU in the original form of Cho et al. 2014 (reset_after=False): the reset gate
    multiplies h before the recurrent matmul of the candidate. Same weights as `gru_step`.

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)
        h' = (1 - z) * n + z * h
    """
    hidden = h.shape[1]
    h_in = h if h_mask is None else h * h_mask
    W_hrz_T, W_hn_T = W_hh_T.split([2 * hidden, W_hh_T.shape[1] - 2 * hidden], dim=1)
    x_r, x_z, x_n = x_gates.chunk(3, dim=1)
    h_rz = h_in @ W_hrz_T
    if b_hh is not None:
        b_hrz, b_hn = b_hh.split([2 * hidden, b_hh.shape[0] - 2 * hidden], dim=0)
        h_rz = h_rz + b_hrz
    h_r, h_z = h_rz.chunk(2, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    h_n = (r * h_in) @ W_hn_T
    if b_hh is not None:
        h_n = h_n + b_hn
    n = (x_n + h_n).tanh()
    return n + z * (h - n)  # = (1 - z) * n + z * h, in three ops instead of four


def input_gates(x: Tensor, W_ih: Tensor, b_ih: Tensor | None,
                layer_norm: dict | None = None) -> Tensor:
    """x W_ih^T + b_ih for x of any leading shape (one matmul for all time steps).

    With layer_norm (the LSTM's {"ih": (gain, bias), ...}): LN(x W_ih^T) + b_ih.
    """
    if layer_norm is None:
        return F.linear(x, W_ih, b_ih)  # one node: one (..., G*H) array for the graph to keep
    gain, bias = layer_norm["ih"]
    if b_ih is not None:
        bias = bias + b_ih  # LN(x W^T) * gain + bias + b_ih: one bias, added by the LN node
    return normalize(F.linear(x, W_ih), gain, bias)


# --------------------------------------------------------------------------- LSTM options


def check_lstm_options(owner: str, bias: bool, peephole, cifg, layer_norm, forget_bias) -> None:
    for name, value in (("peephole", peephole), ("cifg", cifg), ("layer_norm", layer_norm)):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    if forget_bias is not None:
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise TypeError(f"{owner}: forget_bias must be a number or None, got {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"{owner}: forget_bias must be finite, got {forget_bias}")
        if not bias:
            raise ValueError(f"{owner}: forget_bias={forget_bias} needs bias=True (it is the "
                             "forget slice of bias_ih); got bias=False")


def lstm_variant_parameters(hidden_size: int, peephole: bool, cifg: bool,
                            layer_norm: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the extra parameters of an LSTM variant, in registration order."""
    gate_rows = (3 if cifg else 4) * hidden_size
    params = []
    if peephole:
        gates = ("f", "o") if cifg else ("i", "f", "o")
        params += [(f"weight_c{gate}", (hidden_size,)) for gate in gates]
    if layer_norm:
        for part, size in (("ih", gate_rows), ("hh", gate_rows), ("c", hidden_size)):
            params += [(f"ln_weight_{part}", (size,)), (f"ln_bias_{part}", (size,))]
    return params


def lstm_variant_weights(get) -> tuple[tuple | None, dict | None]:
    """(peephole, layer_norm) arguments of lstm_variant_step; get(name) -> Parameter or None."""
    peephole = None
    if get("weight_cf") is not None:
        peephole = (get("weight_ci"), get("weight_cf"), get("weight_co"))
    norm = None
    if get("ln_weight_c") is not None:
        norm = {part: (get(f"ln_weight_{part}"), get(f"ln_bias_{part}"))
                for part in ("ih", "hh", "c")}
    return peephole, norm


def init_variant_parameter(name: str, param: Tensor, bound: float) -> None:
    """LN gains start at 1, LN biases and learned initial states at 0, everything else
    (PyTorch's weights and the peephole weights) U(-bound, bound)."""
    if name.startswith("ln_weight"):
        init.ones_(param)
    elif name.startswith("ln_bias") or name.startswith(("h_0", "c_0")):
        init.zeros_(param)
    else:
        init.uniform_(param, -bound, bound)


def set_forget_bias(bias_ih: Tensor, bias_hh: Tensor, value: float, hidden_size: int,
                    cifg: bool) -> None:
    """Forget slice of bias_ih <- value, of bias_hh <- 0: the effective forget bias is value."""
    start = 0 if cifg else hidden_size  # gate order [i, f, g, o], or [f, g, o] with cifg
    bias_ih.data[start:start + hidden_size] = value
    bias_hh.data[start:start + hidden_size] = 0
    bias_ih._bump_version()
    bias_hh._bump_version()


def broadcast_state(state: Tensor, batch: int) -> Tensor:
    """A learned initial state (..., H) repeated over the batch: (H,) -> (B, H),
    (L, H) -> (L, B, H). Gradients from every sequence are summed back into it."""
    if state.ndim == 1:
        return state.unsqueeze(0).broadcast_to(batch, state.shape[0])
    return state.unsqueeze(1).broadcast_to(state.shape[0], batch, state.shape[1])


# --------------------------------------------------------------------------- cells


class RNNCellBase(Module):
    """Weights of one recurrent cell: weight_ih (G*H, I), weight_hh (G*H, H), biases (G*H,),
    all initialised U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does; then the variant parameters.

    learn_initial_state=True adds h_0 (and c_0) of shape (H,), zeros at first, used (for
    every sequence of the batch) when forward gets no state.
    """

    num_gates = 1
    state_names = ("h_0",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, *, learn_initial_state: bool = False):
        super().__init__()
        name = type(self).__name__
        _check_positive_int("input_size", name, input_size)
        _check_positive_int("hidden_size", name, hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.learn_initial_state = bool(learn_initial_state)
        rows = self.num_gates * hidden_size
        self.weight_ih = _empty(rows, input_size, dtype=dtype, device=device)
        self.weight_hh = _empty(rows, hidden_size, dtype=dtype, device=device)
        if bias:
            self.bias_ih = _empty(rows, dtype=dtype, device=device)
            self.bias_hh = _empty(rows, dtype=dtype, device=device)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        for param_name, shape in self._variant_parameters():
            setattr(self, param_name, _empty(*shape, dtype=dtype, device=device))
        if learn_initial_state:
            for state_name in self.state_names:
                setattr(self, state_name, _empty(hidden_size, dtype=dtype, device=device))
        self.reset_parameters()

    def _variant_parameters(self) -> list[tuple[str, tuple[int, ...]]]:
        return []

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, param in self.named_parameters():
            init_variant_parameter(name, param, bound)

    def _prepare(self, x: Tensor, state: Tensor | None, state_name: str = "hx",
                 initial: Tensor | None = None):
        """Check input and state; add a batch axis to unbatched (1-D) input as PyTorch does.
        A missing state is `initial` (a learned one) repeated over the batch, else zeros."""
        name = type(self).__name__
        check_last_dim(name, "input", x, self.input_size, "input_size")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: input must be 1-D (input_size,) or 2-D (batch, "
                             f"input_size), got shape {x.shape}")
        if x.dtype != self.weight_ih.dtype:
            raise TypeError(f"{name}: input.dtype must be {self.weight_ih.dtype} (the "
                            f"parameters' dtype), got {x.dtype}")
        if x.device != self.weight_ih.device:
            raise RuntimeError(f"{name}: input is on '{x.device}' but the parameters are on "
                               f"'{self.weight_ih.device}'")
        batched = x.ndim == 2
        if not batched:
            x = x.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size)
        if state is None:
            if initial is not None:
                state = broadcast_state(initial, x.shape[0])
            else:
                state = zeros(expected, dtype=x.dtype, device=x.device)
        else:
            if not isinstance(state, Tensor):
                raise TypeError(f"{name}: {state_name} must be a Tensor, "
                                f"got {type(state).__name__}")
            if state.dtype != x.dtype:
                raise TypeError(f"{name}: {state_name}.dtype must be {x.dtype}, got {state.dtype}")
            if state.device != x.device:
                raise RuntimeError(f"{name}: {state_name} is on '{state.device}' but input is on "
                                   f"'{x.device}'")
            if not batched and state.ndim == 1:
                state = state.unsqueeze(0)
            if tuple(state.shape) != expected:
                want = expected if batched else expected[1:]
                raise ValueError(f"{name}: {state_name}.shape must be {want}, "
                                 f"got {tuple(state.shape)}")
        return x, state, batched

    def _initial(self, state_name: str) -> Tensor | None:
        return self._parameters.get(state_name) if self.learn_initial_state else None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.learn_initial_state:
            s += ", learn_initial_state=True"
        return s


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu). forward(input, hx=None) -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None, *,
                 learn_initial_state: bool = False):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be one of {NONLINEARITIES}, "
                             f"got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         learn_initial_state=learn_initial_state)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, h, batched = self._prepare(input, hx, initial=self._initial("h_0"))
        h = rnn_step(input_gates(x, self.weight_ih, self.bias_ih), h, self.weight_hh.T,
                     self.bias_hh, self.nonlinearity)
        return h if batched else h.squeeze(0)


class LSTMOptions:
    """The variant options that LSTMCell and LSTM share. They are set before the parameters
    are made, since they decide how many gates (3 with cifg) and which extra parameters
    there are; with none of them the module is PyTorch's plain LSTM."""

    def _set_lstm_options(self, owner: str, bias: bool, peephole: bool, cifg: bool,
                          layer_norm: bool, forget_bias: float | None) -> None:
        check_lstm_options(owner, bias, peephole, cifg, layer_norm, forget_bias)
        for name, value in (("peephole", peephole), ("cifg", cifg), ("layer_norm", layer_norm),
                            ("forget_bias", forget_bias)):
            object.__setattr__(self, name, value)  # before Module.__init__ sets up registries

    @property
    def num_gates(self) -> int:
        return 3 if self.cifg else 4

    @property
    def is_variant(self) -> bool:
        """True when this is not PyTorch's plain LSTM (peephole, cifg or layer_norm)."""
        return self.peephole or self.cifg or self.layer_norm

    def _variant_parameters(self):
        return lstm_variant_parameters(self.hidden_size, self.peephole, self.cifg,
                                       self.layer_norm)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        for name in ("peephole", "cifg", "layer_norm"):
            if getattr(self, name):
                s += f", {name}=True"
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias}"
        return s


class LSTMCell(LSTMOptions, RNNCellBase):
    """One LSTM step. forward(input, (h, c)=None) -> (h', c'). Gate order [i, f, g, o].

    Keyword options (see `lstm_variant_step`): peephole=True (weight_ci, weight_cf,
    weight_co), cifg=True (gates [f, g, o], i = 1 - f: weights have 3H rows),
    layer_norm=True (ln_weight_ih/ln_bias_ih, ln_weight_hh/ln_bias_hh, ln_weight_c/ln_bias_c),
    forget_bias=v (forget slice of bias_ih = v, of bias_hh = 0), learn_initial_state=True.
    All of them combine.
    """

    state_names = ("h_0", "c_0")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, *, peephole: bool = False, cifg: bool = False,
                 layer_norm: bool = False, forget_bias: float | None = None,
                 learn_initial_state: bool = False):
        self._set_lstm_options("LSTMCell", bias, peephole, cifg, layer_norm, forget_bias)
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         learn_initial_state=learn_initial_state)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias is not None:
            set_forget_bias(self.bias_ih, self.bias_hh, self.forget_bias, self.hidden_size,
                            self.cifg)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):  # noqa: A002
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTMCell: hx must be a tuple (h, c)")
        h, c = (None, None) if hx is None else hx
        x, h, batched = self._prepare(input, h, "hx[0]", self._initial("h_0"))
        _, c, _ = self._prepare(input, c, "hx[1]", self._initial("c_0"))
        if not self.is_variant:
            h, c = lstm_step(input_gates(x, self.weight_ih, self.bias_ih), h, c,
                             self.weight_hh.T, self.bias_hh)
        else:
            peephole, norm = lstm_variant_weights(self._parameters.get)
            h, c = lstm_variant_step(input_gates(x, self.weight_ih, self.bias_ih, norm), h, c,
                                     self.weight_hh.T, self.bias_hh, peephole=peephole,
                                     cifg=self.cifg, layer_norm=norm)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step. forward(input, hx=None) -> h'. Gate order [r, z, n].

    reset_after=True (default) is PyTorch's form (`gru_step`); reset_after=False the original
    form of Cho et al. 2014 (`gru_reset_before_step`), with the same weights.
    """

    num_gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, *, reset_after: bool = True,
                 learn_initial_state: bool = False):
        if not isinstance(reset_after, bool):
            raise TypeError(f"GRUCell: reset_after must be True or False, got {reset_after!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         learn_initial_state=learn_initial_state)
        self.reset_after = reset_after

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        x, h, batched = self._prepare(input, hx, initial=self._initial("h_0"))
        step = gru_step if self.reset_after else gru_reset_before_step
        h = step(input_gates(x, self.weight_ih, self.bias_ih), h, self.weight_hh.T, self.bias_hh)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.reset_after else s + ", reset_after=False"
