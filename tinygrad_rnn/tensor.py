"""The Tensor and the engine that differentiates it.

A Tensor holds an array (`data`), an optional gradient (`grad`) and, when it was computed
from other tensors with gradients enabled, the op that created it (`_node`). Calling
`backward()` walks those ops in reverse topological order, iteratively, asking each op for
the gradients of its inputs. The engine knows nothing about any particular op: everything
op-specific lives in `ops/`; the methods at the bottom of `Tensor` only pick the op.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import numpy as np

from . import backend, ops
from .ops.function import normalize_axes

# --------------------------------------------------------------------------- global modes

_grad_enabled = True
_default_dtype = np.dtype(np.float32)
_tracer = None  # set by tg.scan while it records a step function (scan.py)
retaining_graph = False  # whether the backward under way keeps the graph (retain_graph=True)

# In-place changes: a clock that ticks at every one, and for each tensor changed in place the
# clock values of its last few changes (weak keys: a dropped tensor leaves no entry). A node
# records the clock when it is recorded; backward looks closer only at nodes older than the
# last change (see _check_saved_arrays).
_version_clock = 0
_changed_tensors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CHANGES_KEPT = 16


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    """Base of no_grad/enable_grad: a context manager that is also a decorator."""

    mode = True

    def _recreate_cm(self):
        # A fresh instance per decorated call, so recursive or nested calls each restore
        # their own previous mode (ContextDecorator reuses `self` by default).
        return type(self)()

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = self.mode
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False


class no_grad(_GradMode):
    """Inside `with no_grad():` (or a function decorated with `@no_grad()`) no graph is recorded."""

    mode = False


class enable_grad(_GradMode):
    """Turn graph recording back on inside a `no_grad` region."""

    mode = True


def set_default_dtype(dtype) -> None:
    """Set the floating dtype used for Python floats and random creation (float32 or float64)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"set_default_dtype: dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


def get_default_dtype() -> np.dtype:
    return _default_dtype


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _unpack_sizes(args: tuple) -> tuple:
    """f(2, 3) and f((2, 3)) mean the same, as in PyTorch's reshape/permute/expand."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return args


def _dim(axis, dim):
    """Reductions accept NumPy's `axis=` and PyTorch's `dim=`; never both."""
    if dim is not None:
        if axis is not None:
            raise TypeError("pass either axis= or dim=, not both")
        return dim
    return axis


# --------------------------------------------------------------------------- the Tensor

_NON_LEAF_GRAD_WARNING = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during backward(). If you indeed want the .grad field to be "
    "populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you access "
    "the non-leaf Tensor by mistake, make sure you access the leaf Tensor instead (for a "
    "parameter converted with .double() or .to(), keep the converted tensor as a new leaf: "
    "p = p.double().detach().requires_grad_()).")


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff.

    Tensor(data, requires_grad=False, dtype=None, device=None). Python floats and lists of
    floats become the default dtype (float32); NumPy/CuPy arrays keep their dtype.
    """

    # `_grad` is the stored gradient; `grad` is a property so that reading it on a non-leaf
    # can warn (as PyTorch does) while the engine writes `_grad` directly.
    # `_retains_grad` is set only by retain_grad() (read with getattr and a default).
    # `_version` counts the in-place changes of `data` the library made (optimizer step,
    # load_state_dict, init), as PyTorch's version counter: see _check_saved_arrays.
    __slots__ = ("data", "_grad", "requires_grad", "_node", "_index", "_retains_grad",
                 "_version", "__weakref__")
    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data.data
        if device is None:
            device = backend.device_of(data)
        device = backend.normalize_device(device)
        xp = backend.xp_for(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
        elif not hasattr(data, "dtype"):  # Python scalars and lists
            inferred = np.asarray(data).dtype
            dtype = _default_dtype if inferred.kind == "f" else inferred
        checked = np.dtype(dtype if dtype is not None else data.dtype)
        if checked.kind not in "biufc":
            raise TypeError(f"Tensor: data must be numbers (bool, int or float), got "
                            f"{type(data).__name__} of dtype {checked}")
        array = backend.to_device(data, device) if device == "cpu" else xp.asarray(data)
        array = xp.asarray(array, dtype=dtype)
        if requires_grad and not _is_float(array.dtype):
            raise TypeError(
                f"requires_grad=True needs a floating-point tensor, got dtype {array.dtype}")
        self.data = array
        self._grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._index = 0
        self._version = 0

    @classmethod
    def _wrap(cls, array, requires_grad=False, node=None, index=0) -> Tensor:
        """Fast constructor for arrays the engine produced itself (no checks, no copies)."""
        t = object.__new__(cls)
        t.data, t._grad, t.requires_grad = array, None, requires_grad
        t._node, t._index, t._version = node, index, 0
        return t

    # ----------------------------------------------------------------- properties

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad(self) -> Tensor | None:
        """The gradient accumulated by backward(): a Tensor (no graph) or None.

        Only leaves (and tensors that called retain_grad()) get one; reading it on any other
        tensor warns, as PyTorch does, since it stays None whatever backward() computes.
        """
        grad = self._grad
        if grad is None and self._node is not None and not getattr(self, "_retains_grad", False):
            warnings.warn(_NON_LEAF_GRAD_WARNING, UserWarning, stacklevel=2)
        return grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        self._grad = value

    @property
    def retains_grad(self) -> bool:
        """True when this non-leaf tensor called retain_grad() (False for leaves, as in PyTorch)."""
        return self._node is not None and getattr(self, "_retains_grad", False)

    def numel(self) -> int:
        return int(self.data.size)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4)
        extra = f", device='{self.device}'" if self.device != "cpu" else ""
        if self._node is not None:
            extra += f", grad_fn=<{type(self._node).__name__}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # ----------------------------------------------------------------- conversions

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU when needed). No graph."""
        if _tracer is not None:
            _tracer.refuse(self, ".numpy()")
        return backend.to_numpy(self.data)

    def item(self):
        if _tracer is not None:
            _tracer.refuse(self, ".item()")
        if self.data.size != 1:
            raise ValueError(
                f"item(): only one-element tensors can be converted, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return _apply(_Detach, self)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not _is_float(self.dtype):
            raise TypeError(
                f"requires_grad=True needs a floating-point tensor, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError(
                "requires_grad_(False) is only allowed on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def _bump_version(self) -> None:
        """Record that `data` was just changed in place (optimizer step, load_state_dict, init).

        A later backward through an op that kept this array (or a view of it) for its
        gradient raises instead of silently mixing old and new values, as in PyTorch.
        """
        global _version_clock
        _version_clock += 1
        self._version += 1
        clocks = _changed_tensors.setdefault(self, [])
        clocks.append(_version_clock)
        if len(clocks) > _CHANGES_KEPT:
            del clocks[0]

    def retain_grad(self) -> Tensor:
        """Ask backward() to also store the gradient of this non-leaf tensor in `.grad`."""
        if self._node is not None:
            retained = self._node.__dict__.setdefault("_retained", {})
            retained[self._index] = weakref.ref(self)
            self._retains_grad = True
        return self

    def to(self, device=None, dtype=None) -> Tensor:
        """Move to a device and/or cast; differentiable (gradients flow back to the source)."""
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _apply(_Cast, out, dtype=np.dtype(dtype))
        if device is not None:
            device = backend.normalize_device(device)
            if device != out.device:
                out = _apply(_ToDevice, out, device=device)
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(dtype=np.float32)

    def double(self) -> Tensor:
        return self.to(dtype=np.float64)

    def astype(self, dtype) -> Tensor:
        return self.to(dtype=dtype)

    # ----------------------------------------------------------------- autodiff

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into `.grad` of every leaf that requires grad.

        `grad` defaults to 1 for a one-element tensor. With retain_graph=False (default) the
        graph's saved arrays are freed on the way, so a second backward raises.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad and has no grad_fn "
                "(did you compute it under no_grad(), or from tensors without requires_grad=True?)")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): grad can be implicitly created only for one-element outputs, "
                    f"got shape {self.shape}; pass grad= with that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = self._checked_grad(grad, xp)
        _run_backward(self, grad, retain_graph)

    def _checked_grad(self, grad, xp):
        """backward()'s grad= as an array of this tensor's shape, dtype and device.

        A Tensor must be on this tensor's device (as in PyTorch); arrays and lists are host
        or device data and are moved here. Any real dtype is cast to this tensor's."""
        if isinstance(grad, Tensor):
            if grad.device != self.device:
                raise RuntimeError(
                    f"backward(): grad is on '{grad.device}' but the tensor is on "
                    f"'{self.device}'; move it first with grad.to('{self.device}')")
            array = grad.data
        elif isinstance(grad, np.ndarray) or backend.is_cupy_array(grad):
            array = backend.to_device(grad, self.device)
        else:
            array = xp.asarray(grad, dtype=self.dtype)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"backward(): grad must hold real numbers, got dtype {array.dtype}")
        if array.shape != self.shape:
            raise RuntimeError(
                f"backward(): grad must have the tensor's shape {self.shape}, got {array.shape}")
        return array if array.dtype == self.dtype else array.astype(self.dtype)

    # ----------------------------------------------------------------- arithmetic

    def _operand(self, other) -> Tensor:
        """Python scalars take this tensor's dtype (they never promote); arrays keep theirs."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, int, float)):
            keeps_dtype = _is_float(self.dtype) or isinstance(other, (bool, int))
            dtype = self.dtype if keeps_dtype else _default_dtype
            return Tensor._wrap(self._xp().asarray(other, dtype=dtype))
        return Tensor(other, device=self.device)

    def _xp(self):
        return backend.get_array_module(self.data)

    def __add__(self, other):
        return _binary(ops.Add, self, self._operand(other))

    def __radd__(self, other):
        return _binary(ops.Add, self._operand(other), self)

    def __sub__(self, other):
        return _binary(ops.Sub, self, self._operand(other))

    def __rsub__(self, other):
        return _binary(ops.Sub, self._operand(other), self)

    def __mul__(self, other):
        return _binary(ops.Mul, self, self._operand(other))

    def __rmul__(self, other):
        return _binary(ops.Mul, self._operand(other), self)

    def __truediv__(self, other):
        return _binary(ops.Div, self, self._operand(other))

    def __rtruediv__(self, other):
        return _binary(ops.Div, self._operand(other), self)

    def __pow__(self, exponent):
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
            return _apply(ops.PowScalar, self, exponent=exponent)
        return _binary(ops.Pow, self, self._operand(exponent))

    def __rpow__(self, base):
        return _binary(ops.Pow, self._operand(base), self)

    def __neg__(self):
        return _apply(ops.Neg, self)

    def __matmul__(self, other):
        return matmul(self, self._operand(other))

    def __rmatmul__(self, other):
        return matmul(self._operand(other), self)

    # comparisons give constant (non-differentiable) boolean tensors
    def _compare(self, other, kind):
        return _apply(ops.Compare, self, self._operand(other), kind=kind)

    def __lt__(self, other):
        return self._compare(other, "lt")

    def __le__(self, other):
        return self._compare(other, "le")

    def __gt__(self, other):
        return self._compare(other, "gt")

    def __ge__(self, other):
        return self._compare(other, "ge")

    def eq(self, other):
        return self._compare(other, "eq")

    def ne(self, other):
        return self._compare(other, "ne")

    __hash__ = object.__hash__  # tensors are used as dict keys by identity, as in PyTorch

    def __bool__(self):
        if _tracer is not None:
            _tracer.refuse(self, "bool() (an if or a comparison chain)")
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.data)

    # ----------------------------------------------------------------- elementwise

    def exp(self):
        return _apply(ops.Exp, self)

    def log(self):
        return _apply(ops.Log, self)

    def sqrt(self):
        return _apply(ops.Sqrt, self)

    def abs(self):
        return _apply(ops.Abs, self)

    def tanh(self):
        return _apply(ops.Tanh, self)

    def sigmoid(self):
        return _apply(ops.Sigmoid, self)

    def relu(self):
        return _apply(ops.Relu, self)

    def clip(self, min=None, max=None):  # noqa: A002 - PyTorch's argument names
        if min is None and max is None:
            raise ValueError("clip: at least one of min and max must be given")
        return _apply(ops.Clip, self, low=min, high=max)

    clamp = clip

    def maximum(self, other):
        return _binary(ops.Maximum, self, self._operand(other))

    def minimum(self, other):
        return _binary(ops.Minimum, self, self._operand(other))

    def softmax(self, dim=-1):
        return _apply(ops.Softmax, self, axis=dim)

    def log_softmax(self, dim=-1):
        return _apply(ops.LogSoftmax, self, axis=dim)

    # ----------------------------------------------------------------- reductions

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return _apply(ops.Sum, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return _apply(ops.Mean, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Largest value over axes (values only, like torch.amax)."""
        return _apply(ops.Max, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Smallest value over axes (values only, like torch.amin)."""
        return _apply(ops.Min, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims)

    amax, amin = max, min

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, correction=1,
            unbiased=None):
        """Variance; correction=1 (unbiased, PyTorch's default), 0 for the population variance."""
        if unbiased is not None:
            correction = 1 if unbiased else 0
        return _apply(ops.Var, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims,
                      correction=correction)

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return _apply(ops.LogSumExp, self, axis=_dim(axis, dim), keepdims=keepdim or keepdims)

    def argmax(self, axis=None, *, dim=None):
        return Tensor._wrap(self.data.argmax(axis=_dim(axis, dim)))

    def argmin(self, axis=None, *, dim=None):
        return Tensor._wrap(self.data.argmin(axis=_dim(axis, dim)))

    # ----------------------------------------------------------------- shape

    def reshape(self, *shape):
        shape = _unpack_sizes(shape)
        return _apply(ops.Reshape, self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        shape = self.shape
        start, end = start_dim % max(len(shape), 1), end_dim % max(len(shape), 1)
        merged = int(np.prod(shape[start:end + 1]))
        return self.reshape(shape[:start] + (merged,) + shape[end + 1:])

    def permute(self, *dims):
        dims = _unpack_sizes(dims)
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise ValueError(
                f"permute: dims must be a permutation of 0..{self.ndim - 1}, got {dims}")
        return _apply(ops.Permute, self, axes=tuple(d % self.ndim for d in dims))

    def transpose(self, dim0: int = -2, dim1: int = -1):
        """Swap two dimensions (PyTorch's transpose)."""
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return _apply(ops.Permute, self, axes=axes)

    @property
    def T(self):
        if self.ndim != 2:
            raise ValueError(
                f".T is for 2-D tensors, got {self.ndim}-D; use transpose() or permute()")
        return _apply(ops.Permute, self, axes=(1, 0))

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            axes = normalize_axes(dim, self.ndim)
            shape = tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1))
        return self.reshape(shape)

    def unsqueeze(self, dim: int):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def broadcast_to(self, *shape):
        shape = _unpack_sizes(shape)
        return _apply(ops.BroadcastTo, self, shape=shape)

    def expand(self, *sizes):
        """Broadcast to sizes; -1 keeps a dimension (PyTorch's expand)."""
        sizes = _unpack_sizes(sizes)
        offset = len(sizes) - self.ndim
        shape = tuple(self.shape[i - offset] if n == -1 else n for i, n in enumerate(sizes))
        return self.broadcast_to(shape)

    def __getitem__(self, index):
        return _apply(ops.GetItem, self, index=_index_arrays(index, self._xp()))

    def split(self, split_size_or_sections, dim: int = 0):
        """Pieces of `split_size` along dim (last may be smaller), or of the given sizes."""
        length = self.shape[dim]
        if isinstance(split_size_or_sections, int):
            size = split_size_or_sections
            sizes = [min(size, length - start) for start in range(0, length, size)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != length:
                raise ValueError(f"split: sizes {sizes} must add up to {length} along dim {dim}")
        return _apply(ops.Split, self, sizes=sizes, axis=dim)

    def chunk(self, chunks: int, dim: int | None = None, *, axis=None):
        dim = _dim(axis, dim) or 0
        length = self.shape[dim]
        size = -(-length // chunks)
        return self.split(size, dim)

    def unbind(self, dim: int = 0):
        return _apply(ops.Unbind, self, axis=dim)


# --------------------------------------------------------------------------- the engine


def _check_devices(arrays, fn_cls) -> None:
    # Arrays of one type (all NumPy, the common case) are on one device: only a mix of
    # array types needs the device names compared.
    kind = type(arrays[0])
    for a in arrays[1:]:
        if type(a) is not kind:
            device = backend.device_of(arrays[0])
            if backend.device_of(a) != device:
                raise RuntimeError(
                    f"{fn_cls.__name__}: expected all tensors on the same device, got "
                    f"'{device}' and '{backend.device_of(a)}'")


def _apply(fn_cls, *inputs: Tensor, **params):
    """Run an op forward on the inputs' arrays and, when grad is on, record it in the graph.

    Returns a Tensor, or a tuple of Tensors for ops whose forward returns a tuple (split,
    unbind). Also the public way to use ops defined outside this package (`apply_op`).
    """
    arrays = [t.data for t in inputs]
    if len(arrays) > 1:
        _check_devices(arrays, fn_cls)
    fn = fn_cls(**params)
    fn.xp = np if type(arrays[0]) is np.ndarray else backend.get_array_module(arrays[0])
    out = fn.forward(*arrays)
    needs_grad = [t.requires_grad for t in inputs]
    record = _grad_enabled and fn_cls.differentiable and True in needs_grad
    if record:
        fn.inputs = inputs
        fn.needs_input_grad = tuple(needs_grad)
        fn.recorded_at = _version_clock
    if isinstance(out, tuple):
        fn.num_outputs, fn.multi_output = len(out), True
        if record:
            result = tuple(Tensor._wrap(o, True, fn, i) for i, o in enumerate(out))
        else:
            result = tuple(Tensor._wrap(o) for o in out)
    else:
        result = Tensor._wrap(out, True, fn, 0) if record else Tensor._wrap(out)
    if _tracer is not None:  # tg.scan is recording a step function: show it this op
        _tracer.record(fn_cls, params, inputs, result)
    return result


apply_op = _apply


def _binary(fn_cls, a: Tensor, b: Tensor) -> Tensor:
    """A binary op where an integer (or bool) operand never promotes a floating one: it is cast
    to the other's dtype first (as PyTorch does), so float32 stays float32."""
    a_float, b_float = _is_float(a.dtype), _is_float(b.dtype)
    if a_float and not b_float:
        b = _apply(_Cast, b, dtype=a.dtype)
    elif b_float and not a_float:
        a = _apply(_Cast, a, dtype=b.dtype)
    return _apply(fn_cls, a, b)


def _topological_order(root_node) -> list:
    """Nodes reachable from root_node, each after every node that consumes its outputs.

    Iterative depth-first search (no recursion limit): post-order, then reversed.
    """
    order, visited = [], set()
    stack = [(root_node, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for t in node.__dict__.get("inputs") or ():
            child = t._node
            if child is not None and id(child) not in visited:
                stack.append((child, False))
    order.reverse()
    return order


def _unbroadcast(grad, shape):
    """Sum a gradient computed in a broadcast shape back to the input's shape.

    This is the one place where broadcasting is undone: ops return gradients in whatever
    shape their forward produced.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return grad  # fewer dims than the input: not a broadcast; the caller reports it
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _run_backward(root: Tensor, grad, retain_graph: bool) -> None:
    global retaining_graph
    retaining_graph = retain_graph  # ops that free as they go (tg.scan's steps) read it
    if root._node is None:
        _accumulate_leaf(root, grad)
        return
    pending = {id(root._node): [None] * root._node.num_outputs}
    pending[id(root._node)][root._index] = grad
    changed_since: dict = {}  # clock -> tensors changed in place after it (for this backward)
    for fn in _topological_order(root._node):
        grads = pending.pop(id(fn), None)
        if grads is None:
            continue  # reached only through outputs that got no gradient
        inputs = fn.__dict__.get("inputs")
        if inputs is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved "
                "arrays after they have already been freed). Saved intermediate values of the "
                "graph are freed when you call .backward(). Specify retain_graph=True if you "
                "need to backward through the graph a second time.")
        if fn.__dict__.get("recorded_at", _version_clock) != _version_clock:
            _check_saved_arrays(fn, changed_since)  # something changed in place since fn ran
        retained = fn.__dict__.get("_retained")
        if retained:
            for index, ref in retained.items():
                t = ref()
                if t is not None and grads[index] is not None:
                    _accumulate_leaf(t, grads[index])  # accumulates like a leaf (PyTorch)
        input_grads = fn.backward(grads if fn.multi_output else grads[0])
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for t, g, needed in zip(inputs, input_grads, fn.needs_input_grad):
            if g is None or not needed:
                continue
            if g.shape != t.data.shape:
                g = _unbroadcast(g, t.data.shape)
                if g.shape != t.data.shape:
                    raise RuntimeError(
                        f"{type(fn).__name__}.backward returned a gradient of shape {g.shape} "
                        f"for an input of shape {t.data.shape}")
            if g.dtype != t.data.dtype:
                g = g.astype(t.data.dtype)
            child = t._node
            if child is None:
                _accumulate_leaf(t, g)
                continue
            slots = pending.get(id(child))
            if slots is None:
                slots = pending[id(child)] = [None] * child.num_outputs
            previous = slots[t._index]
            slots[t._index] = g if previous is None else previous + g
        if not retain_graph:
            _release(fn)


def _check_saved_arrays(fn, changed_since: dict) -> None:
    """Raise when fn kept, for its backward, an array that was changed in place after fn ran.

    Called only for nodes recorded before the last in-place change. An array counts as kept
    when it sits in fn's attributes (alone or in a tuple/list), or is an input of an op class
    with `saves_inputs = True` (ops that keep copies or derived forms of their inputs, such as
    the fused recurrent layers); views count, so `h @ W.T` is caught when W changes. Ops that
    keep nothing of an input (Add) never raise, as in PyTorch.
    """
    since = fn.recorded_at
    changed = changed_since.get(since)
    if changed is None:
        changed = changed_since[since] = [
            (t, clocks) for t, clocks in list(_changed_tensors.items()) if clocks[-1] > since]
    for tensor, clocks in changed:
        if any(_may_share_memory(kept, tensor.data) for kept in _kept_arrays(fn, tensor.data)):
            raise RuntimeError(_modified_message(fn, tensor, clocks))


def _kept_arrays(fn, like):
    """The arrays (of like's array type) that fn holds for its backward."""
    kind = type(like)
    for name, value in fn.__dict__.items():
        if name == "inputs":
            if getattr(fn, "saves_inputs", False):
                yield from (t.data for t in value if type(t.data) is kind)
        elif type(value) is kind:
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (v for v in value if type(v) is kind)


def _may_share_memory(a, b) -> bool:
    share = getattr(backend.get_array_module(b), "may_share_memory", None)
    return a is b if share is None else bool(share(a, b))


def _modified_message(fn, tensor: Tensor, clocks: list) -> str:
    op = type(fn).__name__
    after = sum(1 for c in clocks if c > fn.recorded_at)
    expected = tensor._version - after
    if after == len(clocks) == _CHANGES_KEPT:  # older changes were not kept: a bound only
        expected = f"at most {expected}"
    if tensor._node is not None:
        what = f"output {tensor._index} of {type(tensor._node).__name__}"
    else:
        what = "a leaf Tensor" + (" (requires_grad=True)" if tensor.requires_grad else "")
    return (
        f"one of the variables needed for gradient computation has been modified by an inplace "
        f"operation: {what} of shape {tuple(tensor.shape)} and dtype {tensor.dtype}, kept by "
        f"{op} for its backward, is at version {tensor._version}; expected version {expected}. "
        f"It was changed after the forward (an optimizer.step(), load_state_dict() or nn.init "
        f"call between the forward and a backward(retain_graph=True)?): run the forward again "
        f"after changing it.")


def _keep_edges_only(fn, indices) -> None:
    """Let node fn keep, of its non-leaf inputs at `indices`, only what backward needs (their
    node, output index, shape and dtype), not their arrays, which can then be freed. For ops
    that hold what their backward needs themselves (tg.scan drops its xs this way)."""
    inputs = list(fn.inputs)
    for i in indices:
        t = inputs[i]
        if t._node is not None:
            xp = backend.get_array_module(t.data)
            shape_only = xp.broadcast_to(xp.zeros((), dtype=t.data.dtype), t.data.shape)
            inputs[i] = Tensor._wrap(shape_only, t.requires_grad, t._node, t._index)
    fn.inputs = tuple(inputs)


def _accumulate_leaf(t: Tensor, g) -> None:
    """Leaf gradients own their memory (ops may return shared or read-only views)."""
    if t._grad is None:
        t._grad = Tensor._wrap(g.copy())
    else:
        t._grad.data += g


def _release(fn) -> None:
    """Drop an op's saved arrays and its references to its inputs once backward used them."""
    num_outputs, multi_output = fn.num_outputs, fn.multi_output
    fn.__dict__.clear()
    if multi_output:  # set per instance by _apply; single-output ops use the class defaults
        fn.num_outputs, fn.multi_output = num_outputs, True
    fn.inputs = None


class _Cast(ops.Function):
    """y = x.astype(dtype);  dx = dy cast back (by the engine)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        return x.astype(self.dtype)

    def backward(self, dy):
        return dy


class _Detach(ops.Function):
    """y = x, sharing memory, with no gradient: an op (not a bare copy of the array) so that
    a recorded step (tg.scan) replays it at every step."""

    differentiable = False

    def forward(self, x):
        return x

    def backward(self, dy):
        return None


class _ToDevice(ops.Function):
    """y = x moved to another device;  dx = dy moved back."""

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, dy):
        return backend.to_device(dy, self.source)


def _index_arrays(index, xp):
    """Turn Tensors and lists inside an index into arrays of the tensor's backend."""
    def convert(item):
        if isinstance(item, Tensor):
            return item.data
        if isinstance(item, list):
            return xp.asarray(item)
        if isinstance(item, np.ndarray) and xp is not np:
            return xp.asarray(item)
        return item
    if isinstance(index, tuple):
        return tuple(convert(i) for i in index)
    return convert(index)


# --------------------------------------------------------------------------- functions


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return like._operand(x)
    return Tensor(x)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b with NumPy's rules; shapes are checked here so the error names both."""
    a, b = _as_tensor(a), _as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: both operands must have at least one dimension")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k_a} != {k_b})")
    return _apply(ops.MatMul, a, b)


def where(condition, input, other) -> Tensor:  # noqa: A002 - PyTorch's names
    """Elementwise choice: input where condition, else other. condition is not differentiated."""
    ref = input if isinstance(input, Tensor) else other if isinstance(other, Tensor) else None
    if ref is None:
        ref = Tensor(input)
    if not isinstance(condition, Tensor):
        condition = Tensor._wrap(ref._xp().asarray(condition))
    if condition.dtype != bool:
        condition = _apply(_Cast, condition, dtype=np.dtype(bool))
    return _apply(ops.Where, condition, _as_tensor(input, ref), _as_tensor(other, ref))


def maximum(a, b) -> Tensor:
    a = _as_tensor(a, b if isinstance(b, Tensor) else None)
    return a.maximum(b)


def minimum(a, b) -> Tensor:
    a = _as_tensor(a, b if isinstance(b, Tensor) else None)
    return a.minimum(b)


def _check_same_rank(tensors, name: str) -> None:
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    shape = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != len(shape):
            raise ValueError(f"{name}: tensor {i} has {t.ndim} dims, tensor 0 has {len(shape)}")


def cat(tensors, dim: int | None = None, *, axis=None) -> Tensor:
    """Concatenate along an existing dimension (`concat` is the same function)."""
    tensors = [_as_tensor(t) for t in tensors]
    _check_same_rank(tensors, "cat")
    dim = _dim(axis, dim) or 0
    return _apply(ops.Concat, *tensors, axis=dim)


concat = cat


def stack(tensors, dim: int | None = None, *, axis=None) -> Tensor:
    """Stack equal-shaped tensors along a new dimension."""
    tensors = [_as_tensor(t) for t in tensors]
    _check_same_rank(tensors, "stack")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: tensor {i} has shape {t.shape}, tensor 0 has {tensors[0].shape}")
    dim = _dim(axis, dim) or 0
    return _apply(ops.Stack, *tensors, axis=dim)


def split(tensor: Tensor, split_size_or_sections, dim: int = 0):
    return tensor.split(split_size_or_sections, dim)


def chunk(tensor: Tensor, chunks: int, dim: int = 0):
    return tensor.chunk(chunks, dim)


def unbind(tensor: Tensor, dim: int = 0):
    return tensor.unbind(dim)


# --------------------------------------------------------------------------- creation


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Create a tensor (a copy of `data`), like torch.tensor."""
    if isinstance(data, Tensor):
        data = data.data.copy()
    elif hasattr(data, "copy") and hasattr(data, "dtype"):
        data = data.copy()
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _shape(shape) -> tuple[int, ...]:
    shape = _unpack_sizes(shape)
    for n in shape:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"shape must be non-negative integers, got {shape}")
    return tuple(int(n) for n in shape)


def _filled(fill, shape, dtype, device, requires_grad) -> Tensor:
    device = backend.normalize_device(device)
    xp = backend.xp_for(device)
    dtype = np.dtype(dtype) if dtype is not None else _default_dtype
    return Tensor(xp.full(_shape(shape), fill, dtype=dtype), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(1, shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(fill_value, (shape,) if isinstance(shape, int) else tuple(shape), dtype,
                   device, requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                 requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def _random(kind, shape, dtype, device, requires_grad) -> Tensor:
    device = backend.normalize_device(device)
    dtype = np.dtype(dtype) if dtype is not None else _default_dtype
    if dtype.kind != "f":
        raise TypeError(f"{kind}: dtype must be floating point, got {dtype}")
    gen = backend.get_generator(device)
    shape = _shape(shape)
    draw = gen.standard_normal if kind == "randn" else gen.random
    data = draw(shape, dtype=dtype)
    return Tensor(data, requires_grad=requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the device's seeded generator (see manual_seed)."""
    return _random("randn", shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator (see manual_seed)."""
    return _random("rand", shape, dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Like torch.arange: integers give int64, any float argument gives the default dtype."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        floats = any(isinstance(v, float) for v in (start, end, step))
        dtype = _default_dtype if floats else np.int64
    xp = backend.xp_for(backend.normalize_device(device))
    return Tensor(xp.arange(start, end, step, dtype=dtype), requires_grad=requires_grad)


manual_seed = backend.manual_seed
