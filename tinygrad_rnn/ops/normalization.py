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

    ones = None  # (n,) ones, for the row sums over the last axis (see _normalize_rows)

    def __init__(self, axes=(-1,), eps: float = 1e-5, affine: bool = False):
        self.axes = (axes,) if isinstance(axes, int) else tuple(axes)
        self.eps, self.affine = eps, affine

    def forward(self, x, weight=None, bias=None):
        axes = self.axes
        if axes in ((-1,), (x.ndim - 1,)) and x.ndim >= 1:
            self.xhat = self._normalize_rows(x)
        else:
            count = 1
            for a in axes:
                count *= x.shape[a]
            # sums times 1/n rather than mean(): one C call each, which counts for small
            # arrays; the Python float never promotes x's dtype
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

    def _normalize_rows(self, x):
        """The common case, normalising over the last axis only, on x as (rows, n): the row
        sums as one matrix-vector product with ones (far faster than a reduction along the
        last axis) and the sums of squares as one einsum; fresh arrays are reused in place.
        Sets inv_count, inv_std (rows, 1) and ones; returns xhat in x's shape."""
        xp, n = self.xp, x.shape[-1]
        rows = x.reshape(-1, n)
        self.inv_count = 1.0 / n
        ones = self.ones  # kept from the last call (the steps of a recorded loop)
        if ones is None or ones.shape[0] != n or ones.dtype != x.dtype:
            self.ones = ones = xp.ones(n, dtype=x.dtype)
        mean = rows @ ones
        mean *= self.inv_count
        centered = rows - mean[:, None]
        var = xp.einsum("ij,ij->i", centered, centered)
        var *= self.inv_count
        var += self.eps
        xp.sqrt(var, out=var)
        self.inv_std = xp.divide(1.0, var, out=var)[:, None]
        centered *= self.inv_std  # now xhat
        return centered.reshape(x.shape)

    def backward(self, dy):
        if self.ones is not None:
            return self._backward_rows(dy)
        axes, xhat, inv_count = self.axes, self.xhat, self.inv_count
        dxhat = dy * self.weight if self.affine else dy
        mean_dy = dxhat.sum(axis=axes, keepdims=True) * inv_count
        mean_dy_xhat = (dxhat * xhat).sum(axis=axes, keepdims=True) * inv_count
        dx = (dxhat - mean_dy - xhat * mean_dy_xhat) * self.inv_std
        if not self.affine:
            return dx
        # in the broadcast shape: the engine sums them to the weight's and bias's shapes
        return dx, dy * xhat, dy

    def _backward_rows(self, dy):
        """backward of `_normalize_rows`: the same formula, on (rows, n) views, with the row
        sums as products with ones; the weight's and bias's gradients come summed over the
        rows (one pass each, no (rows, n) arrays)."""
        xp, n, inv_count = self.xp, dy.shape[-1], self.inv_count
        xhat = self.xhat.reshape(-1, n)
        dy2 = dy.reshape(-1, n)
        dxhat = dy2 * self.weight if self.affine else dy2.copy()
        mean_dy = dxhat @ self.ones
        mean_dy *= inv_count
        mean_dy_xhat = xp.einsum("ij,ij->i", dxhat, xhat)
        mean_dy_xhat *= inv_count
        dxhat -= mean_dy[:, None]
        dxhat -= xhat * mean_dy_xhat[:, None]
        dxhat *= self.inv_std
        dx = dxhat.reshape(dy.shape)
        if not self.affine:
            return dx
        if self.weight.ndim != 1 or len(xhat) < 256:
            return dx, dy * self.xhat, dy  # the broadcast form: cheaper for a few rows
        return dx, xp.einsum("ij,ij->j", dy2, xhat), dy2.sum(axis=0)
