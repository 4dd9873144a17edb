"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, check_non_negative


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's `torch.optim.SGD`, same arguments and update).

    For each parameter p with gradient g, at step t (buffer b):

        g <- -g                                   if maximize
        g <- g + weight_decay * p                 if weight_decay != 0
        b <- g                                    at the first step, if momentum != 0
        b <- momentum * b + (1 - dampening) * g   later steps
        g <- g + momentum * b  if nesterov  else  g <- b
        p <- p - lr * g

    State per parameter: "momentum_buffer" (only when momentum != 0).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3,
                 momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def validate_group(self, group: dict[str, Any]) -> None:
        check_non_negative("lr", group["lr"])
        check_non_negative("momentum", group["momentum"])
        check_non_negative("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening: expected "
                f"momentum > 0 and dampening == 0, got momentum={group['momentum']!r}, "
                f"dampening={group['dampening']!r}")

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay, dampening = float(group["weight_decay"]), float(group["dampening"])
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # (an array even for 0-d parameters, where arithmetic gives NumPy scalars)
                buf = state["momentum_buffer"] = xp.array(grad, dtype=param.dtype)
            else:
                buf *= momentum
                buf += (1 - dampening) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param -= lr * grad
