"""Gradient clipping, in place on `.grad` (PyTorch's torch.nn.utils.clip_grad_*_)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import numpy as np

from .. import backend
from ..tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    """The `.grad` Tensors of the parameters that have one (a single Tensor is accepted)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(x, norm_type: float):
    """The norm of a whole array seen as one vector, as a 0-d array of x's dtype."""
    xp = backend.get_array_module(x)
    if norm_type == math.inf:
        return xp.abs(x).max()
    if norm_type == -math.inf:
        return xp.abs(x).min()
    if norm_type == 0:
        return (x != 0).sum().astype(x.dtype)
    if norm_type == 1:
        return xp.abs(x).sum()
    if norm_type == 2:
        return xp.sqrt((x * x).sum())
    return (xp.abs(x) ** norm_type).sum() ** (1.0 / norm_type)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    r"""Scale all gradients together so that their joint norm is at most `max_norm`.

    total_norm = || (||g_1||_p, ..., ||g_n||_p) ||_p   (the norm of all gradients as one vector;
                                                        p = norm_type, inf for the max-norm)
    clip_coef  = max_norm / (total_norm + 1e-6)
    g_i <- g_i * min(clip_coef, 1)                     (only shrinks; NaN propagates as in PyTorch)

    Parameters without a gradient are skipped. Returns total_norm (before clipping) as a 0-d
    Tensor in the gradients' dtype. With error_if_nonfinite=True, a NaN or infinite total norm
    raises RuntimeError and no gradient is changed; without it, the gradients are scaled by
    the non-finite coefficient exactly as PyTorch does.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    grads = _grads(parameters)
    if not grads:
        return Tensor(0.0)
    norms = [_vector_norm(g.data, norm_type) for g in grads]
    xp = backend.get_array_module(norms[0])
    dtype = xp.result_type(*norms)
    total_norm = xp.asarray(_vector_norm(xp.stack([n.astype(dtype) for n in norms]), norm_type))
    total = float(total_norm)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite "
            f"({total}), so it cannot be clipped; no gradient was changed. To scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    clip_coef = max_norm / (total_norm + 1e-6)
    if math.isnan(float(clip_coef)) or float(clip_coef) < 1.0:
        # inf * 0 -> nan, silently, as in PyTorch. CuPy never warns; NumPy is told not to.
        quiet = np.errstate(invalid="ignore") if xp is np else contextlib.nullcontext()
        with quiet:
            for g in grads:
                g.data *= clip_coef.astype(g.data.dtype)
    return Tensor._wrap(total_norm)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place.

    Parameters without a gradient are skipped.
    """
    clip_value = float(clip_value)
    for g in _grads(parameters):
        xp = backend.get_array_module(g.data)
        xp.clip(g.data, -clip_value, clip_value, out=g.data)
