"""Every op of the table against PyTorch: same float64 inputs, same forward values, same
gradients (rtol 1e-10). Skipped as a whole when PyTorch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg

from .test_op_table import OPS, TG, as_tuple, make_arrays, op_cases

torch = pytest.importorskip("torch")
torch_functional = pytest.importorskip("torch.nn.functional")

RTOL, ATOL = 1e-10, 1e-12


class TorchNamespace:
    """The table's vocabulary, spelled for PyTorch."""

    name = "torch"
    F = torch_functional
    cat, concat = staticmethod(torch.cat), staticmethod(torch.concat)
    stack = staticmethod(torch.stack)
    where = staticmethod(torch.where)
    maximum, minimum = staticmethod(torch.maximum), staticmethod(torch.minimum)

    @staticmethod
    def const(array, like=None):
        out = torch.as_tensor(array)
        return out if like is None else out.to(like.dtype)

    @staticmethod
    def index_tensor(array, like):
        return torch.as_tensor(array)

    @staticmethod
    def amax(x, **kwargs):
        return x.amax(**kwargs) if kwargs else x.max()

    @staticmethod
    def amin(x, **kwargs):
        return x.amin(**kwargs) if kwargs else x.min()

    @staticmethod
    def manual_seed(seed):
        raise AssertionError("seeded ops have no PyTorch twin; mark them torch=False")

    @staticmethod
    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        return torch_functional.layer_norm(x, tuple(normalized_shape), weight, bias, eps)


TORCH = TorchNamespace()


def _weighted_sum(outputs, weights, to_weight):
    loss = None
    for out, w in zip(outputs, weights, strict=True):
        term = (out * to_weight(w)).sum()
        loss = term if loss is None else loss + term
    return loss


@pytest.mark.parametrize("op, shapes", op_cases([op for op in OPS if op.torch]))
def test_matches_torch(op, shapes):
    arrays = make_arrays(op, shapes)
    ours = [tg.Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]

    our_outputs = as_tuple(op.fn(TG, *ours))
    their_outputs = as_tuple(op.fn(TORCH, *theirs))
    assert len(our_outputs) == len(their_outputs)
    for k, (mine, ref) in enumerate(zip(our_outputs, their_outputs, strict=True)):
        assert mine.shape == tuple(ref.shape), f"output {k}"
        assert mine.dtype == np.float64
        np.testing.assert_allclose(mine.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"forward output {k}")

    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(ref.shape) for ref in their_outputs]
    _weighted_sum(our_outputs, weights, tg.Tensor).backward()
    _weighted_sum(their_outputs, weights, torch.as_tensor).backward()
    for i, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        expected = np.zeros(ref.shape) if ref.grad is None else ref.grad.numpy()
        assert mine.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(mine.grad.numpy(), expected, rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of input {i}")


def test_every_entry_without_twin_is_explained():
    """Only entries PyTorch cannot spell the same way are left out of the parity run."""
    skipped = {op.name for op in OPS if not op.torch}
    assert skipped == {"getitem_negative_step", "getitem_negative_step_2d", "dropout_seeded_mask"}


def test_dropout_statistics_match_torch_semantics():
    """Seeded masks differ between libraries; what must agree is the scaling rule."""
    x = np.ones((200, 50))
    tg.manual_seed(0)
    ours = tg.functional.dropout(tg.Tensor(x), 0.25).numpy()
    theirs = torch_functional.dropout(torch.tensor(x), 0.25).numpy()
    assert set(np.unique(ours)) == set(np.unique(theirs)) == {0.0, 1 / 0.75}
