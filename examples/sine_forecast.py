"""Forecast a noisy sum of sines one step ahead from a sliding window (many-to-one).

One long series, s(t) = sin(0.1 t + p1) + 0.5 sin(0.037 t + p2) + noise, is cut into
windows of `--window` values; the target of each window is the value that follows it. The
first 80% of the series gives training windows, the last 20% the test windows. The trivial
forecaster repeats the window's last value ("persistence").

    python examples/sine_forecast.py            # GRU, a few seconds
    python examples/sine_forecast.py --quick    # smoke test
"""

import argparse

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.tasks import make_task


class Forecaster(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.rnn = nn.GRU(1, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, window):
        out, h_n = self.rnn(window)  # window (T, B, 1); h_n (1, B, H) is the last step's state
        return self.head(h_n[0])  # for a one-layer GRU, h_n[0] equals out[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.window, args.steps = 10, 20

    tg.manual_seed(args.seed)
    task = make_task("sine", seq_len=args.window, seed=args.seed)
    model = Forecaster(hidden=32)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)

    for step in range(1, args.steps + 1):
        x, y = task.train_batch(32)  # x (T, 32, 1) windows, y (32, 1) next values
        loss = F.mse_loss(model(tg.Tensor(x)), tg.Tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()  # the learning rate follows a cosine down to 0
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  MSE {loss.item():.5f}")

    with tg.no_grad():
        x, y = task.eval_data()
        forecast = model(tg.Tensor(x)).numpy()
    mse = float(((forecast - y) ** 2).mean())
    print(f"test MSE {mse:.5f}  vs  persistence {task.baseline:.5f}  "
          f"(noise floor 0.02^2 = 0.0004)")
    for i in range(3):
        print(f"  window ending {x[-1, i, 0]:+.3f}: next {y[i, 0]:+.3f}, "
              f"forecast {forecast[i, 0]:+.3f}")


if __name__ == "__main__":
    main()
