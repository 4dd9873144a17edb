"""The Optimizer base class: parameter groups, per-parameter state, step, state dicts.

An optimizer owns a list of *parameter groups*. Each group is a dict holding its parameters
(`group["params"]`, a list of Tensors) and its hyperparameters (`group["lr"]`, ...); the
hyperparameters not given for a group come from the optimizer's `defaults`. Per-parameter
state (momentum buffers, running averages, step counters) lives in `optimizer.state[param]`.

Subclasses implement one method, `_update(param, grad, state, group)`, on raw arrays:
`param` is the parameter's own array (updated in place, on whatever device it lives), `grad`
its gradient in the parameter's dtype, `state` the parameter's state dict. The state arrays
are created in the parameter's dtype, and every hyperparameter reaches `_update` as a Python
float, so float32 stays float32 (NumPy 2 would promote with a NumPy float64 scalar).

The state dict has PyTorch's layout, so it can be converted to and from a torch one:

    {"state": {0: {"step": 3, "exp_avg": array, ...}, 1: {...}},
     "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1]}]}

where the integers number the parameters in group order.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import backend
from ..tensor import Tensor, enable_grad, no_grad


def check_non_negative(name: str, value) -> None:
    """Raise ValueError unless `value` >= 0 (the message names the hyperparameter)."""
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"Invalid {name} value: expected {name} >= 0, got {value!r}")


def _state_array_copy(value):
    """A NumPy copy of a state array (so a saved state dict does not change with training)."""
    if backend.is_cupy_array(value):
        return value.get()
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)


def _follow_parameter(param, state: dict[str, Any]) -> None:
    """Move and cast the state arrays to the parameter's device and dtype, in place.

    The state follows its parameter: after `model.double()` or `model.to("cuda")` (with the
    optimizer made before, or state loaded from elsewhere) the next step updates float64
    state on the GPU, instead of losing precision or mixing NumPy state with CuPy gradients.
    """
    for name, value in state.items():
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            continue  # "step" counters, None buffers
        if type(value) is type(param) and value.dtype == param.dtype:
            continue
        xp = backend.get_array_module(param)
        if xp is np:
            value = backend.to_numpy(value)
        state[name] = xp.asarray(value, dtype=param.dtype)


class Optimizer:
    """Base class of all optimizers (PyTorch's `torch.optim.Optimizer` interface).

    Args:
        params: an iterable of Tensors, or of dicts each with a "params" entry and optional
            per-group hyperparameters that override `defaults`.
        defaults: the hyperparameters of a group that does not give its own.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params must be an iterable of Tensors or of dicts, got a single Tensor; "
                "wrap it in a list: [tensor]")
        if isinstance(params, dict):
            raise TypeError(
                "params must be an iterable of Tensors or of dicts, got one dict; "
                "wrap it in a list: [{'params': ...}]")
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "params must be an ordered collection (a list, or model.parameters()), got a "
                "set: its order would change between runs")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ----------------------------------------------------------------- groups

    def validate_group(self, group: dict[str, Any]) -> None:
        """Check a group's hyperparameters; subclasses raise ValueError naming the argument."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (e.g. layers unfrozen during fine-tuning).

        `param_group` is a dict with "params" (a Tensor or an iterable of Tensors) and any
        hyperparameters that differ from the optimizer's defaults.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry (the tensors to optimize)")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters must be an ordered collection (list or tuple), got a set: "
                "its order would change between runs")
        else:
            params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but params[{i}] is a "
                    f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    f"can't optimize a non-leaf Tensor (params[{i}] was computed by an op); "
                    "optimize the leaf it came from, or make it a leaf of its own with "
                    "p = p.detach().requires_grad_()")
            if p.dtype.kind != "f":
                raise TypeError(
                    f"optimizer can only optimize floating-point tensors, params[{i}] has "
                    f"dtype {p.dtype}")
            if not p.requires_grad:
                warnings.warn(
                    f"params[{i}] (shape {p.shape}) does not require grad: backward() never "
                    "gives it a gradient, so this optimizer will never change it. Call "
                    "p.requires_grad_() to train it, or leave it out if it is frozen on purpose",
                    UserWarning, stacklevel=3)
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = dict(param_group)
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.validate_group(group)
        self.param_groups.append(group)
        for p in params:
            self._init_group_state(p, group)

    def _init_group_state(self, param: Tensor, group: dict[str, Any]) -> None:
        """Create state eagerly when the parameter joins (Adagrad does); default: lazily."""

    # ----------------------------------------------------------------- the update

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set `.grad` to None (default) or fill it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a gradient; parameters without one are skipped.

        `closure`, if given, re-evaluates the model and returns the loss (it is called with
        gradient recording on, before the update); its result is returned.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    if grad.shape != p.data.shape:
                        raise ValueError(
                            f"{type(self).__name__}.step: a gradient has shape {grad.shape} but "
                            f"its parameter has shape {p.data.shape}")
                    if grad.dtype != p.data.dtype:
                        grad = grad.astype(p.data.dtype)
                    state = self.state.setdefault(p, {})
                    _follow_parameter(p.data, state)
                    self._update(p.data, grad, state, group)
                    p._bump_version()  # a graph that kept the old values now raises
        return loss

    def _update(self, param, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update `param` (an array, in place) from `grad`; subclasses implement this."""
        raise NotImplementedError

    # ----------------------------------------------------------------- state dicts

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in PyTorch's layout, with NumPy copies of the state arrays.

        {"state": {index: {name: value}}, "param_groups": [{hyperparameters, "params": [indices]}]}
        where index numbers the parameters across groups, in order.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if self.state.get(p):
                    state[index[id(p)]] = {
                        k: _state_array_copy(v) for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by `state_dict()` (or by PyTorch).

        Parameters are matched by position; state arrays are copied onto each parameter's
        device and cast to its dtype.
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(
                "load_state_dict: expected a dict with 'state' and 'param_groups' entries, got "
                f"{type(state_dict).__name__}"
                + (f" with keys {sorted(map(str, state_dict))}" if isinstance(state_dict, dict)
                   else ""))
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(self.param_groups)}")
        by_index: dict[int, Tensor] = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(group['params'])}")
            by_index.update(zip((int(k) for k in saved["params"]), group["params"], strict=True))
        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, values in state_dict["state"].items():
            if int(key) not in by_index:
                raise ValueError(
                    f"loaded state dict has state for parameter {key}, which is in no group")
            p = by_index[int(key)]
            new_state[p] = {name: self._cast_state(p, int(key), name, value)
                            for name, value in values.items()}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for name, value in saved.items():
                if name != "params":
                    group[name] = copy.deepcopy(value)
        self.state = new_state

    @staticmethod
    def _cast_state(param: Tensor, index: int, name: str, value):
        if name == "step":  # a Python int here; a 0-d float tensor/array in PyTorch's dicts
            return int(value.item() if hasattr(value, "item") else value)
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            if tuple(value.shape) != param.data.shape:
                raise ValueError(
                    f"loaded state dict: state[{index}][{name!r}] has shape {tuple(value.shape)}, "
                    f"the parameter has shape {param.data.shape}")
            xp = backend.get_array_module(param.data)
            if xp is np:
                value = backend.to_numpy(value)
            return xp.array(value, dtype=param.data.dtype, copy=True)
        return copy.deepcopy(value)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        lines.append(")")
        return "\n".join(lines)
