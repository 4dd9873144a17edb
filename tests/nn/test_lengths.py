"""Variable-length batches: forward(input, hx, lengths=...) and pad_sequence.

Checked against PyTorch's pack_padded_sequence path (outputs, final states and gradients),
against running each sequence on its own, and for exact zeros (and zero gradient) at padding.
"""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.nn.utils import pad_sequence

SEQ, BATCH, INPUT, HIDDEN = 5, 4, 3, 4
LENGTHS = [3, 5, 1, 4]  # unsorted on purpose


def _torch_packed(torch, ref, x, hx, lengths, batch_first):
    pack = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                   batch_first=batch_first, enforce_sorted=False)
    packed_out, finals = ref(pack, hx)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=batch_first,
                                                    total_length=SEQ)
    return out, finals


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_match_pytorch_packed_sequences(cls, bidirectional, batch_first, rng):
    torch = pytest.importorskip("torch")
    options = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    if cls == "LSTM" and bidirectional and batch_first:
        options["proj_size"] = 2
    ours = getattr(nn, cls)(INPUT, HIDDEN, dtype=np.float64, **options)
    ref = getattr(torch.nn, cls)(INPUT, HIDDEN, **options).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    shape = (BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT)
    x = rng.standard_normal(shape)
    layers = 2 * (2 if bidirectional else 1)
    h0 = rng.standard_normal((layers, BATCH, options.get("proj_size") or HIDDEN))
    c0 = rng.standard_normal((layers, BATCH, HIDDEN))
    weights = rng.standard_normal((SEQ, BATCH, HIDDEN * (2 if bidirectional else 1)))

    x_ours, h0_ours, c0_ours = (tg.tensor(a, requires_grad=True) for a in (x, h0, c0))
    hx = (h0_ours, c0_ours) if cls == "LSTM" else h0_ours
    out, finals = ours(x_ours, hx, lengths=LENGTHS)
    x_ref, h0_ref, c0_ref = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    hx_ref = (h0_ref, c0_ref) if cls == "LSTM" else h0_ref
    out_ref, finals_ref = _torch_packed(torch, ref, x_ref, hx_ref, LENGTHS, batch_first)

    finals = finals if cls == "LSTM" else (finals,)
    finals_ref = finals_ref if cls == "LSTM" else (finals_ref,)
    np.testing.assert_allclose(out.numpy(), out_ref.detach().numpy(), atol=1e-12)
    for a, b in zip(finals, finals_ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=1e-12)

    w = weights[..., :out.shape[-1]]
    w = w.transpose(1, 0, 2) if batch_first else w
    loss = (out * tg.tensor(w)).sum() + sum((f * f).sum() for f in finals)
    loss.backward()
    loss_ref = (out_ref * torch.tensor(w)).sum() + sum((f * f).sum() for f in finals_ref)
    loss_ref.backward()
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), getattr(ref, name).grad.numpy(),
                                   atol=1e-11, err_msg=name)
    np.testing.assert_allclose(x_ours.grad.numpy(), x_ref.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(h0_ours.grad.numpy(), h0_ref.grad.numpy(), atol=1e-11)
    if cls == "LSTM":
        np.testing.assert_allclose(c0_ours.grad.numpy(), c0_ref.grad.numpy(), atol=1e-11)


def _build(kind):
    if kind == "lstm_variants":
        return nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=np.float64,
                       peephole=True, cifg=True, layer_norm=True, proj_size=2,
                       learn_initial_state=True)
    if kind == "gru_cho":
        return nn.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=np.float64,
                      reset_after=False, learn_initial_state=True)
    return nn.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=np.float64,
                  nonlinearity="relu", zoneout=0.25).eval()


@pytest.mark.parametrize("kind", ["lstm_variants", "gru_cho", "rnn_zoneout_eval"])
def test_lengths_equal_running_each_sequence_alone(kind, rng):
    """For variants PyTorch lacks: the batched run with lengths gives, for each sequence,
    what running that sequence alone (cut to its length) gives, in both directions."""
    module = _build(kind)
    for p in module.parameters():
        p.data[...] += rng.standard_normal(p.shape) * 0.3
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    out, finals = module(tg.tensor(x), lengths=np.array(LENGTHS))
    finals = finals if isinstance(finals, tuple) else (finals,)
    for b, length in enumerate(LENGTHS):
        alone, alone_finals = module(tg.tensor(x[:length, b:b + 1]))
        alone_finals = alone_finals if isinstance(alone_finals, tuple) else (alone_finals,)
        np.testing.assert_allclose(out.numpy()[:length, b], alone.numpy()[:, 0], atol=1e-13)
        np.testing.assert_array_equal(out.numpy()[length:, b], 0.0)
        for a, s in zip(finals, alone_finals, strict=True):
            np.testing.assert_allclose(a.numpy()[:, b], s.numpy()[:, 0], atol=1e-13)


def test_padding_gives_exact_zeros_and_no_gradient(rng):
    lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((SEQ, BATCH, INPUT)), requires_grad=True)
    out, (h_n, c_n) = lstm(x, lengths=LENGTHS)
    (out * out).sum().backward()
    for b, length in enumerate(LENGTHS):
        assert (out.numpy()[length:, b] == 0.0).all()
        assert (x.grad.numpy()[length:, b] == 0.0).all()
        assert (x.grad.numpy()[:length, b] != 0.0).any()
    # padding values do not matter at all
    x2 = x.numpy().copy()
    for b, length in enumerate(LENGTHS):
        x2[length:, b] = 1e6
    out2, (h2, c2) = lstm(tg.tensor(x2), lengths=LENGTHS)
    np.testing.assert_array_equal(out2.numpy(), out.numpy())
    np.testing.assert_array_equal(h2.numpy(), h_n.numpy())


def test_full_lengths_equal_no_lengths(rng):
    gru = nn.GRU(INPUT, HIDDEN, bidirectional=True, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((SEQ, BATCH, INPUT)))
    a, ha = gru(x)
    b, hb = gru(x, lengths=tg.tensor(np.full(BATCH, SEQ)))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ha.numpy(), hb.numpy())


@pytest.mark.parametrize("kind", ["lstm", "lstm_variants", "gru_cho", "rnn"])
def test_lengths_gradcheck(kind, rng):
    if kind == "lstm":
        module = nn.LSTM(2, 2, bidirectional=True, dtype=np.float64)
    elif kind == "lstm_variants":
        module = nn.LSTM(2, 2, bidirectional=True, dtype=np.float64, peephole=True,
                         layer_norm=True, forget_bias=1.0)
    elif kind == "gru_cho":
        module = nn.GRU(2, 2, bidirectional=True, dtype=np.float64, reset_after=False)
    else:
        module = nn.RNN(2, 2, num_layers=2, dtype=np.float64)
    x = tg.tensor(rng.standard_normal((3, 3, 2)), requires_grad=True)

    def fn(x, *params):
        out, finals = module(x, lengths=[2, 3, 1])
        return (out, *(finals if isinstance(finals, tuple) else (finals,)))
    assert tg.gradcheck(fn, [x, *module.parameters()])


@pytest.mark.parametrize("lengths, error, match", [
    ([0, 5, 1, 4], ValueError, r"lengths must be in \[1, seq_len=5\]"),
    ([3, 6, 1, 4], ValueError, r"lengths must be in \[1, seq_len=5\]"),
    ([3, 5, 1], ValueError, r"lengths.shape must be \(batch,\) = \(4,\), got \(3,\)"),
    ([[3, 5, 1, 4]], ValueError, r"lengths.shape must be"),
    ([3.0, 5.0, 1.0, 4.0], TypeError, "lengths must be integers"),
])
def test_bad_lengths_raise(lengths, error, match):
    lstm = nn.LSTM(INPUT, HIDDEN)
    with pytest.raises(error, match=match):
        lstm(tg.randn(SEQ, BATCH, INPUT), lengths=lengths)


def test_lengths_need_a_batched_input():
    with pytest.raises(ValueError, match="lengths= needs a batched"):
        nn.GRU(INPUT, HIDDEN)(tg.randn(SEQ, INPUT), lengths=[SEQ])


# --------------------------------------------------------------------------- pad_sequence


def test_pad_sequence_shapes_values_and_lengths(rng):
    seqs = [rng.standard_normal((n, 2)) for n in LENGTHS]
    padded, lengths = pad_sequence(seqs, return_lengths=True)
    assert padded.shape == (SEQ, BATCH, 2) and padded.dtype == np.float64
    np.testing.assert_array_equal(lengths, LENGTHS)
    assert lengths.dtype == np.int64
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(padded.numpy()[:len(s), b], s)
        np.testing.assert_array_equal(padded.numpy()[len(s):, b], 0.0)
    first = pad_sequence([tg.tensor(s) for s in seqs], batch_first=True, padding_value=-1.0)
    assert first.shape == (BATCH, SEQ, 2)
    np.testing.assert_array_equal(first.numpy()[2, 1:], -1.0)
    one_d = pad_sequence([np.arange(3.0), np.arange(1.0)])
    np.testing.assert_array_equal(one_d.numpy(), [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    tokens = pad_sequence([np.arange(3), np.arange(1)], batch_first=True, padding_value=-1)
    assert tokens.dtype == np.int64  # token ids stay integers
    np.testing.assert_array_equal(tokens.numpy(), [[0, 1, 2], [0, -1, -1]])


def test_pad_sequence_matches_torch(rng):
    torch = pytest.importorskip("torch")
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in LENGTHS]
    for batch_first in (False, True):
        ours = pad_sequence(seqs, batch_first=batch_first, padding_value=2.0)
        ref = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s) for s in seqs],
                                              batch_first=batch_first, padding_value=2.0)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())


def test_pad_sequence_is_differentiable_and_feeds_lengths(rng):
    seqs = [tg.tensor(rng.standard_normal((n, INPUT)), requires_grad=True) for n in LENGTHS]
    padded, lengths = pad_sequence(seqs, return_lengths=True)
    lstm = nn.LSTM(INPUT, HIDDEN, dtype=np.float64)
    out, (h_n, _) = lstm(padded, lengths=lengths)
    h_n.sum().backward()
    for s in seqs:
        assert s.grad is not None and s.grad.shape == s.shape
        assert np.abs(s.grad.numpy()).sum() > 0


def test_pad_sequence_errors():
    with pytest.raises(ValueError, match="non-empty list"):
        pad_sequence([])
    with pytest.raises(ValueError, match=r"sequences\[1\].shape\[1:\]"):
        pad_sequence([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(TypeError, match=r"sequences\[1\] is float32"):
        pad_sequence([np.zeros((2, 3)), np.zeros((1, 3), dtype=np.float32)])
