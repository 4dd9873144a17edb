"""Optimizers: trajectory parity with PyTorch, dtypes, parameter groups, state dicts, errors."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend, optim

SHAPES = [(3,), (2, 4), ()]
STEPS = 20

# (optimizer name, keyword arguments) for every option the optimizers have, alone and combined.
CASES = [
    ("SGD", {}),
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "maximize": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("Adam", {"lr": 0.05, "maximize": True}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.05, "amsgrad": True}),
    ("AdamW", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"weight_decay": 0.1, "eps": 1e-6}),
    ("RMSprop", {"maximize": True}),
    ("RMSprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.1, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-6}),
    ("Adagrad", {"lr": 0.1, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.05, "maximize": True}),
]
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _case_id(case) -> str:
    name, kwargs = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "-defaults")


def _initial_values(dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [np.asarray(rng.standard_normal(shape), dtype=dtype) for shape in SHAPES]


_COEFS = [np.array(1.5), np.array(0.5), np.array(2.0)]


def _grads(values: list[np.ndarray], step: int, dtype) -> list[np.ndarray]:
    """Gradient of sum(c/2 * p**2 + 0.7/3 * sin(3p + 0.1 step)): quadratic plus a wiggle."""
    grads = []
    for c, v in zip(_COEFS, values, strict=True):
        v = v.astype(np.float64)
        grads.append(np.asarray(c * v + 0.7 * np.cos(3 * v + 0.1 * step), dtype=dtype))
    return grads


def _make_pair(torch, name, kwargs, dtype, groups=None):
    """Our optimizer and torch's on the same initial values, plus a parameter with no grad."""
    values = _initial_values(dtype)
    ours = [tg.Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    ours_frozen = tg.Tensor(np.ones(2, dtype), requires_grad=True)
    theirs_frozen = torch.ones(2, dtype=torch.from_numpy(np.ones(1, dtype)).dtype,
                               requires_grad=True)
    if groups is None:
        our_params, their_params = ours + [ours_frozen], theirs + [theirs_frozen]
    else:
        our_params = [dict(g, params=[ours[i] for i in g["params"]]) for g in groups]
        their_params = [dict(g, params=[theirs[i] for i in g["params"]]) for g in groups]
        our_params.append({"params": [ours_frozen]})
        their_params.append({"params": [theirs_frozen]})
    our_opt = getattr(optim, name)(our_params, **kwargs)
    their_opt = getattr(torch.optim, name)(their_params, **kwargs)
    return ours, theirs, ours_frozen, our_opt, their_opt


def _step_both(torch, ours, theirs, our_opt, their_opt, step, dtype):
    grads = _grads([p.numpy() for p in ours], step, dtype)
    for p, q, g in zip(ours, theirs, grads, strict=True):
        p.grad = tg.Tensor(g.copy())
        q.grad = torch.from_numpy(g.copy())
    our_opt.step()
    their_opt.step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_trajectory_matches_torch(torch, case, dtype):
    name, kwargs = case
    ours, theirs, frozen, our_opt, their_opt = _make_pair(torch, name, kwargs, dtype)
    tol = TOL[dtype]
    for step in range(STEPS):
        _step_both(torch, ours, theirs, our_opt, their_opt, step, dtype)
        for p, q in zip(ours, theirs, strict=True):
            assert p.dtype == dtype
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=tol, atol=tol,
                                       err_msg=f"step {step}")
    # the parameter without a gradient is untouched and has no state
    np.testing.assert_array_equal(frozen.numpy(), np.ones(2, dtype))
    assert not our_opt.state.get(frozen) or name == "Adagrad"  # Adagrad creates state eagerly
    # same state names and values as PyTorch (so state dicts can be exchanged)
    for p, q in zip(ours, theirs, strict=True):
        ours_state, theirs_state = our_opt.state[p], their_opt.state[q]
        assert set(ours_state) == set(theirs_state)
        for key, value in ours_state.items():
            if key == "step":
                assert value == int(theirs_state[key]) == STEPS
            else:
                assert value.dtype == dtype
                np.testing.assert_allclose(value, theirs_state[key].numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_defaults_match_torch(torch, name):
    p = tg.Tensor(np.zeros(2), requires_grad=True)
    q = torch.zeros(2, requires_grad=True)
    ours = getattr(optim, name)([p]).defaults
    theirs = getattr(torch.optim, name)([q]).defaults
    for key, value in ours.items():
        assert value == theirs[key], key


@pytest.mark.parametrize("name, kwargs, groups", [
    ("SGD", {"lr": 0.1}, [{"params": [0], "momentum": 0.9}, {"params": [1, 2], "lr": 0.05}]),
    ("Adam", {"lr": 0.01}, [{"params": [0, 1], "lr": 0.05, "amsgrad": True},
                            {"params": [2], "betas": (0.5, 0.9), "weight_decay": 0.1}]),
    ("RMSprop", {}, [{"params": [0], "centered": True}, {"params": [1, 2], "momentum": 0.5}]),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5},
     [{"params": [2], "lr_decay": 0.1}, {"params": [0, 1], "eps": 1e-3, "weight_decay": 0.1}]),
])
def test_per_group_hyperparameters_match_torch(torch, name, kwargs, groups):
    ours, theirs, _, our_opt, their_opt = _make_pair(torch, name, kwargs, np.float64, groups)
    for step in range(STEPS):
        _step_both(torch, ours, theirs, our_opt, their_opt, step, np.float64)
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert our_opt.param_groups[0]["lr"] == their_opt.param_groups[0]["lr"]


def test_adagrad_honours_a_groups_initial_accumulator_value():
    """(PyTorch 2.x fills every group's "sum" with the constructor's value; we use the group's.)"""
    a, b = (tg.Tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 0.5}],
                        initial_accumulator_value=0.25)
    np.testing.assert_array_equal(opt.state[a]["sum"], [0.25, 0.25])
    np.testing.assert_array_equal(opt.state[b]["sum"], [0.5, 0.5])


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_float32_stays_float32(case):
    """NumPy float64 hyperparameters must not promote float32 parameters or state."""
    name, kwargs = case
    kwargs = {k: (tuple(np.float64(b) for b in v) if k == "betas" else
                  v if isinstance(v, bool) else np.float64(v)) for k, v in kwargs.items()}
    params = [tg.Tensor(v, requires_grad=True) for v in _initial_values(np.float32)]
    opt = getattr(optim, name)(params, **kwargs)
    for step in range(3):
        for p, g in zip(params, _grads([p.numpy() for p in params], step, np.float32), strict=True):
            p.grad = tg.Tensor(g)
        opt.step()
        opt.param_groups[0]["lr"] = np.float64(opt.param_groups[0]["lr"]) * np.float64(0.9)
    for p in params:
        assert p.dtype == np.float32 and p.data.dtype == np.float32
        for key, value in opt.state[p].items():
            if key == "step":
                assert type(value) is int
            else:
                assert value.dtype == np.float32, (key, value.dtype)
    for state in opt.state_dict()["state"].values():
        for key, value in state.items():
            assert key == "step" or value.dtype == np.float32


def test_update_is_in_place_and_records_no_graph():
    p = tg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    array = p.data
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad = tg.Tensor(np.array([1.0, 1.0]))
    opt.step()
    assert p.data is array and p.is_leaf
    np.testing.assert_allclose(array, [0.5, 1.5])


def test_step_with_closure_records_graph_even_under_no_grad():
    p = tg.Tensor(np.array([3.0, -1.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = ((p - 1.0) ** 2).sum()
        loss.backward()
        return loss

    with tg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(8.0)
    np.testing.assert_allclose(p.numpy(), [2.0, 0.0])  # p - 0.25 * 2 (p - 1)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    params = [tg.Tensor(np.ones(3), requires_grad=True) for _ in range(2)]
    params[0].grad = tg.Tensor(np.full(3, 2.0))
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert params[0].grad is None
    else:
        np.testing.assert_array_equal(params[0].grad.numpy(), np.zeros(3))
    assert params[1].grad is None


def test_param_groups_and_add_param_group():
    a, b, c = (tg.Tensor(np.ones(2), requires_grad=True) for _ in range(3))
    opt = optim.Adagrad([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["params"] == [b]
    opt.add_param_group({"params": [c], "lr_decay": 0.2})
    group = opt.param_groups[2]
    assert group["lr"] == 0.1 and group["lr_decay"] == 0.2 and group["params"] == [c]
    assert opt.state[c]["step"] == 0  # Adagrad creates its state for added groups too
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="'params'"):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [tg.Tensor(np.ones(1), requires_grad=True)], "lr": -1.0})


def test_bad_params_are_rejected():
    p = tg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(TypeError, match="set"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2.0], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\] is a ndarray"):
        optim.SGD([p, np.ones(2)], lr=0.1)


INVALID = [
    ("SGD", {"lr": -0.1}, "lr", "-0.1"),
    ("SGD", {"lr": float("nan")}, "lr", "nan"),
    ("SGD", {"momentum": -0.5}, "momentum", "-0.5"),
    ("SGD", {"weight_decay": -1e-4}, "weight_decay", "-0.0001"),
    ("SGD", {"nesterov": True}, "Nesterov", "momentum=0"),
    ("SGD", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov", "dampening=0.1"),
    ("Adam", {"lr": -1.0}, "lr", "-1.0"),
    ("Adam", {"eps": -1e-8}, "eps", "-1e-08"),
    ("Adam", {"betas": (1.0, 0.999)}, r"betas\[0\]", "1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, r"betas\[1\]", "-0.1"),
    ("Adam", {"weight_decay": -0.1}, "weight_decay", "-0.1"),
    ("AdamW", {"betas": (0.9, 1.5)}, r"betas\[1\]", "1.5"),
    ("AdamW", {"weight_decay": -0.01}, "weight_decay", "-0.01"),
    ("RMSprop", {"lr": -0.01}, "lr", "-0.01"),
    ("RMSprop", {"alpha": -0.5}, "alpha", "-0.5"),
    ("RMSprop", {"eps": -1.0}, "eps", "-1.0"),
    ("RMSprop", {"momentum": -0.9}, "momentum", "-0.9"),
    ("RMSprop", {"weight_decay": -2.0}, "weight_decay", "-2.0"),
    ("Adagrad", {"lr": -0.1}, "lr", "-0.1"),
    ("Adagrad", {"lr_decay": -0.1}, "lr_decay", "-0.1"),
    ("Adagrad", {"weight_decay": -0.1}, "weight_decay", "-0.1"),
    ("Adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value", "-1.0"),
    ("Adagrad", {"eps": -1e-10}, "eps", "-1e-10"),
]


@pytest.mark.parametrize("name, kwargs, argument, value", INVALID,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in INVALID])
def test_invalid_hyperparameters_raise(name, kwargs, argument, value):
    p = tg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=argument) as info:
        getattr(optim, name)([p], **kwargs)
    assert value in str(info.value)
    # a bad per-group value is caught as well
    with pytest.raises(ValueError, match=argument):
        getattr(optim, name)([{"params": [p], **kwargs}])


def _train(opt, params, steps, start=0):
    for step in range(start, start + steps):
        for p, g in zip(params, _grads([p.numpy() for p in params], step, np.float64), strict=True):
            p.grad = tg.Tensor(g)
        opt.step()


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_state_dict_round_trip_resumes_bitwise(case):
    name, kwargs = case
    straight = [tg.Tensor(v, requires_grad=True) for v in _initial_values(np.float64)]
    _train(getattr(optim, name)(straight, **kwargs), straight, 10)

    first = [tg.Tensor(v, requires_grad=True) for v in _initial_values(np.float64)]
    opt = getattr(optim, name)(first, **kwargs)
    _train(opt, first, 5)
    snapshot = [p.numpy().copy() for p in first]
    saved = opt.state_dict()
    assert all(isinstance(k, int) for k in saved["state"])
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1, 2]]
    _train(opt, first, 2, start=5)  # training on must not change the saved copy

    resumed = [tg.Tensor(v, requires_grad=True) for v in snapshot]
    fresh = getattr(optim, name)(resumed, lr=0.123)  # hyperparameters come from the state dict
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    _train(fresh, resumed, 5, start=5)
    for p, q in zip(resumed, straight, strict=True):
        assert np.array_equal(p.numpy(), q.numpy())


def test_state_dict_interchanges_with_torch(torch):
    """Our state dict loads into torch.optim.Adam and torch's into ours; both continue alike."""
    kwargs = {"lr": 0.05, "amsgrad": True, "weight_decay": 0.01}
    ours, theirs, _, our_opt, their_opt = _make_pair(torch, "Adam", kwargs, np.float64)
    for step in range(5):
        _step_both(torch, ours, theirs, our_opt, their_opt, step, np.float64)

    # ours -> torch
    state = our_opt.state_dict()
    as_torch = {
        "state": {i: {k: torch.tensor(float(v)) if k == "step" else torch.from_numpy(v)
                      for k, v in s.items()} for i, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }
    their_params = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    their_params.append(torch.ones(2, dtype=torch.float64, requires_grad=True))
    torch_resumed = torch.optim.Adam(their_params, lr=1.0)
    torch_resumed.load_state_dict(as_torch)

    # torch -> ours
    their_state = their_opt.state_dict()
    as_numpy = {
        "state": {i: {k: v.numpy() if k != "step" else v for k, v in s.items()}
                  for i, s in their_state["state"].items()},
        "param_groups": their_state["param_groups"],
    }
    our_params = [tg.Tensor(q.detach().numpy().copy(), requires_grad=True) for q in theirs]
    our_params.append(tg.Tensor(np.ones(2), requires_grad=True))
    ours_resumed = optim.Adam(our_params, lr=1.0)
    ours_resumed.load_state_dict(as_numpy)
    assert ours_resumed.state[our_params[0]]["step"] == 5

    for step in range(5, 10):
        _step_both(torch, ours, their_params[:3], our_opt, torch_resumed, step, np.float64)
        _step_both(torch, our_params[:3], theirs, ours_resumed, their_opt, step, np.float64)
    for a, b, c, d in zip(ours, their_params[:3], our_params[:3], theirs, strict=True):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(c.numpy(), d.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_load_state_dict_checks_layout():
    p, q = (tg.Tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = tg.Tensor(np.ones(2))
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameters, this optimizer's has 1"):
        optim.Adam([p], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.Adam([{"params": [p]}, {"params": [q]}]).load_state_dict(saved)
    wrong = tg.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(3,\)"):
        optim.Adam([wrong, q]).load_state_dict(saved)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"weight": np.ones(2)})


def test_load_state_dict_casts_to_parameter_dtype():
    p64 = tg.Tensor(np.ones(2), requires_grad=True)
    opt = optim.RMSprop([p64], momentum=0.9, centered=True)
    p64.grad = tg.Tensor(np.ones(2))
    opt.step()
    p32 = tg.Tensor(np.ones(2, np.float32), requires_grad=True)
    opt32 = optim.RMSprop([p32], momentum=0.9, centered=True)
    opt32.load_state_dict(opt.state_dict())
    assert all(v.dtype == np.float32 for k, v in opt32.state[p32].items() if k != "step")


@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_optimizer_on_cuda_matches_cpu(case):
    name, kwargs = case
    cpu = [tg.Tensor(v, requires_grad=True) for v in _initial_values(np.float32)]
    gpu = [tg.Tensor(v, requires_grad=True, device="cuda") for v in _initial_values(np.float32)]
    cpu_opt, gpu_opt = getattr(optim, name)(cpu, **kwargs), getattr(optim, name)(gpu, **kwargs)
    for step in range(STEPS):
        grads = _grads([p.numpy() for p in cpu], step, np.float32)
        for p, q, g in zip(cpu, gpu, grads, strict=True):
            p.grad = tg.Tensor(g)
            q.grad = tg.Tensor(g, device="cuda")
        cpu_opt.step()
        gpu_opt.step()
    for p, q in zip(cpu, gpu, strict=True):
        assert q.device == "cuda" and q.dtype == np.float32
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-5, atol=1e-5)
        for key, value in gpu_opt.state[q].items():
            assert key == "step" or (backend.is_cupy_array(value) and value.dtype == np.float32)
    saved = gpu_opt.state_dict()  # NumPy copies, loadable on either device
    cpu_opt.load_state_dict(saved)
    gpu_opt.load_state_dict(saved)
    assert all(backend.is_cupy_array(v) for k, v in gpu_opt.state.get(gpu[0], {}).items()
               if k != "step")


def test_non_leaf_error_suggests_a_fix_that_trains():
    """detach() alone gives requires_grad=False: a weight that never moves."""
    p = tg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"detach\(\)\.requires_grad_\(\)"):
        optim.Adam([p * 2.0], lr=0.1)
    fixed = (p * 2.0).detach().requires_grad_()
    opt = optim.Adam([fixed], lr=0.1)
    (fixed * fixed).sum().backward()
    opt.step()
    assert not np.allclose(fixed.numpy(), 2.0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_param_without_requires_grad_warns(name):
    trained = tg.Tensor(np.ones(2), requires_grad=True)
    frozen = tg.Tensor(np.ones(3))
    with pytest.warns(UserWarning, match=r"params\[1\] \(shape \(3,\)\) does not require grad"):
        getattr(optim, name)([trained, frozen], lr=0.1)


def test_params_requiring_grad_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.Adam(tg.nn.Linear(2, 3).parameters(), lr=0.1)
