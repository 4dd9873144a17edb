"""Which array module does the work: NumPy on "cpu", CuPy on "cuda".

This is the only file that imports CuPy. Everything above it asks `get_array_module(x)` or
`xp_for(device)` and writes one body of code for both backends.
"""

from __future__ import annotations

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
    return _cupy is not None and isinstance(x, _cupy.ndarray)


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


def get_rng_state() -> dict:
    """The CPU generator's state as plain values (for checkpoints)."""
    return get_generator("cpu").bit_generator.state


def set_rng_state(state: dict) -> None:
    gen = get_generator("cpu")
    gen.bit_generator.state = state
