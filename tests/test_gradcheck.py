"""tg.gradcheck: passes correct ops, names what is wrong in a wrong one, refuses float32."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.ops import Function


def leaf(values, device="cpu") -> tg.Tensor:
    return tg.Tensor(np.asarray(values, dtype=np.float64), requires_grad=True, device=device)


class _SquareWithWrongBackward(Function):
    """y = x**2, but backward claims dy * 3x (should be dy * 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return dy * 3 * self.x


class _ScaleWithWrongSecondGrad(Function):
    """y = a * b, with a correct da and a db that is off by a factor 2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dy):
        return dy * self.b, 2 * dy * self.a


def test_passes_on_correct_ops(device):
    x = leaf(np.linspace(0.5, 1.5, 6).reshape(2, 3), device)
    w = leaf(np.linspace(-1, 1, 12).reshape(3, 4), device)
    assert tg.gradcheck(lambda a, b: (a @ b).tanh().log_softmax(-1), [x, w]) is True


def test_passes_with_tuple_outputs_and_constant_inputs():
    x = leaf(np.arange(1.0, 7.0).reshape(2, 3))
    constant = tg.Tensor(np.full((2, 3), 2.0))
    assert tg.gradcheck(lambda a, c: (a * c).split([1, 2], dim=1), [x, constant])


def test_wrong_backward_raises_naming_input_index_and_values():
    x = leaf([[0.5, -1.25], [2.0, 0.75]])
    with pytest.raises(tg.GradcheckError) as excinfo:
        tg.gradcheck(lambda t: tg.apply_op(_SquareWithWrongBackward, t), [x])
    message = str(excinfo.value)
    assert "input 0" in message and "(2, 2)" in message
    assert "at index (0, 0)" in message
    found = re.search(r"analytic (\S+), numeric (\S+)$", message)
    assert found, message
    analytic, numeric = float(found.group(1)), float(found.group(2))
    assert analytic == pytest.approx(1.5 * numeric, rel=1e-5)  # 3x claimed against 2x true


def test_wrong_gradient_of_second_input_is_attributed_to_it():
    a, b = leaf([1.0, 2.0]), leaf([3.0, -4.0])
    with pytest.raises(tg.GradcheckError, match=r"input 1 \(shape \(2,\)\) at index \(0,\)"):
        tg.gradcheck(lambda p, q: tg.apply_op(_ScaleWithWrongSecondGrad, p, q), [a, b])


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(tg.GradcheckError, AssertionError)


def test_rejects_float32_inputs():
    x = tg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="input 0 must be float64.*float32"):
        tg.gradcheck(lambda t: t * 2.0, [x])


def test_rejects_inputs_without_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        tg.gradcheck(lambda t: t * 2.0, [tg.Tensor(np.ones(3))])


def test_output_not_depending_on_inputs_raises():
    x = leaf([1.0])
    with pytest.raises(tg.GradcheckError, match="no output depends"):
        tg.gradcheck(lambda t: tg.Tensor(np.ones(2)), [x])


def test_leaves_inputs_unchanged_and_resets_grad():
    values = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    x = leaf(values.copy())
    x.grad = tg.Tensor(np.full((2, 3), 99.0))  # stale gradient from earlier work
    assert tg.gradcheck(lambda t: t.exp(), [x])
    np.testing.assert_array_equal(x.numpy(), values)
    fresh = leaf(values.copy())
    assert tg.gradcheck(lambda t: t.exp(), [fresh])
    np.testing.assert_array_equal(x.grad.numpy(), fresh.grad.numpy())  # stale value dropped


def test_non_contiguous_input_is_perturbed_correctly():
    """A transposed (non-contiguous) array: each perturbation must reach the real data."""
    x = tg.Tensor(np.arange(1.0, 13.0).reshape(4, 3).T, requires_grad=True)
    assert not x.data.flags.c_contiguous
    assert tg.gradcheck(lambda t: t * t, [x])


def test_scalar_input():
    assert tg.gradcheck(lambda t: (t * 3.0).exp(), [leaf(0.2)])


# --------------------------------------------------------------------------- non-leaf inputs


def test_non_leaf_input_is_checked_as_a_fresh_leaf():
    """`x * 2` and `p.double()` are not leaves: their gradient used to read as 0 (a false
    mismatch "analytic 0, numeric ...")."""
    scaled = tg.randn(3, dtype="float64", requires_grad=True) * 2
    assert tg.gradcheck(lambda a: a.tanh(), [scaled])
    weight = tg.randn(3, 4, requires_grad=True)  # float32, as a model's parameter is
    xs = tg.randn(2, 3, dtype="float64")
    assert tg.gradcheck(lambda x, w: (x @ w).sigmoid(), [xs, weight.double()])
    assert weight.grad is None  # the source parameter is not touched


def test_non_leaf_input_passed_twice_is_one_variable():
    y = tg.randn(3, dtype="float64", requires_grad=True) * 1.5
    assert tg.gradcheck(lambda a, b: a * b, [y, y])


def test_wrong_backward_is_still_reported_for_a_non_leaf_input():
    y = tg.randn(4, dtype="float64", requires_grad=True) + 1.0
    with pytest.raises(tg.GradcheckError, match="input 0"):
        tg.gradcheck(lambda t: tg.apply_op(_SquareWithWrongBackward, t), [y])
