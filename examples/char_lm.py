"""A character-level language model trained with truncated backpropagation through time.

The corpus is the docstrings of the Python standard library (on every machine, offline), or
any text file given with --text. The text is laid out as B parallel streams; every step
reads the next T characters of each stream and predicts each following character. The hidden
state is carried from one chunk to the next (so the model sees an unbroken text) but detached
from the graph (so backward() only goes back T steps): that is truncated BPTT.

    python examples/char_lm.py                    # about 3 minutes on 2 cores, then samples
    python examples/char_lm.py --text book.txt    # your own text
    python examples/char_lm.py --quick            # smoke test

The same model from the command line: tinygrad-rnn train --task charlm, then
tinygrad-rnn sample --checkpoint runs/charlm-lstm.
"""

import argparse
import math
from pathlib import Path

import numpy as np

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn.utils import detach_state
from tinygrad_rnn.tasks import CharLM


class CharModel(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.rnn = nn.LSTM(64, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embed(tokens), state)  # tokens (T, B)
        return self.head(out), state  # logits (T, B, vocab) and the state to carry on


def sample(model, task, prime: str, length: int, temperature: float, rng) -> str:
    """Feed `prime`, then draw one character at a time from softmax(logits / temperature)."""
    model.eval()
    with tg.no_grad():
        logits, state = model(tg.Tensor(task.encode(prime)[:, None]))
        text = prime
        for _ in range(length):
            z = logits.numpy()[-1, 0].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            char = int(rng.choice(len(p), p=p / p.sum()))
            text += task.decode([char])
            logits, state = model(tg.Tensor(np.array([[char]])), state)
    model.train()
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", help="a UTF-8 text file (default: stdlib docstrings)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seq-len", type=int, default=64, help="truncation length T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    max_chars, hidden = 1_000_000, 256
    if args.quick:
        args.steps, args.seq_len, max_chars, hidden = 20, 16, 30_000, 32

    tg.manual_seed(args.seed)
    text = Path(args.text).read_text(encoding="utf-8") if args.text else None
    task = CharLM(args.seq_len, seed=args.seed, text=text, max_chars=max_chars,
                  eval_size=20_000)
    print(task.describe())
    vocab = len(task.chars)
    model = CharModel(vocab, hidden)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)

    state = None
    for step in range(1, args.steps + 1):
        x, y = task.train_batch(32)  # the next T characters of 32 streams, and y = x shifted
        if task.new_epoch:
            state = None  # the streams started over: forget the old context
        logits, state = model(tg.Tensor(x), state)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()  # back through this chunk only
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = detach_state(state)  # keep the values, drop the graph
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.3f} nats/char")

    # Held-out loss: read the validation text the same way, without gradients.
    model.eval()
    total, count, state = 0.0, 0, None
    with tg.no_grad():
        for x, y in task.eval_batches(32):
            logits, state = model(tg.Tensor(x), state)
            total += F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1),
                                     reduction="sum").item()
            count += y.size
    val_loss = total / count
    print(f"validation loss {val_loss:.3f} nats/char ({val_loss / math.log(2):.2f} bits), "
          f"unigram entropy {task.unigram_entropy():.3f} nats")
    print("sample:\n" + sample(model, task, prime=task.decode(task.val_ids[:1]), length=300,
                               temperature=0.8, rng=np.random.default_rng(args.seed)))


if __name__ == "__main__":
    main()
