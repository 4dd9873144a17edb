"""Moving things between devices, and the device defects of issue 12, on the "cuda" device
(the emulated CuPy of tests/emulated_cuda where there is no GPU, as strict as the real one:
no implicit host conversion, no NumPy array inside a device operation)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import backend, diagnostics, nn, optim
from tinygrad_rnn.ops import fused

pytestmark = pytest.mark.skipif(not backend.cuda_available(),
                                reason="needs CuPy and a CUDA GPU (or --emulate-cuda)")


def cupy():
    return backend.require_cuda()


# --------------------------------------------------------------------------- moves


def test_tensor_cuda_cpu_numpy_item():
    x = tg.tensor([[1.5, -2.0]], requires_grad=True)
    y = x.cuda()
    assert y.device == "cuda" and backend.is_cupy_array(y.data) and y.dtype == np.float32
    z = (y * 2.0).cpu()
    assert z.device == "cpu" and isinstance(z.data, np.ndarray)
    out = y.numpy()
    assert isinstance(out, np.ndarray) and out.tolist() == [[1.5, -2.0]]
    assert isinstance(y.sum().item(), float) and y.sum().item() == -0.5
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 2.0]])


def test_module_to_moves_parameters_and_grads_in_place():
    model = nn.LSTM(3, 4)
    params = list(model.parameters())
    model(tg.randn(2, 1, 3))[0].sum().backward()
    assert model.to("cuda") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.device == "cuda" and p.grad.device == "cuda" for p in params)
    model.double().cpu()
    assert all(p.device == "cpu" and p.dtype == np.float64 for p in params)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_optimizer_state_follows_its_parameters(name):
    """Adagrad makes its state at construction; every state follows .double() and .cuda()."""
    model = nn.Linear(3, 2)
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    opt = getattr(optim, name)(model.parameters(), lr=0.1, **kwargs)

    def step():
        opt.zero_grad()
        model(tg.ones(4, 3, dtype=model.weight.dtype, device=model.weight.device)).sum().backward()
        opt.step()

    step()
    model.double()
    step()
    for p in model.parameters():
        for key, value in opt.state[p].items():
            assert key == "step" or value is None or value.dtype == np.float64, (key, value)
    model.cuda()
    step()
    for p in model.parameters():
        assert p.device == "cuda" and p.dtype == np.float64
        for key, value in opt.state[p].items():
            assert key == "step" or value is None or backend.is_cupy_array(value)
    model.cpu().float()
    step()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32
               for p in model.parameters() for k, v in opt.state[p].items()
               if k != "step" and v is not None)


def test_adagrad_state_is_float64_after_double_on_the_cpu():
    model = nn.Linear(2, 1)
    opt = optim.Adagrad(model.parameters(), lr=0.1)
    model.double()
    model(tg.ones(1, 2, dtype=np.float64)).sum().backward()
    opt.step()
    assert all(opt.state[p]["sum"].dtype == np.float64 for p in model.parameters())


def test_save_device_tensors_and_load_with_map_location(tmp_path):
    path = tmp_path / "c.npz"
    t = tg.tensor(np.arange(6.0).reshape(2, 3), device="cuda")
    tg.save({"t": t, "raw": t.data, "nested": [t.data], "n": 3}, path)
    host = tg.load(path)
    assert isinstance(host["t"], np.ndarray) and isinstance(host["raw"], np.ndarray)
    device = tg.load(path, map_location="cuda")
    assert backend.is_cupy_array(device["t"]) and backend.is_cupy_array(device["nested"][0])
    assert device["n"] == 3
    np.testing.assert_array_equal(backend.to_numpy(device["raw"]), t.numpy())
    back = tg.load(path, map_location="cpu")
    assert isinstance(back["t"], np.ndarray)


def test_state_dict_round_trip_across_devices(tmp_path):
    model = nn.GRU(3, 4).cuda()
    path = tmp_path / "m.npz"
    tg.save(model.state_dict(), path)
    other = nn.GRU(3, 4)
    other.load_state_dict(tg.load(path, map_location="cuda"))
    for (_, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- defects


def test_cupy_arrays_are_recognised_before_cuda_was_asked_for(monkeypatch):
    array = cupy().ones(3)
    monkeypatch.setattr(backend, "_cupy", None)  # as in a fresh process
    monkeypatch.setattr(backend, "_cupy_error", None)
    assert backend.device_of(array) == "cuda"
    assert backend.get_array_module(array) is cupy()
    assert tg.tensor(array).device == "cuda"


def test_diagnostics_take_device_arrays():
    layer = nn.LSTM(2, 3).cuda()
    x = cupy().asarray(np.random.default_rng(0).standard_normal((5, 1, 2)), dtype=np.float32)
    norms = diagnostics.hidden_grad_norms(layer, x)
    assert isinstance(norms, np.ndarray) and norms.shape == (5,)
    np.testing.assert_allclose(norms, diagnostics.hidden_grad_norms(layer.cpu(), x.get()),
                               rtol=1e-5)


def test_every_device_generator_is_saved_and_restored(tmp_path):
    tg.manual_seed(3)
    tg.randn(4, device="cuda")
    tg.randn(4)
    path = tmp_path / "rng.npz"
    tg.save({"rng": backend.get_rng_state()}, path)
    expected = (tg.randn(5, device="cuda").numpy(), tg.randn(5).numpy())
    tg.manual_seed(99)
    tg.randn(7, device="cuda")
    backend.set_rng_state(tg.load(path)["rng"])
    again = (tg.randn(5, device="cuda").numpy(), tg.randn(5).numpy())
    np.testing.assert_array_equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])


def test_dropout_masks_continue_after_a_restore():
    tg.manual_seed(0)
    state = backend.get_rng_state()
    first = F.dropout_mask((50,), 0.5, np.float32, "cuda")
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.to_numpy(F.dropout_mask((50,), 0.5, np.float32,
                                                                  "cuda")),
                                  backend.to_numpy(first))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_backward_grad_is_checked_and_converted(device):
    x = tg.ones(2, 3, dtype=np.float64, requires_grad=True, device=device)
    y = x * 2.0
    y.backward(np.ones((2, 3), dtype=np.float32), retain_graph=True)  # host data, cast
    assert x.grad.dtype == np.float64 and x.grad.device == device
    y.backward([[1, 1, 1], [1, 1, 1]], retain_graph=True)
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 4.0))
    other = "cpu" if device == "cuda" else "cuda"
    with pytest.raises(RuntimeError, match=f"grad is on '{other}' but the tensor is on"):
        y.backward(tg.ones(2, 3, device=other), retain_graph=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\), got \(3, 2\)"):
        y.backward(np.ones((3, 2)), retain_graph=True)
    with pytest.raises(TypeError, match="real numbers"):
        y.backward(np.full((2, 3), "a"), retain_graph=True)


def test_loss_target_on_another_device_is_named():
    logits = tg.randn(4, 3, device="cuda", requires_grad=True)
    for loss in (F.nll_loss, F.cross_entropy):
        with pytest.raises(RuntimeError, match="target is on 'cpu' but input is on 'cuda'"):
            loss(logits, tg.tensor([0, 1, 2, 0]))
    host = F.cross_entropy(logits, np.array([0, 1, 2, 0]))  # host data is copied over
    assert host.device == "cuda"
    F.cross_entropy(logits, cupy().asarray([0, 1, 2, 0])).backward()
    with pytest.raises(RuntimeError, match="target is on 'cuda' but input is on 'cpu'"):
        F.cross_entropy(tg.randn(4, 3), cupy().asarray([0, 1, 2, 0]))


def test_fused_sequence_op_takes_last_from_the_device():
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 3, 2, 4

    def t(*shape):
        return tg.tensor(rng.standard_normal(shape), device="cuda", requires_grad=True)
    args = [t(T, B, I), t(B, H), t(3 * H, I), t(3 * H, H), t(3 * H), t(3 * H)]
    last_host = np.array([4, 1, 2])
    results = []
    for last in (last_host, cupy().asarray(last_host)):
        y, h = tg.apply_op(fused.GRULayer, *args, last=last)
        results.append(h.numpy())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_clipping_a_non_finite_norm_is_silent_and_gives_nan(device):
    p = tg.ones(3, requires_grad=True, device=device)
    p.grad = tg.tensor([np.inf, 0.0, 1.0], device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm = optim.clip_grad_norm_([p], 1.0)
    grad = p.grad.numpy()  # scaled by max_norm / inf = 0: inf * 0 is nan, as in PyTorch
    assert np.isinf(norm.item()) and np.isnan(grad[0]) and (grad[1:] == 0).all()


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("data", [["a", "b"], [object(), object()], np.array(["x"]),
                                  np.array([None])])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_non_numeric_data_is_refused(data, device):
    with pytest.raises(TypeError, match="data must be numbers"):
        tg.tensor(data, device=device)
