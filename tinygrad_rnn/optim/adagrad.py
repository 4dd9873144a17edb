"""Adagrad (Duchi, Hazan & Singer 2011)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, check_non_negative


class Adagrad(Optimizer):
    r"""Adagrad (PyTorch's `torch.optim.Adagrad`, same arguments and update).

    For each parameter p with gradient g, at step t = 1, 2, ...
    (s starts at initial_accumulator_value):

        g <- -g                                   if maximize
        g <- g + weight_decay * p                 if weight_decay != 0
        clr = lr / (1 + (t - 1) * lr_decay)
        s <- s + g * g
        p <- p - clr * g / (sqrt(s) + eps)

    State per parameter (created with the optimizer, as in PyTorch): "step" (int) and
    "sum" (s), in the parameter's dtype and on its device; after model.double() or .cuda()
    the next step converts it. A group's own initial_accumulator_value is honoured
    (PyTorch 2.x uses the constructor's value for every group).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *,
                 maximize: bool = False):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)

    def validate_group(self, group: dict[str, Any]) -> None:
        check_non_negative("lr", group["lr"])
        check_non_negative("lr_decay", group["lr_decay"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_non_negative("initial_accumulator_value", group["initial_accumulator_value"])
        check_non_negative("eps", group["eps"])

    def _init_group_state(self, param, group):
        xp = backend.get_array_module(param.data)
        self.state[param] = {
            "step": 0,
            "sum": xp.full_like(param.data, float(group["initial_accumulator_value"])),
        }

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        lr, lr_decay, eps = float(group["lr"]), float(group["lr_decay"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        if not state:  # a parameter whose state a loaded state dict did not include
            state["step"] = 0
            state["sum"] = xp.full_like(param, float(group["initial_accumulator_value"]))
        state["step"] += 1
        step = state["step"]
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state["sum"]
        state_sum += grad * grad
        std = xp.sqrt(state_sum)
        std += eps
        param -= clr * (grad / std)
