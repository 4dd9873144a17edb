"""Ops that are never graph nodes: comparisons and the random masks of dropout and zoneout."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import ops


@pytest.mark.parametrize("name, fn", [("lt", operator.lt), ("le", operator.le),
                                      ("gt", operator.gt), ("ge", operator.ge)])
def test_comparisons_are_boolean_constants(device, name, fn):
    a = tg.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, device=device)
    b = tg.Tensor(np.array([2.0, 2.0, 2.0]), device=device)
    out = fn(a, b)
    assert out.dtype == bool and not out.requires_grad and out._node is None
    np.testing.assert_array_equal(out.numpy(), fn(a.numpy(), b.numpy()))
    np.testing.assert_array_equal(fn(a, 2.0).numpy(), fn(a.numpy(), 2.0))


def test_eq_ne(device):
    a = tg.Tensor(np.array([1, 2, 3]), device=device)
    np.testing.assert_array_equal(a.eq(2).numpy(), [False, True, False])
    np.testing.assert_array_equal(a.ne(2).numpy(), [True, False, True])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_keeps_dtype_scale_and_rate(device, dtype):
    x = tg.zeros(200, 50, dtype=dtype, device=device, requires_grad=True)
    tg.manual_seed(3)
    mask = tg.apply_op(ops.DropoutMask, x, p=0.25)
    assert mask.dtype == dtype and not mask.requires_grad
    values = mask.numpy()
    scale = np.asarray(1 / 0.75, dtype=dtype)
    assert ((values == 0) | (values == scale)).all()
    assert abs((values == 0).mean() - 0.25) < 0.03
    tg.manual_seed(3)
    np.testing.assert_array_equal(tg.apply_op(ops.DropoutMask, x, p=0.25).numpy(), values)


def test_bernoulli_mask_rate_and_fresh_draws(device):
    x = tg.zeros(300, 40, device=device)
    first = tg.apply_op(ops.BernoulliMask, x, p=0.3).numpy()
    second = tg.apply_op(ops.BernoulliMask, x, p=0.3).numpy()
    assert first.dtype == bool and abs(first.mean() - 0.3) < 0.03
    assert (first != second).any()


def test_dropout_is_a_mask_times_x(device):
    x = tg.Tensor(np.ones((50, 40)), requires_grad=True, device=device)
    y = tg.functional.dropout(x, 0.5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())  # d(mask * x)/dx = mask
