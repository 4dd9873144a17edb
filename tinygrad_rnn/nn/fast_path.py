"""The recurrent layers' fast path: one fused graph node per layer and direction.

`RNNBase._run_direction` hands a layer over to `run_direction` here when `applies` says the
fused ops of ops/fused.py compute exactly what the composed per-step code would: the plain
RNN (tanh or relu), LSTM (with or without proj_size) and GRU (PyTorch's form), with or without
bias, any number of layers and directions, batch_first or not, inter-layer dropout, learned
or given initial states, and recurrent dropout in eval mode. Everything else (the LSTM
variants, GRU reset_after=False, zoneout, recurrent dropout while training, lengths=, the
hidden-state trace of diagnostics) runs the composed path. `layer.fast = False` picks the
composed path always; tests/nn/test_fast_path.py proves both give the same numbers.
"""

from __future__ import annotations

from ..ops.fused import GRULayer, LSTMLayer, RNNLayer
from ..tensor import Tensor, apply_op


def applies(layer, lengths=None) -> bool:
    """Whether the fused ops cover this layer's options for this call."""
    return bool(layer.fast and lengths is None and not layer.is_variant and not layer.zoneout
                and not (layer.training and layer.recurrent_dropout)
                and layer._hidden_trace is None)


def run_direction(layer, x: Tensor, state, index: int, reverse: bool):
    """One layer, one direction over all steps of x (T, B, features) as one node.

    Returns (output (T, B, H_out), final state), like the composed `_run_direction`.
    """
    w = layer.layer_weights(index, reverse)
    bias = w["b_ih"] is not None
    params = [w["W_ih"], w["W_hh"]] + ([w["b_ih"], w["b_hh"]] if bias else [])
    # Without variants the number of gates names the cell: 4 LSTM, 3 GRU, 1 Elman RNN.
    if layer.num_gates == 4:
        proj = w["W_hr"] is not None
        if proj:
            params.append(w["W_hr"])
        h0, c0 = state
        y, h, c = apply_op(LSTMLayer, x, h0, c0, *params, reverse=reverse, bias=bias, proj=proj)
        return y, (h, c)
    if layer.num_gates == 3:
        y, h = apply_op(GRULayer, x, state, *params, reverse=reverse, bias=bias)
    else:
        y, h = apply_op(RNNLayer, x, state, *params, reverse=reverse, bias=bias,
                        nonlinearity=layer.nonlinearity)
    return y, h
