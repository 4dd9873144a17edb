"""Ops that draw random masks. They are ops, not raw-array work around the graph, so that a
recorded step (tg.scan) draws fresh values at every step it replays, in the same order as
the step run in a Python loop. They take an input only for its shape, dtype and device, and
they are not differentiated."""

from __future__ import annotations

import numpy as np

from .. import backend
from .function import Function


def _uniform(x):
    """U[0, 1) float32 samples of x's shape from x's device's seeded generator."""
    return backend.get_generator(backend.device_of(x)).random(x.shape, dtype=np.float32)


class _Mask(Function):
    """A mask drawn from x's device's generator with probability setting p; no gradient."""

    differentiable = False
    random = True

    def __init__(self, p: float):
        self.p = p

    def backward(self, dy):
        return None


class DropoutMask(_Mask):
    """mask = (u >= p) / (1 - p) with u ~ U[0, 1): inverted dropout's keep mask, x's dtype."""

    def forward(self, x):
        keep = _uniform(x) >= self.p
        return keep.astype(x.dtype) * (1.0 / (1.0 - self.p))


class BernoulliMask(_Mask):
    """mask = u < p with u ~ U[0, 1): True with probability p (zoneout's keep-old mask)."""

    def forward(self, x):
        return _uniform(x) < self.p
