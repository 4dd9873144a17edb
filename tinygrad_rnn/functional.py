"""User-level functions built on the ops (PyTorch's torch.nn.functional names)."""

from __future__ import annotations

import numpy as np

from . import backend, ops
from .tensor import Tensor, _apply

_REDUCTIONS = ("none", "mean", "sum")


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def relu(x: Tensor) -> Tensor:
    return x.relu()


def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), computed without overflow."""
    return _apply(ops.Softplus, x)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    return x.softmax(dim)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    return x.log_softmax(dim)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """x W^T + b (torch.nn.functional.linear): input (..., in), weight (out, in), bias (out,)."""
    if input.shape[-1:] != weight.shape[1:2] or weight.ndim != 2:
        raise ValueError(f"linear: input.shape[-1] must match weight (out, in) = "
                         f"{tuple(weight.shape)}, got input shape {tuple(input.shape)}")
    if bias is not None and tuple(bias.shape) != weight.shape[:1]:
        raise ValueError(f"linear: bias.shape must be ({weight.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    if bias is None:
        return _apply(ops.Linear, input, weight)
    return _apply(ops.Linear, input, weight, bias)


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.layer_norm: normalise over the trailing `normalized_shape` axes
    (biased variance), then * weight + bias (each optional, of shape normalized_shape).
    One graph node (ops.LayerNorm) with an analytic backward."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n = len(shape)
    if not shape or tuple(input.shape[input.ndim - n:]) != shape or n > input.ndim:
        raise ValueError(f"layer_norm: input.shape[-{n}:] must be normalized_shape={shape}, "
                         f"got input shape {tuple(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name}.shape must be {shape}, got {tuple(t.shape)}")
    axes = tuple(range(input.ndim - n, input.ndim))
    if weight is None and bias is None:
        return _apply(ops.LayerNorm, input, axes=axes, eps=eps)
    ref = weight if weight is not None else bias
    if weight is None:
        weight = Tensor._wrap(ref._xp().ones(shape, dtype=ref.dtype))
    if bias is None:
        bias = Tensor._wrap(ref._xp().zeros(shape, dtype=ref.dtype))
    return _apply(ops.LayerNorm, input, weight, bias, axes=axes, eps=eps, affine=True)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p),
    so nothing changes at evaluation time. The mask comes from the device's seeded generator."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return x * _apply(ops.DropoutMask, x, p=p)


def dropout_mask(shape, p: float, dtype, device: str):
    """A raw array of 0 and 1/(1-p) (keep probability 1-p), from the seeded generator."""
    gen = backend.get_generator(device)
    keep = gen.random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * (1.0 / (1.0 - p))


def one_hot(indices: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding of class indices, shape indices.shape + (num_classes,)."""
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {idx.dtype}")
    xp = backend.get_array_module(idx)
    if num_classes < 0:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise ValueError(
            f"one_hot: indices must be in [0, {num_classes}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]")
    return Tensor._wrap((idx[..., None] == xp.arange(num_classes)).astype(np.int64))


def embedding(indices, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by integer `indices` of any shape."""
    if isinstance(indices, Tensor):
        idx = indices.data
    else:
        idx = backend.xp_for(weight.device).asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(
            f"embedding: indices must be in [0, {n}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]")
    indices = indices if isinstance(indices, Tensor) else Tensor._wrap(idx)
    return _apply(ops.Embedding, weight, indices, padding_idx=padding_idx)


def _reduce(loss: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def nll_loss(log_probs: Tensor, target, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices. log_probs: (N, C) or (C,); target: (N,) or ()."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    xp = log_probs._xp()
    if isinstance(target, Tensor) or backend.is_cupy_array(target):
        t = target.data if isinstance(target, Tensor) else target
        if backend.device_of(t) != log_probs.device:
            raise RuntimeError(
                f"nll_loss: target is on '{backend.device_of(t)}' but input is on "
                f"'{log_probs.device}'; move it first, e.g. target.to('{log_probs.device}')")
    else:  # lists and NumPy arrays: host data, copied to the input's device
        t = xp.asarray(target)
    if log_probs.ndim not in (1, 2):
        raise ValueError(
            f"nll_loss: input must be (N, C) or (C,), got shape {log_probs.shape}; "
            "flatten sequence dimensions first, e.g. logits.reshape(-1, C)")
    batched = log_probs.ndim == 2
    if t.shape != log_probs.shape[:1 if batched else 0]:
        raise ValueError(
            f"nll_loss: target shape must be {log_probs.shape[:1 if batched else 0]} for input "
            f"shape {log_probs.shape}, got {t.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold integer class indices, got dtype {t.dtype}")
    num_classes = log_probs.shape[-1]
    valid = t != ignore_index
    if t.size and bool(((t[valid] < 0) | (t[valid] >= num_classes)).any()):
        raise IndexError(f"nll_loss: target values must be in [0, {num_classes}) or ignore_index")
    safe = xp.where(valid, t, 0)
    if batched:
        picked = log_probs[xp.arange(t.shape[0]), safe]
    else:
        picked = log_probs[int(safe)]
    weight = valid.astype(log_probs.dtype)
    loss = -(picked * weight)
    if reduction == "mean":
        count = float(weight.sum())
        # no target counted (empty, or all ignore_index): the mean is nan, as in PyTorch
        return loss.sum() / count if count else loss.sum() * float("nan")
    return _reduce(loss, reduction, "nll_loss")


def cross_entropy(logits: Tensor, target, ignore_index: int = -100,
                  reduction: str = "mean") -> Tensor:
    """log_softmax over the last axis followed by nll_loss; logits (N, C), target (N,) indices."""
    return nll_loss(logits.log_softmax(-1), target, ignore_index=ignore_index, reduction=reduction)


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    target = input._operand(target)
    if target.shape != input.shape:
        raise ValueError(
            f"mse_loss: target shape {target.shape} must equal input shape {input.shape}")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def binary_cross_entropy_with_logits(logits: Tensor, target, reduction: str = "mean",
                                     pos_weight=None) -> Tensor:
    """-[y log sigmoid(x) + (1-y) log(1 - sigmoid(x))] = softplus(x) - x*y, stable for any x.
    With pos_weight w: (1-y) softplus(x) + w y softplus(-x)."""
    target = logits._operand(target)
    if target.shape != logits.shape:
        raise ValueError(
            f"binary_cross_entropy_with_logits: target shape {target.shape} must equal input "
            f"shape {logits.shape}")
    if pos_weight is None:
        loss = softplus(logits) - logits * target
    else:
        pos_weight = logits._operand(pos_weight)
        loss = (1 - target) * softplus(logits) + pos_weight * target * softplus(-logits)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
