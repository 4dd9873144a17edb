"""An emulated CuPy for the test suite: CPU-only, and as strict as the real one.

The tests put the folder above this package first on the import path (conftest.py, and
PYTHONPATH for the subprocesses it starts) when no real GPU is usable, so that
`tinygrad_rnn.backend` finds it through its ordinary `import cupy`. The library never
imports anything from tests/.

What it keeps from CuPy, because that is where device bugs hide:

* `ndarray` is its own type, wrapping a NumPy array. Implicit conversion to NumPy raises
  (`np.asarray(x)`, `__array__`), as in CuPy: `.get()` / `cupy.asnumpy` copy explicitly.
* A NumPy array mixed into a device operation (ufuncs, module functions, kernels, the
  right-hand side of an assignment) raises TypeError; NumPy and Python scalars are fine.
  Only `asarray` / `array` move host data onto the device.
* Reductions return 0-d device arrays, never NumPy scalars.
* Floating-point warnings are never raised (CuPy has no np.errstate).
* `random.default_rng(seed)` generators keep their state in a device array
  (`bit_generator._state`), as CuPy's cuRAND generators do.
* `ElementwiseKernel` compiles the kernel's own source text (body and preamble) for the host
  with the C++ compiler (kernel_build.py) and runs it: argument order, count, dtypes, shapes
  and the index arithmetic inside the body are exercised exactly as written.
"""

from __future__ import annotations

import numbers
import struct
import sys

import numpy as _np

__version__ = "13.0.0+emulated"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def _unsupported(value):
    return TypeError(f"Unsupported type {type(value)}")


def _device(value, allow_lists: bool = True):
    """The NumPy array behind a device value; raise for host arrays (as CuPy does)."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, _np.ndarray):
        raise _unsupported(value)
    if isinstance(value, (list, tuple)) and allow_lists:
        return type(value)(_device(v) for v in value)
    return value


def _wrap(value):
    """Device arrays for whatever NumPy returned (0-d arrays for NumPy scalars)."""
    if isinstance(value, _np.ndarray):
        return ndarray._from(value)
    if isinstance(value, _np.generic):
        return ndarray._from(_np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _index(key):
    """Indices may hold device arrays, NumPy arrays, lists, slices and ints (CuPy copies
    host index arrays over)."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


def _call(function, args, kwargs):
    args = [_device(a) for a in args]
    kwargs = {k: _device(v) for k, v in kwargs.items()}
    with _np.errstate(all="ignore"):
        return _wrap(function(*args, **kwargs))


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: a NumPy array that refuses to be used as one implicitly."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from(cls, array: _np.ndarray) -> ndarray:
        out = object.__new__(cls)
        out._a = array
        return out

    # ------------------------------------------------------------- no implicit host copies

    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for value in list(inputs) + list(kwargs.get("out", ())):
            if isinstance(value, _np.ndarray):
                raise _unsupported(value)
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        try:  # np.concatenate(device arrays) -> cupy.concatenate, as in CuPy
            mine = getattr(sys.modules[__spec__.name], func.__name__)
        except AttributeError:
            return NotImplemented
        return mine(*args, **kwargs)

    def get(self, stream=None, order="C", out=None) -> _np.ndarray:
        """The values as a new NumPy array (a device-to-host copy)."""
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, array, stream=None) -> None:
        if not isinstance(array, _np.ndarray):
            raise TypeError(f"set: expected a numpy.ndarray, got {type(array)}")
        self._a[...] = array

    # ------------------------------------------------------------- attributes

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._from(self._a.T))
    real = property(lambda self: ndarray._from(self._a.real))
    device = property(lambda self: cuda.Device(0))

    @property
    def base(self):
        return None if self._a.base is None else ndarray._from(self._a.base)

    @property
    def data(self):
        return _MemoryPointer(self._a.__array_interface__["data"][0])

    def __getattr__(self, name):
        if name.startswith("_") or name in ("tofile", "dump", "dumps", "tobytes", "ctypes"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._a, name)
        if not callable(method):
            return _wrap(method)
        return lambda *args, **kwargs: _call(method, args, kwargs)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def copy(self, order="C"):
        return ndarray._from(self._a.copy(order=order))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return ndarray._from(self._a.astype(dtype, order=order, copy=copy))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __repr__(self):
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # scalars out of 0-d / one-element arrays are explicit transfers in CuPy too
    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __complex__(self):
        return complex(self._a)

    # ------------------------------------------------------------- indexing

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _device(value, allow_lists=False)

    # ------------------------------------------------------------- arithmetic

    def __neg__(self):
        return _call(_np.negative, (self,), {})

    def __pos__(self):
        return self.copy()

    def __abs__(self):
        return _call(_np.absolute, (self,), {})

    def __invert__(self):
        return _call(_np.invert, (self,), {})


def _binary(ufunc):
    def forward(self, other):
        return _call(ufunc, (self, other), {})

    def reflected(self, other):
        return _call(ufunc, (other, self), {})

    def in_place(self, other):
        _call(ufunc, (self, other), {"out": self})
        return self

    return forward, reflected, in_place


for _name, _ufunc in [("add", _np.add), ("sub", _np.subtract), ("mul", _np.multiply),
                      ("truediv", _np.true_divide), ("floordiv", _np.floor_divide),
                      ("mod", _np.remainder), ("pow", _np.power), ("matmul", _np.matmul),
                      ("and", _np.bitwise_and), ("or", _np.bitwise_or),
                      ("xor", _np.bitwise_xor), ("lshift", _np.left_shift),
                      ("rshift", _np.right_shift)]:
    _f, _r, _i = _binary(_ufunc)
    setattr(ndarray, f"__{_name}__", _f)
    setattr(ndarray, f"__r{_name}__", _r)
    setattr(ndarray, f"__i{_name}__", _i)

for _name, _ufunc in [("eq", _np.equal), ("ne", _np.not_equal), ("lt", _np.less),
                      ("le", _np.less_equal), ("gt", _np.greater), ("ge", _np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc)[0])
ndarray.__hash__ = None


class _MemoryPointer:
    def __init__(self, ptr: int):
        self.ptr = ptr


# --------------------------------------------------------------------------- module functions


def asarray(a, dtype=None, order=None, *, blocking=False):
    """Host data (NumPy arrays, lists, scalars) or device arrays as a device array."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == _np.dtype(dtype) else a.astype(dtype)
    return ndarray._from(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return ndarray._from(_np.array(obj._a, dtype=dtype, copy=copy, order=order,
                                       ndmin=ndmin))
    return ndarray._from(_np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    return ndarray._from(_np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    """This module when any argument is one of its arrays, else NumPy (as in CuPy)."""
    for a in args:
        if isinstance(a, ndarray):
            return sys.modules[__spec__.name]
    return _np


def fuse(*args, **kwargs):
    def decorate(function):
        return function
    return decorate(args[0]) if args and callable(args[0]) else decorate


_NOT_IN_CUPY = {"errstate", "seterr", "geterr", "asmatrix", "matrix", "loadtxt", "genfromtxt",
                "save", "savez", "load", "fromfile", "frombuffer", "set_printoptions",
                "printoptions", "array2string", "object_", "str_", "bytes_", "testing"}


def __getattr__(name):
    """NumPy's functions and constants with CuPy's rules (see the module docstring)."""
    if name.startswith("__") or name in _NOT_IN_CUPY:
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    value = getattr(_np, name)
    if isinstance(value, _np.ufunc):
        return _Ufunc(value)
    if isinstance(value, (type, _np.dtype, numbers.Number)) or value is None:
        return value  # dtypes, constants, newaxis
    if callable(value):
        function = value

        def device_function(*args, **kwargs):
            return _call(function, args, kwargs)
        device_function.__name__ = name
        return device_function
    raise AttributeError(f"module 'cupy' has no attribute {name!r}")


class _Ufunc:
    """A NumPy ufunc that takes device arrays only."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, args, kwargs)

    def reduce(self, *args, **kwargs):
        return _call(self._ufunc.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _call(self._ufunc.accumulate, args, kwargs)

    def at(self, a, indices, b=None):
        self._ufunc.at(_device(a), _index(indices), *(() if b is None else (_device(b),)))


# --------------------------------------------------------------------------- kernels


class ElementwiseKernel:
    """cupy.ElementwiseKernel, run by a host build of the same source text."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, loop_prep="",
                 after_loop="", options=(), **kwargs):
        import kernel_build
        self._spec = kernel_build.KernelSpec(in_params, out_params, operation, name, preamble)
        self.name = name
        self.no_return, self.return_tuple = no_return, return_tuple

    def __call__(self, *args, size=None, block_size=None, stream=None):
        import kernel_build
        for a in args:
            if isinstance(a, _np.ndarray):
                raise _unsupported(a)
        arrays = [a._a if isinstance(a, ndarray) else a for a in args]
        outputs = kernel_build.run_on_host(self._spec, arrays, size=size)
        if self.no_return:
            return None
        outputs = tuple(ndarray._from(o) for o in outputs)
        if len(outputs) == 1 and not self.return_tuple:
            return outputs[0]
        return outputs


class RawKernel:
    """cupy.RawKernel: the project ships none; launching one here says so."""

    def __init__(self, code, name, options=(), backend="nvrtc", **kwargs):
        self.code, self.name = code, name

    def __call__(self, grid, block, args, **kwargs):
        raise NotImplementedError(
            f"the emulated CuPy cannot launch RawKernel {self.name!r}: add a host build of it "
            "to tests/kernel_build.py")


# --------------------------------------------------------------------------- random


class _BitGenerator:
    """Keeps the generator state in a device array, as CuPy's cuRAND generators do."""

    _FORMAT = "<16s16sBI"

    def __init__(self, seed=None):
        self._state = ndarray._from(_np.zeros(struct.calcsize(self._FORMAT), dtype=_np.int8))
        self._store(_np.random.PCG64(seed))

    def state(self) -> int:
        return self._state.data.ptr

    def _store(self, bits) -> None:
        s = bits.state
        raw = struct.pack(self._FORMAT, s["state"]["state"].to_bytes(16, "little"),
                          s["state"]["inc"].to_bytes(16, "little"), s["has_uint32"],
                          s["uinteger"])
        self._state._a[...] = _np.frombuffer(raw, dtype=_np.int8)

    def _load(self):
        state, inc, has, value = struct.unpack(self._FORMAT, self._state._a.tobytes())
        bits = _np.random.PCG64()
        bits.state = {"bit_generator": "PCG64",
                      "state": {"state": int.from_bytes(state, "little"),
                                "inc": int.from_bytes(inc, "little")},
                      "has_uint32": has, "uinteger": value}
        return bits


class _Random:
    XORWOW = _BitGenerator

    class Generator:
        _METHODS = {"random", "standard_normal", "integers", "uniform", "normal", "beta",
                    "binomial", "exponential", "gamma", "geometric", "poisson",
                    "standard_exponential", "standard_gamma", "logistic", "chisquare"}

        def __init__(self, bit_generator):
            self.bit_generator = bit_generator

        def __getattr__(self, name):
            if name not in self._METHODS:
                raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r}")

            def draw(*args, **kwargs):
                bits = self.bit_generator._load()
                out = _call(getattr(_np.random.Generator(bits), name), args, kwargs)
                self.bit_generator._store(bits)
                return out if isinstance(out, ndarray) else asarray(out)
            return draw

    def default_rng(self, seed=None):
        return self.Generator(_BitGenerator(seed))

    def __init__(self):
        self._legacy = self.default_rng()

    def seed(self, seed=None):
        self._legacy = self.default_rng(seed)

    def rand(self, *shape, dtype=float):
        return self._legacy.random(shape, dtype=dtype)

    def randn(self, *shape, dtype=float):
        return self._legacy.standard_normal(shape, dtype=dtype)


random = _Random()


# --------------------------------------------------------------------------- cuda


class _Runtime:
    @staticmethod
    def getDeviceCount():  # noqa: N802  (CuPy's name)
        return 1

    @staticmethod
    def getDeviceProperties(device):  # noqa: N802
        if device != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")
        return {"name": b"Emulated CUDA device (CPU)", "major": 9, "minor": 0,
                "totalGlobalMem": 1 << 34, "multiProcessorCount": 1}

    @staticmethod
    def runtimeGetVersion():  # noqa: N802
        return 13000

    @staticmethod
    def deviceSynchronize():  # noqa: N802
        return None


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    compute_capability = "90"

    def synchronize(self):
        return None

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def mem_info(self):
        return (1 << 34, 1 << 34)


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        return None


class _Event:
    def __init__(self, *args, **kwargs):
        import time
        self._time = time.perf_counter
        self.at = None

    def record(self, stream=None):
        self.at = self._time()

    def synchronize(self):
        return None


class _Cuda:
    runtime = _Runtime()
    Device = _Device
    Event = _Event
    _pool = _MemoryPool()

    @staticmethod
    def get_default_memory_pool():
        return _Cuda._pool

    @staticmethod
    def get_elapsed_time(start, end):
        return (end.at - start.at) * 1000.0

    @staticmethod
    def is_available():
        return True


cuda = _Cuda()
