"""Every recurrent layer option on tg.scan equals the composed per-step graph (fast=False) in
float64 to 1e-12, on every backend: outputs, final states and every gradient (parameters,
input, initial states). fast=True runs the variants on scan (the plain cells on their fused
ops); fast="scan" runs every cell on scan."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

T, B, I, H = 20, 3, 4, 5


@pytest.fixture(autouse=True)
def chunks_of_8_steps(monkeypatch):
    """Chunks of 8 steps (8, 8 and 4 for T=20): the batched ops, their gradients and the
    chunked weight gradients cross chunk boundaries, as they do on long sequences."""
    module = sys.modules["tinygrad_rnn.scan"]
    monkeypatch.setattr(module, "_CHUNK", 8)
    monkeypatch.setattr(module, "_CHUNK_MAX", 8)

LSTM_OPTIONS = [
    {"peephole": True}, {"cifg": True}, {"layer_norm": True}, {"forget_bias": 1.0},
    {"peephole": True, "cifg": True, "layer_norm": True, "forget_bias": 0.5},
    {"proj_size": 3}, {"proj_size": 3, "peephole": True},
    {"num_layers": 2, "bidirectional": True, "peephole": True},
    {"layer_norm": True, "bidirectional": True, "batch_first": True},
    {"learn_initial_state": True, "cifg": True}, {"bias": False, "peephole": True},
]
GRU_OPTIONS = [{}, {"reset_after": False}, {"reset_after": False, "bidirectional": True,
                                            "num_layers": 2}, {"bias": False}]
RNN_OPTIONS = [{}, {"nonlinearity": "relu"}, {"bidirectional": True, "num_layers": 2}]
CASES = ([("LSTM", o) for o in LSTM_OPTIONS] + [("GRU", o) for o in GRU_OPTIONS]
         + [("RNN", o) for o in RNN_OPTIONS])


def _layer(cls, options, device, fast, **extra):
    tg.manual_seed(0)
    layer = getattr(nn, cls)(I, H, dtype=np.float64, device=device, fast=fast,
                             **options, **extra)
    rng = np.random.default_rng(1)
    for p in layer.parameters():  # away from the initialisation: biases, gains all non-trivial
        p.data[...] = backend_array(rng.standard_normal(p.shape) * 0.5, device)
    return layer


def backend_array(array, device):
    return tg.Tensor(array, device=device).data


def _run(layer, x, state, lengths=None):
    for p in layer.parameters():
        p.grad = None
    leaves = [x] + list(state)
    for t in leaves:
        t.grad = None
    hx = None
    if state:
        hx = tuple(state) if isinstance(layer, nn.LSTM) else state[0]
    out, final = layer(x, hx, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * out).sum() + sum((f * f * 0.5).sum() for f in finals)
    loss.backward()
    values = [out.numpy()] + [f.numpy() for f in finals]
    grads = [t.grad.numpy() for t in leaves]
    grads += [p.grad.numpy() if p.grad is not None else None for p in layer.parameters()]
    return values + grads


def _inputs(cls, options, device, with_state=True):
    rng = np.random.default_rng(2)
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    shape = (B, T, I) if options.get("batch_first") else (T, B, I)
    x = tg.Tensor(rng.standard_normal(shape), requires_grad=True, device=device)
    if not with_state:
        return x, []
    out = options.get("proj_size") or H
    sizes = [out, H] if cls == "LSTM" else [H]
    state = [tg.Tensor(rng.standard_normal((layers, B, n)), requires_grad=True, device=device)
             for n in sizes]
    return x, state


def _assert_same(a, b, tol=1e-12):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("fast", [True, "scan"])
@pytest.mark.parametrize("cls, options", CASES)
def test_scan_equals_composed(device, cls, options, fast):
    with_state = not options.get("learn_initial_state")
    x, state = _inputs(cls, options, device, with_state)
    expected = _run(_layer(cls, options, device, False), x, state)
    got = _run(_layer(cls, options, device, fast), x, state)
    _assert_same(got, expected)


@pytest.mark.parametrize("cls, options", [("LSTM", {"peephole": True}), ("LSTM", {}),
                                          ("GRU", {"reset_after": False}), ("RNN", {})])
def test_scan_with_lengths_equals_composed(device, cls, options):
    options = {**options, "bidirectional": True}
    x, state = _inputs(cls, options, device)
    lengths = [T, 7, 13]
    expected = _run(_layer(cls, options, device, False), x, state, lengths)
    got = _run(_layer(cls, options, device, "scan"), x, state, lengths)
    _assert_same(got, expected)


@pytest.mark.parametrize("cls, options", [
    ("LSTM", {"zoneout": 0.3}), ("LSTM", {"recurrent_dropout": 0.25, "layer_norm": True}),
    ("GRU", {"zoneout": 0.2, "reset_after": False}), ("RNN", {"recurrent_dropout": 0.3}),
    ("LSTM", {"num_layers": 2, "dropout": 0.3, "zoneout": 0.1, "bidirectional": True}),
])
def test_randomness_in_training_gives_the_composed_numbers(device, cls, options):
    x, state = _inputs(cls, options, device)
    results = []
    for fast in (False, True):
        layer = _layer(cls, options, device, fast)
        tg.manual_seed(123)
        results.append(_run(layer, x, state))
    _assert_same(results[1], results[0])


@pytest.mark.parametrize("cls, options", [("LSTM", {"layer_norm": True, "peephole": True}),
                                          ("GRU", {"reset_after": False}), ("RNN", {})])
def test_remat_gives_the_same_numbers(device, cls, options):
    x, state = _inputs(cls, options, device)
    expected = _run(_layer(cls, options, device, False), x, state)
    got = _run(_layer(cls, options, device, "scan", remat=True), x, state)
    _assert_same(got, expected)


def test_fast_option_is_checked():
    with pytest.raises(ValueError, match="fast must be one of"):
        nn.LSTM(I, H, fast="fused!")
    with pytest.raises(ValueError, match="fast must be one of"):
        nn.GRU(I, H, fast=1)


def test_variants_run_as_one_scan_node():
    """The variant's graph has one node per layer and direction, not one per op and step."""
    lstm = nn.LSTM(I, H, peephole=True, bidirectional=True)
    out, _ = lstm(tg.randn(T, B, I))
    names = _node_names(out)
    assert "_Scan" in names and "Sigmoid" not in names


def _node_names(out) -> set:
    names, stack, seen = set(), [out._node], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        stack.extend(t._node for t in node.inputs)
    return names


def test_short_sequences_run_the_python_loop():
    """Below SCAN_MIN_STEPS steps the step runs in a Python loop (recording costs more)."""
    from tinygrad_rnn.nn.recurrent import SCAN_MIN_STEPS
    lstm = nn.LSTM(I, H, peephole=True)
    short, _ = lstm(tg.randn(SCAN_MIN_STEPS - 1, B, I))
    long, _ = lstm(tg.randn(SCAN_MIN_STEPS, B, I))
    assert "_Scan" not in _node_names(short) and "Sigmoid" in _node_names(short)
    assert "_Scan" in _node_names(long)
