"""The fused CUDA gate kernels (ops/fused_cuda.py) against the generic path on the GPU.

The generic path is the same fused op with `cuda_kernels=False` (its step math as ordinary
CuPy array ops), and the composed per-step layer. Without CuPy or a GPU every GPU test
skips; the module must still import and choose the generic math on NumPy.
"""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend
from tinygrad_rnn.ops import fused, fused_cuda

needs_gpu = pytest.mark.skipif(not backend.cuda_available(),
                               reason="needs CuPy and a visible CUDA GPU")


def test_module_imports_without_cupy_and_numpy_uses_the_generic_math():
    assert not fused_cuda.is_cupy(np)
    op = fused.LSTMLayer()
    op.xp = np
    assert isinstance(op._math(2, 3, np.float32), fused._LSTMMath)


def _args(op, dtype, rng, reverse, bias, proj):
    T, B, I, H, P = 6, 3, 4, 5, 2
    gates = 4 if op is fused.LSTMLayer else 3
    out = P if proj else H

    def t(*shape):
        return tg.tensor((rng.standard_normal(shape) * 0.5).astype(dtype), requires_grad=True,
                         device="cuda")
    args = [t(T, B, I), t(B, out)] + ([t(B, H)] if op is fused.LSTMLayer else [])
    args += [t(gates * H, I), t(gates * H, out)]
    if bias:
        args += [t(gates * H), t(gates * H)]
    if proj:
        args.append(t(P, H))
    options = dict(reverse=reverse, bias=bias)
    if op is fused.LSTMLayer:
        options["proj"] = proj
    return args, options


def _forward_backward(op, args, options, cuda_kernels):
    for a in args:
        a.grad = None
    outs = tg.apply_op(op, *args, cuda_kernels=cuda_kernels, **options)
    rng = np.random.default_rng(3)
    loss = 0.0
    for o in outs:
        weight = tg.tensor(rng.standard_normal(o.shape).astype(o.dtype), device="cuda")
        loss = (o * weight).sum() + loss
    loss.backward()
    return [o.numpy() for o in outs] + [a.grad.numpy() for a in args]


@needs_gpu
@pytest.mark.parametrize("op, proj", [(fused.LSTMLayer, False), (fused.LSTMLayer, True),
                                      (fused.GRULayer, False)])  # projection is LSTM-only
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_match_the_generic_path(op, dtype, tol, reverse, bias, proj):
    rng = np.random.default_rng(0)
    args, options = _args(op, dtype, rng, reverse, bias, proj)
    kernels = _forward_backward(op, args, options, cuda_kernels=True)
    generic = _forward_backward(op, args, options, cuda_kernels=False)
    for a, b in zip(kernels, generic, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@needs_gpu
@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_layer_on_gpu_matches_the_composed_path(cls):
    from tinygrad_rnn import nn
    rng = np.random.default_rng(1)
    layer = getattr(nn, cls)(4, 5, num_layers=2, bidirectional=True, dtype=np.float64,
                             device="cuda")
    x = rng.standard_normal((6, 3, 4))
    results = []
    for fast in (True, False):
        layer.fast = fast
        layer.zero_grad()
        xt = tg.tensor(x, requires_grad=True, device="cuda")
        out, _ = layer(xt)
        (out * out).sum().backward()
        grads = [p.grad.numpy() for p in layer.parameters()]
        results.append([out.numpy(), xt.grad.numpy()] + grads)
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
