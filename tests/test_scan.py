"""tg.scan: the recorded step replayed as one node equals the same step in a Python loop
(tg.scan_loop), on every backend, with every gradient; what cannot be replayed is refused."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from peak_memory import peak_bytes

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F
from tinygrad_rnn.scan import BATCH, CARRY, CONST

T, B, I, H = 40, 3, 4, 5
SCAN = sys.modules["tinygrad_rnn.scan"]  # the module (tg.scan is the function)


@pytest.fixture(autouse=True)
def chunks_of_16_steps(monkeypatch):
    """Chunks of 16 steps (16, 16 and 8 for T=40), as for a large carry: the batched ops, their
    gradients and the chunked weight gradients cross chunk boundaries (a carry as small as
    these tests' would otherwise take 128 steps per chunk)."""
    monkeypatch.setattr(SCAN, "_CHUNK_MAX", 16)


def _tensor(rng, shape, device, dtype=np.float64, scale=0.5):
    return tg.Tensor(rng.standard_normal(shape) * scale, requires_grad=True, dtype=dtype,
                     device=device)


def _weights(rng, device, dtype=np.float64):
    return {"W_ih": _tensor(rng, (I, 4 * H), device, dtype), "W_hh": _tensor(rng, (H, 4 * H),
            device, dtype), "b": _tensor(rng, (4 * H,), device, dtype),
            "w_c": _tensor(rng, (H,), device, dtype)}


def lstm_like_step(w):
    """An LSTM with a peephole, written as a user would: x @ W inside the step."""
    def step(carry, x):
        h, c = carry
        gates = x @ w["W_ih"] + h @ w["W_hh"] + w["b"]
        i, f, g, o = gates.chunk(4, dim=1)
        c = (f + w["w_c"] * c).sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        return (h, c), (h, c * 2.0)
    return step


def _run(use_scan, step, init, xs, leaves, **options):
    """Forward, a loss over everything returned, backward: outputs and every leaf's grad."""
    for t in leaves:
        t.grad = None
    run = tg.scan if use_scan else tg.scan_loop
    options = {k: v for k, v in options.items() if use_scan or k != "remat"}
    final, ys = run(step, init, xs, **options)
    parts = [p for p in (final if isinstance(final, tuple) else (final,))]
    if ys is not None:
        parts += list(ys) if isinstance(ys, tuple) else [ys]
    loss = sum(((p * p).sum() for p in parts), tg.tensor(0.0, dtype=parts[0].dtype,
                                                             device=parts[0].device))
    loss.backward()
    return [p.numpy() for p in parts] + [t.grad.numpy() for t in leaves]


def _assert_same(a, b, tol=1e-12):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("remat", [False, True])
def test_scan_equals_the_python_loop(device, rng, reverse, remat):
    w = _weights(rng, device)
    x = _tensor(rng, (T, B, I), device, scale=1.0)
    h0, c0 = _tensor(rng, (B, H), device), _tensor(rng, (B, H), device)
    leaves = [x, h0, c0, *w.values()]
    step = lstm_like_step(w)
    expected = _run(False, step, (h0, c0), x, leaves, reverse=reverse)
    got = _run(True, step, (h0, c0), x, leaves, reverse=reverse, remat=remat)
    _assert_same(got, expected)


def test_tuple_xs_tensor_carry_and_no_y(device, rng):
    W = _tensor(rng, (H, H), device)
    x, scale = _tensor(rng, (T, B, H), device), _tensor(rng, (T, B, 1), device)
    h0 = _tensor(rng, (B, H), device)

    def step(h, xs):
        x_t, s_t = xs
        return (h @ W + x_t * s_t).tanh(), None
    for use_scan in (False, True):
        for t in (x, scale, h0, W):
            t.grad = None
        final, ys = (tg.scan if use_scan else tg.scan_loop)(step, h0, (x, scale))
        assert ys is None
        (final * final).sum().backward()
        result = [final.numpy()] + [t.grad.numpy() for t in (x, scale, h0, W)]
        if not use_scan:
            expected = result
    _assert_same(result, expected)


def test_length_without_xs(device, rng):
    W = _tensor(rng, (H, H), device)
    h0 = _tensor(rng, (B, H), device)

    def step(h, x):
        assert x is None
        h = (h @ W).tanh()
        return h, h.sum(axis=1)
    expected = _run(False, step, h0, None, [h0, W], length=7)
    got = _run(True, step, h0, None, [h0, W], length=7)
    _assert_same(got, expected)


# Steps whose outputs are not fresh carry-dependent values: the plan must still route every
# output and every gradient (a y read straight from x, a y made of closure tensors alone, the
# incoming carry returned as y, one tensor returned twice, a view of the carry).
_ODD_STEPS = {
    "y from x alone": lambda h, x, W, c: ((h @ W + x).tanh(), x * 2.0),
    "the carry from x alone": lambda h, x, W, c: (x * 1.0, (h @ W).tanh()),
    "a y from closure tensors alone": lambda h, x, W, c: ((h @ W + x).tanh(), c * 1.0),
    "the incoming carry as y": lambda h, x, W, c: ((h @ W + x).tanh(), h),
    "one tensor as carry and twice as y": lambda h, x, W, c: (
        lambda n: (n, (n, n)))((h @ W + x).tanh()),
    "views of the carry": lambda h, x, W, c: (
        (h.reshape(B * H).reshape(B, H) @ W + x).tanh(), h.reshape(B * H)),
}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("case", sorted(_ODD_STEPS))
def test_odd_step_outputs_equal_the_loop(device, rng, case, remat, reverse):
    W, c = _tensor(rng, (H, H), device), _tensor(rng, (H,), device)
    x, h0 = _tensor(rng, (T, B, H), device), _tensor(rng, (B, H), device)
    leaves = [x, h0, W] + ([c] if case == "a y from closure tensors alone" else [])

    def step(h, x_t):
        return _ODD_STEPS[case](h, x_t, W, c)
    expected = _run(False, step, h0, x, leaves, reverse=reverse)
    got = _run(True, step, h0, x, leaves, reverse=reverse, remat=remat)
    _assert_same(got, expected)


def test_gradcheck_through_scan(rng):
    w = {k: tg.Tensor(v.numpy()[..., :8] if k != "w_c" else v.numpy()[:2], requires_grad=True)
         for k, v in _weights(rng, "cpu").items()}
    w["W_ih"] = tg.Tensor(rng.standard_normal((I, 8)) * 0.5, requires_grad=True)
    w["W_hh"] = tg.Tensor(rng.standard_normal((2, 8)) * 0.5, requires_grad=True)
    x = tg.Tensor(rng.standard_normal((5, 2, I)), requires_grad=True)
    h0, c0 = (tg.Tensor(rng.standard_normal((2, 2)), requires_grad=True) for _ in range(2))

    def f(x, h0, c0, W_ih, W_hh, b, w_c):
        step = lstm_like_step({"W_ih": W_ih, "W_hh": W_hh, "b": b, "w_c": w_c})
        (h, c), (ys, cs) = tg.scan(step, (h0, c0), x, remat=True)
        return (ys * cs).sum() + (h * c).sum()
    assert tg.gradcheck(f, [x, h0, c0, w["W_ih"], w["W_hh"], w["b"], w["w_c"]])


def test_float32_stays_float32(device, rng):
    w = _weights(rng, device, np.float32)
    x = _tensor(rng, (T, B, I), device, np.float32)
    h0, c0 = _tensor(rng, (B, H), device, np.float32), _tensor(rng, (B, H), device, np.float32)
    (h, c), (ys, cs) = tg.scan(lstm_like_step(w), (h0, c0), x)
    assert h.dtype == c.dtype == ys.dtype == cs.dtype == np.float32
    ((ys * ys).sum() + (h * c).sum()).backward()
    for t in (x, h0, c0, *w.values()):
        assert t.grad.dtype == np.float32


def test_dropout_in_the_step_draws_fresh_masks_like_the_loop(device, rng):
    W = _tensor(rng, (H, H), device)
    x = _tensor(rng, (T, B, H), device)
    h0 = _tensor(rng, (B, H), device)

    def step(h, x_t):
        h = F.dropout(h @ W + x_t, 0.5).tanh()
        return h, h
    results = []
    for use_scan in (False, True):
        tg.manual_seed(7)
        results.append(_run(use_scan, step, h0, x, [x, h0, W]))
    _assert_same(results[1], results[0])
    zeros = results[1][1] == 0.0  # ys: where the mask dropped a unit, tanh(0) = 0
    assert 0.3 < zeros.mean() < 0.7
    assert not all((zeros[t] == zeros[0]).all() for t in range(1, T))  # a new mask each step


def test_loop_invariant_work_leaves_the_loop(rng):
    W_x, U = tg.Tensor(rng.standard_normal((I, H)), requires_grad=True), \
        tg.Tensor(rng.standard_normal((H, H)), requires_grad=True)
    x, h0 = tg.Tensor(rng.standard_normal((T, B, I))), tg.zeros(B, H, dtype=np.float64)

    def step(h, x_t):
        h = (x_t @ W_x + h @ U.T).tanh()
        return h, h
    tape = tg.trace_step(step, h0, x)
    kinds = {(e.cls.__name__, e.kind) for e in tape.entries}
    assert ("MatMul", BATCH) in kinds  # x_t @ W_x: one matmul per chunk of steps
    assert ("Permute", CONST) in kinds  # U.T: once
    assert ("MatMul", CARRY) in kinds and ("Tanh", CARRY) in kinds  # the recurrence


def test_retain_graph_backward_twice_accumulates(rng):
    w = _weights(rng, "cpu")
    x = _tensor(rng, (T, B, I), "cpu")
    h0, c0 = _tensor(rng, (B, H), "cpu"), _tensor(rng, (B, H), "cpu")
    (h, c), (ys, _) = tg.scan(lstm_like_step(w), (h0, c0), x)
    loss = (ys * ys).sum()
    loss.backward(retain_graph=True)
    once = w["W_hh"].grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(w["W_hh"].grad.numpy(), 2 * once, rtol=1e-12)


def test_no_grad_gives_the_same_values_without_a_graph(rng):
    w = _weights(rng, "cpu")
    x = _tensor(rng, (T, B, I), "cpu")
    h0, c0 = _tensor(rng, (B, H), "cpu"), _tensor(rng, (B, H), "cpu")
    (_, _), (ys, _) = tg.scan(lstm_like_step(w), (h0, c0), x)
    with tg.no_grad():
        (_, _), (ys_no_grad, _) = tg.scan(lstm_like_step(w), (h0, c0), x)
    assert not ys_no_grad.requires_grad
    np.testing.assert_array_equal(ys_no_grad.numpy(), ys.numpy())


def test_a_weight_changed_in_place_before_backward_raises(rng):
    w = _weights(rng, "cpu")
    x = _tensor(rng, (T, B, I), "cpu")
    h0, c0 = _tensor(rng, (B, H), "cpu"), _tensor(rng, (B, H), "cpu")
    (_, _), (ys, _) = tg.scan(lstm_like_step(w), (h0, c0), x)
    loss = ys.sum()
    loss.backward(retain_graph=True)
    tg.optim.SGD(list(w.values()), lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    return tg.Tensor(rng.standard_normal((4, 2, 3))), tg.Tensor(rng.standard_normal((2, 3)))


def test_value_dependent_control_flow_is_refused(small):
    x, h0 = small

    def step(h, x_t):
        if (h.sum() > 0):  # bool() of a traced value
            h = h * 2.0
        return h + x_t, None
    with pytest.raises(tg.ScanError, match=r"bool\(\)"):
        tg.scan(step, h0, x)


def test_item_and_numpy_of_a_traced_value_are_refused(small):
    x, h0 = small
    with pytest.raises(tg.ScanError, match=r"\.item\(\)"):
        tg.scan(lambda h, x_t: (h * h.sum().item() + x_t, None), h0, x)
    with pytest.raises(tg.ScanError, match=r"\.numpy\(\)"):
        tg.scan(lambda h, x_t: (h + tg.Tensor(x_t.numpy()), None), h0, x)


def test_arrays_made_outside_ops_that_change_per_step_are_refused(small):
    x, h0 = small
    with pytest.raises(tg.ScanError, match="changes from step to step"):
        tg.scan(lambda h, x_t: (h + tg.Tensor(x_t.data * 2.0), None), h0, x)


def test_an_array_index_is_refused(small):
    x, h0 = small
    with pytest.raises(tg.ScanError, match="setting 'index'"):
        tg.scan(lambda h, x_t: (h[np.array([1, 0])] + x_t, None), h0, x)


def test_detach_inside_the_step_is_replayed(small):
    x, h0 = small
    h0.requires_grad_()
    final, _ = tg.scan(lambda h, x_t: (h.detach() * 0.5 + x_t, None), h0, x)
    expected, _ = tg.scan_loop(lambda h, x_t: (h.detach() * 0.5 + x_t, None), h0, x)
    np.testing.assert_array_equal(final.numpy(), expected.numpy())


@pytest.mark.parametrize("step, match", [
    (lambda h, x: h, "must return \\(new_carry, y\\)"),
    (lambda h, x: ((h, h), None), "same structure as init"),
    (lambda h, x: (h.sum(axis=0), None), "changes carry\\[0\\] from shape"),
    (lambda h, x: (h.astype(np.float32), None), "dtype float64 to shape"),
])
def test_bad_steps_name_the_problem(small, step, match):
    x, h0 = small
    with pytest.raises(tg.ScanError, match=match):
        tg.scan(step, h0, x)


def test_bad_arguments_name_the_argument(small):
    x, h0 = small
    step = lambda h, x_t: (h + x_t, None)  # noqa: E731
    with pytest.raises(TypeError, match=r"init must be a Tensor"):
        tg.scan(step, h0.numpy(), x)
    with pytest.raises(TypeError, match=r"xs\[1\] must be a Tensor"):
        tg.scan(step, h0, (x, x.numpy()))
    with pytest.raises(ValueError, match="same length"):
        tg.scan(step, h0, (x, x[:2]))
    with pytest.raises(ValueError, match="length=3 but xs have length 4"):
        tg.scan(step, h0, x, length=3)
    with pytest.raises(ValueError, match="length= when xs is None"):
        tg.scan(step, h0, None)
    with pytest.raises(ValueError, match="at least one step"):
        tg.scan(step, h0, x[:0])
    with pytest.raises(TypeError, match="length must be an int"):
        tg.scan(step, h0, None, length=2.0)


def test_mixed_devices_are_refused(small):
    x, h0 = small
    if not tg.cuda_available():
        pytest.skip("needs the 'cuda' device (emulated or real)")
    with pytest.raises(RuntimeError, match="xs\\[0\\] is on 'cpu'"):
        tg.scan(lambda h, x_t: (h + x_t, None), h0.to("cuda"), x)


@pytest.mark.parametrize("remat", [False, True])
def test_scan_leaves_no_reference_cycles(remat):
    """Forward, backward and drop with the collector off: reference counting alone frees
    the scan node, its tape and the step functions it wrote (the (T, ...) values with them)."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    old_flags = gc.get_debug()
    try:
        rng = np.random.default_rng(0)
        w = _weights(rng, "cpu")
        x = _tensor(rng, (T, B, I), "cpu")
        h0, c0 = _tensor(rng, (B, H), "cpu"), _tensor(rng, (B, H), "cpu")
        (h, c), (ys, cs) = tg.scan(lstm_like_step(w), (h0, c0), x * 1.0, remat=remat)
        probe = weakref.ref(ys._node)
        (ys * ys).sum().backward()
        del h, c, ys, cs
        assert probe() is None, "the scan node was not freed by reference counting"
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        assert [o for o in gc.garbage if type(o).__module__.startswith("tinygrad_rnn")] == []
        assert found == 0
    finally:
        gc.set_debug(old_flags)
        gc.garbage.clear()
        gc.enable()


def test_batched_forms_of_x_only_ops_give_the_loop_numbers(device, rng):
    """A step full of ops on x alone: each runs on many steps at once (kind "batch") and the
    numbers, gradients included, are the Python loop's."""
    n_tokens = 7
    W = _tensor(rng, (6, I), device)
    b = _tensor(rng, (6,), device)
    E = _tensor(rng, (n_tokens, 6), device)
    U = _tensor(rng, (6, 6), device)
    x = _tensor(rng, (T, B, I), device)
    tokens = tg.Tensor(rng.integers(0, n_tokens, (T, B)), device=device)
    h0 = _tensor(rng, (B, 6), device)

    def step(h, xs):
        x_t, tok = xs
        u = (x_t * 2.0 + 1.0).tanh()                                   # elementwise
        v = u.reshape(B, 2, 2).sum(axis=2)                             # reshape, sum axis 2
        p, q = v.chunk(2, dim=1)                                       # split on axis 1
        lin = F.layer_norm(F.linear(x_t, W, b), 6)                     # linear, layer norm
        emb = F.embedding(tok, E)                                      # embedding
        soft = x_t.softmax(dim=1).max(axis=1, keepdims=True)           # softmax, max
        first = x_t.T.T.split([1, I - 1], dim=1)[0]                    # permute, split
        both = tg.cat([p * q, first], dim=1).mean(axis=1, keepdims=True)  # concat, mean
        h = (h @ U + lin + emb * soft + both).tanh()
        return h, h
    kinds = {e.cls.__name__: e.kind for e in tg.trace_step(step, h0, (x, tokens)).entries
             if e.kind == BATCH}
    for name in ("Tanh", "Reshape", "Sum", "Split", "Linear", "LayerNorm", "Embedding",
                 "Softmax", "Max", "Concat", "Mean", "Permute"):
        assert name in kinds, name
    leaves = [x, h0, W, b, E, U]
    expected = _run(False, step, h0, (x, tokens), leaves)
    got = _run(True, step, h0, (x, tokens), leaves)
    _assert_same(got, expected)


class _ScaledBySign(tg.ops.Function):
    """y = x * s with s = +1 or -1 from the sign of x's sum: a Python float (no array) that
    its forward stores and that changes from step to step."""

    def forward(self, x):
        self.scale = 1.0 if float(x.sum()) >= 0 else -1.0
        return x * self.scale

    def backward(self, dy):
        return dy * self.scale


def test_op_settings_stored_per_step_without_arrays_are_kept_per_step(rng):
    """An op that stores a value made from its input (not an array) gets it back for each
    step's backward: only ops that declare `stores_shapes_only` share one set of attributes
    over the steps."""
    W = _tensor(rng, (H, H), "cpu")
    x = _tensor(rng, (T, B, H), "cpu", scale=2.0)
    h0 = _tensor(rng, (B, H), "cpu")

    def step(h, x_t):
        h = tg.apply_op(_ScaledBySign, (h @ W + x_t).tanh())
        return h, h
    shared = {e.cls.__name__: e.cls.stores_shapes_only
              for e in tg.trace_step(step, h0, x).entries}
    assert shared == {"MatMul": False, "Add": True, "Tanh": False, "_ScaledBySign": False}
    _assert_same(_run(True, step, h0, x, [x, h0, W]), _run(False, step, h0, x, [x, h0, W]))


def test_final_carry_and_ys_do_not_share_memory(rng):
    """The next step reads a carry that is also a y from ys; the final carry is a copy."""
    W = _tensor(rng, (H, H), "cpu")
    x = _tensor(rng, (T, B, H), "cpu")

    def step(h, x_t):
        h = (h @ W + x_t).tanh()
        return h, h
    h, ys = tg.scan(step, _tensor(rng, (B, H), "cpu"), x)
    assert not np.shares_memory(h.data, ys.data)
    np.testing.assert_array_equal(h.numpy(), ys.numpy()[-1])


@pytest.mark.parametrize("options, at_most", [({}, 0.65), ({"layer_norm": True}, 0.5)])
def test_remat_keeps_the_carries_and_one_chunk(options, at_most):
    """With remat=True only the carries (and one chunk of 16 steps) are held between forward
    and backward: the peak memory of a training step falls well below the one without."""
    x = tg.Tensor(np.random.default_rng(0).standard_normal((128, 32, 8), dtype=np.float32),
                  requires_grad=True)

    def peak(remat):
        layer = tg.nn.LSTM(8, 128, fast="scan", remat=remat, **options)
        layer(x)[0].sum().backward()  # warm-up
        return peak_bytes(lambda: layer(x)[0].sum().backward())
    assert peak(True) < at_most * peak(False)


def test_ops_that_declare_stores_shapes_only_store_no_array(rng):
    """`stores_shapes_only` lets tg.scan share one op's attributes over all steps: checked
    for every op that declares it, on two calls with different values."""
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    calls = {tg.ops.Add: ({}, (a, b)), tg.ops.Sub: ({}, (a, b)), tg.ops.Neg: ({}, (a,)),
             tg.ops.Reshape: ({"shape": (4, 3)}, (a,)), tg.ops.Permute: ({"axes": (1, 0)}, (a,)),
             tg.ops.Concat: ({"axis": 1}, (a, b)), tg.ops.Split: ({"sizes": [1, 3], "axis": 1},
                                                                (a,))}
    declared = {cls for cls in vars(tg.ops).values() if isinstance(cls, type)
                and issubclass(cls, tg.ops.Function) and cls.stores_shapes_only}
    assert declared == set(calls)
    for cls, (params, arrays) in calls.items():
        fn = cls(**params)
        fn.xp = np
        fn.forward(*arrays)
        first = dict(fn.__dict__)
        fn.forward(*(x * 2.0 + 1.0 for x in arrays))
        stored = [v for k, v in fn.__dict__.items() if k != "xp"]
        assert not any(isinstance(v, np.ndarray) for v in stored), cls.__name__
        assert fn.__dict__ == first, cls.__name__


@pytest.mark.parametrize("batch, hidden, steps", [(64, 512, 16), (16, 256, 64), (8, 32, 128)])
def test_chunks_are_longer_for_small_carries(monkeypatch, batch, hidden, steps):
    """At least 16 steps per chunk (BLAS at full speed), up to 128 when the carry is small
    (2**18 carry elements per chunk), so that a chunk's own calls weigh little on tiny
    steps."""
    monkeypatch.undo()  # the module's own sizes

    def step(h, x):
        h = (h @ W + x).tanh()
        return h, h
    W = tg.zeros(hidden, hidden)
    tape = tg.trace_step(step, tg.zeros(batch, hidden), tg.zeros(300, batch, hidden))
    chunks = SCAN._Scan(tape, 300, reverse=True, remat=False, save=False)._chunks()
    assert [len(c) for c in chunks[:-1]] == [steps] * (300 // steps)
    assert [t for c in chunks for t in c] == list(range(299, -1, -1))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("remat", [False, True])
def test_a_linear_on_the_carry_sums_its_weight_gradients_per_chunk(device, rng, bias, remat):
    """F.linear(h, W, b) in the loop: W's and b's gradients are taken once per chunk of steps
    from the stacked h_t and dy_t (the op's own backward), and equal the loop's."""
    W = _tensor(rng, (H, H), device)
    b = _tensor(rng, (H,), device) if bias else None
    x = _tensor(rng, (T, B, H), device)
    h0 = _tensor(rng, (B, H), device)

    def step(h, x_t):
        h = (F.linear(h, W, b) + x_t).tanh()
        return h, h
    kinds = [(e.cls.__name__, e.kind) for e in tg.trace_step(step, h0, x).entries]
    assert ("Linear", CARRY) in kinds
    leaves = [x, h0, W] + ([b] if bias else [])
    _assert_same(_run(True, step, h0, x, leaves, remat=remat), _run(False, step, h0, x, leaves))
