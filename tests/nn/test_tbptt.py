"""Truncated BPTT (nn.utils.truncated_bptt) and detach_state."""

import numpy as np
import pytest
from peak_memory import peak_bytes

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.nn.utils import detach_state, truncated_bptt


def _grads(module):
    return {name: p.grad.numpy().copy() for name, p in module.named_parameters()}


def _mse_loss(head):
    return lambda out, target: F.mse_loss(head(out), target, reduction="sum")


# --------------------------------------------------------------------------- detach_state


def test_detach_state_keeps_values_and_structure_and_cuts_the_graph():
    w = tg.randn(3, requires_grad=True)
    h, c = w * 2, w * 3
    nested = [(h, c), h, None]
    out = detach_state(nested)
    assert isinstance(out, list) and isinstance(out[0], tuple) and out[2] is None
    for a, b in ((out[0][0], h), (out[0][1], c), (out[1], h)):
        assert a.is_leaf and not a.requires_grad
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert detach_state(None) is None
    assert detach_state(h).is_leaf
    with pytest.raises(TypeError, match="detach_state: expected a Tensor"):
        detach_state({"h": h})


# --------------------------------------------------------------------------- truncated_bptt


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_one_chunk_is_exactly_full_bptt(cls, rng):
    model = getattr(nn, cls)(2, 5, num_layers=2, dtype=np.float64)
    head = nn.Linear(5, 1, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((30, 3, 2)))
    y = tg.tensor(rng.standard_normal((30, 3, 1)))

    out, _ = model(x)
    F.mse_loss(head(out), y, reduction="sum").backward()
    full = _grads(model)
    model.zero_grad()

    losses, state = truncated_bptt(model, x, 30, _mse_loss(head), targets=y)
    assert len(losses) == 1
    for name, g in _grads(model).items():
        np.testing.assert_array_equal(g, full[name], err_msg=name)
    for s in state if isinstance(state, tuple) else (state,):
        assert s.is_leaf and not s.requires_grad


def test_chunks_equal_a_hand_written_truncated_loop(rng):
    """Chunks of 7 over 30 steps (the last chunk shorter), state carried and detached."""
    model = nn.LSTM(2, 4, dtype=np.float64, batch_first=True)
    head = nn.Linear(4, 1, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((3, 30, 2)))
    y = tg.tensor(rng.standard_normal((3, 30, 1)))
    state, expected_losses = None, []
    for start in range(0, 30, 7):
        out, state = model(x[:, start:start + 7], state)
        loss = F.mse_loss(head(out), y[:, start:start + 7], reduction="sum")
        loss.backward()
        expected_losses.append(loss.item())
        state = tuple(s.detach() for s in state)
    expected = _grads(model)
    model.zero_grad()
    head.zero_grad()

    losses, final = truncated_bptt(model, x, 7, _mse_loss(head), targets=y)  # time_dim=1
    assert len(losses) == 5
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-13)
    for name, g in _grads(model).items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-12, atol=1e-14, err_msg=name)
    np.testing.assert_array_equal(final[0].numpy(), state[0].numpy())
    # the truncated gradient is not the full one
    model.zero_grad()
    out, _ = model(x)
    F.mse_loss(head(out), y, reduction="sum").backward()
    assert not np.allclose(_grads(model)["weight_hh_l0"], expected["weight_hh_l0"])


def test_initial_state_and_loss_without_targets(rng):
    gru = nn.GRU(2, 3, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((10, 2, 2)))
    h0 = tg.tensor(rng.standard_normal((1, 2, 3)))
    losses, h_n = truncated_bptt(gru, x, 4, lambda out: (out * out).sum(), state=h0)
    _, h_ref = gru(x, h0)
    np.testing.assert_allclose(h_n.numpy(), h_ref.numpy(), rtol=1e-14)
    assert len(losses) == 3 and all(isinstance(v, float) for v in losses)


def test_with_an_optimizer_steps_once_per_chunk(rng):
    class CountingSGD:
        def __init__(self, params, lr):
            self.params, self.lr, self.steps = list(params), lr, 0

        def zero_grad(self):
            for p in self.params:
                p.grad = None

        def step(self):
            self.steps += 1
            for p in self.params:
                if p.grad is not None:
                    p.data -= self.lr * p.grad.data

    tg.manual_seed(0)
    model = nn.LSTM(1, 8)
    head = nn.Linear(8, 1)
    opt = CountingSGD(list(model.parameters()) + list(head.parameters()), lr=0.1)
    wave = np.sin(np.linspace(0, 8 * np.pi, 121, dtype=np.float32)).reshape(-1, 1, 1)
    x, y = tg.tensor(wave[:-1]), tg.tensor(wave[1:])
    first = last = None
    for _ in range(8):
        losses, _ = truncated_bptt(model, x, 20, lambda out, y: F.mse_loss(head(out), y),
                                   targets=y, optimizer=opt)
        first = first if first is not None else sum(losses)
        last = sum(losses)
    assert opt.steps == 8 * 6
    assert last < 0.5 * first, (first, last)
    assert all(p.grad is None for p in model.parameters())


def test_bad_chunk_size_and_targets_raise(rng):
    model = nn.RNN(2, 3)
    x = tg.randn(6, 1, 2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            truncated_bptt(model, x, bad, lambda out: out.sum())
    with pytest.raises(ValueError, match=r"targets.shape\[0\] must be the input's length 6"):
        truncated_bptt(model, x, 2, lambda out, y: out.sum(), targets=tg.randn(5, 1, 3))


def _peak_bytes(steps, chunk, rng):
    model = nn.LSTM(4, 16)
    head = nn.Linear(16, 1)
    x = tg.tensor(rng.standard_normal((steps, 4, 4)).astype(np.float32))
    y = tg.tensor(rng.standard_normal((steps, 4, 1)).astype(np.float32))
    return peak_bytes(lambda: truncated_bptt(model, x, chunk, _mse_loss(head), targets=y))


def test_graph_memory_is_bounded_by_the_chunk(rng):
    short, long = _peak_bytes(200, 50, rng), _peak_bytes(800, 50, rng)
    assert long < 1.5 * short, (short, long)
    # while full BPTT (one chunk) grows with the sequence
    full_short, full_long = _peak_bytes(200, 200, rng), _peak_bytes(800, 800, rng)
    assert full_long > 2.5 * full_short, (full_short, full_long)
