"""functional.py: values against closed forms, numerical stability, argument checking.

Gradients of every function are gradchecked in tests/ops/test_op_table.py and compared with
PyTorch in tests/ops/test_torch_parity.py; this file covers what those cannot: semantics at
the edges and the error messages.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F


def leaf(values, dtype=np.float64, device="cpu") -> tg.Tensor:
    return tg.Tensor(np.asarray(values, dtype=dtype), requires_grad=True, device=device)


def log_softmax_reference(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- activations


def test_activation_functions_match_methods_and_closed_forms(device):
    values = np.array([-2.0, -0.5, 0.25, 3.0])
    x = leaf(values, device=device)
    np.testing.assert_allclose(F.sigmoid(x).numpy(), 1 / (1 + np.exp(-values)), rtol=1e-12)
    np.testing.assert_allclose(F.tanh(x).numpy(), np.tanh(values), rtol=1e-12)
    np.testing.assert_array_equal(F.relu(x).numpy(), np.maximum(values, 0))
    np.testing.assert_allclose(F.softplus(x).numpy(), np.log1p(np.exp(values)), rtol=1e-12)


def test_extreme_inputs_do_not_overflow():
    x = leaf([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning either
        sig, soft = F.sigmoid(x), F.softplus(x)
        (sig.sum() + soft.sum()).backward()
    np.testing.assert_allclose(sig.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(soft.numpy(), [0.0, 0.0, np.log(2), 50.0, 1000.0], rtol=1e-6,
                               atol=1e-20)
    assert np.isfinite(x.grad.numpy()).all()
    assert sig.dtype == soft.dtype == x.grad.dtype == np.float32


def test_softmax_is_stable_and_normalised(device):
    x = tg.Tensor(np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]]), device=device)
    probs = F.softmax(x, dim=-1).numpy()
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=-1), [1.0, 1.0])
    np.testing.assert_allclose(F.log_softmax(x, dim=-1).numpy(),
                               log_softmax_reference(x.numpy()), rtol=1e-12)
    expected = [1002 + np.log(np.exp([-2.0, -1.0, 0.0]).sum()), 1000.0]
    np.testing.assert_allclose(x.logsumexp(dim=1).numpy(), expected, rtol=1e-12)


def test_logsumexp_of_all_minus_infinity_is_minus_infinity():
    x = tg.Tensor(np.full((2, 3), -np.inf))
    with np.errstate(divide="ignore"):  # log(0) = -inf is the answer here
        assert (x.logsumexp(dim=1).numpy() == -np.inf).all()


# --------------------------------------------------------------------------- dropout


def test_dropout_identity_cases_return_input():
    x = leaf(np.ones(5))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_dropout_p_one_zeroes_everything_and_its_grad():
    x = leaf(np.ones(5), dtype=np.float32)
    y = F.dropout(x, 1.0)
    assert (y.numpy() == 0).all() and y.dtype == np.float32
    y.sum().backward()
    assert (x.grad.numpy() == 0).all()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        F.dropout(leaf(np.ones(2)), p)


def test_dropout_scales_kept_values_and_routes_grad_through_mask(device):
    tg.manual_seed(0)
    x = leaf(np.ones((100, 100)), dtype=np.float32, device=device)
    y = F.dropout(x, 0.3)
    values = y.numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(np.unique(values), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((values == 0).mean() - 0.3) < 0.03
    assert abs(values.mean() - 1.0) < 0.05  # inverted dropout keeps the expectation
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # grad is the mask itself


def test_dropout_is_reproducible_under_manual_seed():
    x = tg.Tensor(np.ones(50))
    tg.manual_seed(5)
    first = F.dropout(x, 0.5).numpy()
    tg.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    assert not np.array_equal(F.dropout(x, 0.5).numpy(), first)  # the generator moved on


# --------------------------------------------------------------------------- one_hot, embedding


def test_one_hot():
    out = F.one_hot(tg.Tensor([0, 2, 1]), num_classes=4)
    assert out.dtype == np.int64 and out.shape == (3, 4)
    assert out.numpy().tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert F.one_hot(np.array([[1], [3]])).shape == (2, 1, 4)  # classes inferred
    with pytest.raises(TypeError, match="integers"):
        F.one_hot(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 5\]"):
        F.one_hot(np.array([0, 5]), num_classes=3)


def test_embedding_values_and_accumulated_grad(device):
    weight = leaf(np.arange(15.0).reshape(5, 3), device=device)
    indices = np.array([[4, 0], [4, 4]])
    out = F.embedding(indices, weight)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.numpy()[0, 0], [12.0, 13.0, 14.0])
    out.sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy()[:, 0], [1.0, 0.0, 0.0, 0.0, 3.0])


def test_embedding_padding_row_gets_no_grad_even_when_used():
    weight = leaf(np.ones((4, 2)))
    out = F.embedding(tg.Tensor([0, 1, 1, 2]), weight, padding_idx=1)
    np.testing.assert_array_equal(out.numpy()[1], [1.0, 1.0])  # the forward still reads it
    (out * 2.0).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy()[:, 0], [2.0, 0.0, 2.0, 0.0])


def test_embedding_checks_indices():
    weight = leaf(np.ones((4, 2)))
    with pytest.raises(IndexError, match=r"\[0, 4\).*\[0, 4\]"):
        F.embedding(np.array([0, 4]), weight)
    with pytest.raises(IndexError, match=r"\[-1, 2\]"):
        F.embedding(np.array([-1, 2]), weight)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([0.0, 1.0]), weight)


# --------------------------------------------------------------------------- classification losses


LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [0.0, 0.0, 0.0]])
TARGET = np.array([0, 2, 1, 1])


def test_cross_entropy_matches_closed_form_for_every_reduction():
    per_sample = -log_softmax_reference(LOGITS)[np.arange(4), TARGET]
    x = leaf(LOGITS)
    np.testing.assert_allclose(F.cross_entropy(x, TARGET, reduction="none").numpy(), per_sample)
    np.testing.assert_allclose(F.cross_entropy(x, TARGET, reduction="sum").item(),
                               per_sample.sum())
    np.testing.assert_allclose(F.cross_entropy(x, tg.Tensor(TARGET)).item(), per_sample.mean())


def test_cross_entropy_ignore_index_excluded_from_mean_and_grad():
    target = np.array([0, -100, 1, -100])
    x = leaf(LOGITS)
    loss = F.cross_entropy(x, target)
    per_sample = -log_softmax_reference(LOGITS)[[0, 2], [0, 1]]
    np.testing.assert_allclose(loss.item(), per_sample.mean())  # divided by 2, not 4
    loss.backward()
    assert (x.grad.numpy()[[1, 3]] == 0).all()
    none = F.cross_entropy(x, target, reduction="none").numpy()
    assert none[1] == none[3] == 0.0


def test_cross_entropy_is_stable_for_huge_logits():
    x = leaf([[1e4, -1e4, 0.0]], dtype=np.float32)
    loss = F.cross_entropy(x, np.array([1]))
    loss.backward()
    assert loss.dtype == np.float32 and np.isfinite(loss.item())
    assert loss.item() == pytest.approx(2e4)
    assert np.isfinite(x.grad.numpy()).all()


def test_nll_loss_picks_negative_values():
    log_probs = leaf(np.log(np.array([[0.2, 0.8], [0.6, 0.4]])))
    loss = F.nll_loss(log_probs, np.array([1, 0]), reduction="sum")
    assert loss.item() == pytest.approx(-np.log(0.8) - np.log(0.6))
    loss.backward()
    np.testing.assert_array_equal(log_probs.grad.numpy(), [[0, -1], [-1, 0]])


@pytest.mark.parametrize("make_call, error, pattern", [
    (lambda x: F.cross_entropy(x, TARGET, reduction="average"), ValueError, "reduction"),
    (lambda x: F.cross_entropy(x, TARGET[:3]), ValueError, r"target shape must be \(4,\)"),
    (lambda x: F.cross_entropy(x, TARGET.astype(float)), TypeError, "integer class indices"),
    (lambda x: F.cross_entropy(x, np.array([0, 3, 1, 1])), IndexError, r"\[0, 3\)"),
    (lambda x: F.cross_entropy(x.reshape(2, 2, 3), TARGET.reshape(2, 2)), ValueError,
     r"reshape\(-1, C\)"),
    (lambda x: F.nll_loss(x, TARGET, reduction="avg"), ValueError, "reduction"),
])
def test_classification_losses_check_arguments(make_call, error, pattern):
    with pytest.raises(error, match=pattern):
        make_call(leaf(LOGITS))


# --------------------------------------------------------------------------- regression losses


def test_mse_loss_values_and_grad(device):
    prediction = leaf([1.0, 2.0, 4.0], device=device)
    target = np.array([1.5, 2.0, 3.0])
    loss = F.mse_loss(prediction, target)
    assert loss.item() == pytest.approx((0.25 + 0 + 1) / 3)
    loss.backward()
    np.testing.assert_allclose(prediction.grad.numpy(), 2 * (prediction.numpy() - target) / 3)
    assert F.mse_loss(prediction, target, reduction="sum").item() == pytest.approx(1.25)
    assert F.mse_loss(prediction, target, reduction="none").shape == (3,)


def test_mse_loss_checks_arguments():
    with pytest.raises(ValueError, match=r"target shape \(2,\) must equal input shape \(3,\)"):
        F.mse_loss(leaf(np.ones(3)), np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(leaf(np.ones(3)), np.ones(3), reduction="max")


def test_bce_with_logits_matches_closed_form():
    logits = np.array([[-2.0, 0.0, 3.0]])
    target = np.array([[0.0, 0.5, 1.0]])
    sig = 1 / (1 + np.exp(-logits))
    expected = -(target * np.log(sig) + (1 - target) * np.log(1 - sig))
    x = leaf(logits)
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(x, target, reduction="none").numpy(), expected)
    weight = np.array([2.0, 1.0, 0.5])
    weighted = -(weight * target * np.log(sig) + (1 - target) * np.log(1 - sig))
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(x, target, reduction="none", pos_weight=weight).numpy(),
        weighted)
    loss = F.binary_cross_entropy_with_logits(x, target)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), (sig - target) / 3)


def test_bce_with_logits_is_stable_for_large_logits():
    x = leaf([[-200.0, 200.0, 200.0]], dtype=np.float32)
    target = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.binary_cross_entropy_with_logits(x, target, reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [[0.0, 0.0, 200.0]], atol=1e-6)
    assert loss.dtype == x.grad.dtype == np.float32


def test_bce_with_logits_checks_target_shape():
    with pytest.raises(ValueError, match=r"target shape \(3,\) must equal input shape \(2, 3\)"):
        F.binary_cross_entropy_with_logits(leaf(np.zeros((2, 3))), np.zeros(3))


def test_losses_keep_float32():
    x = leaf(LOGITS, dtype=np.float32)
    losses = [
        F.cross_entropy(x, TARGET),
        F.nll_loss(x.log_softmax(-1), TARGET, reduction="sum"),
        F.mse_loss(x, np.zeros((4, 3), dtype=np.float32)),
        F.binary_cross_entropy_with_logits(x, np.full((4, 3), 0.5, dtype=np.float32),
                                           pos_weight=np.ones(3, dtype=np.float32)),
    ]
    for loss in losses:
        assert loss.dtype == np.float32
        loss.backward()
    assert x.grad.dtype == np.float32


def test_cross_entropy_mean_over_no_counted_target_is_nan_like_pytorch():
    logits = tg.randn(3, 4, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([-100, -100, -100]))
    assert np.isnan(loss.item())
    assert F.cross_entropy(logits, np.array([-100, -100, -100]), reduction="sum").item() == 0.0
