"""RNN, LSTM and GRU layers against torch.nn over the whole option grid.

For every configuration: output, final state(s) and the gradient of every parameter, of the
input and of the initial state(s) under a loss that is a random-weighted sum of all outputs
(so every element matters). Weights go through state_dict in both directions: a torch module
loads into ours, and ours loads into a torch module.
"""

import itertools

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last"),
    pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN"),
]

SEQ, BATCH, INPUT, HIDDEN, PROJ = 5, 3, 4, 4, 3
TOL = {np.float64: 1e-8, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def _build(kind, dtype, exchange, **options):
    """(ours, ref) with identical weights, exchanged in the given direction."""
    cls = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    if kind.startswith("rnn"):
        options["nonlinearity"] = kind[4:]
    if not options.get("proj_size"):
        options.pop("proj_size", None)
    torch.manual_seed(0)
    tg.manual_seed(0)
    ref = getattr(torch.nn, cls)(INPUT, HIDDEN, **options).to(TORCH_DTYPE[dtype])
    ours = getattr(nn, cls)(INPUT, HIDDEN, dtype=dtype, **options)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    assert [tuple(v.shape) for v in ours.state_dict().values()] == [
        tuple(v.shape) for v in ref.state_dict().values()]
    if exchange == "torch_to_ours":
        ours.load_state_dict(ref.state_dict())
    else:
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy())
    return ours, ref


def _states(kind, ours):
    """Shapes of the initial states (without the batch axis)."""
    layers = ours.num_layers * ours.num_directions
    shapes = [(layers, ours.proj_size or HIDDEN)]
    if kind == "lstm":
        shapes.append((layers, HIDDEN))
    return shapes


def _flatten(out):
    output, state = out
    return [output, *(state if isinstance(state, tuple) else (state,))]


def check_parity(kind, dtype, exchange="torch_to_ours", with_state=True, batched=True, seed=0,
                 **options):
    ours, ref = _build(kind, dtype, exchange, **options)
    rng = np.random.default_rng(seed)
    batch_first = options.get("batch_first", False)
    if not batched:
        x_shape = (SEQ, INPUT)
    else:
        x_shape = (BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT)
    x = rng.standard_normal(x_shape).astype(dtype)
    x_ours, x_ref = tg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    s_ours, s_ref = [], []
    if with_state:
        for layers, size in _states(kind, ours):
            s = rng.standard_normal((layers, BATCH, size) if batched else (layers, size))
            s_ours.append(tg.Tensor(s.astype(dtype), requires_grad=True))
            s_ref.append(torch.tensor(s.astype(dtype), requires_grad=True))
    hx_ours = hx_ref = None
    if with_state:
        hx_ours = tuple(s_ours) if kind == "lstm" else s_ours[0]
        hx_ref = tuple(s_ref) if kind == "lstm" else s_ref[0]
    outs_ours = _flatten(ours(x_ours, hx_ours))
    with torch.backends.mkldnn.flags(enabled=False):  # oneDNN takes ~1 s to set up per shape
        outs_ref = _flatten(ref(x_ref, hx_ref))

    tol = TOL[dtype]
    loss_ours = loss_ref = 0
    for name, o, r in zip(["output", "h_n", "c_n"], outs_ours, outs_ref):
        assert o.shape == tuple(r.shape), name
        assert o.dtype == dtype, name
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=tol, atol=tol, err_msg=name)
        w = rng.standard_normal(o.shape).astype(dtype)
        loss_ours = loss_ours + (o * tg.Tensor(w)).sum()
        loss_ref = loss_ref + (r * torch.from_numpy(w)).sum()
    loss_ours.backward()
    with torch.backends.mkldnn.flags(enabled=False):
        loss_ref.backward()

    assert x_ours.grad.dtype == dtype
    np.testing.assert_allclose(x_ours.grad.numpy(), x_ref.grad.numpy(), rtol=tol, atol=tol,
                               err_msg="input")
    for name, so, sr in zip(["h_0", "c_0"], s_ours, s_ref):
        assert so.grad.dtype == dtype, name
        np.testing.assert_allclose(so.grad.numpy(), sr.grad.numpy(), rtol=tol, atol=tol,
                                   err_msg=name)
    ref_params = dict(ref.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(ref_params)
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        np.testing.assert_allclose(p.grad.numpy(), ref_params[name].grad.numpy(), rtol=tol,
                                   atol=tol, err_msg=name)


def _grid():
    for kind, proj in [("rnn_tanh", 0), ("gru", 0), ("lstm", 0), ("lstm", PROJ)]:
        for num_layers, bidirectional, batch_first, bias, with_state in itertools.product(
                [1, 3], [False, True], [False, True], [True, False], [True, False]):
            yield pytest.param(
                kind, dict(num_layers=num_layers, bidirectional=bidirectional,
                           batch_first=batch_first, bias=bias, proj_size=proj), with_state,
                id=f"{kind}{'-proj' if proj else ''}-L{num_layers}"
                   f"{'-bi' if bidirectional else ''}{'-bf' if batch_first else ''}"
                   f"{'' if bias else '-nobias'}{'-h0' if with_state else ''}")


@pytest.mark.parametrize("exchange", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize(("kind", "options", "with_state"), list(_grid()))
def test_layer_grid_float64(kind, options, with_state, exchange):
    check_parity(kind, np.float64, exchange, with_state, **options)


@pytest.mark.parametrize(("kind", "options", "with_state"), list(_grid()))
def test_layer_grid_float32(kind, options, with_state):
    check_parity(kind, np.float32, "torch_to_ours", with_state, **options)


FLOAT32_CASES = [
    ("rnn_tanh", dict(num_layers=3, bidirectional=True, batch_first=True)),
    ("rnn_relu", dict(num_layers=2, bidirectional=True)),
    ("gru", dict(num_layers=3, bidirectional=True, batch_first=True)),
    ("gru", dict(bias=False)),
    ("lstm", dict(num_layers=3, bidirectional=True, batch_first=True)),
    ("lstm", dict(num_layers=2, bidirectional=True, proj_size=PROJ)),
    ("lstm", dict(bias=False)),
]


@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no_h0"])
@pytest.mark.parametrize(("kind", "options"), FLOAT32_CASES,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(FLOAT32_CASES)])
def test_layer_float32(kind, options, with_state):
    check_parity(kind, np.float32, "torch_to_ours", with_state, **options)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_relu_rnn_float64(num_layers, batch_first, bidirectional):
    check_parity("rnn_relu", np.float64, "ours_to_torch", True, num_layers=num_layers,
                 batch_first=batch_first, bidirectional=bidirectional)


@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no_h0"])
@pytest.mark.parametrize(("kind", "proj_size"), [("rnn_tanh", 0), ("rnn_relu", 0), ("gru", 0),
                                                 ("lstm", 0), ("lstm", PROJ)],
                         ids=["rnn_tanh", "rnn_relu", "gru", "lstm", "lstm-proj"])
def test_unbatched_2d_input(kind, proj_size, with_state):
    for batch_first in (False, True):  # batch_first does not apply to 2-D input
        check_parity(kind, np.float64, "torch_to_ours", with_state, batched=False,
                     num_layers=2, bidirectional=True, batch_first=batch_first,
                     proj_size=proj_size)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_inter_layer_dropout(kind):
    """Eval mode: exactly torch's numbers. Train mode: the random masks (a different RNG from
    torch's) change the output, which stays finite and differentiable."""
    ours, ref = _build(kind, np.float64, "torch_to_ours", num_layers=3, dropout=0.5,
                       bidirectional=True)
    x = np.random.default_rng(0).standard_normal((SEQ, BATCH, INPUT))
    ours.eval()
    ref.eval()
    eval_ours = ours(tg.Tensor(x))[0].numpy()
    np.testing.assert_allclose(eval_ours, ref(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    ours.train()
    tg.manual_seed(1)
    x_ours = tg.Tensor(x, requires_grad=True)
    out, _ = ours(x_ours)
    train_a = out.numpy()
    assert np.isfinite(train_a).all()
    assert np.abs(train_a - eval_ours).max() > 1e-3
    out.sum().backward()
    assert np.isfinite(x_ours.grad.numpy()).all()
    assert all(np.isfinite(p.grad.numpy()).all() for p in ours.parameters())
    train_b = ours(tg.Tensor(x))[0].numpy()
    assert not np.array_equal(train_a, train_b)  # a fresh mask per call
    tg.manual_seed(1)
    np.testing.assert_array_equal(ours(tg.Tensor(x))[0].numpy(), train_a)  # seeded


def test_dropout_is_not_applied_after_last_layer():
    ours, _ = _build("lstm", np.float64, "torch_to_ours", num_layers=1, dropout=0.9)
    x = tg.Tensor(np.random.default_rng(0).standard_normal((SEQ, BATCH, INPUT)))
    np.testing.assert_array_equal(ours(x)[0].numpy(), ours.eval()(x)[0].numpy())
