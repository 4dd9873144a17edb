"""ops.LayerNorm: one node with an analytic backward, equal to the composed formula and to
torch.nn.functional.layer_norm, in float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.nn.layers import layer_norm

# (input shape, axes normalised over): the last axis, two trailing axes, a single row
CASES = [((4, 7), (-1,)), ((2, 3, 5), (-2, -1)), ((3, 2, 4), (-1,)), ((6,), (-1,))]


def composed_layer_norm(x, axes, eps):
    """The same normalisation written as seven graph nodes (the reference)."""
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return centered / (var + eps).sqrt()


def _inputs(shape, dtype, device="cpu", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3.0 + 1.5
    weight = rng.standard_normal(shape)
    return tg.Tensor(x.astype(dtype), requires_grad=True, device=device), weight.astype(dtype)


def test_one_graph_node():
    x, _ = _inputs((2, 5), np.float64)
    y = layer_norm(x)
    assert type(y._node).__name__ == "LayerNorm"
    assert y._node.inputs[0] is x


@pytest.mark.parametrize("shape, axes", CASES)
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_gradcheck(shape, axes, eps, device):
    x, _ = _inputs(shape, np.float64, device)
    assert tg.gradcheck(lambda t: layer_norm(t, axes, eps), [x])


@pytest.mark.parametrize("shape, axes", CASES)
def test_matches_composed_formula_float64(shape, axes):
    x, weight = _inputs(shape, np.float64)
    y = layer_norm(x, axes, 1e-5)
    (y * tg.Tensor(weight)).sum().backward()
    fused_grad = x.grad.numpy()
    x.grad = None
    reference = composed_layer_norm(x, axes, 1e-5)
    (reference * tg.Tensor(weight)).sum().backward()
    # the op sums and multiplies by 1/n and by 1/std where the composition divides: the
    # same values up to rounding
    np.testing.assert_allclose(y.numpy(), reference.numpy(), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(fused_grad, x.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, axes", CASES)
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-12, 1e-12),
                                               (np.float32, 1e-5, 1e-5)])
def test_matches_torch(shape, axes, dtype, rtol, atol, torch):
    x, weight = _inputs(shape, dtype)
    gain = np.linspace(0.5, 1.5, np.prod(shape[len(shape) - len(axes):])).astype(dtype)
    gain = gain.reshape(shape[len(shape) - len(axes):])
    y = layer_norm(x, axes, 1e-5) * tg.Tensor(gain, requires_grad=True)
    (y * tg.Tensor(weight)).sum().backward()

    x_ref = torch.tensor(x.numpy(), requires_grad=True)
    gain_ref = torch.tensor(gain, requires_grad=True)
    y_ref = torch.nn.functional.layer_norm(x_ref, gain.shape, gain_ref, None, 1e-5)
    (y_ref * torch.as_tensor(weight)).sum().backward()

    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(x.grad.numpy(), x_ref.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape, axes", CASES)
def test_float32_stays_float32(shape, axes, device):
    x, weight = _inputs(shape, np.float32, device)
    y = layer_norm(x, axes, 1e-5)
    assert y.dtype == np.float32
    (y * tg.Tensor(weight, device=device)).sum().backward()
    assert x.grad.dtype == np.float32
    node = layer_norm(x, axes)._node
    assert node.inv_std.dtype == np.float32 and node.xhat.dtype == np.float32


def test_constant_rows_are_finite():
    """A row with zero variance normalises to zeros through eps, gradient finite."""
    x = tg.Tensor(np.ones((2, 4)), requires_grad=True)
    y = layer_norm(x)
    np.testing.assert_array_equal(y.numpy(), np.zeros((2, 4)))
    (y * tg.Tensor(np.arange(8.0).reshape(2, 4))).sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_layer_norm_module_uses_the_op(torch):
    module = tg.nn.LayerNorm((3, 4), eps=1e-4).double()
    x, _ = _inputs((2, 3, 4), np.float64)
    y = module(x)
    reference = torch.nn.functional.layer_norm(torch.tensor(x.numpy()), (3, 4), eps=1e-4)
    np.testing.assert_allclose(y.numpy(), reference.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_axes_raise():
    x, _ = _inputs((2, 3), np.float64)
    with pytest.raises(IndexError, match="axis 2"):
        layer_norm(x, (2,))


def test_functional_layer_norm_checks_its_shapes():
    x = tg.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"normalized_shape=\(3,\)"):
        tg.functional.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"weight.shape must be \(4,\), got \(3,\)"):
        tg.functional.layer_norm(x, 4, tg.ones(3))


def test_functional_layer_norm_with_weight_only_or_bias_only(rng):
    x = tg.Tensor(rng.standard_normal((3, 5)))
    w, b = tg.Tensor(rng.standard_normal(5)), tg.Tensor(rng.standard_normal(5))
    plain = tg.functional.layer_norm(x, 5).numpy()
    np.testing.assert_allclose(tg.functional.layer_norm(x, 5, weight=w).numpy(),
                               plain * w.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tg.functional.layer_norm(x, 5, bias=b).numpy(),
                               plain + b.numpy(), rtol=1e-12)


@pytest.mark.parametrize("weight_shape", [(4,), (1, 4), (1, 1, 4)])
def test_affine_weight_of_any_broadcasting_shape(weight_shape):
    """The weight and bias may carry leading axes of size 1 (they broadcast against x)."""
    rng = np.random.default_rng(1)
    x = tg.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    w, b = (tg.Tensor(rng.standard_normal(weight_shape), requires_grad=True) for _ in "wb")
    assert tg.gradcheck(lambda x, w, b: tg.apply_op(tg.ops.LayerNorm, x, w, b, axes=(-1,),
                                                    affine=True), [x, w, b])


@pytest.mark.parametrize("rows", [3, 70])
def test_affine_gradients_summed_over_many_rows_or_not(rows, monkeypatch, torch):
    """From _REDUCE_ROWS rows on, backward sums the affine gradients itself; below, the engine
    does: the same gradients either way, PyTorch's, and gradcheck holds for both."""
    from tinygrad_rnn.ops import normalization
    assert (rows >= normalization._REDUCE_ROWS) == (rows == 70)
    rng = np.random.default_rng(2)
    x = tg.Tensor(rng.standard_normal((rows, 6)), requires_grad=True)
    w, b = (tg.Tensor(rng.standard_normal(6), requires_grad=True) for _ in "wb")
    probe = rng.standard_normal((rows, 6))
    (tg.functional.layer_norm(x, 6, w, b) * tg.Tensor(probe)).sum().backward()
    refs = [torch.tensor(t.numpy(), requires_grad=True) for t in (x, w, b)]
    y_ref = torch.nn.functional.layer_norm(refs[0], (6,), refs[1], refs[2], 1e-5)
    (y_ref * torch.tensor(probe)).sum().backward()
    for ours, ref in zip((x, w, b), refs):
        np.testing.assert_allclose(ours.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(normalization, "_REDUCE_ROWS", 4)  # small enough for gradcheck's sizes
    small = [tg.Tensor(t.numpy()[:5] if t is x else t.numpy(), requires_grad=True)
             for t in (x, w, b)]
    assert tg.gradcheck(lambda x, w, b: tg.functional.layer_norm(x, 6, w, b), small)
