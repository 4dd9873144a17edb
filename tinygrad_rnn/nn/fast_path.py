"""The recurrent layers' fast path: one fused graph node per layer and direction.

`RNNBase._run_direction` hands a layer over to `run_direction` here when `applies` says the
fused ops of ops/fused.py compute exactly what the composed per-step code would: the plain
RNN (tanh or relu), LSTM (with or without proj_size) and GRU (PyTorch's form), and the
layer-normalised LSTM (layer_norm=True with no other variant; forget_bias is only an
initialisation), with or without bias, any number of layers and directions, batch_first or
not, inter-layer dropout, learned or given initial states, variable lengths, and recurrent
dropout in eval mode. Everything else (the other LSTM variants, GRU reset_after=False,
zoneout, recurrent dropout while training, the hidden-state trace of diagnostics) runs the
cell's step through tg.scan. `layer.fast = False` picks the composed path always, and
`fast="scan"` scan always; tests/nn/test_fast_path.py proves they give the same numbers.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..ops.fused import GRULayer, LayerNormLSTMLayer, LSTMLayer, RNNLayer
from ..tensor import Tensor, apply_op, where
from .cells import LAYER_NORM_EPS


def applies(layer) -> bool:
    """Whether the fused ops cover this layer's options for this call."""
    if not (layer.fast is True and not layer.zoneout
            and not (layer.training and layer.recurrent_dropout)
            and layer._hidden_trace is None):
        return False
    return not layer.is_variant or _layer_norm_only(layer)


def _layer_norm_only(layer) -> bool:
    """An LSTM whose only variant is layer_norm (forget_bias is an initialisation)."""
    return bool(getattr(layer, "layer_norm", False) and not layer.peephole and not layer.cifg)


def run_direction(layer, x: Tensor, state, index: int, reverse: bool, lengths=None):
    """One layer, one direction over all steps of x (T, B, features) as one node.

    With lengths (a NumPy int array (B,)), sequence b is x[:lengths[b], b]: the fused op runs
    forward with each sequence's final state taken at its own end, and the reverse direction
    is the same op on each sequence's valid part reversed in place (padding stays where it
    is). Outputs past each end are zeros. Returns (output (T, B, H_out), final state), like
    the composed `_run_direction`.
    """
    weights = layer.layer_weights(index, reverse)
    if lengths is None:
        return _fused(layer, weights, x, state, reverse)
    T, B = x.shape[0], x.shape[1]
    steps = np.arange(T)[:, None]
    valid = steps < lengths[None, :]  # (T, B): is step t inside sequence b?
    if reverse:
        # step t of the reversed sequence b is its step lengths[b] - 1 - t; a permutation of
        # the steps of each column that is its own inverse
        order = np.where(valid, lengths[None, :] - 1 - steps, steps)
        gather = tuple(backend.to_device(a, x.device) for a in (order, np.arange(B)[None, :]))
        x = x[gather]
    y, final = _fused(layer, weights, x, state, reverse=False, last=lengths - 1)
    y = where(valid[:, :, None], y, 0.0)
    if reverse:
        y = y[gather]
    return y, final


def _fused(layer, w: dict, x: Tensor, state, reverse: bool, last=None):
    """The fused op for the layer's cell on weights w (one `layer_weights` dict)."""
    bias = w["b_ih"] is not None
    params = [w["W_ih"], w["W_hh"]] + ([w["b_ih"], w["b_hh"]] if bias else [])
    # Without variants the number of gates names the cell: 4 LSTM, 3 GRU, 1 Elman RNN.
    if layer.num_gates == 4:
        proj = w["W_hr"] is not None
        if proj:
            params.append(w["W_hr"])
        h0, c0 = state
        if w["layer_norm"] is None:
            y, h, c = apply_op(LSTMLayer, x, h0, c0, *params, reverse=reverse, bias=bias,
                               proj=proj, last=last)
        else:
            norm = w["layer_norm"]
            params += [*norm["ih"], *norm["hh"], *norm["c"]]
            y, h, c = apply_op(LayerNormLSTMLayer, x, h0, c0, *params, reverse=reverse,
                               bias=bias, proj=proj, eps=LAYER_NORM_EPS, remat=layer.remat,
                               last=last)
        return y, (h, c)
    if layer.num_gates == 3:
        y, h = apply_op(GRULayer, x, state, *params, reverse=reverse, bias=bias, last=last)
    else:
        y, h = apply_op(RNNLayer, x, state, *params, reverse=reverse, bias=bias,
                        nonlinearity=layer.nonlinearity, last=last)
    return y, h
