"""Normalisation ops: layer normalisation (Ba et al. 2016) as one node."""

from __future__ import annotations

import numpy as np

from .function import Function

# From this many rows on, backward returns the affine gradients summed over the rows (one
# read of dy and xhat, no (rows, n) arrays); below, one call per gradient costs more than
# the engine's sum of the broadcast-shaped ones
_REDUCE_ROWS = 64


def row_dot(xp, a, b, out=None):
    """sum(a * b) over the last axis of (rows, n) arrays, as (rows, 1): one `vecdot` with
    NumPy (twice as fast as an einsum), an einsum with CuPy (out: where to write it)."""
    if xp is np:
        return np.vecdot(a, b, keepdims=True, out=out)
    result = xp.einsum("ij,ij->i", a, b)[:, None]
    if out is None:
        return result
    xp.copyto(out, result)
    return out


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) over `axes`; with affine=True, y * weight + bias
    (forward(x, weight, bias), weight and bias broadcasting against x's normalised axes).

    x: any shape; y: x's shape. mean and var (biased, as PyTorch) are taken over `axes`
    (a tuple of axes, negative ones counting from the end), n = number of elements in them.
    With xhat = y and std = sqrt(var + eps):

        dx = (dy - mean(dy) - xhat * mean(dy * xhat)) / std

    (the means again over `axes`), the derivative of the composition mean/sub/mul/mean/add/
    sqrt/div in one step: the three terms are the direct path, the path through the mean and
    the path through the variance. It is computed with sums times 1/n and a product by 1/std
    (fewer, cheaper calls), in place on fresh arrays. With the affine map, dy is first
    multiplied by weight, and dweight = dy * xhat, dbias = dy.

    Over the last axis alone (the common case) x is seen as (rows, n): the row means are one
    matrix-vector product with a vector of 1/n and the means of products one `row_dot`,
    far faster than NumPy's reductions along the last axis.
    """

    averager = None  # (n,) vector of 1/n for the row means over the last axis, kept from last call

    def __init__(self, axes=(-1,), eps: float = 1e-5, affine: bool = False):
        self.axes = (axes,) if isinstance(axes, int) else tuple(axes)
        self.eps, self.affine = eps, affine

    def forward(self, x, weight=None, bias=None):
        xp = self.xp
        self.rows = x.ndim >= 1 and self.axes in ((-1,), (x.ndim - 1,))
        count = 1
        for a in self.axes:
            count *= x.shape[a]
        # a Python float: it never promotes x's dtype
        self.inv_count = 1.0 / count
        if self.rows and (self.averager is None or self.averager.shape[0] != count
                          or self.averager.dtype != x.dtype):
            self.averager = xp.full(count, self.inv_count, dtype=x.dtype)
        rows = self._view(x)
        centered = rows - self._mean(rows)
        var = self._mean_of_product(centered, centered)
        var += self.eps
        xp.sqrt(var, out=var)
        self.inv_std = xp.divide(1.0, var, out=var)
        centered *= self.inv_std
        self.xhat = centered.reshape(x.shape)
        if not self.affine:
            return self.xhat
        self.weight = weight
        y = self.xhat * weight
        y += bias  # y is a fresh array
        return y

    def backward(self, dy):
        xhat = self._view(self.xhat)
        dxhat = self._view(dy * self.weight if self.affine else dy.copy())
        mean_dy = self._mean(dxhat)
        mean_dy_xhat = self._mean_of_product(dxhat, xhat)
        dxhat -= mean_dy
        dxhat -= xhat * mean_dy_xhat
        dxhat *= self.inv_std
        dx = dxhat.reshape(dy.shape)
        if not self.affine:
            return dx
        if self.rows and self.weight.ndim == 1 and len(xhat) >= _REDUCE_ROWS:
            # summed over the many rows here (one pass each, no (rows, n) arrays)
            dy2 = self._view(dy)
            return dx, self.xp.einsum("ij,ij->j", dy2, xhat), dy2.sum(axis=0)
        # in the broadcast shape: the engine sums them to the weight's and bias's shapes
        return dx, dy * self.xhat, dy

    def _view(self, a):
        """a as (rows, n) over the last axis, or as it is."""
        return a.reshape(-1, a.shape[-1]) if self.rows else a

    def _mean(self, a):
        """The mean over the normalised axes, kept as an axis of size 1 (a fresh array)."""
        if self.rows:
            return (a @ self.averager)[:, None]
        return a.sum(axis=self.axes, keepdims=True) * self.inv_count

    def _mean_of_product(self, a, b):
        """mean(a * b) over the normalised axes, kept as an axis of size 1 (a fresh array)."""
        if self.rows:
            m = row_dot(self.xp, a, b)
            m *= self.inv_count
            return m
        return (a * b).sum(axis=self.axes, keepdims=True) * self.inv_count
