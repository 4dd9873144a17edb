"""Encoder-decoder (sequence to sequence, Sutskever et al. 2014): reverse a string of digits.

    source   3 1 4 1 5 9            encoder LSTM reads it; its final (h, c) is the summary
    target   9 5 1 4 1 3            decoder LSTM writes it, starting from that summary

Training uses teacher forcing: the decoder's input at step t is the true target at t - 1
(a start token at t = 0). At test time it decodes greedily, feeding back its own guesses.

    python examples/seq2seq_reverse.py           # about 15 s on 2 cores
    python examples/seq2seq_reverse.py --quick   # smoke test
"""

import argparse

import numpy as np

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim

DIGITS, START = 10, 10  # tokens 0..9 are digits; 10 is the decoder's start token


class Seq2Seq(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.src_embed = nn.Embedding(DIGITS, 32)
        self.encoder = nn.LSTM(32, hidden)
        self.tgt_embed = nn.Embedding(DIGITS + 1, 32)
        self.decoder = nn.LSTM(32, hidden)
        self.head = nn.Linear(hidden, DIGITS)

    def encode(self, source):
        _, state = self.encoder(self.src_embed(source))  # source (S, B) -> (h_n, c_n)
        return state

    def decode(self, decoder_input, state):
        out, state = self.decoder(self.tgt_embed(decoder_input), state)
        return self.head(out), state  # logits (T, B, 10)

    def forward(self, source, decoder_input):
        return self.decode(decoder_input, self.encode(source))[0]

    def greedy(self, source, length: int) -> np.ndarray:
        """Decode `length` tokens, each step fed the previous step's most likely digit."""
        state = self.encode(source)
        token = np.full((1, source.shape[1]), START)
        outputs = []
        for _ in range(length):
            logits, state = self.decode(tg.Tensor(token), state)
            token = logits.numpy().argmax(-1)  # (1, B)
            outputs.append(token[0])
        return np.stack(outputs)  # (length, B)


def make_batch(rng, length: int, batch: int):
    source = rng.integers(0, DIGITS, size=(length, batch))
    target = source[::-1]  # reversed in time
    decoder_input = np.concatenate([np.full((1, batch), START), target[:-1]])
    return source, decoder_input, target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.length, args.steps = 3, 20

    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Seq2Seq(hidden=128)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)

    for step in range(1, args.steps + 1):
        source, decoder_input, target = make_batch(rng, args.length, 64)
        logits = model(tg.Tensor(source), tg.Tensor(decoder_input))
        loss = F.cross_entropy(logits.reshape(-1, DIGITS), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()  # through the decoder, into the encoder via its final state
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")

    model.eval()
    source, _, target = make_batch(np.random.default_rng(10_000 + args.seed), args.length, 1000)
    with tg.no_grad():
        predicted = model.greedy(tg.Tensor(source), args.length)
    print(f"greedy decoding on 1000 new sequences: {(predicted == target).mean():.3f} of "
          f"digits, {(predicted == target).all(axis=0).mean():.3f} of whole sequences right")
    for i in range(3):
        print("  " + "".join(map(str, source[:, i])) + " -> "
              + "".join(map(str, predicted[:, i])))


if __name__ == "__main__":
    main()
