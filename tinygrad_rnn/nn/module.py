"""Module and Parameter: how layers own their weights and sub-layers.

Assigning a Parameter or a Module to an attribute registers it, in assignment order, so that
`named_parameters()` and `state_dict()` list weights deterministically with dotted names
("encoder.weight_ih_l0"), exactly as PyTorch does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from .. import backend
from ..tensor import Tensor, no_grad


class Parameter(Tensor):
    """A Tensor that a Module registers as a weight: a leaf with requires_grad=True."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None, device=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer. Subclasses set parameters and sub-modules as attributes in
    `__init__` (after calling `super().__init__()`) and define `forward`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------------- registration

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called; call "
                "super().__init__() first in your module's __init__")
        params, modules = self._parameters, self._modules
        if isinstance(value, Parameter):
            modules.pop(name, None)
            self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self.__dict__.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} "
                    "(expected a Parameter or None)")
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to sub-module {name!r} "
                    "(expected a Module or None)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # only called when normal lookup fails: look in the registries
        d = self.__dict__
        if "_parameters" in d and name in d["_parameters"]:
            return d["_parameters"][name]
        if "_modules" in d and name in d["_modules"]:
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is None:
            self._modules[name] = None
        else:
            setattr(self, name, module)

    # ----------------------------------------------------------------- calling

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----------------------------------------------------------------- traversal

    def named_modules(self, prefix: str = "",
                      memo: set | None = None) -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, depth first, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules in registration order; one registered twice is listed once."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix: str = "",
                         recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) in registration order; a shared parameter is listed once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    # ----------------------------------------------------------------- modes and conversion

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.data[...] = 0

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call fn on every sub-module (children first) and on self, as in PyTorch."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _convert(self, convert: Callable) -> Module:
        """Replace every parameter's array in place (the Parameter objects stay the same, so an
        optimizer built earlier still holds them)."""
        for module in self.modules():
            for param in module._parameters.values():
                if param is None:
                    continue
                param.data = convert(param.data)
                if param.grad is not None:
                    param.grad.data = convert(param.grad.data)
        return self

    def to(self, device=None, dtype=None) -> Module:
        if device is not None:
            device = backend.normalize_device(device)
            self._convert(lambda a: backend.to_device(a, device))
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to: dtype must be floating point, got {dtype}")
            self._convert(lambda a: a.astype(dtype, copy=False))
        return self

    def float(self) -> Module:
        return self.to(dtype=np.float32)

    def double(self) -> Module:
        return self.to(dtype=np.float64)

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self) -> Module:
        return self.to("cuda")

    # ----------------------------------------------------------------- state

    def state_dict(self) -> OrderedDict:
        """Ordered {dotted name: NumPy array copy} of every parameter."""
        return OrderedDict((name, backend.to_numpy(p.data).copy())
                           for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values into the existing parameters, cast to each parameter's dtype and device.

        Accepts NumPy arrays, CuPy arrays or Tensors (so a PyTorch state dict converted with
        `{k: v.numpy() for k, v in sd.items()}` loads). With strict=True, missing and unexpected
        keys raise; a wrong shape always raises. Nothing is written unless every key checks out.
        Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self.named_parameters())
        values = {}
        for name, value in state_dict.items():
            if isinstance(value, Tensor):
                value = value.data
            elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
                value = value.detach().cpu().numpy()
            values[name] = value
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        wrong_shape = [
            f"{k}: expected {tuple(own[k].shape)}, got {tuple(np.shape(values[k]))}"
            for k in own if k in values and tuple(np.shape(values[k])) != tuple(own[k].shape)
        ]
        problems = []
        if wrong_shape:
            problems.append("wrong shapes: " + "; ".join(wrong_shape))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(
                f"{k} {tuple(own[k].shape)}" for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(
                f"{k} {tuple(np.shape(values[k]))}" for k in unexpected))
        if problems:
            raise KeyError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                           + " | ".join(problems))
        with no_grad():
            for name, param in own.items():
                if name in values:
                    array = backend.to_device(values[name], param.device)
                    param.data[...] = array.astype(param.dtype, copy=False)
                    param._bump_version()
        return missing, unexpected

    # ----------------------------------------------------------------- repr

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ")
                 for name, module in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another; indexable, iterable, len()."""

    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (names "0", "1", ...)."""

    def __init__(self, modules=None):
        super().__init__()
        for module in modules or ():
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[index]

    def __setitem__(self, index: int, module: Module) -> None:
        key = list(self._modules)[index]
        setattr(self, key, module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
