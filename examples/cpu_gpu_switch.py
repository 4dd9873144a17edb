"""The same model and training loop on the CPU (NumPy) or a GPU (CuPy): only `device` changes.

    python examples/cpu_gpu_switch.py --device cpu
    python examples/cpu_gpu_switch.py --device cuda      # needs CuPy and an NVIDIA GPU
    python examples/cpu_gpu_switch.py --compare          # both, and check they agree
    python examples/cpu_gpu_switch.py --quick

`model.to(device)` moves the parameters (in place, so an optimizer made before or after
still holds them); tensors made with `device=` live there; `.numpy()` always copies back
to a NumPy array. Without CuPy, asking for "cuda" raises an error that says what to install.
"""

import argparse
import sys
import time

import numpy as np

import tinygrad_rnn as tg
import tinygrad_rnn.functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.backend import normalize_device
from tinygrad_rnn.tasks import make_task


def train(device: str, steps: int, hidden: int, seed: int = 0):
    """Train an LSTM on the adding problem on `device`; return (losses, seconds per step)."""
    tg.manual_seed(seed)  # the weights are drawn on the CPU, then moved: same start anywhere
    lstm, head = nn.LSTM(2, hidden), nn.Linear(hidden, 1)
    model = nn.ModuleList([lstm, head]).to(device)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    task = make_task("adding", seq_len=50, seed=seed)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        x, y = task.train_batch(64)  # NumPy arrays from the data generator
        x, y = tg.Tensor(x, device=device), tg.Tensor(y, device=device)
        out, _ = lstm(x)
        loss = F.mse_loss(head(out[-1]), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # .item() / .numpy() bring values back to the host
    return np.array(losses), (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compare", action="store_true", help="run on cpu and cuda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="a few steps (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.hidden = 5, 16
    print("devices on this machine:", ", ".join(tg.available_devices()))
    devices = ["cpu", "cuda"] if args.compare else [args.device]
    try:
        devices = [normalize_device(d) for d in devices]
    except (RuntimeError, ValueError) as error:
        parser.error(str(error))  # e.g. "... CuPy is not installed ... pip install cupy-cuda12x"

    results = {}
    for device in devices:
        losses, per_step = train(device, args.steps, args.hidden)
        results[device] = losses
        print(f"{device:5s}: {per_step * 1000:7.1f} ms/step, loss {losses[0]:.4f} -> "
              f"{losses[-1]:.4f}")
    if len(results) == 2:
        gap = np.abs(results["cpu"] - results["cuda"]).max()
        print(f"largest difference between the cpu and cuda losses: {gap:.2e} (float32 "
              "round-off that grows over training; the first steps agree closely)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
