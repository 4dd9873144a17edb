"""Elementwise ops. Binary ops broadcast in forward; their backward returns gradients in
the broadcast shape and the engine sums them back to each input's shape."""

from __future__ import annotations

from .function import Function


class Add(Function):
    """y = a + b;  da = dy, db = dy."""

    stores_shapes_only = True

    def forward(self, a, b):
        return a + b

    def backward(self, dy):
        return dy, dy


class Sub(Function):
    """y = a - b;  da = dy, db = -dy."""

    stores_shapes_only = True

    def forward(self, a, b):
        return a - b

    def backward(self, dy):
        return dy, -dy


class Mul(Function):
    """y = a * b;  da = dy * b, db = dy * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dy):
        need_a, need_b = getattr(self, "needs_input_grad", (True, True))
        return (dy * self.b if need_a else None), (dy * self.a if need_b else None)


class Div(Function):
    """y = a / b;  da = dy / b, db = -dy * a / b**2 = -dy * y / b."""

    def forward(self, a, b):
        self.b = b
        self.y = a / b
        return self.y

    def backward(self, dy):
        da = dy / self.b
        return da, -da * self.y


class Neg(Function):
    """y = -x;  dx = -dy."""

    stores_shapes_only = True

    def forward(self, x):
        return -x

    def backward(self, dy):
        return -dy


class PowScalar(Function):
    """y = x ** p for a constant p;  dx = dy * p * x**(p-1)."""

    def __init__(self, exponent: float):
        self.p = exponent

    def forward(self, x):
        self.x = x
        return x**self.p

    def backward(self, dy):
        return dy * (self.p * self.x ** (self.p - 1))


class Pow(Function):
    """y = a ** b (both tensors);  da = dy * b * a**(b-1), db = dy * y * log(a) (0 where a=0)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, dy):
        xp = self.xp
        a, b = self.a, self.b
        da = dy * b * a ** (b - 1)
        safe_a = xp.where(a > 0, a, 1)
        db = dy * self.y * xp.where(a > 0, xp.log(safe_a), 0)
        return da, db


class Exp(Function):
    """y = exp(x);  dx = dy * y."""

    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, dy):
        return dy * self.y


class Log(Function):
    """y = log(x);  dx = dy / x."""

    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, dy):
        return dy / self.x


class Sqrt(Function):
    """y = sqrt(x);  dx = dy / (2 y)."""

    def forward(self, x):
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, dy):
        return dy / (2 * self.y)


class Abs(Function):
    """y = |x|;  dx = dy * sign(x) (0 at x = 0, as in PyTorch)."""

    def forward(self, x):
        self.x = x
        return self.xp.abs(x)

    def backward(self, dy):
        return dy * self.xp.sign(self.x)


class Tanh(Function):
    """y = tanh(x);  dx = dy * (1 - y**2)."""

    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y * self.y)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed as (tanh(x/2) + 1) / 2, which never overflows;
    dx = dy * y * (1 - y)."""

    def forward(self, x):
        y = self.xp.tanh(x * 0.5)
        y *= 0.5  # in place: two arrays instead of four, the same numbers
        y += 0.5
        self.y = y
        return y

    def backward(self, dy):
        g = 1 - self.y
        g *= self.y
        return g * dy


class Relu(Function):
    """y = max(x, 0);  dx = dy where x > 0, else 0."""

    def forward(self, x):
        self.y = self.xp.maximum(x, 0)
        return self.y

    def backward(self, dy):
        return dy * (self.y > 0)


class Softplus(Function):
    """y = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|));  dx = dy * sigmoid(x)."""

    def forward(self, x):
        xp = self.xp
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, dy):
        return dy * (self.xp.tanh(self.x * 0.5) * 0.5 + 0.5)


class Clip(Function):
    """y = min(max(x, low), high);  dx = dy where low <= x <= high (as torch.clamp)."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        self.x = x
        return self.xp.clip(x, self.low, self.high)

    def backward(self, dy):
        inside = True
        if self.low is not None:
            inside = self.x >= self.low
        if self.high is not None:
            inside = inside & (self.x <= self.high)
        return dy * inside


class Maximum(Function):
    """y = max(a, b) elementwise; the gradient goes to the larger input, split evenly on ties."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.maximum(a, b)

    def backward(self, dy):
        share_a = (self.a > self.b).astype(dy.dtype) + (self.a == self.b).astype(dy.dtype) * 0.5
        return dy * share_a, dy * (1 - share_a)


class Minimum(Function):
    """y = min(a, b) elementwise; the gradient goes to the smaller input, split evenly on ties."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.xp.minimum(a, b)

    def backward(self, dy):
        share_a = (self.a < self.b).astype(dy.dtype) + (self.a == self.b).astype(dy.dtype) * 0.5
        return dy * share_a, dy * (1 - share_a)


class Where(Function):
    """y = a where cond else b;  da = dy * cond, db = dy * ~cond. cond (a boolean array) is
    an input like a and b, so that one op serves every call with its own condition; it gets
    no gradient."""

    def forward(self, cond, a, b):
        self.cond = cond
        return self.xp.where(cond, a, b)

    def backward(self, dy):
        xp = self.xp
        return None, xp.where(self.cond, dy, 0), xp.where(self.cond, 0, dy)


class Compare(Function):
    """y = a < b (or <=, >, >=, ==, !=): a boolean array, not differentiated."""

    differentiable = False
    _UFUNCS = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
               "eq": "equal", "ne": "not_equal"}

    def __init__(self, kind: str):
        self.kind = kind

    def forward(self, a, b):
        return getattr(self.xp, self._UFUNCS[self.kind])(a, b)

    def backward(self, dy):
        return None, None
