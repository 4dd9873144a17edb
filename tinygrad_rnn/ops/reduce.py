"""Reductions over axes, and the softmax family that is built on them.

Every reduction takes `axis` (None, int or tuple) and `keepdims`. Backward first restores
the reduced axes (as size 1) so the gradient broadcasts against the input.
"""

from __future__ import annotations

from .function import Function, normalize_axes


class _Reduction(Function):
    def __init__(self, axis=None, keepdims: bool = False):
        self.axis, self.keepdims = axis, keepdims

    def _setup(self, x):
        self.in_shape = x.shape
        self.axes = normalize_axes(self.axis, x.ndim)

    def _expand(self, g):
        """Put the reduced axes back as size 1 so that g broadcasts against the input."""
        if self.keepdims or not self.axes:
            return g
        return g.reshape([1 if i in self.axes else n for i, n in enumerate(self.in_shape)])

    def _count(self) -> int:
        count = 1
        for a in self.axes:
            count *= self.in_shape[a]
        return count


class Sum(_Reduction):
    """y = sum(x over axes);  dx = dy broadcast to x's shape."""

    def forward(self, x):
        self._setup(x)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, dy):
        return self.xp.broadcast_to(self._expand(dy), self.in_shape)


class Mean(_Reduction):
    """y = mean(x over axes);  dx = dy / n broadcast to x's shape."""

    def forward(self, x):
        self._setup(x)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, dy):
        return self.xp.broadcast_to(self._expand(dy) / self._count(), self.in_shape)


class Max(_Reduction):
    """y = max(x over axes);  dx = dy at the maxima, split evenly between ties (as torch.amax)."""

    def forward(self, x):
        self._setup(x)
        self.x = x
        self.y = x.max(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, dy):
        is_extreme = (self.x == self.y).astype(dy.dtype)
        return is_extreme * (self._expand(dy) / is_extreme.sum(axis=self.axes, keepdims=True))


class Min(Max):
    """y = min(x over axes);  dx = dy at the minima, split evenly between ties."""

    def forward(self, x):
        self._setup(x)
        self.x = x
        self.y = x.min(axis=self.axes, keepdims=True)
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])


class Var(_Reduction):
    """y = sum((x - mean)**2) / (n - correction);  dx = dy * 2 (x - mean) / (n - correction)."""

    def __init__(self, axis=None, keepdims: bool = False, correction: int = 1):
        super().__init__(axis, keepdims)
        self.correction = correction

    def forward(self, x):
        self._setup(x)
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        self.dof = max(self._count() - self.correction, 0)
        squares = self.centered * self.centered
        return squares.sum(axis=self.axes, keepdims=self.keepdims) / self.dof

    def backward(self, dy):
        # dof = 0 (one element, correction=1): the forward is nan, so is the gradient (PyTorch)
        return self._expand(dy) * self.centered * (2 / self.dof if self.dof else float("nan"))


class LogSumExp(_Reduction):
    """y = log(sum(exp(x))) computed stably as m + log(sum(exp(x - m)));  dx = dy * exp(x - y)."""

    def forward(self, x):
        xp = self.xp
        self._setup(x)
        self.x = x
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        self.y = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        return self.y if self.keepdims else self.y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, dy):
        return self._expand(dy) * self.xp.exp(self.x - self.y)


class Softmax(Function):
    """y = exp(x - logsumexp(x)) along one axis;  dx = y * (dy - sum(dy * y))."""

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, dy):
        y = self.y
        return y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - logsumexp(x) along one axis;  dx = dy - softmax(x) * sum(dy)."""

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, dy):
        return dy - self.xp.exp(self.y) * dy.sum(axis=self.axis, keepdims=True)
