"""Checkpoints: round trips, resume determinism, atomic writes, corrupted files, interop."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend, nn, optim
from tinygrad_rnn.io import CheckpointError
from tinygrad_rnn.optim import lr_scheduler

try:
    import safetensors  # noqa: F401

    HAVE_SAFETENSORS = True
except ImportError:
    HAVE_SAFETENSORS = False

FORMATS = [
    "npz",
    pytest.param("safetensors", marks=pytest.mark.skipif(
        not HAVE_SAFETENSORS, reason="needs the optional safetensors package")),
]


def _assert_same(a, b, where="obj"):
    """Deep equality that also checks container types, key types and array dtypes."""
    if isinstance(a, tg.Tensor):
        a = a.numpy()
    assert type(a) is type(b) or isinstance(a, np.ndarray), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            assert type(key) is type(next(k for k in b if k == key))
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert isinstance(b, type(a)) and a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def _example():
    return {
        "model": {"weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "bias": tg.Tensor(np.array([0.5, -1.5]))},
        "optimizer": {"state": {0: {"step": 7, "exp_avg": np.ones(3, np.float32)},
                                2: {"step": 7, "exp_avg": np.zeros((), np.float64)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1, 2]}]},
        "ints": np.arange(4, dtype=np.int64),
        "mask": np.array([True, False]),
        "half": np.ones(2, np.float16),
        "empty_array": np.zeros((0, 3), np.float32),
        "scalar": np.float32(2.5),
        "step": 12345,
        "big": 2**127 + 3,
        "negative": -(2**80),
        "values": [0.1, float("inf"), float("-inf"), float("nan"), "text", True, False, None],
        "tuple": (1, (2.0, "x"), []),
        "empty": {},
        "nested": {"a.b": {"c": [np.ones(1), {"d": np.full(2, 3.0)}]}},
        "rng": np.random.default_rng(7).bit_generator.state,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    obj = _example()
    path = tmp_path / f"checkpoint.{fmt}"
    tg.save(obj, path)
    loaded = tg.load(path)
    _assert_same(obj, loaded)
    assert isinstance(loaded["model"]["bias"], np.ndarray)
    assert loaded["rng"]["state"]["state"] == obj["rng"]["state"]["state"]  # 128-bit ints
    assert os.listdir(tmp_path) == [path.name]


def test_npz_holds_no_pickle_and_names_arrays_by_path(tmp_path):
    path = tmp_path / "ck.npz"
    tg.save({"weight": np.ones(2), "opt": {"state": {0: {"exp_avg": np.zeros(2)}}}}, path)
    with np.load(path, allow_pickle=False) as archive:  # every entry loads without pickle
        entries = {name: archive[name] for name in archive.files}
    assert set(entries) == {"weight", "opt.state.0.exp_avg", "__structure__"}


def test_rng_state_round_trip_reproduces_the_stream(tmp_path):
    tg.manual_seed(3)
    tg.randn(5)
    tg.save({"rng": backend.get_rng_state()}, tmp_path / "rng.npz")
    expected = tg.randn(4).numpy()
    tg.randn(10)
    backend.set_rng_state(tg.load(tmp_path / "rng.npz")["rng"])
    assert np.array_equal(tg.randn(4).numpy(), expected)


# --------------------------------------------------------------------------- resume


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(3, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.hidden(x).tanh())


def _setup(seed):
    tg.manual_seed(seed)
    model = _TinyNet()
    opt = optim.AdamW(model.parameters(), lr=0.05, amsgrad=True)
    scheduler = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
              lr_scheduler.CosineAnnealingLR(opt, T_max=10)], milestones=[3])
    return model, opt, scheduler


def _train(model, opt, scheduler, steps):
    for _ in range(steps):
        x, target = tg.randn(4, 3), tg.randn(4, 2)  # from the seeded generator: RNG state matters
        loss = ((model(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        scheduler.step()


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_is_bitwise_identical(tmp_path, fmt):
    model, opt, scheduler = _setup(seed=0)
    _train(model, opt, scheduler, 10)
    straight = model.state_dict()

    model, opt, scheduler = _setup(seed=0)
    _train(model, opt, scheduler, 5)
    path = tmp_path / f"resume.{fmt}"
    tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": scheduler.state_dict(), "step": 5, "rng": backend.get_rng_state()}, path)
    del model, opt, scheduler

    model, opt, scheduler = _setup(seed=99)  # different initial weights and RNG stream
    tg.randn(17)
    checkpoint = tg.load(path)
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    backend.set_rng_state(checkpoint["rng"])
    assert checkpoint["step"] == 5 and list(checkpoint["optimizer"]["state"]) == [0, 1, 2, 3]
    _train(model, opt, scheduler, 5)

    resumed = model.state_dict()
    assert list(resumed) == list(straight)
    for name in straight:
        assert resumed[name].dtype == np.float32
        assert np.array_equal(resumed[name], straight[name]), name


# --------------------------------------------------------------------------- atomic writes


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("error", [_Interrupted, KeyboardInterrupt])
def test_failed_save_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, error):
    path = tmp_path / "ck.npz"
    tg.save({"version": 1, "w": np.ones(3)}, path)
    before = path.read_bytes()

    def write_half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        file.flush()
        assert len(os.listdir(tmp_path)) == 2  # the temporary file exists next to the target
        raise error("killed during the write")

    monkeypatch.setattr(np, "savez", write_half_then_fail)
    with pytest.raises(error, match="killed"):
        tg.save({"version": 2, "w": np.zeros(3)}, path)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["ck.npz"]
    assert path.read_bytes() == before
    assert tg.load(path)["version"] == 1


@pytest.mark.skipif(not HAVE_SAFETENSORS, reason="needs the optional safetensors package")
def test_failed_safetensors_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy

    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(safetensors.numpy, "save", fail)
    with pytest.raises(OSError, match="no space"):
        tg.save({"w": np.ones(3)}, tmp_path / "ck.safetensors")
    assert os.listdir(tmp_path) == []


def test_unsupported_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.raises(TypeError, match=r"type set at model\.layers\.0"):
        tg.save({"model": {"layers": [{1, 2}]}}, path)
    with pytest.raises(TypeError, match="dtype object"):
        tg.save({"w": np.array([None, 1], dtype=object)}, path)
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        tg.save({(1, 2): np.ones(1)}, path)
    with pytest.raises(TypeError, match="function"):
        tg.save({"fn": _setup}, path)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path, fmt, keep):
    path = tmp_path / f"ck.{fmt}"
    tg.save({"w": np.arange(1000.0), "step": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        tg.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_bytes_raise_checkpoint_error(tmp_path, fmt):
    path = tmp_path / f"ck.{fmt}"
    tg.save({"w": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ck"):
        tg.load(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        tg.load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
        tg.save({"w": np.ones(1)}, tmp_path / "ck.pt")
    tg.save({"w": np.ones(1)}, tmp_path / "ck.bin", format="npz")
    np.testing.assert_array_equal(tg.load(tmp_path / "ck.bin", format="npz")["w"], [1.0])


def test_foreign_npz_loads_as_a_flat_dict(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weight=np.ones(2), bias=np.zeros(1))
    loaded = tg.load(path)
    assert set(loaded) == {"weight", "bias"}


def test_missing_safetensors_package_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        tg.save({"w": np.ones(1)}, tmp_path / "ck.safetensors")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- interop


@pytest.mark.parametrize("fmt", FORMATS)
def test_weights_move_between_us_and_torch(torch, tmp_path, fmt):
    tg.manual_seed(0)
    ours = nn.Linear(4, 3)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)

    tg.save(ours.state_dict(), tmp_path / f"ours.{fmt}")
    theirs = torch.nn.Linear(4, 3)
    theirs.load_state_dict({k: torch.from_numpy(v)
                            for k, v in tg.load(tmp_path / f"ours.{fmt}").items()})
    with torch.no_grad():
        np.testing.assert_allclose(theirs(torch.from_numpy(x)).numpy(), ours(tg.Tensor(x)).numpy(),
                                   rtol=1e-6, atol=1e-6)

    other = torch.nn.Linear(4, 3)
    tg.save({k: v.detach().numpy() for k, v in other.state_dict().items()},
            tmp_path / f"theirs.{fmt}")
    ours.load_state_dict(tg.load(tmp_path / f"theirs.{fmt}"))
    with torch.no_grad():
        np.testing.assert_allclose(ours(tg.Tensor(x)).numpy(), other(torch.from_numpy(x)).numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not HAVE_SAFETENSORS, reason="needs the optional safetensors package")
def test_safetensors_file_is_readable_by_other_tools(torch, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "model.safetensors"
    tg.save({"weight": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)}, path)
    tensors = load_file(str(path))
    assert set(tensors) == {"weight", "bias"} and tensors["weight"].dtype == torch.float32


@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")
def test_cuda_arrays_are_saved_as_numpy(tmp_path):
    p = tg.Tensor(np.arange(3.0), device="cuda")
    tg.save({"t": p, "raw": p.data}, tmp_path / "gpu.npz")
    loaded = tg.load(tmp_path / "gpu.npz")
    assert all(isinstance(v, np.ndarray) for v in loaded.values())
    np.testing.assert_array_equal(loaded["raw"], [0.0, 1.0, 2.0])
