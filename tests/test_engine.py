"""The engine: backward's order, accumulation, memory, graph lifetime and its error messages."""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.ops import Function


def leaf(values, device="cpu") -> tg.Tensor:
    return tg.Tensor(np.asarray(values, dtype=np.float64), requires_grad=True, device=device)


# --------------------------------------------------------------------------- order and sums


def test_100k_op_chain_backward_is_iterative():
    """backward over a 100 000-op chain: no RecursionError, and the right gradient."""
    n = 100_000
    factor = 1.0 + 1.0 / n
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(n):
        y = y * factor
    assert n > sys.getrecursionlimit()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [factor**n] * 2, rtol=1e-9)
    np.testing.assert_allclose(y.numpy(), x.numpy() * factor**n, rtol=1e-9)


def test_reused_tensor_accumulates_every_use(device):
    x = leaf([0.5, -1.0, 2.0], device)
    y = x * x + x * 3.0 + x - x.exp()
    y.sum().backward()
    expected = 2 * x.numpy() + 3 + 1 - np.exp(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_grads_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 + 2 * x.numpy())


def test_diamond_graph():
    """x -> a -> (b, c) -> d: a's gradient is the sum over both branches."""
    x = leaf([0.3, -0.7])
    a = x * 2.0
    b = a * 3.0
    c = a.tanh()
    d = (b + c).sum()
    d.backward()
    xa = 2 * x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (3 + (1 - np.tanh(xa) ** 2)), rtol=1e-12)


@pytest.mark.parametrize("order", ["direct_first", "direct_last"])
def test_node_waits_for_all_consumers(order):
    """c feeds the root directly and through c.exp(): c must be processed after c.exp(),
    whichever order the root lists its inputs in."""
    x = leaf([0.1, 0.4, -0.2])
    c = x * 2.0
    y = c + c.exp() if order == "direct_first" else c.exp() + c
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (1 + np.exp(2 * x.numpy())), rtol=1e-12)


def test_broadcasting_is_undone_with_correct_shapes(device):
    a = leaf(np.ones((3, 1)), device)
    b = leaf(np.arange(4.0), device)
    c = leaf(2.0, device)
    d = leaf(np.ones((2, 1, 1)), device)
    out = a * b + c + d  # shape (2, 3, 4)
    assert out.shape == (2, 3, 4)
    out.sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    assert c.grad.shape == () and d.grad.shape == (2, 1, 1)
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), 2 * 6.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full(4, 2 * 3.0))
    assert c.grad.item() == 24.0
    np.testing.assert_allclose(d.grad.numpy(), np.full((2, 1, 1), 12.0))


def test_gradient_dtype_follows_each_input():
    x32 = tg.Tensor([1.0, 2.0], requires_grad=True)
    y64 = leaf([3.0, 4.0])
    out = x32 * y64
    assert out.dtype == np.float64
    out.sum().backward()
    assert x32.grad.dtype == np.float32 and y64.grad.dtype == np.float64
    np.testing.assert_allclose(x32.grad.numpy(), [3.0, 4.0])


def test_inputs_without_requires_grad_get_no_gradient():
    x = leaf([1.0, 2.0])
    constant = tg.Tensor(np.array([5.0, 6.0]))
    (x * constant).sum().backward()
    assert constant.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 6.0])


def test_backward_with_explicit_grad():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(tg.Tensor(np.array([1.0, 0.0, -1.0])))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.0, -6.0])
    z = leaf([1.0, 2.0])
    (z * 2.0).backward(np.array([0.5, 1.0]))
    np.testing.assert_allclose(z.grad.numpy(), [1.0, 2.0])


def test_backward_on_leaf():
    x = leaf([1.0, 2.0])
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_leaf_grad_owns_its_memory():
    """A gradient that an op returns as a view (sum broadcasts) is copied into .grad."""
    x = leaf(np.zeros((2, 3)))
    x.sum().backward()
    assert x.grad.data.flags.writeable and x.grad.data.flags.owndata
    x.grad.data += 1  # writable, and accumulation works afterwards
    x.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 3.0))


# --------------------------------------------------------------------------- graph lifetime


def _tinygrad_objects(objects) -> list:
    return [o for o in objects if type(o).__module__.startswith("tinygrad_rnn")]


def test_no_reference_cycles_are_left_behind():
    """Build, differentiate and drop a graph with the collector off: nothing of ours is
    left for the cycle collector, so reference counting alone frees the graph."""
    gc.collect()
    gc.disable()
    old_flags = gc.get_debug()
    try:
        x = leaf(np.linspace(-1, 1, 6).reshape(2, 3))
        w = leaf(np.ones((3, 4)))
        h = (x @ w).tanh()
        h.retain_grad()
        parts = h.split(2, dim=1)
        loss = (parts[0] * parts[1]).sum() + h.softmax(-1).log().mean()
        loss.backward()
        probe = weakref.ref(h)
        del x, w, h, parts, loss
        assert probe() is None, "the graph was not freed by reference counting"
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        ours = _tinygrad_objects(gc.garbage)
        assert ours == []
        assert found == 0
    finally:
        gc.set_debug(old_flags)
        gc.garbage.clear()
        gc.enable()


def test_graph_dropped_without_backward_is_freed_by_refcount():
    gc.disable()
    try:
        x = leaf([1.0, 2.0])
        y = (x * 2.0).exp()
        node_probe = weakref.ref(y._node)
        del y
        assert node_probe() is None
    finally:
        gc.enable()


def test_saved_arrays_are_released_after_backward():
    x = leaf([0.5, 1.5])
    e = x.exp()
    saved = weakref.ref(e.data)  # Exp saves its output for backward
    mul_node = None
    y = e * x
    mul_node = y._node
    loss = y.sum()
    del e
    assert saved() is not None  # still needed: the graph holds it
    loss.backward()
    assert saved() is None, "Exp's saved output survived backward"
    assert mul_node.inputs is None
    assert set(vars(mul_node)) <= {"inputs", "num_outputs"}  # saved a, b dropped


def test_second_backward_raises_and_mentions_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward_and_accumulates():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_through_a_shared_subgraph_twice_needs_retain_graph():
    x = leaf([1.0, 2.0])
    shared = x.exp()
    shared.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        (shared * 2.0).sum().backward()


# --------------------------------------------------------------------------- errors


def test_non_scalar_backward_needs_grad():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"one-element.*\(2,\)"):
        y.backward()


def test_backward_grad_of_wrong_shape_raises():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"\(2,\).*\(3,\)"):
        y.backward(np.ones(3))
    with pytest.raises(RuntimeError, match=r"\(2,\).*\(1, 2\)"):
        y.backward(tg.Tensor(np.ones((1, 2))))


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.Tensor([1.0, 2.0]).sum().backward()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_requires_grad_on_non_float_raises(dtype):
    with pytest.raises(TypeError, match="floating-point"):
        tg.Tensor(np.array([1, 0], dtype=dtype), requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        tg.Tensor(np.array([1, 0], dtype=dtype)).requires_grad_()


def test_integer_list_with_requires_grad_raises():
    with pytest.raises(TypeError, match="int64"):
        tg.Tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError):
        tg.arange(3, requires_grad=True)


class _WrongShapeGrad(Function):
    """y = 2x, with a backward that (wrongly) returns a gradient of another shape."""

    def __init__(self, grad_shape):
        self.grad_shape = grad_shape

    def forward(self, x):
        return x * 2

    def backward(self, dy):
        return self.xp.ones(self.grad_shape, dtype=dy.dtype)


@pytest.mark.parametrize("input_shape, grad_shape", [
    ((3,), (2,)),
    ((2, 3), (3, 2)),
    ((3, 1), (3,)),     # fewer dims than the input
    ((2, 3), (4, 3)),   # not a broadcast of the input's shape
])
def test_op_returning_wrong_grad_shape_is_reported(input_shape, grad_shape):
    x = leaf(np.ones(input_shape))
    y = tg.apply_op(_WrongShapeGrad, x, grad_shape=grad_shape)
    with pytest.raises(RuntimeError, match=r"_WrongShapeGrad\.backward returned a gradient "
                                           r"of shape .* for an input of shape"):
        y.sum().backward()


class _Cube(Function):
    """A correct op defined outside the package: y = x**3, dx = 3 x**2 dy."""

    def forward(self, x):
        self.x = x
        return x**3

    def backward(self, dy):
        return 3 * self.x**2 * dy


def test_apply_op_with_a_user_defined_function():
    x = leaf([1.0, -2.0])
    y = tg.apply_op(_Cube, x)
    assert type(y._node).__name__ == "_Cube"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    assert tg.gradcheck(lambda t: tg.apply_op(_Cube, t), [leaf([0.3, 1.7])])


# --------------------------------------------------------------------------- grad mode


def test_no_grad_context_manager():
    x = leaf([1.0])
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * 2.0
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(ValueError), tg.no_grad():
        raise ValueError("boom")
    assert tg.is_grad_enabled()


def test_no_grad_decorator():
    @tg.no_grad()
    def double(t):
        assert not tg.is_grad_enabled()
        return t * 2.0

    y = double(leaf([1.0]))
    assert not y.requires_grad
    assert tg.is_grad_enabled()


def test_no_grad_decorator_recursive_call_restores_mode():
    @tg.no_grad()
    def countdown(n):
        return countdown(n - 1) if n else tg.is_grad_enabled()

    assert countdown(3) is False
    assert tg.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = leaf([1.0])
    with tg.no_grad():
        with tg.enable_grad():
            assert tg.is_grad_enabled()
            y = x * 2.0
        assert not tg.is_grad_enabled()
        z = x * 2.0
    assert y.requires_grad and not z.requires_grad


def test_enable_grad_decorator_inside_no_grad():
    @tg.enable_grad()
    def square(t):
        return t * t

    x = leaf([3.0])
    with tg.no_grad():
        y = square(x)
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


# --------------------------------------------------------------------------- detach, retain_grad


def test_detach_cuts_the_graph_and_shares_memory():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.data, y.data)
    (y * d).sum().backward()  # d is a constant: dy/dx = 3 * d
    np.testing.assert_allclose(x.grad.numpy(), 3 * d.numpy())


def test_retain_grad_on_non_leaf():
    x = leaf([1.0, -2.0])
    h = x * 2.0
    h.retain_grad()
    other = x * 3.0  # a non-leaf without retain_grad
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    with pytest.warns(UserWarning, match="retain_grad"):
        assert other.grad is None
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.numpy() + 3)


def test_retained_grad_accumulates_like_pytorch():
    x = leaf([1.0, 1.0])
    h = x * 2.0
    h.retain_grad()
    loss = (h * h).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(h.grad.numpy(), [8.0, 8.0])


def test_retain_grad_on_one_output_of_a_multi_output_op():
    x = leaf(np.arange(6.0).reshape(3, 2))
    first, second, third = x.unbind(0)
    second.retain_grad()
    (second * 5.0 + first).sum().backward()
    np.testing.assert_allclose(second.grad.numpy(), [5.0, 5.0])
    with pytest.warns(UserWarning, match="retain_grad"):
        assert third.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [[1, 1], [5, 5], [0, 0]])


def test_requires_grad_false_on_non_leaf_raises():
    y = leaf([1.0]) * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


# --------------------------------------------------------------------------- multi-output ops


def test_split_with_only_some_outputs_used():
    x = leaf(np.arange(10.0).reshape(2, 5))
    a, b, c = x.split(2, dim=1)
    assert [p.shape for p in (a, b, c)] == [(2, 2), (2, 2), (2, 1)]
    (b * 2.0).sum().backward()
    expected = np.zeros((2, 5))
    expected[:, 2:4] = 2.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_chunk_output_used_twice_and_another_once():
    x = leaf(np.arange(6.0))
    a, b, c = x.chunk(3)
    (a * a + c).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 2.0, 0.0, 0.0, 1.0, 1.0])


def test_unbind_last_output_only():
    x = leaf(np.arange(6.0).reshape(2, 3))
    *_, last = x.unbind(1)
    last.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0, 1], [0, 0, 1]])


def test_multi_output_node_gets_grads_from_several_paths():
    """Two outputs of one split reach the root along paths of different lengths."""
    x = leaf(np.array([1.0, 2.0, 3.0, 4.0]))
    a, b = x.split(2)
    deep = a
    for _ in range(5):
        deep = deep * 2.0
    (deep.sum() + (b * b).sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [32.0, 32.0, 6.0, 8.0])
