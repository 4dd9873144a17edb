"""Feed-forward layers, activation modules and loss modules, checked against PyTorch."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _torch_leaf(torch, array):
    return torch.tensor(array, requires_grad=True)


# --------------------------------------------------------------------------- Linear


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3), (3,)])
def test_linear_matches_torch(torch, rng, dtype, bias, shape):
    ref = torch.nn.Linear(3, 4, bias=bias)
    ref = ref.double() if dtype == np.float64 else ref.float()
    ours = nn.Linear(3, 4, bias=bias, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(shape[:-1] + (4,)).astype(dtype)
    xt, x_ours = _torch_leaf(torch, x), tg.Tensor(x, requires_grad=True)
    y_ref, y = ref(xt), ours(x_ours)
    assert y.dtype == dtype and y.shape == tuple(y_ref.shape)
    (y_ref * torch.from_numpy(w)).sum().backward()
    (y * tg.Tensor(w)).sum().backward()
    tol = TOL[dtype]
    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x_ours.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol)
    for name, p in ours.named_parameters():
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad.numpy(), getattr(ref, name).grad.numpy(),
                                   rtol=tol, atol=tol)
    assert [n for n, _ in ours.named_parameters()] == (["weight", "bias"] if bias else ["weight"])


# --------------------------------------------------------------------------- Embedding


def test_embedding_lookup_and_grad_match_torch(torch, rng):
    ref = torch.nn.Embedding(6, 3).double()
    ours = nn.Embedding(6, 3, dtype=np.float64)
    ours.load_state_dict(ref.state_dict())
    idx = np.array([[0, 5, 2], [2, 2, 1]])
    w = rng.standard_normal((2, 3, 3))
    y_ref, y = ref(torch.from_numpy(idx)), ours(tg.Tensor(idx))
    np.testing.assert_array_equal(y.numpy(), y_ref.detach().numpy())
    (y_ref * torch.from_numpy(w)).sum().backward()
    (y * tg.Tensor(w)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), ref.weight.grad.numpy(), atol=1e-12)


def test_embedding_padding_idx_row_is_zero_and_gets_no_grad():
    tg.manual_seed(0)
    emb = nn.Embedding(5, 4, padding_idx=1)
    np.testing.assert_array_equal(emb.weight.numpy()[1], np.zeros(4))
    assert np.abs(emb.weight.numpy()[[0, 2, 3, 4]]).min() > 0
    out = emb(tg.Tensor(np.array([1, 3, 1, 0])))
    np.testing.assert_array_equal(out.numpy()[[0, 2]], np.zeros((2, 4)))
    (out * 3.0).sum().backward()
    grad = emb.weight.grad.numpy()
    np.testing.assert_array_equal(grad[1], np.zeros(4))
    np.testing.assert_array_equal(grad[3], np.full(4, 3.0))
    np.testing.assert_array_equal(grad[0], np.full(4, 3.0))
    np.testing.assert_array_equal(grad[[2, 4]], np.zeros((2, 4)))
    assert nn.Embedding(5, 4, padding_idx=-1).padding_idx == 4


def test_embedding_errors():
    emb = nn.Embedding(5, 2)
    with pytest.raises(IndexError, match=r"indices must be in \[0, 5\), got range \[0, 7\]"):
        emb(tg.Tensor(np.array([0, 7])))
    with pytest.raises(TypeError, match="integers"):
        emb(tg.Tensor(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)


# --------------------------------------------------------------------------- Dropout


def test_dropout_train_zeroes_and_scales():
    tg.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = tg.ones(200, 100, requires_grad=True)
    y = drop(x)
    values = y.numpy()
    assert set(np.unique(values)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((values == 0).mean() - 0.25) < 0.01
    assert abs(values.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # gradient uses the same mask


def test_dropout_eval_is_identity():
    x = tg.randn(4, 5)
    drop = nn.Dropout(0.9).eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


def test_dropout_p_zero_and_one():
    x = tg.randn(4, 5)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    assert not nn.Dropout(1.0)(x).numpy().any()


def test_dropout_reproducible_under_seed():
    def run():
        tg.manual_seed(5)
        return nn.Dropout(0.5)(tg.ones(10, 10)).numpy()

    np.testing.assert_array_equal(run(), run())


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_p_validation(p):
    with pytest.raises(ValueError, match=rf"Dropout: p must be in \[0, 1\], got {p}"):
        nn.Dropout(p)


# --------------------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(torch, rng, normalized_shape, affine):
    ref = torch.nn.LayerNorm(normalized_shape, elementwise_affine=affine).double()
    ours = nn.LayerNorm(normalized_shape, elementwise_affine=affine, dtype=np.float64)
    if affine:  # non-trivial gain and bias
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(rng.standard_normal(tuple(ref.weight.shape))))
            ref.bias.copy_(torch.from_numpy(rng.standard_normal(tuple(ref.bias.shape))))
        ours.load_state_dict(ref.state_dict())
    assert len(list(ours.parameters())) == (2 if affine else 0)
    x = rng.standard_normal((2, 3, 4)) * 3 + 1
    w = rng.standard_normal((2, 3, 4))
    xt, x_ours = _torch_leaf(torch, x), tg.Tensor(x, requires_grad=True)
    y_ref, y = ref(xt), ours(x_ours)
    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), atol=1e-10)
    (y_ref * torch.from_numpy(w)).sum().backward()
    (y * tg.Tensor(w)).sum().backward()
    np.testing.assert_allclose(x_ours.grad.numpy(), xt.grad.numpy(), atol=1e-10)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), getattr(ref, name).grad.numpy(), atol=1e-10)


def test_layer_norm_float32_and_shape_error():
    ln = nn.LayerNorm(4)
    x = tg.randn(3, 4, requires_grad=True)
    y = ln(x)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == ln.weight.grad.dtype == np.float32
    with pytest.raises(ValueError, match=r"normalized_shape=\(4,\), got \(5,\)"):
        ln(tg.randn(3, 5))


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ["Tanh", "Sigmoid", "ReLU", "Softmax", "LogSoftmax",
                                  "Identity", "Flatten"])
def test_activation_modules_match_torch(torch, rng, name):
    kwargs = {"dim": 1} if "Softmax" in name else {}
    ours, ref = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal(tuple(ref(torch.from_numpy(x)).shape))
    xt, x_ours = _torch_leaf(torch, x), tg.Tensor(x, requires_grad=True)
    y_ref, y = ref(xt), ours(x_ours)
    assert y.shape == tuple(y_ref.shape)
    np.testing.assert_allclose(y.numpy(), y_ref.detach().numpy(), atol=1e-12)
    (y_ref * torch.from_numpy(w)).sum().backward()
    (y * tg.Tensor(w)).sum().backward()
    np.testing.assert_allclose(x_ours.grad.numpy(), xt.grad.numpy(), atol=1e-12)


# --------------------------------------------------------------------------- losses


def _loss_inputs(rng, name):
    if name in ("CrossEntropyLoss", "NLLLoss"):
        x = rng.standard_normal((6, 4))
        if name == "NLLLoss":
            x = x - np.log(np.exp(x).sum(1, keepdims=True))
        return x, np.array([0, 3, 1, 1, 2, 3])
    if name == "BCEWithLogitsLoss":
        return rng.standard_normal((3, 4)) * 4, (rng.random((3, 4)) > 0.5).astype(np.float64)
    return rng.standard_normal((3, 4)), rng.standard_normal((3, 4))


LOSS_CASES = [("CrossEntropyLoss", False), ("CrossEntropyLoss", True), ("NLLLoss", False),
              ("NLLLoss", True), ("MSELoss", False), ("BCEWithLogitsLoss", False),
              ("BCEWithLogitsLoss", True)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("name", "extra"), LOSS_CASES,
                         ids=[f"{n}-{'ignore_index/pos_weight' if e else 'plain'}"
                              for n, e in LOSS_CASES])
def test_loss_modules_match_torch(torch, rng, name, reduction, extra):
    x, target = _loss_inputs(rng, name)
    kwargs = {"reduction": reduction}
    if extra and name in ("CrossEntropyLoss", "NLLLoss"):
        kwargs["ignore_index"] = 1
    elif extra and name == "BCEWithLogitsLoss":
        pos_weight = rng.random(4) + 0.5
        ours = nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=tg.Tensor(pos_weight))
        ref = torch.nn.BCEWithLogitsLoss(reduction=reduction,
                                         pos_weight=torch.from_numpy(pos_weight))
    if not (extra and name == "BCEWithLogitsLoss"):
        ours, ref = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    xt, x_ours = _torch_leaf(torch, x), tg.Tensor(x, requires_grad=True)
    loss_ref, loss = ref(xt, torch.from_numpy(target)), ours(x_ours, tg.Tensor(target))
    assert loss.shape == tuple(loss_ref.shape) and loss.dtype == np.float64
    np.testing.assert_allclose(loss.numpy(), loss_ref.detach().numpy(), atol=1e-12)
    w = rng.standard_normal(loss.shape)
    (loss_ref * torch.from_numpy(w)).sum().backward()
    (loss * tg.Tensor(w)).sum().backward()
    np.testing.assert_allclose(x_ours.grad.numpy(), xt.grad.numpy(), atol=1e-12)


def test_losses_keep_float32():
    x = tg.randn(4, 3, requires_grad=True)
    for loss in (nn.CrossEntropyLoss()(x, np.array([0, 1, 2, 0])),
                 nn.MSELoss()(x, np.zeros((4, 3), dtype=np.float32)),
                 nn.BCEWithLogitsLoss()(x, np.ones((4, 3), dtype=np.float32))):
        loss.backward()
        assert loss.dtype == x.grad.dtype == np.float32


def test_loss_errors():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")(tg.randn(2), tg.randn(2))
    with pytest.raises(ValueError, match=r"target shape \(3,\) must equal input shape \(2,\)"):
        nn.MSELoss()(tg.randn(2), tg.randn(3))
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        nn.CrossEntropyLoss()(tg.randn(2, 3), np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        nn.CrossEntropyLoss()(tg.randn(2, 3), np.array([0.0, 1.0]))
