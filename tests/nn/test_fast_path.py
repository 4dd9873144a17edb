"""The recurrent layers' fast path (one fused node per layer and direction, ops/fused.py)
gives the composed per-step path's numbers: outputs, final states and every gradient, over
the grid of layer options, in float64 with a tight tolerance; and float32 stays float32.
"lstm_ln" is the layer-normalised LSTM, the one variant with a fused op of its own."""

import itertools

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.nn import fast_path
from tinygrad_rnn.ops import fused

SEQ, BATCH, INPUT, HIDDEN, PROJ = 5, 3, 4, 5, 3
KINDS = ("lstm", "lstm_ln", "gru", "rnn_tanh", "rnn_relu")
FUSED_OPS = (fused.LSTMLayer, fused.GRULayer, fused.RNNLayer)  # LayerNormLSTMLayer: an LSTMLayer


def _layer(kind, dtype=np.float64, device="cpu", **options):
    if kind.startswith("rnn"):
        options["nonlinearity"] = kind[4:]
    if kind == "lstm_ln":
        options["layer_norm"] = True
    cls = {"lstm": nn.LSTM, "lstm_ln": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    tg.manual_seed(0)
    return cls(INPUT, HIDDEN, dtype=dtype, device=device, **options)


def _run(layer, x, states, fast, loss_on=("output", "state"), lengths=None):
    """Forward + backward with a random-weighted loss; everything the test compares."""
    layer.fast = fast
    layer.zero_grad()
    x = tg.tensor(x, requires_grad=True, device=layer.weight_ih_l0.device)
    states = [tg.tensor(s, requires_grad=True, device=x.device) for s in states]
    hx = None if not states else states[0] if len(states) == 1 else tuple(states)
    out, final = layer(x, hx, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    rng = np.random.default_rng(1)
    loss = 0.0
    for name, t in [("output", out)] + [("state", f) for f in finals]:
        if name in loss_on:
            weight = rng.standard_normal(t.shape).astype(t.dtype)
            loss = (t * tg.tensor(weight, device=t.device)).sum() + loss
    loss.backward()
    result = {"output": out, **{f"final{k}": f for k, f in enumerate(finals)}, "dx": x.grad}
    result.update({f"d{k}": s.grad for k, s in enumerate(states)})
    result.update({f"d{name}": p.grad for name, p in layer.named_parameters()})
    return {k: None if v is None else v.numpy() for k, v in result.items()}


def _assert_same(fast, composed, rtol=1e-10, atol=1e-12):
    assert fast.keys() == composed.keys()
    for key in fast:
        if composed[key] is None:
            assert fast[key] is None or not fast[key].any(), key
            continue
        assert fast[key].dtype == composed[key].dtype, key
        np.testing.assert_allclose(fast[key], composed[key], rtol=rtol, atol=atol, err_msg=key)


def _inputs(layer, rng, batch_first=False, with_state=False):
    shape = (BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT)
    x = rng.standard_normal(shape)
    states = []
    if with_state:
        layers = layer.num_layers * layer.num_directions
        states.append(rng.standard_normal((layers, BATCH, layer.output_size)))
        if isinstance(layer, nn.LSTM):
            states.append(rng.standard_normal((layers, BATCH, HIDDEN)))
    return x, states


GRID = [
    (kind, layers, bidirectional, batch_first, bias, proj, with_state)
    for kind, layers, bidirectional, batch_first, bias, proj, with_state in itertools.product(
        KINDS, (1, 2), (False, True), (False, True), (True, False), (0, PROJ), (False, True))
    if not (proj and not kind.startswith("lstm"))
]


@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,bias,proj,with_state", GRID)
def test_fast_equals_composed_over_the_option_grid(rng, kind, layers, bidirectional,
                                                    batch_first, bias, proj, with_state):
    options = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                   bias=bias)
    if proj:
        options["proj_size"] = proj
    layer = _layer(kind, **options)
    x, states = _inputs(layer, rng, batch_first, with_state)
    assert fast_path.applies(layer)
    _assert_same(_run(layer, x, states, True), _run(layer, x, states, False))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss_on", [("output",), ("state",)])
def test_loss_on_outputs_only_or_final_states_only(rng, kind, loss_on):
    """Outputs that get no gradient reach the fused op as None."""
    layer = _layer(kind, num_layers=2, bidirectional=True)
    x, states = _inputs(layer, rng, with_state=True)
    _assert_same(_run(layer, x, states, True, loss_on), _run(layer, x, states, False, loss_on))


@pytest.mark.parametrize("kind", KINDS)
def test_float32_stays_float32_and_matches(rng, kind, device):
    layer = _layer(kind, dtype=np.float32, device=device, num_layers=2, bidirectional=True)
    x, states = _inputs(layer, rng, with_state=True)
    x = x.astype(np.float32)
    states = [s.astype(np.float32) for s in states]
    fast, composed = _run(layer, x, states, True), _run(layer, x, states, False)
    for key, value in fast.items():
        assert value.dtype == np.float32, key
    _assert_same(fast, composed, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(rng, kind, device):
    """On the GPU the fast path (with its fused kernels) gives the CPU's numbers."""
    layer = _layer(kind, device=device, num_layers=2, bidirectional=True)
    x, states = _inputs(layer, rng, with_state=True)
    on_device = _run(layer, x, states, True)
    cpu_layer = _layer(kind, num_layers=2, bidirectional=True)
    cpu_layer.load_state_dict(layer.state_dict())
    _assert_same(on_device, _run(cpu_layer, x, states, True))


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input(rng, kind):
    layer = _layer(kind, num_layers=2)
    x = rng.standard_normal((SEQ, INPUT))
    _assert_same(_run(layer, x, [], True), _run(layer, x, [], False))


@pytest.mark.parametrize("kind", ["lstm", "lstm_ln", "gru"])
def test_learned_initial_state_and_inter_layer_dropout(rng, kind):
    layer = _layer(kind, num_layers=3, dropout=0.5, learn_initial_state=True)
    for p in (layer.h_0,) + ((layer.c_0,) if kind != "gru" else ()):
        p.data[...] = rng.standard_normal(p.shape)
    x, _ = _inputs(layer, rng)
    results = []
    for fast in (True, False):
        tg.manual_seed(5)  # the same dropout masks for both paths
        results.append(_run(layer, x, [], fast))
    _assert_same(*results)


@pytest.mark.parametrize("kind", ["lstm", "lstm_ln"])
def test_recurrent_dropout_uses_the_fast_path_only_in_eval_mode(rng, kind):
    layer = _layer(kind, recurrent_dropout=0.3)
    assert not fast_path.applies(layer)
    layer.eval()
    assert fast_path.applies(layer)
    x, _ = _inputs(layer, rng)
    _assert_same(_run(layer, x, [], True), _run(layer, x, [], False))


@pytest.mark.parametrize("kind,options", [
    ("lstm", dict(peephole=True)), ("lstm", dict(cifg=True)),
    ("lstm", dict(layer_norm=True, peephole=True)), ("lstm", dict(layer_norm=True, cifg=True)),
    ("lstm", dict(layer_norm=True, zoneout=0.1)),
    ("gru", dict(reset_after=False)), ("rnn_tanh", dict(zoneout=0.2)),
])
def test_variants_fall_back_to_the_composed_path(rng, kind, options):
    """Every variant but layer_norm alone runs the cell's equations (through tg.scan)."""
    layer = _layer(kind, **options)
    assert not fast_path.applies(layer)
    x, _ = _inputs(layer, rng)
    out, _ = layer(tg.tensor(x))
    assert not isinstance(out._node, FUSED_OPS)


def test_layer_norm_alone_runs_its_fused_op(rng):
    layer = _layer("lstm_ln", forget_bias=1.0)
    assert fast_path.applies(layer)
    x, _ = _inputs(layer, rng)
    out, _ = layer(tg.tensor(x, requires_grad=True))
    assert isinstance(out._node, fused.LayerNormLSTMLayer)
    layer.fast = "scan"
    out, _ = layer(tg.tensor(x, requires_grad=True))
    assert not isinstance(out._node, FUSED_OPS)


@pytest.mark.parametrize("window", [1, 2, SEQ])
@pytest.mark.parametrize("options", [dict(bidirectional=True), dict(proj_size=PROJ),
                                     dict(num_layers=2, lengths=[5, 2, 4])])
def test_layer_norm_remat_equals_composed(rng, monkeypatch, window, options):
    """remat=True keeps the normalised recurrent terms of a window of steps and makes each
    window's again in backward: windows of 1, 2 (SEQ = 5: a short last one) and all steps,
    both directions, with a projection and with lengths."""
    options = dict(options)
    lengths = options.pop("lengths", None)
    monkeypatch.setattr(fused.LayerNormLSTMLayer, "CHUNK_ELEMENTS", window * BATCH * 4 * HIDDEN)
    layer = _layer("lstm_ln", remat=True, **options)
    assert fast_path.applies(layer)
    x, states = _inputs(layer, rng, with_state=True)
    _assert_same(_run(layer, x, states, True, lengths=lengths),
                 _run(layer, x, states, False, lengths=lengths))


@pytest.mark.parametrize("chunk_elements", [2 ** 19, 40])
@pytest.mark.parametrize("input_size", [INPUT, 3 * HIDDEN])
@pytest.mark.parametrize("needs_dx", [True, False])
def test_layer_norm_input_gradients_both_ways(rng, monkeypatch, chunk_elements, input_size,
                                              needs_dx):
    """The input's norm is differentiated through I x I products when I <= 2H, and by
    making the normalised rows again, a chunk at a time, when I > 2H: both give the composed
    path's numbers, with and without a gradient for x, over one chunk or several."""
    monkeypatch.setattr(fused.LayerNormLSTMLayer, "CHUNK_ELEMENTS", chunk_elements)
    tg.manual_seed(0)
    layer = nn.LSTM(input_size, HIDDEN, layer_norm=True, bidirectional=True, dtype=np.float64)
    x = rng.standard_normal((SEQ, BATCH, input_size))
    results = []
    for fast in (True, False):
        layer.fast = fast
        layer.zero_grad()
        xt = tg.tensor(x, requires_grad=needs_dx)
        out, (h, c) = layer(xt)
        ((out * out).sum() + (c * h).sum()).backward()
        results.append([p.grad.numpy() for p in layer.parameters()]
                       + ([xt.grad.numpy()] if needs_dx else []))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_the_fast_path_is_one_node_and_forget_bias_keeps_it(rng):
    layer = _layer("lstm", forget_bias=1.0)
    x, _ = _inputs(layer, rng)
    out, (h, c) = layer(tg.tensor(x, requires_grad=True))
    assert isinstance(out._node, fused.LSTMLayer)
    layer.fast = False
    out, _ = layer(tg.tensor(x, requires_grad=True))
    assert not isinstance(out._node, fused.LSTMLayer)


LENGTHS_GRID = [
    (kind, layers, bidirectional, batch_first, proj, with_state, lengths)
    for kind, layers, bidirectional, batch_first, proj, with_state, lengths in itertools.product(
        KINDS, (1, 2), (False, True), (False, True), (0, PROJ), (False, True),
        ((5, 2, 4), (1, 3, 3)))
    if not (proj and not kind.startswith("lstm"))
]


@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,proj,with_state,lengths",
                         LENGTHS_GRID)
def test_variable_lengths_fast_equals_composed(rng, kind, layers, bidirectional, batch_first,
                                               proj, with_state, lengths):
    """lengths= on the fast path (final states taken at each sequence's own end, the reverse
    direction on each sequence reversed in place) gives the composed path's masked loop."""
    options = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    if proj:
        options["proj_size"] = proj
    layer = _layer(kind, **options)
    x, states = _inputs(layer, rng, batch_first, with_state)
    assert fast_path.applies(layer)
    fast = _run(layer, x, states, True, lengths=list(lengths))
    composed = _run(layer, x, states, False, lengths=list(lengths))
    _assert_same(fast, composed)
    padding = np.arange(SEQ)[:, None] >= np.array(lengths)[None, :]  # (T, B)
    if batch_first:
        padding = padding.T
    assert not fast["output"][padding].any()  # exact zeros past each end
    assert not fast["dx"][padding].any()      # and no gradient there


def test_variable_lengths_float32_stays_float32(rng):
    layer = _layer("lstm", dtype=np.float32, bidirectional=True)
    x, _ = _inputs(layer, rng)
    result = _run(layer, x.astype(np.float32), [], True, lengths=[5, 2, 4])
    assert all(v.dtype == np.float32 for v in result.values() if v is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_retain_graph_second_backward_doubles_the_gradients(rng, kind):
    """The LSTM op reuses its activation buffer for the gradients; a second backward
    recomputes the forward, so retain_graph=True works as on the composed path."""
    layer = _layer(kind, bidirectional=True, **({"proj_size": PROJ} if kind == "lstm" else {}))
    x, _ = _inputs(layer, rng)
    grads = {}
    for fast in (True, False):
        layer.fast = fast
        layer.zero_grad()
        xt = tg.tensor(x, requires_grad=True)
        out, _ = layer(xt)
        loss = (out * out).sum()
        loss.backward(retain_graph=True)
        once = [p.grad.numpy().copy() for p in layer.parameters()] + [xt.grad.numpy().copy()]
        loss.backward()
        twice = [p.grad.numpy() for p in layer.parameters()] + [xt.grad.numpy()]
        for a, b in zip(once, twice, strict=True):
            np.testing.assert_allclose(b, 2 * a, rtol=1e-12, atol=1e-14)
        grads[fast] = twice
    for a, b in zip(grads[True], grads[False], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_no_grad_forward_matches(rng):
    layer = _layer("lstm", num_layers=2, bidirectional=True)
    x, _ = _inputs(layer, rng)
    with tg.no_grad():
        layer.fast = True
        fast = layer(tg.tensor(x))[0]
        layer.fast = False
        composed = layer(tg.tensor(x))[0]
    assert fast._node is None
    np.testing.assert_allclose(fast.numpy(), composed.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op,inputs", [
    (fused.LSTMLayer, dict(proj=True)), (fused.LSTMLayer, dict(reverse=True)),
    (fused.LayerNormLSTMLayer, dict(proj=True)), (fused.LayerNormLSTMLayer, dict(reverse=True)),
    (fused.LayerNormLSTMLayer, dict(bias=False, input_size=5)),
    (fused.LayerNormLSTMLayer, dict(remat=True, reverse=True)),
    (fused.GRULayer, dict(reverse=True)), (fused.GRULayer, dict(bias=False)),
    (fused.RNNLayer, dict(nonlinearity="tanh", reverse=True)),
])
def test_fused_ops_pass_gradcheck(rng, op, inputs):
    """The hand-written BPTT against central differences, independently of the composed path
    (input_size=5 > 2H: the layer-normalised LSTM's other way through the input's norm)."""
    inputs = dict(inputs)
    T, B, I, H, P = 3, 2, inputs.pop("input_size", 3), 2, 1
    lstm = issubclass(op, fused.LSTMLayer)
    gates = 4 if lstm else 3 if op is fused.GRULayer else 1
    proj = inputs.get("proj", False)
    out = P if proj else H

    def t(*shape):
        return tg.tensor(rng.standard_normal(shape) * 0.5, requires_grad=True)
    args = [t(T, B, I), t(B, out)] + ([t(B, H)] if lstm else [])
    args += [t(gates * H, I), t(gates * H, out)]
    if inputs.get("bias", True):
        args += [t(gates * H), t(gates * H)]
    if proj:
        args.append(t(P, H))
    if op is fused.LayerNormLSTMLayer:  # gains near 1, as a trained norm's
        args += [tg.tensor(1 + 0.3 * rng.standard_normal(n), requires_grad=True)
                 if k % 2 == 0 else t(n) for k, n in enumerate([4 * H] * 4 + [H] * 2)]
    assert tg.gradcheck(lambda *a: tg.apply_op(op, *a, **inputs), args)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_keyword_selects_the_path(kind, monkeypatch):
    """`fast=False` in the constructor is the same switch as the attribute: the fused op is
    never called, and the default layer does call it."""
    calls = []
    original = fast_path.run_direction
    monkeypatch.setattr(fast_path, "run_direction",
                        lambda *args, **kw: calls.append(1) or original(*args, **kw))
    composed = _layer(kind, fast=False)
    assert composed.fast is False
    composed(tg.randn(SEQ, BATCH, INPUT, dtype=np.float64))
    assert calls == []
    default = _layer(kind)
    assert default.fast is True
    default(tg.randn(SEQ, BATCH, INPUT, dtype=np.float64))
    assert calls
