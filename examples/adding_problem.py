"""The adding problem (Hochreiter & Schmidhuber 1997), with the training loop written out.

Each sequence has T steps of two features: a random number in [0, 1) and a marker that is 1
at exactly two steps (one in each half). The target is the sum of the two marked numbers.
Always answering 1.0 scores MSE 0.167; to do better a model has to carry a number across up
to T steps. An LSTM learns it; a tanh RNN, whose gradient vanishes over that distance, does
not.

    python examples/adding_problem.py                  # LSTM, T=100 (about 30 s on 2 cores)
    python examples/adding_problem.py --cell rnn       # tanh RNN: stays near 0.167
    python examples/adding_problem.py --quick          # a few steps (smoke test)
"""

import argparse
import time

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.tasks import make_task


class AddingModel(nn.Module):
    """Recurrent layer over the sequence, then a Linear head on the last step (many-to-one)."""

    def __init__(self, cell: str, hidden: int):
        super().__init__()
        if cell == "lstm":
            # forget_bias=1: start out remembering (Gers et al. 2000; Jozefowicz et al. 2015)
            self.rnn = nn.LSTM(2, hidden, forget_bias=1.0)
        else:
            self.rnn = {"rnn": nn.RNN, "gru": nn.GRU}[cell](2, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)  # x (T, B, 2) -> out (T, B, hidden): every step's hidden state
        return self.head(out[-1])  # read the answer after the last step: (B, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="lstm")
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.seq_len, args.steps = 20, 20

    tg.manual_seed(args.seed)  # the initial weights
    task = make_task("adding", seq_len=args.seq_len, seed=args.seed)  # the data
    model = AddingModel(args.cell, hidden=64)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = task.train_batch(32)  # NumPy arrays: x (T, 32, 2), y (32, 1)
        loss = F.mse_loss(model(tg.Tensor(x)), tg.Tensor(y))
        optimizer.zero_grad()
        loss.backward()  # backpropagation through time: the graph is the unrolled network
        optim.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  training MSE {loss.item():.4f}  "
                  f"({time.perf_counter() - start:.0f} s)")

    model.eval()
    with tg.no_grad():  # evaluation: no graph
        x, y = task.eval_data()
        test_mse = F.mse_loss(model(tg.Tensor(x)), tg.Tensor(y)).item()
    print(f"{args.cell}, T={args.seq_len}: test MSE {test_mse:.4f}  "
          f"(baseline, always answering 1.0: {task.baseline:.4f})")


if __name__ == "__main__":
    main()
