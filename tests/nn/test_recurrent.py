"""RNN, LSTM, GRU layers on their own: gradcheck, long sequences, dtypes, state semantics."""

import time

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

LAYERS = {"rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
          "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
          "gru": (nn.GRU, {}), "lstm": (nn.LSTM, {}), "lstm_proj": (nn.LSTM, {"proj_size": 1})}


def _layer(kind, *args, **kwargs):
    cls, extra = LAYERS[kind]
    return cls(*args, **extra, **kwargs)


def _states_of(kind, out):
    state = out[1]
    return list(state) if kind.startswith("lstm") else [state]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_layer_gradcheck(kind):
    """Finite differences through a 2-layer bidirectional layer: every parameter, the input
    and the initial state(s)."""
    tg.manual_seed(0)
    layer = _layer(kind, 2, 2, num_layers=2, bidirectional=True, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    out_size = layer.proj_size or 2
    states = [tg.Tensor(rng.standard_normal((4, 2, out_size)), requires_grad=True)]
    if kind.startswith("lstm"):
        states.append(tg.Tensor(rng.standard_normal((4, 2, 2)), requires_grad=True))
    params = list(layer.parameters())

    def fn(x, *tensors):
        hx = tensors[:len(states)]
        out = layer(x, tuple(hx) if kind.startswith("lstm") else hx[0])
        return [out[0], *_states_of(kind, out)]

    assert tg.gradcheck(fn, [x, *states, *params])


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_gradcheck_unbatched_batch_first(kind):
    tg.manual_seed(1)
    layer = _layer(kind, 2, 3, batch_first=True, dtype=np.float64)
    x = tg.Tensor(np.random.default_rng(1).standard_normal((4, 2)), requires_grad=True)
    assert tg.gradcheck(lambda x, *p: layer(x)[0], [x, *layer.parameters()])


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_2000_step_sequence_backward(kind):
    """BPTT through 2 000 steps: an iterative backward, no RecursionError, finite gradients."""
    steps = 2000
    tg.manual_seed(0)
    layer = _layer(kind, 2, 3, dtype=np.float64)
    x = tg.Tensor(np.random.default_rng(0).standard_normal((steps, 1, 2)), requires_grad=True)
    start = time.perf_counter()
    out, _ = layer(x)
    out[-1].sum().backward()
    assert time.perf_counter() - start < 20
    assert out.shape == (steps, 1, 3)
    grad = x.grad.numpy()
    assert np.isfinite(grad).all()
    assert np.abs(grad[-1]).sum() > 0  # the last step gets gradient, the first steps exist
    for name, p in layer.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), name


@pytest.mark.parametrize("kind", list(LAYERS))
def test_float32_in_float32_out_and_grads(kind):
    layer = _layer(kind, 3, 4, num_layers=2, bidirectional=True)
    x = tg.randn(5, 2, 3, requires_grad=True)
    out = layer(x)
    tensors = [out[0], *_states_of(kind, out)]
    assert all(t.dtype == np.float32 for t in tensors)
    sum((t * t).sum() for t in tensors).backward()
    assert x.grad.dtype == np.float32
    for name, p in layer.named_parameters():
        assert p.dtype == np.float32, name
        assert p.grad is not None and p.grad.dtype == np.float32, name


@pytest.mark.parametrize("kind", list(LAYERS))
def test_float64_layer_via_double(kind):
    layer = _layer(kind, 3, 4).double()
    out = layer(tg.randn(2, 1, 3, dtype=np.float64))
    assert out[0].dtype == np.float64
    out[0].sum().backward()
    assert all(p.grad.dtype == np.float64 for p in layer.parameters())


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("num_layers", [1, 2])
def test_sequence_of_length_one(kind, num_layers):
    """A single time step and a single layer-direction (one-element unbinds) backpropagate."""
    layer = _layer(kind, 3, 4, num_layers=num_layers, dtype=np.float64)
    x = tg.randn(1, 2, 3, dtype=np.float64, requires_grad=True)
    out_size = layer.proj_size or 4
    hx = [tg.randn(num_layers, 2, out_size, dtype=np.float64, requires_grad=True)]
    if kind.startswith("lstm"):
        hx.append(tg.randn(num_layers, 2, 4, dtype=np.float64, requires_grad=True))
    out = layer(x, tuple(hx) if kind.startswith("lstm") else hx[0])
    sum(t.sum() for t in [out[0], *_states_of(kind, out)]).backward()
    assert x.grad.shape == x.shape
    assert all(h.grad.shape == h.shape for h in hx)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm", "lstm_proj"])
def test_final_state_is_last_output_of_each_direction(kind):
    layer = _layer(kind, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    out = layer(tg.randn(6, 2, 3, dtype=np.float64))
    output, h_n = out[0].numpy(), _states_of(kind, out)[0].numpy()
    size = layer.proj_size or 4
    np.testing.assert_array_equal(h_n[2], output[-1, :, :size])  # last layer, forward
    np.testing.assert_array_equal(h_n[3], output[0, :, size:])  # last layer, reverse: t = 0


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_batch_first_is_a_transpose(kind):
    tg.manual_seed(0)
    a = _layer(kind, 3, 4, num_layers=2, dtype=np.float64)
    b = _layer(kind, 3, 4, num_layers=2, batch_first=True, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out_a, out_b = a(tg.Tensor(x)), b(tg.Tensor(x.transpose(1, 0, 2)))
    np.testing.assert_array_equal(out_b[0].numpy(), out_a[0].numpy().transpose(1, 0, 2))
    for sa, sb in zip(_states_of(kind, out_a), _states_of(kind, out_b)):
        np.testing.assert_array_equal(sa.numpy(), sb.numpy())  # states stay (L*D, B, H)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_unbatched_equals_batch_of_one(kind):
    layer = _layer(kind, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    x = tg.randn(5, 3, dtype=np.float64)
    single, batch = layer(x), layer(x.unsqueeze(1))
    np.testing.assert_array_equal(single[0].numpy(), batch[0].numpy()[:, 0])
    for s, b in zip(_states_of(kind, single), _states_of(kind, batch)):
        assert s.shape == (4, 4)
        np.testing.assert_array_equal(s.numpy(), b.numpy()[:, 0])


def test_zero_state_equals_no_state():
    layer = nn.LSTM(3, 4, num_layers=2, dtype=np.float64)
    x = tg.randn(4, 2, 3, dtype=np.float64)
    zeros = (tg.zeros(2, 2, 4, dtype=np.float64), tg.zeros(2, 2, 4, dtype=np.float64))
    np.testing.assert_array_equal(layer(x)[0].numpy(), layer(x, zeros)[0].numpy())
    np.testing.assert_array_equal(layer(x)[0].numpy(), layer(x, list(zeros))[0].numpy())


def test_state_carries_over_between_chunks():
    """Running a sequence in two halves, feeding the state on, equals running it whole."""
    layer = nn.GRU(3, 4, num_layers=2, dtype=np.float64)
    x = tg.randn(8, 2, 3, dtype=np.float64)
    whole, h_whole = layer(x)
    first, h = layer(x[:5])
    second, h = layer(x[5:], h)
    np.testing.assert_allclose(second.numpy(), whole.numpy()[5:], rtol=0, atol=1e-14)
    np.testing.assert_allclose(h.numpy(), h_whole.numpy(), rtol=0, atol=1e-14)


def test_no_grad_records_nothing():
    layer = nn.LSTM(3, 4)
    with tg.no_grad():
        out, (h, c) = layer(tg.randn(3, 2, 3))
    assert not out.requires_grad and out.is_leaf and h.is_leaf and c.is_leaf


def test_parameter_names_and_shapes_follow_pytorch():
    layer = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert list(shapes) == [
        f"{w}_l{layer_}{suffix}"
        for layer_ in range(2) for suffix in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
    assert shapes["weight_ih_l0"] == (20, 3) and shapes["weight_hh_l0"] == (20, 2)
    assert shapes["weight_ih_l1"] == (20, 4) and shapes["weight_hr_l1_reverse"] == (2, 5)
    gru = nn.GRU(3, 5, bias=False)
    assert {k: v.shape for k, v in gru.state_dict().items()} == {
        "weight_ih_l0": (15, 3), "weight_hh_l0": (15, 5)}
    assert layer.output_size == 2 and nn.RNN(3, 5).output_size == 5
    layer.flatten_parameters()  # accepted for PyTorch compatibility


def test_gradients_accumulate_over_two_backwards():
    layer = nn.RNN(2, 3, dtype=np.float64)
    x = tg.randn(4, 1, 2, dtype=np.float64)
    layer(x)[0].sum().backward()
    first = layer.weight_hh_l0.grad.numpy().copy()
    layer(x)[0].sum().backward()
    np.testing.assert_allclose(layer.weight_hh_l0.grad.numpy(), 2 * first, rtol=1e-14)


def test_single_output_split_and_unbind_backpropagate():
    """The ops behind a length-1 time axis or a single layer-direction: one-piece outputs."""
    x = tg.randn(1, 3, 4, dtype=np.float64, requires_grad=True)
    (only,) = x.unbind(0)
    (whole,) = x.chunk(1, dim=2)
    (only.sum() * 2 + whole.sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((1, 3, 4), 3.0))
