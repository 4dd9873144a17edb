"""Which array module does the work: NumPy on "cpu", CuPy on "cuda".

This is the only file that imports CuPy. Everything above it asks `get_array_module(x)` or
`xp_for(device)` and writes one body of code for both backends.

CuPy is found by a plain `import cupy` on first use. The test suite relies on exactly that:
without a GPU it puts an emulated CuPy (tests/emulated_cuda/cupy) first on the import path,
so that the "cuda" half of the suite runs through this same loading code.
"""

from __future__ import annotations

import sys

import numpy as np

DEVICES = ("cpu", "cuda")

_INSTALL_HINT = (
    "Install CuPy for your CUDA version, for example `pip install cupy-cuda12x` "
    "(or `pip install 'tinygrad_rnn[cuda]'`)."
)

_cupy = None  # the cupy module once imported successfully
_cupy_error: str | None = None  # why CuPy is unusable, once we have looked


def _load_cupy():
    """Import CuPy on first use and check that a GPU is visible; cache the answer."""
    global _cupy, _cupy_error
    if _cupy is not None or _cupy_error is not None:
        return _cupy
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        _cupy_error = f"CuPy is not installed ({type(exc).__name__}: {exc}). {_INSTALL_HINT}"
        return None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        _cupy_error = f"CuPy is installed but no CUDA GPU could be used ({exc})."
        return None
    if count < 1:
        _cupy_error = "CuPy is installed but no CUDA GPU is visible."
        return None
    _cupy = cupy
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and at least one GPU is visible."""
    return _load_cupy() is not None


def available_devices() -> list[str]:
    """The devices this machine can run on, "cpu" first."""
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def normalize_device(device) -> str:
    """Accept "cpu", "cuda", "cuda:0" (one GPU is used); reject anything else clearly."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name.startswith("cuda"):
        if name not in ("cuda", "cuda:0"):
            raise ValueError(
                f"device: only 'cpu', 'cuda' and 'cuda:0' are supported, got {device!r}")
        require_cuda()
        return "cuda"
    if name != "cpu":
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return "cpu"


def require_cuda():
    """Return the cupy module, or raise a RuntimeError that says what is missing."""
    cupy = _load_cupy()
    if cupy is None:
        raise RuntimeError(f"device 'cuda' is not available: {_cupy_error}")
    return cupy


def xp_for(device: str):
    """The array module (numpy or cupy) for a normalised device name."""
    return np if device == "cpu" else require_cuda()


def synchronize(device: str) -> None:
    """Wait until the device has finished its queued work (a no-op on "cpu"); for timing."""
    if device == "cuda":
        require_cuda().cuda.Device().synchronize()


def is_cupy_array(x) -> bool:
    """True for a CuPy array, even before anything has asked for "cuda" (a CuPy array can
    only exist once its module is imported, so sys.modules is where to look)."""
    if _cupy is not None:
        return isinstance(x, _cupy.ndarray)
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, getattr(cupy, "ndarray", ())) and (
        _load_cupy() is not None)


def device_of(x) -> str:
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if is_cupy_array(x) else "cpu"


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays (like cupy.get_array_module)."""
    for a in arrays:
        if is_cupy_array(a):
            return _cupy
    return np


def to_device(x, device: str):
    """Move an array to "cpu" (NumPy) or "cuda" (CuPy). A no-op when already there."""
    device = normalize_device(device)
    if device == "cpu":
        return to_numpy(x)
    cupy = require_cuda()
    return x if isinstance(x, cupy.ndarray) else cupy.asarray(x)


def to_numpy(x) -> np.ndarray:
    """A NumPy array for any array-like, copying from the GPU when needed."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


# One seeded generator per device, created lazily so importing this module does nothing.
_seed: int | None = None
_generators: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Seed the generator of every device; later random creation is reproducible."""
    global _seed
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _seed = int(seed)
    _generators.clear()


def get_generator(device: str = "cpu"):
    """The device's random generator (numpy.random.Generator or cupy's equivalent)."""
    gen = _generators.get(device)
    if gen is None:
        xp = xp_for(device)
        gen = xp.random.default_rng(_seed)
        _generators[device] = gen
    return gen


def _generator_state(gen):
    """One generator's state as plain values: NumPy's state dict, or a copy of the device
    array in which a CuPy generator keeps its cuRAND states."""
    state = gen.bit_generator.state
    if isinstance(state, dict):
        return state
    return {"device_state": to_numpy(gen.bit_generator._state).copy()}


def _set_generator_state(gen, state) -> None:
    if "device_state" in state:
        device_state = gen.bit_generator._state
        saved = state["device_state"]
        if tuple(saved.shape) != tuple(device_state.shape):
            raise ValueError(
                f"set_rng_state: the saved CUDA generator state has shape {tuple(saved.shape)}, "
                f"this CuPy's has {tuple(device_state.shape)}")
        device_state[...] = get_array_module(device_state).asarray(saved)
    else:
        gen.bit_generator.state = state


def get_rng_state() -> dict:
    """Every device's generator state as plain values (for checkpoints).

    {"seed": the manual_seed (or None), "cpu": NumPy's state dict, "cuda": {"device_state":
    uint8/int8 array}}; a device appears once its generator has been used.
    """
    get_generator("cpu")
    state = {"seed": _seed}
    for device, gen in _generators.items():
        state[device] = _generator_state(gen)
    return state


def set_rng_state(state: dict) -> None:
    """Restore what get_rng_state returned: later random draws on every device repeat.

    A device whose generator was not saved is reseeded from the saved seed when next used.
    A bare NumPy state dict (checkpoints of earlier versions) restores the CPU generator.
    """
    global _seed
    if "bit_generator" in state:  # one CPU state, as older checkpoints stored it
        get_generator("cpu").bit_generator.state = state
        return
    seed = state.get("seed")
    _seed = None if seed is None else int(seed)
    _generators.clear()
    for device in DEVICES:
        if device in state and (device == "cpu" or cuda_available()):
            _set_generator_state(get_generator(device), state[device])
