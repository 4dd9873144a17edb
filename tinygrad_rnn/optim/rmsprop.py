"""RMSprop (Hinton's lecture 6e), optionally centered (Graves 2013) and with momentum."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, check_non_negative


class RMSprop(Optimizer):
    r"""RMSprop (PyTorch's `torch.optim.RMSprop`, same arguments and update).

    For each parameter p with gradient g (v, g_avg, b start at zero):

        g <- -g                                   if maximize
        g <- g + weight_decay * p                 if weight_decay != 0
        v <- alpha * v + (1 - alpha) * g * g
        g_avg <- g_avg + (1 - alpha) * (g - g_avg)           if centered
        d <- sqrt(v - g_avg * g_avg) + eps  if centered  else  d <- sqrt(v) + eps
        b <- momentum * b + g / d;  p <- p - lr * b          if momentum > 0
        p <- p - lr * g / d                                  otherwise

    State per parameter: "step" (int), "square_avg" (v), "momentum_buffer" (b, when
    momentum > 0), "grad_avg" (g_avg, when centered), in the parameter's dtype.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def validate_group(self, group: dict[str, Any]) -> None:
        check_non_negative("lr", group["lr"])
        check_non_negative("eps", group["eps"])
        check_non_negative("momentum", group["momentum"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_non_negative("alpha", group["alpha"])

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        weight_decay, momentum = float(group["weight_decay"]), float(group["momentum"])
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param)
            if momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(param)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        if weight_decay != 0:
            grad = grad + weight_decay * param
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * (grad * grad)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += eps
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += grad / avg
            param -= lr * buf
        else:
            param -= lr * (grad / avg)
