"""Checkpoints: `save(obj, path)` / `load(path)` for nested containers of arrays, no pickle.

`obj` is any nesting of dicts (str or int keys, order kept), lists and tuples whose leaves
are arrays (NumPy; CuPy arrays and Tensors are stored as NumPy arrays), NumPy scalars, or
plain values (int of any size, float including nan/inf, str, bool, None). That covers a
model's state dict, an optimizer's (int keys), a scheduler's, the step, and the RNG state
(`backend.get_rng_state()`: nested dicts with 128-bit ints).

Two formats, chosen by the file's suffix:

* `.npz`: one NumPy array per leaf, plus an entry "__structure__" holding a JSON
  description of the tree that points at the arrays by name; read with allow_pickle=False.
* `.safetensors` (needs `pip install safetensors`): the same arrays, the JSON in the header
  metadata. Readable by other frameworks. (safetensors has no checksum of its own, so the
  JSON also holds a CRC-32 of every array, checked on load.)

Array names are the dotted path of the leaf ("model.weight", "optimizer.state.0.exp_avg"),
so a flat dict of arrays is stored under its own keys. Files without a structure entry
(an npz or safetensors file written by another tool) load as a flat dict of arrays.

Writes are atomic: the file is written under a temporary name in the same folder, synced,
then renamed over `path`; if anything fails the temporary file is removed and a previous
checkpoint at `path` is left intact. A truncated or corrupted file raises CheckpointError
naming the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import zlib
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["CheckpointError", "save", "load"]

STRUCTURE_KEY = "__structure__"
_FORMAT_NAME = "tinygrad_rnn.checkpoint"
_FORMAT_VERSION = 1
_SUFFIXES = {".npz": "npz", ".safetensors": "safetensors"}
_SAFETENSORS_HINT = (
    "the '.safetensors' format needs the optional 'safetensors' package: "
    "pip install safetensors  (or pip install 'tinygrad_rnn[safetensors]'); "
    "or save to a '.npz' file instead")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated, corrupted, or not a checkpoint."""


# --------------------------------------------------------------------------- the tree


class _Flattener:
    """Turn a nested object into a JSON-able structure plus a dict of named arrays."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def _name(self, path: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", path) or "_"
        name, n = base, 1
        while name in self.arrays or name == STRUCTURE_KEY:
            name, n = f"{base}~{n}", n + 1
        return name

    def _array(self, array: np.ndarray, path: str) -> str:
        if array.dtype.hasobject:
            raise TypeError(
                f"save: the array at {path or 'the top level'} has dtype object, which cannot "
                "be stored without pickle; convert it to a numeric or string dtype")
        name = self._name(path)
        # (np.ascontiguousarray would turn a 0-d array into a 1-d one)
        self.arrays[name] = array if array.flags.c_contiguous else array.copy(order="C")
        return name

    def encode(self, obj, path: str = ""):
        where = path or "the top level"
        if obj is None or isinstance(obj, (str, bool)):
            return str(obj) if isinstance(obj, str) else obj
        if isinstance(obj, Tensor):
            return {"array": self._array(obj.numpy(), path)}
        if isinstance(obj, np.ndarray) or backend.is_cupy_array(obj):
            return {"array": self._array(backend.to_numpy(obj), path)}
        if isinstance(obj, np.generic):
            return {"scalar": self._array(np.asarray(obj), path)}
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, dict):
            items = []
            for key, value in obj.items():
                if isinstance(key, np.integer):
                    key = int(key)
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise TypeError(
                        f"save: dict keys must be str or int, got {type(key).__name__} key "
                        f"{key!r} at {where}")
                child = f"{path}.{key}" if path else str(key)
                items.append([key, self.encode(value, child)])
            return {"dict": items}
        if isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {kind: [self.encode(v, f"{path}.{i}" if path else str(i))
                           for i, v in enumerate(obj)]}
        raise TypeError(
            f"save: cannot store a value of type {type(obj).__name__} at {where}; checkpoints "
            "hold dicts, lists, tuples, arrays, Tensors and int/float/str/bool/None (no pickle)")


def _decode(node, arrays: dict[str, np.ndarray], path: str):
    """Rebuild the object described by a structure node (the inverse of _Flattener.encode)."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (kind, value), = node.items()
        if kind in ("array", "scalar"):
            if not isinstance(value, str) or value not in arrays:
                raise CheckpointError(f"{path}: the structure refers to a missing array {value!r}")
            array = arrays[value]
            return array[()] if kind == "scalar" else array
        if kind == "dict" and isinstance(value, list):
            out = {}
            for item in value:
                if not (isinstance(item, list) and len(item) == 2):
                    raise CheckpointError(f"{path}: malformed dict entry in the structure")
                out[item[0]] = _decode(item[1], arrays, path)
            return out
        if kind in ("list", "tuple") and isinstance(value, list):
            items = [_decode(v, arrays, path) for v in value]
            return items if kind == "list" else tuple(items)
    raise CheckpointError(f"{path}: unrecognised entry in the checkpoint structure: {node!r:.80}")


def _crc32(array: np.ndarray) -> int:
    """Checksum of an array's bytes (safetensors has none of its own; zip's covers npz)."""
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1)) if array.size else 0


# --------------------------------------------------------------------------- formats


def _format_for(path: str, format: str | None) -> str:  # noqa: A002 - mirrors the argument
    if format is not None:
        if format not in _SUFFIXES.values():
            raise ValueError(
                f"format: expected one of {sorted(_SUFFIXES.values())}, got {format!r}")
        return format
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"cannot tell the checkpoint format of {path!r}: expected a file name ending in "
            f"{' or '.join(_SUFFIXES)}, got suffix {suffix!r} (or pass format=)")
    return _SUFFIXES[suffix]


def _import_safetensors():
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(_SAFETENSORS_HINT) from exc
    return safetensors


def _write_npz(file, structure: str, arrays: dict[str, np.ndarray]) -> None:
    np.savez(file, **arrays, **{STRUCTURE_KEY: np.array(structure)})


def _write_safetensors(file, structure: str, arrays: dict[str, np.ndarray]) -> None:
    safetensors = _import_safetensors()
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"save: safetensors cannot store the array {name!r} of dtype {array.dtype} "
                "(numbers and booleans only); save to a '.npz' file instead")
    data = safetensors.numpy.save(arrays, metadata={STRUCTURE_KEY: structure})
    file.write(data)


def _read_npz(path: str) -> tuple[str | None, dict[str, np.ndarray]]:
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} holds a single .npy array, not an .npz checkpoint")
    with archive:
        arrays = {name: archive[name] for name in archive.files}
    structure = arrays.pop(STRUCTURE_KEY, None)
    return (None if structure is None else str(structure)), arrays


def _read_safetensors(path: str) -> tuple[str | None, dict[str, np.ndarray]]:
    safetensors = _import_safetensors()
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        arrays = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - not a dict
    return metadata.get(STRUCTURE_KEY), arrays


_WRITERS = {"npz": _write_npz, "safetensors": _write_safetensors}
_READERS = {"npz": _read_npz, "safetensors": _read_safetensors}


# --------------------------------------------------------------------------- public


def save(obj: Any, path: str | os.PathLike, format: str | None = None) -> None:  # noqa: A002
    """Write `obj` (nested dicts/lists/tuples of arrays and plain values) to `path`, atomically.

    The format follows the suffix (".npz" or ".safetensors") unless `format` is given.
    Either the whole new file appears at `path`, or (on any error, even KeyboardInterrupt)
    the previous file there is left untouched and no temporary file remains.
    """
    path = os.fspath(path)
    kind = _format_for(path, format)
    if kind == "safetensors":
        _import_safetensors()
    flattener = _Flattener()
    tree = flattener.encode(obj)
    checksums = {name: _crc32(array) for name, array in flattener.arrays.items()}
    structure = json.dumps({"format": _FORMAT_NAME, "version": _FORMAT_VERSION, "tree": tree,
                            "crc32": checksums})
    directory, name = os.path.split(os.path.abspath(path))
    # A fresh hidden name in the same folder (so os.replace is a rename on one filesystem);
    # open(..., "xb") refuses to reuse an existing file and gives the usual permissions.
    tmp_path = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp_path, "xb") as file:
            _WRITERS[kind](file, structure, flattener.arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


def _to_device(obj, device: str):
    """Every array in a loaded tree moved to `device` (NumPy scalars stay as they are)."""
    if isinstance(obj, np.ndarray):
        return backend.to_device(obj, device)
    if isinstance(obj, dict):
        return {key: _to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(value, device) for value in obj)
    return obj


def load(path: str | os.PathLike, format: str | None = None,  # noqa: A002
         map_location=None) -> Any:
    """Read a checkpoint written by `save`; arrays come back as NumPy arrays, or as arrays
    on `map_location` ("cpu" or "cuda") when it is given (as in torch.load).

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) naming the
    file when it is truncated, corrupted or not a checkpoint.
    """
    path = os.fspath(path)
    kind = _format_for(path, format)
    if map_location is not None:
        map_location = backend.normalize_device(map_location)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        structure, arrays = _READERS[kind](path)
    except (CheckpointError, ImportError):
        raise
    except Exception as exc:  # zipfile.BadZipFile, EOFError, SafetensorError, OSError, ...
        raise CheckpointError(
            f"cannot read checkpoint {path!r}: the file is truncated or corrupted "
            f"({type(exc).__name__}: {exc})") from exc
    if structure is None:
        return arrays if map_location is None else _to_device(arrays, map_location)
    try:
        header = json.loads(structure)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: its structure entry is not "
                              f"valid JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        raise CheckpointError(f"{path!r} has a '{STRUCTURE_KEY}' entry not written by "
                              "tinygrad_rnn.save")
    if header.get("version") != _FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} is checkpoint format version {header.get('version')!r}; this "
            f"tinygrad_rnn reads version {_FORMAT_VERSION}")
    for name, expected in (header.get("crc32") or {}).items():
        if name not in arrays:
            raise CheckpointError(f"checkpoint {path!r} is missing its array {name!r}")
        if _crc32(arrays[name]) != expected:
            raise CheckpointError(
                f"checkpoint {path!r} is corrupted: the array {name!r} does not match the "
                "checksum written with it")
    tree = _decode(header.get("tree"), arrays, repr(path))
    return tree if map_location is None else _to_device(tree, map_location)
