"""Build the project's CUDA elementwise kernels from their source text, for the host and
for the GPU, without a GPU.

A kernel is the four strings given to `cupy.ElementwiseKernel` (in_params, out_params,
operation, name) plus its preamble (the `__host__ __device__` functions of
tinygrad_rnn/ops/fused_kernels.cuh). `render` wraps them the way CuPy does (a loop over the
index `i`; non-raw parameters are the element at `i`, raw ones whole arrays indexed by the
body; `T` the arrays' dtype) as

* C++ for the host: built with g++ into a small shared library (`host_library`, cached by
  the hash of its source) that `run_on_host` calls through ctypes; the emulated CuPy runs
  every kernel launch this way, and tests/ops/test_kernel_arithmetic.py compares the results
  with the NumPy step math;
* CUDA for the device: `compile_for_gpus` builds it with nvcc for sm_80 and sm_90, which
  needs no GPU.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

_C_TYPES = {"bool": "bool", "int8": "signed char", "uint8": "unsigned char",
            "int16": "short", "int32": "int", "uint32": "unsigned int",
            "int64": "long long", "uint64": "unsigned long long",
            "float32": "float", "float64": "double"}
ARCHITECTURES = ("sm_80", "sm_90")


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: str      # a dtype name ("float32", "int32") or a placeholder ("T")
    raw: bool
    output: bool

    @property
    def placeholder(self) -> bool:
        return self.type not in _C_TYPES


def _parse(text: str, output: bool) -> list[Param]:
    params = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        words = item.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"cannot parse kernel parameter {item!r}")
        params.append(Param(words[1], words[0], raw, output))
    return params


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    in_params: str
    out_params: str
    operation: str
    name: str
    preamble: str = ""

    @property
    def params(self) -> list[Param]:
        return _parse(self.in_params, False) + _parse(self.out_params, True)


def _c_type(param: Param, types: dict[str, str]) -> str:
    return param.type if param.placeholder else _C_TYPES[param.type]


def _kernel_text(spec: KernelSpec, types: dict[str, str], target: str, name: str) -> list[str]:
    """The kernel function: a loop over i whose body declares the parameters, then runs
    the kernel's operation (as CuPy does)."""
    declarations, arguments = [], []
    for k, p in enumerate(spec.params):
        c = _c_type(p, types)
        const = "" if p.output else "const "
        if target == "host":
            pointer = f"(({const}{c} *)args[{k}])"
            if p.raw:
                declarations.append(f"{const}{c} *{p.name} = {pointer};")
            elif p.output:
                declarations.append(f"{c} &{p.name} = {pointer}[i];")
            else:  # an array element, or a scalar (a size-1 buffer) read at 0
                declarations.append(f"const {c} {p.name} = {pointer}[_scalar_{k} ? 0 : i];")
        else:
            if p.raw:
                arguments.append(f"{const}{c} *__restrict__ {p.name}")
            elif p.output:
                arguments.append(f"{c} *__restrict__ _{p.name}")
                declarations.append(f"{c} &{p.name} = _{p.name}[i];")
            else:
                arguments.append(f"const {c} *__restrict__ _{p.name}")
                declarations.append(f"const {c} {p.name} = _{p.name}[i];")
    body = "\n        ".join(declarations) + "\n" + spec.operation
    if target == "host":
        scalars = "".join(f", int _scalar_{k}" for k, p in enumerate(spec.params))
        return [f'extern "C" void {name}(ptrdiff_t n, void **args{scalars}) {{',
                "    for (ptrdiff_t i = 0; i < n; ++i) {", f"        {body}", "    }", "}"]
    return [f'extern "C" __global__ void {name}(ptrdiff_t n, ' + ", ".join(arguments) + ") {",
            "    for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; "
            "i < n; i += (ptrdiff_t)gridDim.x * blockDim.x) {",
            f"        {body}", "    }", "}"]


def render(kernels: list[tuple[KernelSpec, dict[str, str]]], target: str) -> str:
    """Kernels as one C++ ("host") or CUDA ("device") translation unit.

    kernels: (spec, types) pairs, types mapping a placeholder to a C type ("T" -> "float").
    Each kernel sits in its own namespace with its typedefs, after the (shared) preamble. The
    host function of a single kernel is `extern "C" void <name>(ptrdiff_t n, void **args,
    int scalar flags...)`; device kernels are `__global__` grid-stride loops named
    <name>_<type>.
    """
    lines = ["#include <cstddef>"]
    if target == "host":
        lines += ["#include <cmath>",
                  "using std::tanh; using std::exp; using std::log; using std::sqrt;",
                  "using std::fabs; using std::fmax; using std::fmin;"]
    for preamble in dict.fromkeys(spec.preamble for spec, _ in kernels):
        lines += [preamble, ""]
    for k, (spec, types) in enumerate(kernels):
        name = spec.name
        if len(kernels) > 1:
            name += "_" + "_".join(c.replace(" ", "_") for c in types.values())
        lines.append(f"namespace unit_{k} {{")
        lines += [f"typedef {c} {p};" for p, c in types.items()]
        lines += _kernel_text(spec, types, target, name)
        lines += ["}", ""]
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    """Where built libraries are kept between runs ($TINYGRAD_RNN_KERNEL_CACHE or a folder
    in the temp dir), keyed by the hash of their source."""
    path = os.environ.get("TINYGRAD_RNN_KERNEL_CACHE") or os.path.join(
        tempfile.gettempdir(), f"tinygrad_rnn-kernels-{os.getuid()}")
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _build(source: str, suffix: str, command) -> Path:
    """Compile `source` once (the output is cached by the source's hash); return the output."""
    key = hashlib.sha256((" ".join(command(Path("x"), Path("y"))) + source).encode())
    target = cache_dir() / f"{key.hexdigest()[:24]}{suffix}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        src = Path(work) / ("kernel.cu" if suffix != ".so" else "kernel.cpp")
        src.write_text(source)
        out = Path(work) / f"out{suffix}"
        result = subprocess.run(command(src, out), capture_output=True, text=True)
        if result.returncode != 0:
            numbered = "\n".join(f"{n + 1:4d}  {line}"
                                 for n, line in enumerate(source.splitlines()))
            raise RuntimeError(f"compiling kernel failed:\n{result.stderr}\n{numbered}")
        os.replace(out, target)  # atomic: concurrent test processes may build the same file
    return target


def host_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        found = "/usr/local/cuda/bin/nvcc"
    return found


_libraries: dict[tuple[KernelSpec, tuple], object] = {}


def host_function(spec: KernelSpec, types: dict[str, str]):
    """The kernel built for the host, as a ctypes function (built once per session)."""
    key = (spec, tuple(sorted(types.items())))
    if key not in _libraries:
        compiler = host_compiler()
        if compiler is None:
            raise RuntimeError("no C++ compiler (g++) found to build the kernels for the host")
        path = _build(render([(spec, types)], "host"), ".so", lambda src, out: [
            compiler, "-O2", "-shared", "-fPIC", "-std=c++17", "-o", str(out), str(src)])
        function = getattr(ctypes.CDLL(str(path)), spec.name)
        function.restype = None
        _libraries[key] = function
    return _libraries[key]


def compile_for_gpus(kernels: list[tuple[KernelSpec, dict[str, str]]],
                     architectures=ARCHITECTURES) -> Path:
    """Compile the device versions with nvcc, one fatbin for all the architectures."""
    compiler = nvcc()
    if compiler is None:
        raise RuntimeError("nvcc not found")
    gencode = []
    for arch in architectures:
        number = arch.split("_")[1]
        gencode += ["-gencode", f"arch=compute_{number},code=sm_{number}"]
    return _build(render(kernels, "device"), ".fatbin", lambda src, out: [
        compiler, "--fatbin", *gencode, "-std=c++17", "-Werror", "all-warnings", "-o",
        str(out), str(src)])


def run_on_host(spec: KernelSpec, args: list, size: int | None = None) -> list[np.ndarray]:
    """Launch the kernel on NumPy arrays as CuPy launches it on device arrays.

    Checks what CuPy checks: the argument count, that every array bound to a placeholder
    has the same dtype, that the non-raw arrays broadcast to one shape (the index space).
    Outputs not passed are allocated (non-raw only). Returns the output arrays.
    """
    params = spec.params
    n_in = sum(not p.output for p in params)
    if len(args) not in (n_in, len(params)):
        raise TypeError(f"Wrong number of arguments for {spec.name!r}: expected {n_in} or "
                        f"{len(params)}, got {len(args)}")
    types: dict[str, np.dtype] = {}
    for p, a in zip(params, args):
        if isinstance(a, np.ndarray) and p.placeholder:
            if types.setdefault(p.type, a.dtype) != a.dtype:
                raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {types[p.type]}")
        elif p.raw or (p.output and a is not None):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{spec.name}: {p.name} must be an array, got {type(a)}")
        if isinstance(a, np.ndarray) and not p.placeholder and a.dtype != np.dtype(p.type) \
                and (p.raw or p.output):
            raise TypeError(f"{spec.name}: {p.name} must be {p.type}, got {a.dtype}")
    shapes = [a.shape for p, a in zip(params, args) if not p.raw and isinstance(a, np.ndarray)]
    shape = np.broadcast_shapes(*shapes) if shapes else None
    if shape is None:
        if size is None:
            raise ValueError(f"{spec.name}: loop size is undecided (pass size=)")
        shape = (size,)
    elif size is not None and size != int(np.prod(shape)):
        raise ValueError(f"{spec.name}: size={size} does not match the arrays' shape {shape}")
    n = int(np.prod(shape))
    args = list(args) + [None] * (len(params) - len(args))
    buffers, copy_back, outputs, keep = [], [], [], []
    for p, a in zip(params, args):
        dtype = types.get(p.type, np.dtype(p.type) if not p.placeholder else None)
        if p.output and a is None:
            if p.raw:
                raise ValueError(f"{spec.name}: output {p.name} is raw and must be passed")
            a = np.empty(shape, dtype=dtype)
        if p.output:
            outputs.append(a)
        if not isinstance(a, np.ndarray):
            if dtype is None:
                raise TypeError(f"{spec.name}: cannot tell the type of scalar {p.name}")
            buffer = np.asarray(a, dtype=dtype).reshape(1)
            scalar = True
        elif p.raw:
            buffer, scalar = np.ascontiguousarray(a), False
            if p.output and buffer is not a:
                copy_back.append((a, buffer))
        else:
            if p.output and a.shape != shape:
                raise ValueError(f"{spec.name}: output {p.name} has shape {a.shape}, the "
                                 f"kernel's index space is {shape}")
            if p.output:
                buffer = np.ascontiguousarray(a)
                if buffer is not a:
                    copy_back.append((a, buffer))
                scalar = False
            else:
                scalar = a.size == 1 and n != 1
                buffer = (np.ascontiguousarray(a.reshape(1).astype(dtype)) if scalar else
                          np.ascontiguousarray(np.broadcast_to(a, shape), dtype=dtype))
        buffers.append((buffer, scalar))
        keep.append(buffer)
    types_c = {name: _C_TYPES[dt.name] for name, dt in types.items()}
    function = host_function(spec, types_c)
    pointers = (ctypes.c_void_p * len(buffers))(*(b.ctypes.data for b, _ in buffers))
    function(ctypes.c_ssize_t(n), pointers, *(ctypes.c_int(int(s)) for _, s in buffers))
    for original, buffer in copy_back:
        original[...] = buffer
    return outputs
