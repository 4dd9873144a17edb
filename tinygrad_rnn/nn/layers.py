"""Feed-forward layers and activations."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import ops
from ..ops import normalize_axes
from ..tensor import Tensor, apply_op, get_default_dtype
from . import init
from .module import Module, Parameter


def _empty(*shape, dtype=None, device=None) -> Parameter:
    """An uninitialised parameter, filled by the layer's reset_parameters()."""
    from .. import backend
    dtype = np.dtype(dtype) if dtype is not None else get_default_dtype()
    xp = backend.xp_for(backend.normalize_device(device))
    return Parameter(xp.zeros(shape, dtype=dtype))


def _check_positive_int(name: str, owner: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def check_last_dim(owner: str, name: str, x: Tensor, expected: int, size_name: str) -> None:
    """Raise the error users should see: 'Linear: input.shape[-1] must be in_features=5, got 7'."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != expected:
        got = x.shape[-1] if x.ndim else "a 0-d tensor"
        raise ValueError(f"{owner}: {name}.shape[-1] must be {size_name}={expected}, got {got}")


class Linear(Module):
    """y = x W^T + b; weight (out_features, in_features), bias (out_features,), initialised as
    PyTorch: U(-1/sqrt(in_features), 1/sqrt(in_features))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        _check_positive_int("in_features", "Linear", in_features)
        _check_positive_int("out_features", "Linear", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features, dtype=dtype, device=device)
        self.bias = _empty(out_features, dtype=dtype, device=device) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        check_last_dim("Linear", "input", x, self.in_features, "in_features")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer indices of any shape -> rows of weight (num_embeddings, dim).
    Initialised N(0, 1); the padding_idx row is zero and gets no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        _check_positive_int("num_embeddings", "Embedding", num_embeddings)
        _check_positive_int("embedding_dim", "Embedding", embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx must be in [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = _empty(num_embeddings, embedding_dim, dtype=dtype, device=device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0
            self.weight._bump_version()

    def forward(self, indices) -> Tensor:
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Inverted dropout with probability p in training mode; identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing normalized_shape
    (Ba et al. 2016); biased variance, as PyTorch."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        shape = tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = init.ones_(_empty(*shape, dtype=dtype, device=device))
            if bias:
                self.bias = init.zeros_(_empty(*shape, dtype=dtype, device=device))
        if self.weight is None:
            self.register_parameter("weight", None)
        if self.bias is None:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.normalized_shape)
        if tuple(x.shape[-n:]) != self.normalized_shape:
            raise ValueError(
                f"LayerNorm: input.shape[-{n}:] must be normalized_shape={self.normalized_shape}, "
                f"got {tuple(x.shape[-n:])}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def layer_norm(x: Tensor, axes=(-1,), eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) over axes, without gain or bias: one graph node
    (ops.LayerNorm, with an analytic backward). Biased variance, as PyTorch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"layer_norm: x must be a Tensor, got {type(x).__name__}")
    return apply_op(ops.LayerNorm, x, axes=normalize_axes(axes, x.ndim), eps=eps)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.softmax(self.dim)


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return x.log_softmax(self.dim)


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)
