"""Normalisation ops: layer normalisation (Ba et al. 2016) as one node."""

from __future__ import annotations

from .function import Function


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) over `axes`; with affine=True, y * weight + bias
    (forward(x, weight, bias), weight and bias broadcasting against x's normalised axes).

    x: any shape; y: x's shape. mean and var (biased, as PyTorch) are taken over `axes`
    (a tuple of axes, negative ones counting from the end), n = number of elements in them.
    With xhat = y and std = sqrt(var + eps):

        dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / std

    (computed with sums times 1/n and a product by 1/std: fewer, cheaper calls). With the
    affine map, dy is first multiplied by weight, and dweight = dy * xhat, dbias = dy.

    (the means again over `axes`), the derivative of the composition mean/sub/mul/mean/add/
    sqrt/div in one step: the three terms are the direct path, the path through the mean and
    the path through the variance.
    """

    def __init__(self, axes=(-1,), eps: float = 1e-5, affine: bool = False):
        self.axes = (axes,) if isinstance(axes, int) else tuple(axes)
        self.eps, self.affine = eps, affine

    def forward(self, x, weight=None, bias=None):
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
        if not self.affine:
            return self.xhat
        self.weight = weight
        y = self.xhat * weight
        y += bias  # y is a fresh array
        return y

    def backward(self, dy):
        axes, xhat, inv_count = self.axes, self.xhat, self.inv_count
        dxhat = dy * self.weight if self.affine else dy
        mean_dy = dxhat.sum(axis=axes, keepdims=True) * inv_count
        mean_dy_xhat = (dxhat * xhat).sum(axis=axes, keepdims=True) * inv_count
        dx = (dxhat - mean_dy - xhat * mean_dy_xhat) * self.inv_std
        if not self.affine:
            return dx
        # in the broadcast shape: the engine sums them to the weight's and bias's shapes
        return dx, dy * xhat, dy
