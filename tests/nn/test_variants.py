"""LSTM and GRU variants that PyTorch lacks, against plain-NumPy forwards written from the
papers, and float64 gradchecks of every variant and combination.

The references below do not use the library: they take the stacked weights apart into
per-gate blocks and write each paper's equations with NumPy.
"""

import itertools

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

SEQ, BATCH, INPUT, HIDDEN, PROJ = 4, 2, 3, 4, 2
LSTM_FLAGS = [dict(zip(("peephole", "cifg", "layer_norm"), flags, strict=True))
              for flags in itertools.product([False, True], repeat=3)]


def _flag_id(flags):
    on = [name for name, value in flags.items() if value]
    return "+".join(on) or "plain"


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _ln(v, gain, bias, eps=1e-5):
    """Layer normalisation over the features (Ba et al. 2016, eq. 4), then gain and bias."""
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    return (v - mean) / np.sqrt(var + eps) * gain + bias


def _randomize(module, rng, scale=0.5):
    """Random values everywhere (LN gains/biases and peepholes included), so that every
    parameter's role is visible in the outputs."""
    for name, p in module.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * scale
        if name.startswith("ln_weight"):
            p.data[...] += 1.0


def ref_lstm(x, h, c, p, peephole=False, cifg=False, layer_norm=False):
    """One direction of an LSTM variant over x (T, B, I); p: NumPy weights by name without
    suffix. Returns outputs (T, B, H_out), h_T, c_T.

    Gers & Schmidhuber 2000 (peephole): i, f see c_{t-1}, o sees c_t, diagonal weights.
    Greff et al. 2017 (CIFG): i = 1 - f, no input-gate weights, rows [f, g, o].
    Ba et al. 2016, eqs. (20)-(22): LN of the input and recurrent terms, and of c_t before tanh.
    """
    H = c.shape[1]
    names = ["f", "g", "o"] if cifg else ["i", "f", "g", "o"]
    zeros = np.zeros(len(names) * H)
    b_ih = p.get("bias_ih", zeros)
    b_hh = p.get("bias_hh", zeros)
    outputs = []
    for x_t in x:
        from_x = x_t @ p["weight_ih"].T
        from_h = h @ p["weight_hh"].T
        if layer_norm:
            from_x = _ln(from_x, p["ln_weight_ih"], p["ln_bias_ih"])
            from_h = _ln(from_h, p["ln_weight_hh"], p["ln_bias_hh"])
        z = from_x + b_ih + from_h + b_hh
        pre = {name: z[:, k * H:(k + 1) * H] for k, name in enumerate(names)}
        f_pre = pre["f"] + (p["weight_cf"] * c if peephole else 0)
        f = _sigmoid(f_pre)
        if cifg:
            i = 1 - f
        else:
            i = _sigmoid(pre["i"] + (p["weight_ci"] * c if peephole else 0))
        g = np.tanh(pre["g"])
        c = f * c + i * g
        o = _sigmoid(pre["o"] + (p["weight_co"] * c if peephole else 0))
        c_shown = _ln(c, p["ln_weight_c"], p["ln_bias_c"]) if layer_norm else c
        h = o * np.tanh(c_shown)
        if "weight_hr" in p:
            h = h @ p["weight_hr"].T
        outputs.append(h)
    return np.stack(outputs), h, c


def ref_gru_cho(x, h, p):
    """GRU of Cho et al. 2014 (reset gate before the matmul), PyTorch's update convention."""
    H = h.shape[1]
    W_ir, W_iz, W_in = (p["weight_ih"][k * H:(k + 1) * H] for k in range(3))
    W_hr, W_hz, W_hn = (p["weight_hh"][k * H:(k + 1) * H] for k in range(3))
    zeros = np.zeros(3 * H)
    b_ir, b_iz, b_in = np.split(p.get("bias_ih", zeros), 3)
    b_hr, b_hz, b_hn = np.split(p.get("bias_hh", zeros), 3)
    outputs = []
    for x_t in x:
        r = _sigmoid(x_t @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
        z = _sigmoid(x_t @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        n = np.tanh(x_t @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs), h


def _layer_params(module, layer, reverse):
    """NumPy weights of one layer/direction of a layer module, names without the suffix."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {name[:-len(suffix)]: value for name, value in module.state_dict().items()
            if name.endswith(suffix)}


def ref_stack(module, x, h0, c0, run):
    """A multi-layer, bidirectional layer from the one-direction reference `run(x, h, c, p)`."""
    D = module.num_directions
    h_n, c_n = [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            index = layer * D + d
            p = _layer_params(module, layer, reverse=d == 1)
            seq = x[::-1] if d == 1 else x
            out, h, c = run(seq, h0[index], None if c0 is None else c0[index], p)
            outs.append(out[::-1] if d == 1 else out)
            h_n.append(h)
            c_n.append(c)
        x = np.concatenate(outs, axis=-1)
    return x, np.stack(h_n), (None if c0 is None else np.stack(c_n))


# --------------------------------------------------------------------------- LSTM forward


@pytest.mark.parametrize("flags", LSTM_FLAGS, ids=_flag_id)
def test_lstm_cell_matches_numpy_reference(flags, rng):
    cell = nn.LSTMCell(INPUT, HIDDEN, dtype=np.float64, **flags)
    _randomize(cell, rng)
    p = cell.state_dict()
    x = rng.standard_normal((1, BATCH, INPUT))
    h, c = rng.standard_normal((2, BATCH, HIDDEN))
    h1, c1 = cell(tg.tensor(x[0]), (tg.tensor(h), tg.tensor(c)))
    _, h_ref, c_ref = ref_lstm(x, h, c, p, **flags)
    np.testing.assert_allclose(h1.numpy(), h_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c1.numpy(), c_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flags", LSTM_FLAGS, ids=_flag_id)
@pytest.mark.parametrize("proj_size", [0, PROJ])
def test_lstm_layer_matches_numpy_reference(flags, proj_size, rng):
    lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=proj_size,
                   dtype=np.float64, **flags)
    _randomize(lstm, rng)
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    h0 = rng.standard_normal((4, BATCH, proj_size or HIDDEN))
    c0 = rng.standard_normal((4, BATCH, HIDDEN))
    out, (h_n, c_n) = lstm(tg.tensor(x), (tg.tensor(h0), tg.tensor(c0)))

    def run(seq, h, c, p):
        return ref_lstm(seq, h, c, p, **flags)
    out_ref, h_ref, c_ref = ref_stack(lstm, x, h0, c0, run)
    np.testing.assert_allclose(out.numpy(), out_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), h_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), c_ref, rtol=1e-12, atol=1e-12)


def test_lstm_variant_batch_first_and_unbatched_agree(rng):
    lstm = nn.LSTM(INPUT, HIDDEN, dtype=np.float64, peephole=True, cifg=True, layer_norm=True)
    _randomize(lstm, rng)
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    out, (h_n, _) = lstm(tg.tensor(x))
    lstm.batch_first = True
    out_bf, (h_bf, _) = lstm(tg.tensor(x.transpose(1, 0, 2)))
    np.testing.assert_array_equal(out_bf.numpy().transpose(1, 0, 2), out.numpy())
    np.testing.assert_array_equal(h_bf.numpy(), h_n.numpy())
    lstm.batch_first = False
    out_1, (h_1, c_1) = lstm(tg.tensor(x[:, 0]))
    assert out_1.shape == (SEQ, HIDDEN) and h_1.shape == (1, HIDDEN) and c_1.shape == (1, HIDDEN)
    np.testing.assert_allclose(out_1.numpy(), out.numpy()[:, 0], rtol=1e-12, atol=1e-14)


def test_zero_peepholes_reduce_to_plain_lstm(rng):
    """A peephole LSTM with zero peephole weights is the plain LSTM, with the same weights
    (to rounding: NumPy's exp may take another SIMD path on a contiguous copy)."""
    plain = nn.LSTM(INPUT, HIDDEN, num_layers=2, dtype=np.float64)
    plain.fast = False  # the composed path too, so the two agree bit for bit
    peep = nn.LSTM(INPUT, HIDDEN, num_layers=2, dtype=np.float64, peephole=True)
    missing, unexpected = peep.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == sorted(f"weight_c{g}_l{k}" for g in "ifo" for k in range(2))
    assert unexpected == []
    for name in missing:
        peep._parameters[name].data[...] = 0.0
    x = tg.tensor(rng.standard_normal((SEQ, BATCH, INPUT)))
    np.testing.assert_allclose(peep(x)[0].numpy(), plain(x)[0].numpy(), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- parameters


def test_default_parameters_are_pytorchs_and_variants_come_after():
    torch = pytest.importorskip("torch")
    for cls, options in [("LSTM", dict(proj_size=2)), ("GRU", {}), ("RNN", {})]:
        ref = getattr(torch.nn, cls)(INPUT, HIDDEN, num_layers=2, bidirectional=True, **options)
        ours = getattr(nn, cls)(INPUT, HIDDEN, num_layers=2, bidirectional=True, **options)
        assert list(ours.state_dict()) == list(ref.state_dict())
    full = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, peephole=True,
                   layer_norm=True, learn_initial_state=True)
    plain_names = list(nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True).state_dict())
    names = list(full.state_dict())
    assert names[:len(plain_names)] == plain_names
    extra = names[len(plain_names):]
    assert extra[:3] == ["weight_ci_l0", "weight_cf_l0", "weight_co_l0"]
    assert "ln_weight_ih_l1_reverse" in extra and "ln_bias_c_l0" in extra
    assert extra[-2:] == ["h_0", "c_0"]


def test_default_numbers_are_unchanged_by_the_options_machinery():
    """Same seed, same weights as before the options existed: the default init draws the
    same numbers in the same order (PyTorch's)."""
    tg.manual_seed(3)
    a = nn.LSTM(INPUT, HIDDEN, num_layers=2)
    tg.manual_seed(3)
    b = nn.LSTM(INPUT, HIDDEN, num_layers=2, learn_initial_state=True, recurrent_dropout=0.1)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value)


def test_variant_parameter_shapes_and_init():
    lstm = nn.LSTM(INPUT, HIDDEN, bidirectional=True, peephole=True, cifg=True,
                   layer_norm=True, forget_bias=1.0, learn_initial_state=True, proj_size=PROJ)
    params = dict(lstm.named_parameters())
    assert params["weight_ih_l0"].shape == (3 * HIDDEN, INPUT)
    assert params["weight_hh_l0_reverse"].shape == (3 * HIDDEN, PROJ)
    assert "weight_ci_l0" not in params  # CIFG has no input gate, so no input peephole
    assert params["weight_cf_l0"].shape == params["weight_co_l0_reverse"].shape == (HIDDEN,)
    assert params["ln_weight_ih_l0"].shape == params["ln_bias_hh_l0"].shape == (3 * HIDDEN,)
    assert params["ln_weight_c_l0_reverse"].shape == (HIDDEN,)
    assert params["h_0"].shape == (2, PROJ) and params["c_0"].shape == (2, HIDDEN)
    np.testing.assert_array_equal(params["ln_weight_hh_l0"].numpy(), 1.0)
    np.testing.assert_array_equal(params["ln_bias_c_l0"].numpy(), 0.0)
    np.testing.assert_array_equal(params["h_0"].numpy(), 0.0)
    for suffix in ("l0", "l0_reverse"):  # CIFG gate rows are [f, g, o]: forget slice first
        np.testing.assert_array_equal(params[f"bias_ih_{suffix}"].numpy()[:HIDDEN], 1.0)
        np.testing.assert_array_equal(params[f"bias_hh_{suffix}"].numpy()[:HIDDEN], 0.0)
    cell = nn.LSTMCell(INPUT, HIDDEN, peephole=True, layer_norm=True)
    assert [n for n, _ in cell.named_parameters()][4:] == [
        "weight_ci", "weight_cf", "weight_co", "ln_weight_ih", "ln_bias_ih", "ln_weight_hh",
        "ln_bias_hh", "ln_weight_c", "ln_bias_c"]


@pytest.mark.parametrize("value", [1.0, 2.5, 0.0])
def test_forget_bias_is_the_effective_forget_bias(value):
    H = HIDDEN
    for module in (nn.LSTM(INPUT, H, num_layers=2, forget_bias=value),
                   nn.LSTMCell(INPUT, H, forget_bias=value)):
        for name, p in module.named_parameters():
            if name.startswith("bias_ih"):
                np.testing.assert_array_equal(p.numpy()[H:2 * H], value)
            if name.startswith("bias_hh"):
                np.testing.assert_array_equal(p.numpy()[H:2 * H], 0.0)
        module.reset_parameters()  # re-initialising keeps the forget bias
        bias_ih = next(p for n, p in module.named_parameters() if n.startswith("bias_ih"))
        np.testing.assert_array_equal(bias_ih.numpy()[H:2 * H], value)


def test_impossible_or_bad_options_raise():
    with pytest.raises(ValueError, match="forget_bias=1.0 needs bias=True"):
        nn.LSTM(INPUT, HIDDEN, bias=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias"):
        nn.LSTMCell(INPUT, HIDDEN, bias=False, forget_bias=1.0)
    with pytest.raises(TypeError, match="peephole must be True or False"):
        nn.LSTM(INPUT, HIDDEN, peephole="yes")
    with pytest.raises(TypeError, match="forget_bias must be a number"):
        nn.LSTM(INPUT, HIDDEN, forget_bias="1")
    with pytest.raises(TypeError, match="reset_after"):
        nn.GRU(INPUT, HIDDEN, reset_after=None)
    with pytest.raises(ValueError, match=r"recurrent_dropout must be in \[0, 1\)"):
        nn.GRU(INPUT, HIDDEN, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match=r"zoneout must be in \[0, 1\]"):
        nn.RNN(INPUT, HIDDEN, zoneout=-0.1)
    with pytest.raises(TypeError):  # LSTM options are not GRU options
        nn.GRU(INPUT, HIDDEN, peephole=True)
    with pytest.raises(TypeError):  # options are keyword-only: positions are PyTorch's
        nn.LSTM(INPUT, HIDDEN, 1, True, False, 0.0, False, 0, None, None, True)


def test_repr_names_the_options():
    text = repr(nn.LSTM(INPUT, HIDDEN, peephole=True, cifg=True, forget_bias=1.0, zoneout=0.1))
    for part in ("peephole=True", "cifg=True", "forget_bias=1.0", "zoneout=0.1"):
        assert part in text
    assert "reset_after=False" in repr(nn.GRUCell(INPUT, HIDDEN, reset_after=False))


# --------------------------------------------------------------------------- GRU (Cho et al.)


def test_gru_cell_reset_before_matches_numpy_reference(rng):
    cell = nn.GRUCell(INPUT, HIDDEN, dtype=np.float64, reset_after=False)
    _randomize(cell, rng)
    x = rng.standard_normal((1, BATCH, INPUT))
    h = rng.standard_normal((BATCH, HIDDEN))
    _, h_ref = ref_gru_cho(x, h, cell.state_dict())
    np.testing.assert_allclose(cell(tg.tensor(x[0]), tg.tensor(h)).numpy(), h_ref,
                               rtol=1e-12, atol=1e-12)
    pytorch_form = nn.GRUCell(INPUT, HIDDEN, dtype=np.float64)
    pytorch_form.load_state_dict(cell.state_dict())
    assert not np.allclose(pytorch_form(tg.tensor(x[0]), tg.tensor(h)).numpy(), h_ref)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_layer_reset_before_matches_numpy_reference(bias, rng):
    gru = nn.GRU(INPUT, HIDDEN, num_layers=2, bias=bias, bidirectional=True, dtype=np.float64,
                 reset_after=False)
    _randomize(gru, rng)
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    h0 = rng.standard_normal((4, BATCH, HIDDEN))
    out, h_n = gru(tg.tensor(x), tg.tensor(h0))

    def run(seq, h, c, p):
        out, h = ref_gru_cho(seq, h, p)
        return out, h, None
    out_ref, h_ref, _ = ref_stack(gru, x, h0, None, run)
    np.testing.assert_allclose(out.numpy(), out_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), h_ref, rtol=1e-12, atol=1e-12)


def test_gru_reset_after_default_is_pytorch():
    torch = pytest.importorskip("torch")
    gru = nn.GRU(INPUT, HIDDEN, dtype=np.float64)
    ref = torch.nn.GRU(INPUT, HIDDEN).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((SEQ, BATCH, INPUT))
    np.testing.assert_allclose(gru(tg.tensor(x))[0].numpy(),
                               ref(torch.from_numpy(x))[0].detach().numpy(), atol=1e-14)


# --------------------------------------------------------------------------- gradcheck


def _gradcheck_module(module, x, state=(), seed=None, **forward_kwargs):
    """gradcheck d(outputs, final states)/d(input, states, every parameter). With seed, the
    random masks (dropout, zoneout) are drawn identically at every evaluation."""
    params = list(module.parameters())
    n_state = len(state)

    def fn(x, *rest):
        if seed is not None:
            tg.manual_seed(seed)
        hx = None if not n_state else (rest[0] if n_state == 1 else tuple(rest[:n_state]))
        out = module(x, hx, **forward_kwargs)
        finals = out[1] if isinstance(out[1], tuple) else (out[1],)
        return (out[0], *finals)
    return tg.gradcheck(fn, [x, *state, *params])


def _t(rng, *shape):
    return tg.tensor(rng.standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("flags", LSTM_FLAGS, ids=_flag_id)
def test_lstm_cell_variants_gradcheck(flags, rng):
    cell = nn.LSTMCell(2, 3, dtype=np.float64, forget_bias=1.0, **flags)
    _randomize(cell, rng)
    x, h, c = _t(rng, 2, 2), _t(rng, 2, 3), _t(rng, 2, 3)
    assert tg.gradcheck(lambda x, h, c, *ps: cell(x, (h, c)), [x, h, c, *cell.parameters()])


@pytest.mark.parametrize("flags", LSTM_FLAGS, ids=_flag_id)
@pytest.mark.parametrize("proj_size", [0, 1])
def test_lstm_layer_variants_gradcheck(flags, proj_size, rng):
    lstm = nn.LSTM(2, 2, proj_size=proj_size, dtype=np.float64, forget_bias=0.5, **flags)
    _randomize(lstm, rng)
    out = proj_size or 2
    assert _gradcheck_module(lstm, _t(rng, 3, 2, 2), (_t(rng, 1, 2, out), _t(rng, 1, 2, 2)))


def test_lstm_all_variants_stacked_bidirectional_gradcheck(rng):
    lstm = nn.LSTM(2, 2, num_layers=2, bidirectional=True, proj_size=1, batch_first=True,
                   dtype=np.float64, peephole=True, cifg=True, layer_norm=True, forget_bias=1.0)
    _randomize(lstm, rng)
    assert _gradcheck_module(lstm, _t(rng, 2, 3, 2), (_t(rng, 4, 2, 1), _t(rng, 4, 2, 2)))


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_variants_gradcheck(reset_after, rng):
    cell = nn.GRUCell(2, 3, dtype=np.float64, reset_after=reset_after)
    x, h = _t(rng, 2, 2), _t(rng, 2, 3)
    assert tg.gradcheck(lambda x, h, *ps: cell(x, h), [x, h, *cell.parameters()])
    gru = nn.GRU(2, 2, num_layers=2, bidirectional=True, dtype=np.float64,
                 reset_after=reset_after)
    assert _gradcheck_module(gru, _t(rng, 3, 2, 2), (_t(rng, 4, 2, 2),))


@pytest.mark.parametrize("kind", ["rnn", "gru", "gru_cho", "lstm", "lstm_variants"])
def test_regularisers_and_learned_state_gradcheck(kind, rng):
    """Recurrent dropout and zoneout in training mode (masks fixed by reseeding) and a learned
    initial state, through every kind of layer."""
    options = dict(dtype=np.float64, learn_initial_state=True, recurrent_dropout=0.3,
                   zoneout=0.3)
    if kind == "rnn":
        module = nn.RNN(2, 3, **options)
    elif kind.startswith("gru"):
        module = nn.GRU(2, 3, reset_after=kind == "gru", **options)
    else:
        extra = dict(peephole=True, cifg=True, layer_norm=True) if kind == "lstm_variants" else {}
        module = nn.LSTM(2, 3, **options, **extra)
    module.train()
    assert _gradcheck_module(module, _t(rng, 3, 2, 2), seed=5)
    module.eval()
    assert _gradcheck_module(module, _t(rng, 3, 2, 2))


# --------------------------------------------------------------------------- initial state


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
def test_learned_initial_state_layers(cls, rng):
    module = getattr(nn, cls)(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                              dtype=np.float64, learn_initial_state=True)
    _randomize(module, rng)
    x = tg.tensor(rng.standard_normal((SEQ, BATCH, INPUT)))
    names = ["h_0", "c_0"] if cls == "LSTM" else ["h_0"]
    learned = [getattr(module, n) for n in names]
    explicit = [tg.tensor(np.broadcast_to(p.numpy()[:, None], (4, BATCH, HIDDEN)).copy())
                for p in learned]
    hx = tuple(explicit) if cls == "LSTM" else explicit[0]
    out_learned, _ = module(x)
    out_explicit, _ = module(x, hx)
    np.testing.assert_array_equal(out_learned.numpy(), out_explicit.numpy())
    # an explicit state wins
    other = tuple(e * 0 for e in explicit) if cls == "LSTM" else explicit[0] * 0
    assert not np.allclose(module(x, other)[0].numpy(), out_learned.numpy())
    # gradients of all sequences are summed into the learned state
    out_learned.sum().backward()
    (out_explicit_2, _) = module(x, tuple(e.requires_grad_() for e in explicit)
                                 if cls == "LSTM" else explicit[0].requires_grad_())
    out_explicit_2.sum().backward()
    for p, e in zip(learned, explicit, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), e.grad.numpy().sum(axis=1), atol=1e-12)
    unbatched, _ = module(tg.tensor(x.numpy()[:, 0]))
    np.testing.assert_allclose(unbatched.numpy(), out_learned.numpy()[:, 0], atol=1e-12)


@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
def test_learned_initial_state_cells(cls, rng):
    cell = getattr(nn, cls)(INPUT, HIDDEN, dtype=np.float64, learn_initial_state=True)
    _randomize(cell, rng)
    x = tg.tensor(rng.standard_normal((BATCH, INPUT)))
    state = (cell.h_0, cell.c_0) if cls == "LSTMCell" else (cell.h_0,)
    explicit = [tg.tensor(np.broadcast_to(s.numpy(), (BATCH, HIDDEN)).copy()) for s in state]
    hx = tuple(explicit) if cls == "LSTMCell" else explicit[0]
    a, b = cell(x), cell(x, hx)
    a, b = (a[0], b[0]) if cls == "LSTMCell" else (a, b)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    x1 = tg.tensor(rng.standard_normal(INPUT))
    one = cell(x1)
    assert (one[0] if cls == "LSTMCell" else one).shape == (HIDDEN,)
    assert tg.gradcheck(lambda x, *ps: cell(x), [tg.tensor(x.numpy(), requires_grad=True),
                                                 *cell.parameters()])


# --------------------------------------------------------------------------- regularisers


def test_recurrent_dropout_uses_one_mask_per_sequence():
    """relu RNN with W_ih = 0, W_hh = I, no bias, h_0 = 1: h_t = m^t elementwise, so the
    dropped units are the same at every step exactly when the mask is drawn once."""
    p, T = 0.5, 6
    rnn = nn.RNN(1, 64, nonlinearity="relu", bias=False, dtype=np.float64,
                 recurrent_dropout=p)
    rnn.weight_ih_l0.data[...] = 0.0
    rnn.weight_hh_l0.data[...] = np.eye(64)
    x = tg.zeros(T, 3, 1, dtype=np.float64)
    h0 = tg.ones(1, 3, 64, dtype=np.float64)
    out, _ = rnn(x, h0)
    out = out.numpy()
    kept = out[0] > 0
    assert 0 < kept.mean() < 1
    for t in range(T):
        np.testing.assert_array_equal(out[t] > 0, kept)
        np.testing.assert_allclose(out[t][kept], (1 / (1 - p)) ** (t + 1))
    rnn.eval()  # no dropout and no rescaling in evaluation mode
    np.testing.assert_array_equal(rnn(x, h0)[0].numpy(), 1.0)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_cho"])
def test_recurrent_dropout_matches_numpy_reference(kind, rng):
    """The mask multiplies h only where it enters the recurrent matmul (Gal & Ghahramani)."""
    from tinygrad_rnn import functional as F

    p = 0.4
    if kind == "lstm":
        module = nn.LSTM(INPUT, HIDDEN, dtype=np.float64, recurrent_dropout=p, peephole=True)
    else:
        module = nn.GRU(INPUT, HIDDEN, dtype=np.float64, recurrent_dropout=p,
                        reset_after=kind == "gru")
    _randomize(module, rng)
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    tg.manual_seed(11)
    mask = F.dropout_mask((BATCH, HIDDEN), p, np.float64, "cpu")
    tg.manual_seed(11)
    out, _ = module(tg.tensor(x))
    params = _layer_params(module, 0, False)
    h = np.zeros((BATCH, HIDDEN))
    if kind == "lstm":
        c = np.zeros((BATCH, HIDDEN))
        outputs = []
        for x_t in x:
            _, h, c = ref_lstm(x_t[None], h * mask, c, params, peephole=True)
            outputs.append(h)
    elif kind == "gru_cho":
        outputs = []
        for x_t in x:  # masked h in the matmuls, plain h in the update
            H = HIDDEN
            W_hh, b_hh = params["weight_hh"], params["bias_hh"]
            gx = x_t @ params["weight_ih"].T + params["bias_ih"]
            hm = h * mask
            r = _sigmoid(gx[:, :H] + hm @ W_hh[:H].T + b_hh[:H])
            z = _sigmoid(gx[:, H:2 * H] + hm @ W_hh[H:2 * H].T + b_hh[H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + (r * hm) @ W_hh[2 * H:].T + b_hh[2 * H:])
            h = (1 - z) * n + z * h
            outputs.append(h)
    else:
        outputs = []
        for x_t in x:
            H = HIDDEN
            gx = x_t @ params["weight_ih"].T + params["bias_ih"]
            gh = (h * mask) @ params["weight_hh"].T + params["bias_hh"]
            r = _sigmoid(gx[:, :H] + gh[:, :H])
            z = _sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
            outputs.append(h)
    np.testing.assert_allclose(out.numpy(), np.stack(outputs), rtol=1e-12, atol=1e-12)
    module.eval()
    module.recurrent_dropout, eval_out = 0.0, module(tg.tensor(x))[0].numpy()
    module.recurrent_dropout = p
    np.testing.assert_array_equal(module(tg.tensor(x))[0].numpy(), eval_out)


def test_zoneout_training_keeps_or_updates_each_unit(rng):
    gru = nn.GRU(INPUT, 32, dtype=np.float64, zoneout=0.5)
    cell = nn.GRUCell(INPUT, 32, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in gru.state_dict().items()})
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    out = gru(tg.tensor(x))[0].numpy()
    previous = np.zeros((BATCH, 32))
    kept_fraction = []
    for t in range(SEQ):
        new = cell(tg.tensor(x[t]), tg.tensor(previous)).numpy()
        kept = out[t] == previous
        # the scan reads W_hh in another memory layout than the cell: the same sums up to
        # rounding, so the updated units match to 1e-12 (kept ones are exact copies)
        np.testing.assert_allclose(out[t][~kept], new[~kept], rtol=1e-12, atol=1e-14)
        kept_fraction.append(kept.mean())
        previous = out[t]
    assert 0.3 < np.mean(kept_fraction) < 0.7


def test_zoneout_eval_is_the_expectation(rng):
    p = 0.3
    lstm = nn.LSTM(INPUT, HIDDEN, dtype=np.float64, zoneout=p, layer_norm=True).eval()
    _randomize(lstm, rng)
    cell = nn.LSTMCell(INPUT, HIDDEN, dtype=np.float64, layer_norm=True)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    out, (h_n, c_n) = lstm(tg.tensor(x))
    h = c = np.zeros((BATCH, HIDDEN))
    for t in range(SEQ):
        h_new, c_new = (s.numpy() for s in cell(tg.tensor(x[t]), (tg.tensor(h), tg.tensor(c))))
        h, c = p * h + (1 - p) * h_new, p * c + (1 - p) * c_new
        np.testing.assert_allclose(out.numpy()[t], h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy()[0], c, rtol=1e-12, atol=1e-12)
