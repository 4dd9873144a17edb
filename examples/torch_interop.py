"""Weights to and from PyTorch: the parameter names, shapes and gate order are PyTorch's.

1. Build a tinygrad_rnn LSTM + Linear, copy its state dict into the same torch.nn modules,
   and check that both give the same outputs.
2. Train the PyTorch copy for a few steps, load its weights back (load_state_dict accepts
   torch tensors), and check again.

    python examples/torch_interop.py          # needs PyTorch: pip install torch
    python examples/torch_interop.py --quick
"""

import argparse
import sys

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn

try:
    import torch
except ImportError:
    torch = None


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.rnn = nn.LSTM(3, hidden, num_layers=2)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])


def torch_model(hidden: int):
    """The same architecture in PyTorch; the attribute names match, so the keys do too."""
    model = torch.nn.Module()
    model.rnn = torch.nn.LSTM(3, hidden, num_layers=2)
    model.head = torch.nn.Linear(hidden, 1)
    return model


def torch_forward(model, x):
    out, _ = model.rnn(x)
    return model.head(out[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="PyTorch training steps")
    parser.add_argument("--quick", action="store_true", help="smaller (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.steps = 8, 3
    if torch is None:
        print("this example needs PyTorch: pip install torch", file=sys.stderr)
        return 1

    tg.manual_seed(0)
    ours = Model(args.hidden)
    theirs = torch_model(args.hidden)
    print("parameters:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in ours.state_dict().items()))

    # 1. tinygrad_rnn -> PyTorch: state_dict() gives NumPy arrays under PyTorch's names.
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((20, 4, 3)).astype(np.float32)
    ours_out = ours(tg.Tensor(x)).numpy()
    theirs_out = torch_forward(theirs, torch.from_numpy(x)).detach().numpy()
    print(f"tinygrad_rnn -> torch: largest output difference "
          f"{np.abs(ours_out - theirs_out).max():.2e}")

    # 2. Train in PyTorch, then PyTorch -> tinygrad_rnn.
    optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    target = torch.ones(4, 1)
    for _ in range(args.steps):
        loss = torch.nn.functional.mse_loss(torch_forward(theirs, torch.from_numpy(x)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ours.load_state_dict(theirs.state_dict())  # torch tensors are accepted as they are
    ours_out = ours(tg.Tensor(x)).numpy()
    theirs_out = torch_forward(theirs, torch.from_numpy(x)).detach().numpy()
    gap = np.abs(ours_out - theirs_out).max()
    print(f"torch -> tinygrad_rnn after {args.steps} torch steps: largest output difference "
          f"{gap:.2e}")
    return 0 if gap < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
