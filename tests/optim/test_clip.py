"""Gradient clipping: same returned norm and same clipped gradients as PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend
from tinygrad_rnn.optim import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 4), (5,), ()]
TOL = {np.float64: 1e-12, np.float32: 1e-6}


def _pair(torch, dtype, grads):
    """Our parameters and torch's with the given grads, plus one parameter without a grad."""
    ours, theirs = [], []
    for g in grads:
        p = tg.Tensor(np.zeros(g.shape, dtype), requires_grad=True)
        p.grad = tg.Tensor(g.astype(dtype))
        q = torch.zeros(g.shape, dtype=torch.from_numpy(np.zeros(1, dtype)).dtype,
                        requires_grad=True)
        q.grad = torch.from_numpy(g.astype(dtype))
        ours.append(p)
        theirs.append(q)
    ours.append(tg.Tensor(np.zeros(2, dtype), requires_grad=True))
    theirs.append(torch.zeros(2, requires_grad=True))
    return ours, theirs


def _random_grads(seed=0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(shape)) for shape in SHAPES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0], ids=["2", "1", "inf", "3"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no-clip"])
def test_clip_grad_norm_matches_torch(torch, dtype, norm_type, max_norm):
    ours, theirs = _pair(torch, dtype, _random_grads())
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, tg.Tensor) and total.shape == () and total.dtype == dtype
    tol = TOL[dtype]
    np.testing.assert_allclose(total.item(), expected.item(), rtol=tol)
    for p, q in zip(ours[:-1], theirs[:-1], strict=True):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=tol, atol=tol)
        assert p.grad.dtype == dtype
    assert ours[-1].grad is None
    if max_norm == 1e3:  # below the threshold nothing changes, bit for bit
        for p, g in zip(ours[:-1], _random_grads(), strict=True):
            assert np.array_equal(p.grad.numpy(), g.astype(dtype))


def test_clip_grad_norm_result_has_max_norm():
    ours = [tg.Tensor(np.zeros(g.shape), requires_grad=True) for g in _random_grads()]
    for p, g in zip(ours, _random_grads(), strict=True):
        p.grad = tg.Tensor(g)
    clip_grad_norm_(ours, 1.0)
    after = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in ours))
    assert after == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_accepts_a_single_tensor_and_no_grads():
    p = tg.Tensor(np.zeros(2), requires_grad=True)
    assert clip_grad_norm_(p, 1.0).item() == 0.0  # no gradient at all: norm 0, like torch
    p.grad = tg.Tensor(np.array([3.0, 4.0]))
    total = clip_grad_norm_(p, 1.0)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [3 / (5 + 1e-6), 4 / (5 + 1e-6)])


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("norm_type", [2.0, math.inf], ids=["2", "inf"])
def test_nonfinite_norm_raises_and_leaves_grads(bad, norm_type):
    grads = _random_grads()
    grads[1][2] = bad
    ours = [tg.Tensor(np.zeros(g.shape), requires_grad=True) for g in grads]
    for p, g in zip(ours, grads, strict=True):
        p.grad = tg.Tensor(g.copy())
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ours, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    for p, g in zip(ours, grads, strict=True):
        np.testing.assert_array_equal(p.grad.numpy(), g)  # unchanged (nan compares equal)


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf], ids=["2", "1", "inf"])
def test_nonfinite_norm_without_the_flag_behaves_like_torch(torch, bad, norm_type):
    grads = _random_grads()
    grads[1][2] = bad
    ours, theirs = _pair(torch, np.float64, grads)
    total = clip_grad_norm_(ours, 1.0, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
    np.testing.assert_array_equal(total.numpy(), expected.numpy())  # nan or inf, as torch
    assert not math.isfinite(total.item())
    for p, q in zip(ours[:-1], theirs[:-1], strict=True):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_clip_grad_value_matches_torch(torch, dtype):
    ours, theirs = _pair(torch, dtype, _random_grads())
    assert clip_grad_value_(ours, 0.5) is None
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, q in zip(ours[:-1], theirs[:-1], strict=True):
        assert p.grad.dtype == dtype
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
    assert ours[-1].grad is None
    single = tg.Tensor(np.zeros(2), requires_grad=True)
    single.grad = tg.Tensor(np.array([-3.0, 0.25]))
    clip_grad_value_(single, 1.0)
    np.testing.assert_array_equal(single.grad.numpy(), [-1.0, 0.25])


def test_clip_is_exported_from_optim():
    from tinygrad_rnn import optim

    assert optim.clip_grad_norm_ is clip_grad_norm_
    assert optim.clip_grad_value_ is clip_grad_value_


@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")
def test_clip_on_cuda_matches_cpu():
    cpu = [tg.Tensor(np.zeros(g.shape, np.float32), requires_grad=True) for g in _random_grads()]
    gpu = [tg.Tensor(np.zeros(g.shape, np.float32), requires_grad=True, device="cuda")
           for g in _random_grads()]
    for p, q, g in zip(cpu, gpu, _random_grads(), strict=True):
        p.grad = tg.Tensor(g.astype(np.float32))
        q.grad = tg.Tensor(g.astype(np.float32), device="cuda")
    a, b = clip_grad_norm_(cpu, 0.5), clip_grad_norm_(gpu, 0.5)
    assert b.device == "cuda"
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
    for p, q in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-6, atol=1e-7)
