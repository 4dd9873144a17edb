"""Normalisation ops: layer normalisation (Ba et al. 2016) as one node."""

from __future__ import annotations

from .function import Function


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) over `axes`, without gain or bias (callers apply them).

    x: any shape; y: x's shape. mean and var (biased, as PyTorch) are taken over `axes`
    (a tuple of axes, negative ones counting from the end), n = number of elements in them.
    With xhat = y and std = sqrt(var + eps):

        dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / std

    (the means again over `axes`), the derivative of the composition mean/sub/mul/mean/add/
    sqrt/div in one step: the three terms are the direct path, the path through the mean and
    the path through the variance.
    """

    def __init__(self, axes=(-1,), eps: float = 1e-5):
        self.axes = (axes,) if isinstance(axes, int) else tuple(axes)
        self.eps = eps

    def forward(self, x):
        axes = self.axes
        centered = x - x.mean(axis=axes, keepdims=True)
        var = (centered * centered).mean(axis=axes, keepdims=True)
        # var is an array of x's dtype, so the Python float eps does not promote it
        self.std = self.xp.sqrt(var + self.eps)
        self.xhat = centered / self.std
        return self.xhat

    def backward(self, dy):
        axes, xhat = self.axes, self.xhat
        mean_dy = dy.mean(axis=axes, keepdims=True)
        mean_dy_xhat = (dy * xhat).mean(axis=axes, keepdims=True)
        return (dy - mean_dy - xhat * mean_dy_xhat) / self.std
