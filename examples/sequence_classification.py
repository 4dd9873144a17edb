"""Sequence classification: which waveform is this noisy sequence?

Four classes (sine, square, triangle, sawtooth), each with a random period, phase and
amplitude plus Gaussian noise. An LSTM reads the sequence and a Linear head classifies the
last hidden state (many-to-one) with cross-entropy. Always answering the most frequent class
scores about 0.25.

    python examples/sequence_classification.py           # about 20 s on 2 cores
    python examples/sequence_classification.py --quick   # smoke test
"""

import argparse

import numpy as np

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.tasks import WaveformClassification, make_task


class Classifier(nn.Module):
    def __init__(self, hidden: int, classes: int):
        super().__init__()
        self.rnn = nn.LSTM(1, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)  # x (T, B, 1)
        return self.head(out[-1])  # logits (B, classes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.seq_len, args.steps = 16, 20

    tg.manual_seed(args.seed)
    task = make_task("classify", seq_len=args.seq_len, seed=args.seed)
    model = Classifier(hidden=64, classes=task.output_size)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)

    for step in range(1, args.steps + 1):
        x, labels = task.train_batch(32)  # x (T, 32, 1), labels (32,) in 0..3
        loss = F.cross_entropy(model(tg.Tensor(x)), labels)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")

    with tg.no_grad():
        x, labels = task.eval_data()
        predicted = model(tg.Tensor(x)).numpy().argmax(-1)
    print(f"test accuracy {(predicted == labels).mean():.3f}  "
          f"(most frequent class: {task.baseline:.3f})")
    confusion = np.zeros((4, 4), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    names = WaveformClassification.CLASSES
    print("confusion (rows: true, columns: predicted)\n" + " " * 10
          + "".join(f"{n:>10s}" for n in names))
    for name, row in zip(names, confusion):
        print(f"{name:>10s}" + "".join(f"{v:10d}" for v in row))


if __name__ == "__main__":
    main()
