"""Matrix products."""

from __future__ import annotations

from .function import Function


class MatMul(Function):
    """y = a @ b with NumPy's rules (1-D, 2-D and batched, leading dims broadcast).

    da = dy @ b^T, db = a^T @ dy (over the last two axes); a 1-D operand is treated as a row
    (a) or column (b) vector and the extra axis removed again. Broadcast batch axes are summed
    by the engine. A gradient the engine does not need (`needs_input_grad`) is not computed.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, dy):
        xp = self.xp
        a, b = self.a, self.b
        need_a, need_b = getattr(self, "needs_input_grad", (True, True))
        if a.ndim == 2 and b.ndim == 2:  # the common case, without the reshaping below
            return (dy @ b.T if need_a else None), (a.T @ dy if need_b else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # Column axis first: for vector @ vector dy is 0-d and becomes (1,), then (1, 1).
        if b.ndim == 1:
            dy = xp.expand_dims(dy, -1)
        if a.ndim == 1:
            dy = xp.expand_dims(dy, -2)
        da = dy @ xp.swapaxes(b2, -1, -2)
        db = xp.swapaxes(a2, -1, -2) @ dy
        if a.ndim == 1:
            da = da[..., 0, :]
        if b.ndim == 1:
            db = db[..., 0]
        return da, db


class Linear(Function):
    """y = x @ W^T (+ b): x (..., I), W (O, I), b (O,) -> y (..., O), as one node.

    dx = dy @ W, dW = dy^T @ x, db = sum of dy over the leading axes (all over the flattened
    leading axes). One node instead of a matmul and an add means one (..., O) array, not two,
    for the graph to hold: it counts for the input projection of a whole sequence.
    """

    def forward(self, x, W, b=None):
        self.x, self.W, self.with_bias = x, W, b is not None
        # (..., I) as one (N, I) matrix: one BLAS call, where NumPy's batched matmul of a
        # 3-D x is markedly slower
        y = (x.reshape(-1, x.shape[-1]) @ W.T).reshape(x.shape[:-1] + (W.shape[0],))
        if b is not None:
            y += b  # y is a fresh array: adding in place saves a second one
        return y

    def backward(self, dy):
        x, W = self.x, self.W
        need = getattr(self, "needs_input_grad", (True, True, True))
        dy2 = dy.reshape(-1, dy.shape[-1])
        dx = (dy2 @ W).reshape(x.shape) if need[0] else None
        dW = dy2.T @ x.reshape(-1, x.shape[-1]) if need[1] else None
        if not self.with_bias:
            return dx, dW
        return dx, dW, (dy2.sum(axis=0) if need[2] else None)
