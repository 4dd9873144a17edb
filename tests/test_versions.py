"""Version counters: an array changed in place (optimizer step, load_state_dict, nn.init)
after the forward that kept it makes the backward raise, naming the tensor, as in PyTorch;
ops that kept nothing of it (Add) go on."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.nn import init

MODIFIED = "modified by an inplace operation"


def _lstm_loss(fast: bool, **options):
    tg.manual_seed(0)
    lstm = tg.nn.LSTM(3, 4, fast=fast, **options)
    x = tg.randn(5, 2, 3)
    y, _ = lstm(x)
    return lstm, (y * y).sum()


def test_library_in_place_changes_bump_the_version():
    p = tg.Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    assert p._version == 0
    init.uniform_(p)
    init.constant_(p, 0.5)
    assert p._version == 2
    p.grad = tg.ones(2, 3)
    tg.optim.SGD([p], lr=0.1).step()
    assert p._version == 3
    lstm = tg.nn.LSTM(3, 4, forget_bias=1.0)
    versions = {name: q._version for name, q in lstm.named_parameters()}
    assert versions["bias_ih_l0"] == versions["weight_ih_l0"] + 1  # init, then forget bias
    lstm.load_state_dict(lstm.state_dict())
    assert all(q._version == versions[name] + 1 for name, q in lstm.named_parameters())
    assert tg.nn.Embedding(4, 2, padding_idx=0).weight._version == 2
    assert p.detach()._version == 0 and (p * 2)._version == 0


@pytest.mark.parametrize("fast", [True, False], ids=["fused", "composed"])
def test_optimizer_step_between_forward_and_backward_raises(fast):
    lstm, loss = _lstm_loss(fast)
    loss.backward(retain_graph=True)
    tg.optim.SGD(lstm.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        loss.backward()
    message = str(info.value)
    assert "shape (16, " in message and "float32" in message
    assert "is at version 2; expected version 1" in message
    assert ("LSTMLayer" if fast else "MatMul") in message


@pytest.mark.parametrize("fast", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("options", [{}, {"layer_norm": True}, {"bidirectional": True}],
                         ids=["plain", "layer_norm", "bidirectional"])
def test_load_state_dict_between_forward_and_backward_raises(fast, options):
    lstm, loss = _lstm_loss(fast, **options)
    state = {name: value * 2 for name, value in lstm.state_dict().items()}
    lstm.load_state_dict(state)
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_a_new_forward_after_the_step_is_fine():
    lstm, loss = _lstm_loss(False)
    optimizer = tg.optim.SGD(lstm.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    _, loss = _lstm_loss(False)  # recorded after every change
    loss.backward()


def test_ops_that_keep_nothing_of_the_changed_tensor_do_not_raise():
    """Add keeps neither input, Tanh keeps only its output: the gradients stay right."""
    x = tg.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    p = tg.Tensor(np.ones(3), requires_grad=True)
    loss = ((x + p).tanh() * 3.0).sum() + p.tanh().sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy(), p.grad.numpy().copy()
    init.constant_(p, 2.0)
    x.grad = p.grad = None
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), first[0])
    np.testing.assert_array_equal(p.grad.numpy(), first[1])


def test_a_view_of_the_changed_tensor_counts():
    """MatMul kept W.T, a view of W's array: changing W raises, naming W."""
    w = tg.Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    x = tg.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    loss = (x @ w.T).sum()
    init.zeros_(w)
    with pytest.raises(RuntimeError, match=r"leaf Tensor \(requires_grad=True\) of shape \(4, 3\)"):
        loss.backward()


def test_changes_to_other_tensors_do_not_raise():
    a = tg.Tensor(np.arange(3.0), requires_grad=True)
    b = tg.Tensor(np.arange(3.0), requires_grad=True)
    loss = (a * a).sum()
    init.zeros_(b)  # b is not in loss's graph
    loss.backward()
    np.testing.assert_array_equal(a.grad.numpy(), 2 * np.arange(3.0))


def test_a_non_leaf_kept_array_is_named_by_its_op():
    a = tg.Tensor(np.arange(1.0, 4.0), requires_grad=True)
    h = a * 2.0  # output 0 of Mul
    loss = (h * a).sum()  # this Mul keeps h's array
    h._bump_version()  # as an in-place change of h would
    with pytest.raises(RuntimeError, match="output 0 of Mul of shape \\(3,\\)"):
        loss.backward()


def test_many_changes_give_a_bound_on_the_expected_version():
    w = tg.Tensor(np.ones(3), requires_grad=True)
    loss = (w * w).sum()
    for _ in range(20):
        init.ones_(w)
    with pytest.raises(RuntimeError, match="is at version 20; expected version at most 4"):
        loss.backward()
