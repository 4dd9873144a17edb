"""Ops that move values around without arithmetic: reshape, transpose, broadcast, indexing,
concatenation and splitting. Their backward routes each gradient value back to where it
came from."""

from __future__ import annotations

from .function import Function


class Reshape(Function):
    """y = x.reshape(shape);  dx = dy.reshape(x.shape)."""

    stores_shapes_only = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, dy):
        return dy.reshape(self.in_shape)


class Permute(Function):
    """y = x.transpose(axes);  dx = dy transposed by the inverse permutation."""

    stores_shapes_only = True

    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, dy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return dy.transpose(inverse)


class BroadcastTo(Function):
    """y = x broadcast to shape;  dx = dy (the engine sums the broadcast axes back)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        return self.xp.broadcast_to(x, self.shape)

    def backward(self, dy):
        return dy


def _is_basic_index(index) -> bool:
    """True when the index selects each element at most once (slices, ints, None, ...,
    boolean masks), so backward can assign instead of scatter-adding."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if item is None or item is Ellipsis or isinstance(item, (int, slice)):
            continue
        if getattr(item, "dtype", None) is not None and item.dtype == bool:
            continue
        return False
    return True


class GetItem(Function):
    """y = x[index];  dx = zeros with dy scattered back. Repeated integer indices accumulate
    (scatter-add), as each use of an element contributes to its gradient."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, dy):
        xp = self.xp
        dx = xp.zeros(self.in_shape, dtype=dy.dtype)
        if _is_basic_index(self.index):
            dx[self.index] = dy
        else:
            xp.add.at(dx, self.index, dy)
        return dx


class Embedding(Function):
    """y = weight[indices] (rows);  dweight = scatter-add of dy into the rows (none for the
    padding_idx row). indices (integers, any shape) is an input that gets no gradient."""

    def __init__(self, padding_idx=None):
        self.padding_idx = padding_idx

    def forward(self, weight, indices):
        self.in_shape, self.indices = weight.shape, indices
        return weight[indices]

    def backward(self, dy):
        xp = self.xp
        dw = xp.zeros(self.in_shape, dtype=dy.dtype)
        xp.add.at(dw, self.indices.reshape(-1), dy.reshape(-1, self.in_shape[1]))
        if self.padding_idx is not None:
            dw[self.padding_idx] = 0
        return dw, None


def _cut(sizes, axis: int) -> list:
    """Index tuples that cut an array along `axis` (not negative) into consecutive pieces of
    the given sizes (Split's forward, Concat's backward)."""
    lead, start, index = (slice(None),) * axis, 0, []
    for size in sizes:
        index.append(lead + (slice(start, start + size),))
        start += size
    return index


class Concat(Function):
    """y = concatenate(xs, axis);  each dx_i is its slice of dy."""

    stores_shapes_only = True

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, dy):
        return tuple(dy[i] for i in _cut(self.sizes, self.axis % dy.ndim))


class Stack(Function):
    """y = stack(xs, axis);  dx_i = dy taken at position i of the new axis (views: O(total))."""

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *xs):
        self.count = len(xs)
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, dy):
        axis = self.axis % dy.ndim
        prefix = (slice(None),) * axis
        return tuple(dy[prefix + (i,)] for i in range(self.count))


class Split(Function):
    """ys = x cut along axis into pieces of the given sizes (views);  dx = the dys concatenated,
    zeros for pieces that got no gradient."""

    stores_shapes_only = True
    in_shape = None

    def __init__(self, sizes, axis: int = 0):
        self.sizes, self.axis = list(sizes), axis
        self.num_outputs = len(self.sizes)

    def forward(self, x):
        if x.shape != self.in_shape:  # made once: the steps of a recorded loop reuse it
            self.in_shape = x.shape
            self.axis %= x.ndim
            self.index = _cut(self.sizes, self.axis)
        return tuple([x[i] for i in self.index])

    def backward(self, dys):
        xp = self.xp
        if any(g is None for g in dys):
            dtype = next(g.dtype for g in dys if g is not None)
            filled = []
            for size, g in zip(self.sizes, dys):
                if g is None:
                    shape = list(self.in_shape)
                    shape[self.axis] = size
                    g = xp.zeros(shape, dtype=dtype)
                filled.append(g)
            dys = filled
        return xp.concatenate(dys, axis=self.axis)


class Unbind(Function):
    """ys = the slices of x along axis (views);  dx = the dys written into one array (O(total))."""

    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, x):
        self.in_shape = x.shape
        self.axis %= x.ndim
        self.num_outputs = x.shape[self.axis]
        prefix = (slice(None),) * self.axis
        return tuple(x[prefix + (i,)] for i in range(self.num_outputs))

    def backward(self, dys):
        dtype = next(g.dtype for g in dys if g is not None)
        dx = self.xp.zeros(self.in_shape, dtype=dtype)
        prefix = (slice(None),) * self.axis
        for i, g in enumerate(dys):
            if g is not None:
                dx[prefix + (i,)] = g
        return dx
