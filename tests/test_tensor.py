"""The Tensor object: construction, creation functions, properties, conversions, casts."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg

# --------------------------------------------------------------------------- construction


def test_python_floats_become_float32(device):
    t = tg.Tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.device == device
    assert tg.Tensor(1.5).dtype == np.float32
    assert tg.Tensor([1, 2.5]).dtype == np.float32


def test_numpy_dtypes_are_kept():
    assert tg.Tensor(np.zeros(3)).dtype == np.float64
    assert tg.Tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert tg.Tensor(np.arange(3)).dtype == np.int64
    assert tg.Tensor(np.float64(2.0)).dtype == np.float64


def test_python_ints_and_bools_stay_integer_and_bool():
    assert tg.Tensor([1, 2, 3]).dtype == np.int64
    assert tg.Tensor(7).dtype == np.int64
    assert tg.Tensor([True, False]).dtype == np.bool_


def test_explicit_dtype(device):
    assert tg.Tensor([1, 2], dtype=np.float64, device=device).dtype == np.float64
    assert tg.Tensor(np.zeros(2), dtype="float32").dtype == np.float32
    assert tg.Tensor([1.7, 2.2], dtype=np.int32).dtype == np.int32


def test_default_dtype_can_be_float64():
    tg.set_default_dtype(np.float64)
    assert tg.get_default_dtype() == np.float64
    assert tg.Tensor([1.0]).dtype == np.float64
    assert tg.randn(2).dtype == np.float64
    assert tg.zeros(2).dtype == np.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        tg.set_default_dtype(np.int32)


def test_tensor_constructor_shares_but_tg_tensor_copies():
    array = np.zeros(3)
    shared, copied = tg.Tensor(array), tg.tensor(array)
    array[0] = 5.0
    assert shared.numpy()[0] == 5.0
    assert copied.numpy()[0] == 0.0
    source = tg.Tensor(np.ones(2))
    clone = tg.tensor(source, requires_grad=True)
    source.data[0] = 9.0
    assert clone.numpy().tolist() == [1.0, 1.0] and clone.requires_grad


def test_tensor_from_tensor_shares_data():
    a = tg.Tensor(np.ones(2))
    b = tg.Tensor(a)
    assert np.shares_memory(a.data, b.data)
    assert not b.requires_grad


# --------------------------------------------------------------------------- creation


def test_zeros_ones_full(device):
    z = tg.zeros(2, 3, device=device)
    assert z.shape == (2, 3) and z.dtype == np.float32 and z.device == device
    assert (z.numpy() == 0).all()
    o = tg.ones((4,), dtype=np.float64)
    assert o.shape == (4,) and o.dtype == np.float64 and (o.numpy() == 1).all()
    f = tg.full((2, 2), 7.5, device=device)
    assert f.numpy().tolist() == [[7.5, 7.5], [7.5, 7.5]] and f.dtype == np.float32
    assert tg.full(3, 2.0).shape == (3,)
    assert tg.zeros(2, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match="non-negative"):
        tg.zeros(2, -1)


def test_zeros_like_and_ones_like(device):
    t = tg.Tensor(np.ones((2, 3)), device=device)
    z = tg.zeros_like(t)
    assert z.shape == (2, 3) and z.dtype == np.float64 and z.device == device
    o = tg.ones_like(t, dtype=np.float32)
    assert o.dtype == np.float32 and (o.numpy() == 1).all()
    assert tg.zeros_like(t, dtype=np.dtype("float32")).dtype == np.float32


def test_randn_and_rand(device):
    tg.manual_seed(0)
    r = tg.randn(1000, device=device)
    assert r.shape == (1000,) and r.dtype == np.float32 and r.device == device
    assert abs(float(r.numpy().mean())) < 0.15 and 0.85 < float(r.numpy().std()) < 1.15
    u = tg.rand(3, 4, dtype=np.float64)
    assert u.dtype == np.float64 and u.shape == (3, 4)
    assert ((u.numpy() >= 0) & (u.numpy() < 1)).all()
    with pytest.raises(TypeError, match="floating point"):
        tg.randn(2, dtype=np.int64)


def test_arange():
    assert tg.arange(5).numpy().tolist() == [0, 1, 2, 3, 4]
    assert tg.arange(5).dtype == np.int64
    assert tg.arange(1, 7, 2).numpy().tolist() == [1, 3, 5]
    f = tg.arange(0.0, 1.0, 0.25)
    assert f.dtype == np.float32 and f.numpy().tolist() == [0.0, 0.25, 0.5, 0.75]
    assert tg.arange(3, dtype=np.float64).dtype == np.float64


def test_manual_seed_reproducible():
    tg.manual_seed(123)
    first = tg.randn(5).numpy()
    first_uniform = tg.rand(3).numpy()
    tg.manual_seed(123)
    np.testing.assert_array_equal(tg.randn(5).numpy(), first)
    np.testing.assert_array_equal(tg.rand(3).numpy(), first_uniform)
    tg.manual_seed(124)
    assert not np.array_equal(tg.randn(5).numpy(), first)


def test_manual_seed_rejects_non_int():
    with pytest.raises(TypeError, match="int"):
        tg.manual_seed(1.5)


def test_rng_state_round_trip():
    from tinygrad_rnn import backend

    tg.manual_seed(7)
    state = backend.get_rng_state()
    first = tg.randn(4).numpy()
    backend.set_rng_state(state)
    np.testing.assert_array_equal(tg.randn(4).numpy(), first)


# --------------------------------------------------------------------------- properties


def test_properties(device):
    t = tg.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, device=device)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64
    assert t.device == device
    assert t.T.shape == (3, 2)
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert t.numel() == 6 and t.size() == (2, 3) and t.size(1) == 3 and t.dim() == 2
    assert len(t) == 2
    assert type(t.data).__name__ == "ndarray"
    (t * 2.0).sum().backward()
    assert isinstance(t.grad, tg.Tensor)
    assert t.grad.grad is None and not t.grad.requires_grad and t.grad.is_leaf
    with pytest.raises(ValueError, match="2-D"):
        tg.Tensor(np.zeros((2, 3, 4))).T  # noqa: B018 - the property raises


def test_item_numpy_tolist():
    t = tg.Tensor(np.array([[1.5, 2.0], [3.0, 4.0]]))
    assert isinstance(t.numpy(), np.ndarray)
    assert t.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert t[0, 0].item() == 1.5 and isinstance(t[0, 0].item(), float)
    assert tg.Tensor([[3]]).item() == 3
    with pytest.raises(ValueError, match=r"one-element.*\(2, 2\)"):
        t.item()


def test_numpy_of_non_leaf_has_no_graph():
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    values = (x * 2.0).numpy()
    assert isinstance(values, np.ndarray) and values.tolist() == [2.0, 4.0]


def test_to_cpu_is_a_no_op_on_cpu():
    t = tg.Tensor([1.0, 2.0], requires_grad=True)
    assert t.to("cpu") is t and t.cpu() is t
    assert t.to(device="cpu").device == "cpu"


def test_to_device_round_trip_is_differentiable(device):
    x = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.to(device)
    assert y.device == device
    (y * 3.0).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


@pytest.mark.parametrize("cast, source, target", [
    ("float", np.float64, np.float32),
    ("double", np.float32, np.float64),
])
def test_float_and_double_are_differentiable_casts(cast, source, target):
    x = tg.Tensor(np.array([1.0, -2.0], dtype=source), requires_grad=True)
    y = getattr(x, cast)()
    assert y.dtype == target and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == source
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0])


def test_same_dtype_cast_returns_self():
    x = tg.Tensor(np.ones(2, dtype=np.float32))
    assert x.float() is x
    assert x.astype(np.float64).dtype == np.float64
    assert x.to(dtype=np.float64).dtype == np.float64


def test_requires_grad_():
    x = tg.Tensor(np.ones(2))
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad


def test_comparisons_return_constant_bool_tensors():
    x = tg.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    other = tg.Tensor(np.array([2.0, 2.0, 2.0]))
    results = {
        "lt": (x < 2.0, [True, False, False]),
        "le": (x <= 2.0, [True, True, False]),
        "gt": (x > other, [False, False, True]),
        "ge": (x >= other, [False, True, True]),
        "eq": (x.eq(2.0), [False, True, False]),
        "ne": (x.ne(other), [True, False, True]),
    }
    for name, (result, expected) in results.items():
        assert isinstance(result, tg.Tensor), name
        assert result.dtype == np.bool_ and not result.requires_grad and result.is_leaf, name
        assert result.numpy().tolist() == expected, name


def test_bool_of_tensor():
    assert bool(tg.Tensor([1.0]))
    assert not bool(tg.Tensor(0.0))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tg.Tensor([1.0, 2.0]))


def test_argmax_argmin_are_not_differentiable():
    x = tg.Tensor(np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]), requires_grad=True)
    assert x.argmax(dim=1).numpy().tolist() == [1, 0]
    assert x.argmin(axis=0).numpy().tolist() == [0, 1, 0]
    assert not x.argmax().requires_grad


def test_repr():
    assert repr(tg.Tensor([1.0, 2.0])) == "tensor([1., 2.], dtype=float32)"
    leaf = tg.Tensor(np.array([1.0]), requires_grad=True)
    assert "requires_grad=True" in repr(leaf) and "float64" in repr(leaf)
    assert "grad_fn=<Mul>" in repr(leaf * 2.0)


def test_tensors_hash_by_identity():
    a, b = tg.Tensor([1.0]), tg.Tensor([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1


def test_operations_keep_integer_dtypes():
    i = tg.Tensor([1, 2, 3])
    assert (i + 1).dtype == np.int64
    assert (i * 2).dtype == np.int64
    # a Python float makes a tensor of the default float dtype, as in PyTorch
    assert (i + 0.5).dtype == np.float32
    assert (0.5 * i).dtype == np.float32
    # an integer or bool tensor never promotes a float one: float32 stays float32
    x = tg.ones(3, requires_grad=True)
    assert (i * x).dtype == np.float32 and (x / i).dtype == np.float32
    assert (x * (i > 1)).dtype == np.float32
    (x * i).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [1.0, 2.0, 3.0]


def test_numpy_scalar_and_array_on_the_left():
    x = tg.Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    for result in (np.ones(2, dtype=np.float32) + x, np.float32(2.0) * x, np.ones(2) @ x):
        assert isinstance(result, tg.Tensor)
    assert (np.float32(2.0) * x).dtype == np.float32


def test_shape_helpers_accept_tuples_and_varargs():
    x = tg.Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.reshape(6, 4).shape == x.reshape((6, 4)).shape == x.view([6, 4]).shape
    assert x.permute(2, 1, 0).shape == x.permute([2, 1, 0]).shape == (4, 3, 2)
    assert x.transpose(0, 1).shape == (3, 2, 4) and x.transpose().shape == (2, 4, 3)
    assert x.sum(dim=1).shape == x.sum(axis=1).shape == (2, 4)
    assert x.amax(dim=-1, keepdim=True).shape == (2, 3, 1)
    with pytest.raises(TypeError, match="either axis= or dim="):
        x.sum(axis=0, dim=1)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0, 1)


def test_split_chunk_cat_stack_spellings():
    x = tg.Tensor(np.arange(12.0).reshape(3, 4))
    assert [p.shape for p in x.chunk(2, axis=1)] == [(3, 2), (3, 2)]
    assert [p.shape for p in tg.chunk(x, 3)] == [(1, 4)] * 3
    assert [p.shape for p in tg.split(x, [1, 3], dim=1)] == [(3, 1), (3, 3)]
    assert len(tg.unbind(x, 1)) == 4
    assert tg.cat([x, x], axis=1).shape == tg.concat([x, x], dim=1).shape == (3, 8)
    assert tg.stack([x, x], axis=2).shape == (3, 4, 2)
    with pytest.raises(ValueError, match="add up to"):
        x.split([1, 1], dim=0)
    with pytest.raises(ValueError, match=r"tensor 1 has shape \(2, 4\)"):
        tg.stack([x, x[:2]])
    with pytest.raises(ValueError, match="tensor 1 has 1 dims"):
        tg.cat([x, x[0]])
    with pytest.raises(TypeError, match="either axis= or dim="):
        tg.cat([x, x], dim=0, axis=1)


# --------------------------------------------------------------------------- .grad of a non-leaf


def test_reading_grad_of_a_non_leaf_warns_and_points_to_retain_grad():
    x = tg.randn(3, requires_grad=True)
    y = x * 2.0
    y.sum().backward()
    with pytest.warns(UserWarning, match=r"not a leaf Tensor.*\.retain_grad\(\)"):
        assert y.grad is None


def test_the_common_mistake_of_a_converted_parameter_warns():
    p = tg.randn(3, requires_grad=True).double()  # a non-leaf: its gradient goes to the source
    (p * p).sum().backward()
    with pytest.warns(UserWarning, match="leaf"):
        assert p.grad is None


def test_no_warning_for_leaves_retained_tensors_and_constants():
    import warnings

    x = tg.randn(3, requires_grad=True)
    h = x * 2.0
    h.retain_grad()
    unused = x * 3.0
    unused.retain_grad()  # retained but no gradient reaches it: still no warning
    constant = tg.randn(3) * 2.0  # computed without grad: a leaf, as in PyTorch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.grad is None and h.grad is None and constant.grad is None
        h.sum().backward()
        assert x.grad is not None and h.grad is not None and unused.grad is None
    assert h.retains_grad and not x.retains_grad and not unused.is_leaf


def test_grad_can_be_set_and_cleared():
    x = tg.randn(2, requires_grad=True)
    x.grad = tg.ones(2)
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    x.grad = None
    assert x.grad is None
