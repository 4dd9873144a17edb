"""The base class of every op: forward and backward on raw arrays.

An op knows nothing about Tensors or the graph. The engine (tensor.py) sets `self.xp` (numpy
or cupy), calls `forward(*arrays)`, and later `backward(grad_output)` with the gradient of
the op's output(s). `backward` returns one gradient per input (None where an input gets no
gradient). Gradients may keep the broadcast shape of the forward: the engine sums them back
to each input's shape in one place.
"""

from __future__ import annotations


class Function:
    """One differentiable operation. Subclasses define `forward` and `backward`.

    Ops whose forward returns a tuple (split, unbind) get `multi_output = True` and
    `num_outputs` from the engine, and receive a list with one gradient per output (None for
    outputs that got no gradient), even when the tuple has a single element.

    The constructor takes settings only (axes, shapes, probabilities); every array an op
    reads comes in through `forward`, masks and indices included, so that one op object can
    serve every step of a recorded loop (tg.scan), which keeps what `forward` stores on the
    object separately for each step.
    """

    num_outputs = 1
    multi_output = False
    xp = None  # set per instance by the engine
    differentiable = True  # False: outputs never need a gradient (masks, comparisons)
    random = False  # True: draws from a generator, so a replayed step must call it again
    # True: forward stores no array, only what the input shapes and the settings fix (Add
    # stores nothing, Split its index), so tg.scan lets one set of attributes serve every
    # step instead of keeping a copy per step
    stores_shapes_only = False

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """axis=None | int | tuple -> sorted tuple of non-negative axes, checked against ndim."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))
