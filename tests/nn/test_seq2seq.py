"""The three output patterns of recurrent nets, trained for a few steps on toy tasks:
many-to-one (classify a sequence), many-to-many (an output per step) and an encoder-decoder
whose decoder starts from the encoder's final state."""

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn.utils import pad_sequence


def _train(params, loss_fn, steps, lr):
    opt = optim.Adam(params, lr=lr)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(step)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_many_to_one_sequence_classification():
    """Is the sum of a +-1 sequence positive? Read off the last hidden state."""
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    lstm = nn.LSTM(1, 12, forget_bias=1.0)
    head = nn.Linear(12, 2)

    def batch(n):
        x = rng.choice([-1.0, 1.0], size=(7, n, 1)).astype(np.float32)
        return tg.tensor(x), (x.sum(axis=(0, 2)) > 0).astype(np.int64)

    def loss_fn(step):
        x, y = batch(32)
        _, (h_n, _) = lstm(x)
        return F.cross_entropy(head(h_n[-1]), y)

    losses = _train(list(lstm.parameters()) + list(head.parameters()), loss_fn, 80, 0.05)
    x, y = batch(256)
    with tg.no_grad():
        output, _ = lstm(x)
        accuracy = (head(output[-1]).numpy().argmax(axis=1) == y).mean()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert accuracy > 0.85, accuracy


def test_many_to_many_output_at_every_step():
    """Echo the previous input: y_t = x_{t-1}, a prediction at every step."""
    tg.manual_seed(1)
    rng = np.random.default_rng(1)
    gru = nn.GRU(1, 8, batch_first=True)
    head = nn.Linear(8, 1)

    def loss_fn(step):
        x = rng.standard_normal((16, 10, 1)).astype(np.float32)
        y = np.concatenate([np.zeros((16, 1, 1), np.float32), x[:, :-1]], axis=1)
        out, _ = gru(tg.tensor(x))  # (B, T, H): one output per step
        return F.mse_loss(head(out), y)

    losses = _train(list(gru.parameters()) + list(head.parameters()), loss_fn, 80, 0.03)
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10]), (losses[:3], losses[-3:])


class Seq2Seq(nn.Module):
    """Encoder LSTM -> its final (h, c) -> decoder LSTM, teacher-forced during training."""

    def __init__(self, vocab, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, hidden)  # the last index is the start token
        self.encoder = nn.LSTM(hidden, hidden, forget_bias=1.0)
        self.decoder = nn.LSTM(hidden, hidden, forget_bias=1.0)
        self.head = nn.Linear(hidden, vocab)
        self.start = vocab

    def encode(self, source, lengths=None):
        _, state = self.encoder(self.embed(source), lengths=lengths)
        return state

    def forward(self, source, target, lengths=None):
        """source (S, B), target (T, B) int arrays -> logits (T, B, vocab)."""
        state = self.encode(source, lengths)
        start = np.full((1, target.shape[1]), self.start)
        decoder_input = np.concatenate([start, target[:-1]], axis=0)
        out, _ = self.decoder(self.embed(decoder_input), state)
        return self.head(out)

    def greedy(self, source, steps):
        """Decode one token at a time, feeding back the prediction and the carried state."""
        state = self.encode(source)
        token = np.full((1, source.shape[1]), self.start)
        tokens = []
        for _ in range(steps):
            out, state = self.decoder(self.embed(token), state)
            token = self.head(out).numpy().argmax(axis=-1)
            tokens.append(token[0])
        return np.stack(tokens)


def test_encoder_decoder_learns_to_reverse():
    tg.manual_seed(2)
    rng = np.random.default_rng(2)
    vocab, length = 4, 3
    model = Seq2Seq(vocab, 16)

    def loss_fn(step):
        source = rng.integers(0, vocab, size=(length, 32))
        target = source[::-1]
        logits = model(source, target)
        return F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1))

    losses = _train(list(model.parameters()), loss_fn, 150, 0.03)
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10]), (losses[:3], losses[-3:])
    source = rng.integers(0, vocab, size=(length, 200))
    with tg.no_grad():
        predicted = model.greedy(source, length)
    assert (predicted == source[::-1]).mean() > 0.9


def test_decoder_starts_from_the_encoders_final_state(rng):
    model = Seq2Seq(5, 6)
    model.double()
    source = rng.integers(0, 5, size=(4, 3))
    target = rng.integers(0, 5, size=(3, 3))
    logits = model(source, target)
    # teacher-forced decoding equals step-by-step decoding from the encoder's state
    state = model.encode(source)
    inputs = np.concatenate([np.full((1, 3), model.start), target[:-1]], axis=0)
    for t in range(3):
        out, state = model.decoder(model.embed(inputs[t:t + 1]), state)
        np.testing.assert_allclose(model.head(out).numpy()[0], logits.numpy()[t], atol=1e-12)
    # the decoder's loss trains the encoder through that state
    F.cross_entropy(logits.reshape(-1, 5), target.reshape(-1)).backward()
    assert np.abs(model.encoder.weight_hh_l0.grad.numpy()).sum() > 0
    assert np.abs(model.encoder.weight_ih_l0.grad.numpy()).sum() > 0


def test_variable_length_sources_hand_over_their_own_last_state(rng):
    model = Seq2Seq(5, 6)
    model.double()
    sources = [rng.integers(0, 5, size=n) for n in (2, 5, 3)]
    padded, lengths = pad_sequence(sources, padding_value=0, return_lengths=True)
    source = padded.numpy().astype(np.int64)
    h_n, c_n = model.encode(source, lengths)
    for b, s in enumerate(sources):
        h_alone, c_alone = model.encode(s[:, None])
        np.testing.assert_allclose(h_n.numpy()[:, b], h_alone.numpy()[:, 0], atol=1e-12)
        np.testing.assert_allclose(c_n.numpy()[:, b], c_alone.numpy()[:, 0], atol=1e-12)
