"""Finite-difference gradient checking: the way to trust an op's hand-written backward."""

from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Raised when analytic and numerical gradients disagree."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              seed: int = 0) -> bool:
    """Check the gradients of `fn(*inputs)` against central differences, in float64.

    Every input Tensor with requires_grad=True must be float64; it need not be a leaf
    (`p.double()` of a float32 parameter is fine): a non-leaf input is replaced, for the
    check, by a fresh leaf sharing its values. A leaf input's `.grad` is reset and left
    holding the analytic gradient.

    The (possibly tuple) output is reduced to a scalar with fixed random weights,
    L = sum_k <w_k, out_k>, so every element of every output contributes. For each input
    element, the analytic dL/dx from backward() must match (L(x + eps) - L(x - eps)) / (2 eps)
    within atol + rtol * |numeric|.
    Returns True, or raises GradcheckError naming the input, the index and both values.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} must be float64 for finite differences, "
                f"got {inputs[i].dtype}")
    # A non-leaf input would pass its gradient on to the tensor it came from and keep none
    # itself (the analytic gradient would read as 0), so it becomes a fresh leaf over the
    # same array; one leaf per distinct tensor, so an input passed twice is one variable.
    fresh_leaves: dict[int, Tensor] = {}
    for i in checked:
        t = inputs[i]
        if not t.is_leaf:
            inputs[i] = fresh_leaves.setdefault(id(t), Tensor._wrap(t.data, True))
    rng = np.random.default_rng(seed)
    outs = _outputs(fn, inputs)
    weights = [backend.to_device(rng.standard_normal(o.shape), o.device) for o in outs]

    def scalar_loss():
        with no_grad():
            return sum(float((o.data * w).sum()) for o, w in zip(_outputs(fn, inputs), weights))

    for i in checked:
        inputs[i].grad = None
    loss = None
    for o, w in zip(outs, weights):
        if o.requires_grad:
            term = (o * Tensor(w)).sum()
            loss = term if loss is None else loss + term
    if loss is None:
        raise GradcheckError("gradcheck: no output depends on an input that requires grad")
    loss.backward()

    for i in checked:
        t = inputs[i]
        analytic = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        # Perturb t.data in place element by element (indexing the array itself, not a
        # reshape, which would silently be a copy for non-contiguous data), restore after.
        for index in np.ndindex(*t.shape):
            original = float(t.data[index])
            t.data[index] = original + eps
            plus = scalar_loss()
            t.data[index] = original - eps
            minus = scalar_loss()
            t.data[index] = original
            numeric = (plus - minus) / (2 * eps)
            a = float(analytic[index])
            if not abs(a - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck: gradient mismatch for input {i} (shape {t.shape}) at index "
                    f"{tuple(int(j) for j in index)}: analytic {a:.8g}, numeric {numeric:.8g}")
    return True
