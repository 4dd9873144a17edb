"""Normalisation ops: layer normalisation (Ba et al. 2016) as one node."""

from __future__ import annotations

from .function import Function


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) over `axes`, without gain or bias (callers apply them).

    x: any shape; y: x's shape. mean and var (biased, as PyTorch) are taken over `axes`
    (a tuple of axes, negative ones counting from the end), n = number of elements in them.
    With xhat = y and std = sqrt(var + eps):

        dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / std

    (computed with sums times 1/n and a product by 1/std: fewer, cheaper calls).

    (the means again over `axes`), the derivative of the composition mean/sub/mul/mean/add/
    sqrt/div in one step: the three terms are the direct path, the path through the mean and
    the path through the variance.
    """

    def __init__(self, axes=(-1,), eps: float = 1e-5):
        self.axes = (axes,) if isinstance(axes, int) else tuple(axes)
        self.eps = eps

    def forward(self, x):
        axes = self.axes
        count = 1
        for a in axes:
            count *= x.shape[a]
        # sums times 1/n rather than mean(): one C call each, which counts for small arrays;
        # the Python float never promotes x's dtype
        self.inv_count = 1.0 / count
        centered = x - x.sum(axis=axes, keepdims=True) * self.inv_count
        var = (centered * centered).sum(axis=axes, keepdims=True) * self.inv_count
        self.inv_std = 1.0 / self.xp.sqrt(var + self.eps)
        self.xhat = centered * self.inv_std
        return self.xhat

    def backward(self, dy):
        axes, xhat, inv_count = self.axes, self.xhat, self.inv_count
        mean_dy = dy.sum(axis=axes, keepdims=True) * inv_count
        mean_dy_xhat = (dy * xhat).sum(axis=axes, keepdims=True) * inv_count
        return (dy - mean_dy - xhat * mean_dy_xhat) * self.inv_std
