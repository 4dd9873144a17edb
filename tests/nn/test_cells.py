"""RNNCell, LSTMCell and GRUCell against PyTorch, and against finite differences.

Weights are copied from a freshly initialised torch cell through its state_dict; the loss is a
random-weighted sum of every output so each output element's gradient is checked.
"""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

INPUT, HIDDEN, BATCH = 3, 4, 3
TOL = {np.float64: 1e-8, np.float32: 1e-4}
CELLS = [("RNNCell", "tanh"), ("RNNCell", "relu"), ("LSTMCell", None), ("GRUCell", None)]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _make_pair(torch, cell, nonlinearity, bias, dtype):
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity else {}
    torch.manual_seed(0)
    ref = getattr(torch.nn, cell)(INPUT, HIDDEN, bias=bias, **kwargs)
    ref = ref.double() if dtype == np.float64 else ref.float()
    ours = getattr(nn, cell)(INPUT, HIDDEN, bias=bias, dtype=dtype, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _as_tuple(out):
    return tuple(out) if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no_state"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_cell_matches_torch(torch, cell, nonlinearity, bias, with_state, batched, dtype):
    ours, ref = _make_pair(torch, cell, nonlinearity, bias, dtype)
    rng = np.random.default_rng(1)
    lead = (BATCH,) if batched else ()
    x = rng.standard_normal(lead + (INPUT,)).astype(dtype)
    num_states = 2 if cell == "LSTMCell" else 1
    states = [rng.standard_normal(lead + (HIDDEN,)).astype(dtype) for _ in range(num_states)]

    x_ours, x_ref = tg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    s_ours = [tg.Tensor(s, requires_grad=True) for s in states]
    s_ref = [torch.tensor(s, requires_grad=True) for s in states]
    if not with_state:
        out_ours, out_ref = ours(x_ours), ref(x_ref)
    elif cell == "LSTMCell":
        out_ours, out_ref = ours(x_ours, tuple(s_ours)), ref(x_ref, tuple(s_ref))
    else:
        out_ours, out_ref = ours(x_ours, s_ours[0]), ref(x_ref, s_ref[0])
    out_ours, out_ref = _as_tuple(out_ours), _as_tuple(out_ref)
    assert len(out_ours) == len(out_ref) == num_states

    tol = TOL[dtype]
    loss_ours = loss_ref = 0
    for o, r in zip(out_ours, out_ref):
        assert o.shape == tuple(r.shape) and o.dtype == dtype
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=tol, atol=tol)
        w = rng.standard_normal(o.shape).astype(dtype)
        loss_ours = loss_ours + (o * tg.Tensor(w)).sum()
        loss_ref = loss_ref + (r * torch.from_numpy(w)).sum()
    loss_ours.backward()
    loss_ref.backward()

    np.testing.assert_allclose(x_ours.grad.numpy(), x_ref.grad.numpy(), rtol=tol, atol=tol)
    if with_state:
        for so, sr in zip(s_ours, s_ref):
            assert so.grad.dtype == dtype
            np.testing.assert_allclose(so.grad.numpy(), sr.grad.numpy(), rtol=tol, atol=tol)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        np.testing.assert_allclose(p.grad.numpy(), ref_params[name].grad.numpy(),
                                   rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_cell_state_dict_loads_into_torch(torch, cell, nonlinearity):
    """The other direction: our initialised weights give torch's cell the same numbers."""
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity else {}
    tg.manual_seed(3)
    ours = getattr(nn, cell)(INPUT, HIDDEN, dtype=np.float64, **kwargs)
    ref = getattr(torch.nn, cell)(INPUT, HIDDEN, **kwargs).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((BATCH, INPUT))
    for o, r in zip(_as_tuple(ours(tg.Tensor(x))), _as_tuple(ref(torch.from_numpy(x)))):
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_cell_gradcheck(cell, nonlinearity, bias):
    """Finite differences on every parameter, the input and the state(s), in float64."""
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity else {}
    tg.manual_seed(0)
    module = getattr(nn, cell)(2, 3, bias=bias, dtype=np.float64, **kwargs)
    rng = np.random.default_rng(2)
    x = tg.Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    states = [tg.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
              for _ in range(2 if cell == "LSTMCell" else 1)]
    params = list(module.parameters())

    def fn(x, *tensors):
        states = tensors[:len(tensors) - len(params)]
        return module(x, tuple(states) if cell == "LSTMCell" else states[0])

    assert tg.gradcheck(fn, [x, *states, *params])


@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_cell_float32_everywhere(cell, nonlinearity):
    kwargs = {"nonlinearity": nonlinearity} if nonlinearity else {}
    module = getattr(nn, cell)(INPUT, HIDDEN, **kwargs)
    x = tg.randn(BATCH, INPUT, requires_grad=True)
    outs = _as_tuple(module(x))
    sum(o.sum() for o in outs).backward()
    assert all(o.dtype == np.float32 for o in outs)
    assert x.grad.dtype == np.float32
    for name, p in module.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name


def test_cell_loop_is_bptt():
    """Calling a cell in a Python loop and backward() on the last state is BPTT: the same
    gradients as the LSTM layer over the whole sequence."""
    tg.manual_seed(0)
    layer = nn.LSTM(INPUT, HIDDEN, dtype=np.float64)
    cell = nn.LSTMCell(INPUT, HIDDEN, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = tg.Tensor(np.random.default_rng(0).standard_normal((6, 2, INPUT)))
    _, (h_n, _) = layer(x)
    h_n.sum().backward()
    state = None
    for t in range(6):
        state = cell(x[t], state)
    state[0].sum().backward()
    for (name, p), q in zip(layer.named_parameters(), cell.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=name)
