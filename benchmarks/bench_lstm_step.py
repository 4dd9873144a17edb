"""Time one LSTM training step (forward over T steps + full BPTT, input gradient included) in
tinygrad_rnn, in hand-written NumPy (numpy_baselines.py) and in torch.nn.LSTM if installed.

    python benchmarks/bench_lstm_step.py               # T=100, B=64, I=128, H=256, float32
    python benchmarks/bench_lstm_step.py --threads 1   # one BLAS / torch thread for all three

Runs are interleaved (ours, numpy, torch, ours, ...) so that machine noise hits all of them
alike; the table gives the median and the minimum. Peak memory of one step is measured with
tracemalloc, which sees NumPy's allocations (so ours and the NumPy baseline) but not
PyTorch's. The markdown table is printed and written to benchmarks/results/lstm_step.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "lstm_step.md"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS and torch threads (default: the libraries' own choice); "
                             "takes effect when run as a script")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


if __name__ == "__main__":  # thread counts must be set before NumPy loads its BLAS
    _threads = parse_args().threads
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if _threads:
            os.environ[_var] = str(_threads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # numpy_baselines, run as a script

from numpy_baselines import lstm_step_numpy  # noqa: E402

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402


def make_ours(args, x):
    tg.manual_seed(0)
    lstm = nn.LSTM(args.input_size, args.hidden_size)
    x_t = tg.Tensor(x, requires_grad=True)

    def step():
        lstm.zero_grad()
        x_t.grad = None
        output, _ = lstm(x_t)
        output.sum().backward()
        return output

    return step, lstm


def make_numpy(lstm, x):
    sd = lstm.state_dict()
    W_ih, W_hh = sd["weight_ih_l0"], sd["weight_hh_l0"]
    b = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    return lambda: lstm_step_numpy(x, W_ih, W_hh, b)


def make_torch(lstm, x, threads):
    try:
        import torch
    except ImportError:
        return None, None
    if threads:
        torch.set_num_threads(threads)
    ref = torch.nn.LSTM(lstm.input_size, lstm.hidden_size)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
    x_t = torch.tensor(x, requires_grad=True)

    def step():
        ref.zero_grad(set_to_none=True)
        x_t.grad = None
        output, _ = ref(x_t)
        output.sum().backward()
        return output

    return step, torch


def peak_memory_mb(step) -> float:
    """Peak traced allocation during one step, above what was allocated before it."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return (peak - base) / 2**20


def check_agreement(ours_step, numpy_step, lstm) -> float:
    """Largest relative difference between our and NumPy's weight gradients (sanity check)."""
    ours_step()
    ref = numpy_step()
    worst = 0.0
    for key, grad in [("dW_ih", lstm.weight_ih_l0.grad), ("dW_hh", lstm.weight_hh_l0.grad),
                      ("db", lstm.bias_ih_l0.grad)]:
        diff = np.abs(ref[key] - grad.numpy()).max() / (np.abs(ref[key]).max() + 1e-30)
        worst = max(worst, float(diff))
    return worst


def run(args) -> str:
    rng = np.random.default_rng(0)
    shape = (args.seq_len, args.batch, args.input_size)
    x = rng.standard_normal(shape).astype(np.float32)
    ours_step, lstm = make_ours(args, x)
    numpy_step = make_numpy(lstm, x)
    torch_step, torch = make_torch(lstm, x, args.threads)
    steps = {"tinygrad_rnn": ours_step, "NumPy by hand": numpy_step}
    if torch_step is not None:
        steps[f"torch {torch.__version__} nn.LSTM"] = torch_step

    agreement = check_agreement(ours_step, numpy_step, lstm)
    times = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            gc.collect()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    memory = {name: peak_memory_mb(step) for name, step in steps.items()
              if not name.startswith("torch")}

    numpy_median = statistics.median(times["NumPy by hand"])
    lines = [
        f"# One LSTM training step: T={args.seq_len}, B={args.batch}, I={args.input_size}, "
        f"H={args.hidden_size}, float32",
        "",
        "Forward over all steps + `sum(output).backward()` (full BPTT, gradients of every "
        f"weight and of the input). Median and min of {args.repeats} interleaved runs after "
        "one warm-up; peak memory of one step measured with tracemalloc (sees NumPy "
        "allocations, not PyTorch's).",
        "",
        "| implementation | median ms | min ms | vs NumPy by hand | peak MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, samples in times.items():
        median = statistics.median(samples)
        mem = f"{memory[name]:.1f}" if name in memory else "n/a"
        lines.append(f"| {name} | {median * 1e3:.1f} | {min(samples) * 1e3:.1f} | "
                     f"{median / numpy_median:.2f}x | {mem} |")
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    threads = torch.get_num_threads() if torch is not None else "n/a"
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, Python "
        f"{platform.python_version()}, NumPy {np.__version__}, BLAS threads {blas}, "
        f"torch threads {threads}. "
        f"Max relative difference of our weight gradients vs the NumPy baseline: "
        f"{agreement:.1e}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    args = parse_args(argv)
    table = run(args)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    return table


if __name__ == "__main__":
    main()
