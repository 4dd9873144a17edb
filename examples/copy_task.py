"""The copy task: read a string of symbols, see a delimiter, write the string back.

Input (time runs left to right), for 5 symbols from an alphabet of 8:

    input    3 1 4 1 5 | . . . . .          (| = delimiter, . = blank)
    target   - - - - - - 3 1 4 1 5          (- = no target: ignored by the loss)

The model sees one token per step (embedding -> LSTM -> Linear at every step) and is scored
only on the recall steps, with cross_entropy(..., ignore_index=IGNORE). Guessing gets 1/8 of
the symbols right.

    python examples/copy_task.py             # 10 symbols (about 20 s on 2 cores)
    python examples/copy_task.py --quick     # smoke test
"""

import argparse

import numpy as np

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.tasks import IGNORE, make_task


class Copier(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.rnn = nn.LSTM(16, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))  # tokens (T, B) -> (T, B, 16) -> (T, B, H)
        return self.head(out)  # logits at every step: (T, B, vocab)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=10, help="symbols to copy")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.length, args.steps = 4, 20

    tg.manual_seed(args.seed)
    task = make_task("copy", seq_len=args.length, seed=args.seed)
    vocab = task.input_size  # blank, 8 symbols, delimiter
    model = Copier(vocab, hidden=128)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)

    for step in range(1, args.steps + 1):
        x, y = task.train_batch(32)  # both (T, 32) int64; y is IGNORE outside the recall
        logits = model(tg.Tensor(x))
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")

    with tg.no_grad():
        x, y = task.eval_data()
        predicted = model(tg.Tensor(x)).numpy().argmax(-1)
    recall = y != IGNORE
    accuracy = (predicted == y)[recall].mean()
    whole = (predicted[-args.length:] == y[-args.length:]).all(axis=0).mean()
    print(f"copy {args.length} symbols: accuracy {accuracy:.3f} per symbol, {whole:.3f} of "
          f"sequences without a mistake (chance: {task.baseline:.3f} per symbol)")
    print("example:  input ", " ".join(map(str, x[:, 0])))
    print("          output", " ".join(str(p) if r else "-"
                                       for p, r in zip(predicted[:, 0], recall[:, 0])))
    assert np.isfinite(accuracy)


if __name__ == "__main__":
    main()
