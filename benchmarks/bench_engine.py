"""Per-node overhead of the engine: forward + backward over a long chain of tiny ops.

On a (4,) float32 array the arithmetic costs almost nothing, so the time per node is the
engine's bookkeeping: creating the op and the output Tensor, recording the graph, the
topological sort, calling backward, un-broadcasting, accumulating, freeing. The same
arithmetic done with raw NumPy (forward loop and a hand-written reverse loop) is the floor,
and the ratio says how much the engine adds on top of it.

Run: .venv/bin/python benchmarks/bench_engine.py   (writes benchmarks/results/engine.md)
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import tinygrad_rnn as tg  # noqa: E402

NODES = 10_000  # ops per chain (each step below records two)
REPEATS = 7
SCALE, SHIFT = 1.0001, 0.0001
RESULTS = Path(__file__).resolve().parent / "results" / "engine.md"


# --------------------------------------------------------------------------- workloads
# Each workload returns (forward seconds, backward seconds, gradient) for one run.


def engine_affine(x0: np.ndarray):
    """y = y * 1.0001 + 0.0001, NODES/2 times: two elementwise nodes per step."""
    x = tg.Tensor(x0, requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(NODES // 2):
        y = y * SCALE + SHIFT
    loss = y.sum()
    middle = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    return middle - start, end - middle, x.grad.numpy()


def numpy_affine(x0: np.ndarray):
    """The same chain on raw arrays; the reverse loop is d(y*a + b)/dy = a per step."""
    start = time.perf_counter()
    y = x0
    for _ in range(NODES // 2):
        y = y * SCALE + SHIFT
    float(y.sum())
    middle = time.perf_counter()
    grad = np.ones_like(x0)
    for _ in range(NODES // 2):
        grad = grad * SCALE  # backward of the add is the identity
    end = time.perf_counter()
    return middle - start, end - middle, grad


def engine_tanh(x0: np.ndarray):
    """y = tanh(y * 1.0001), NODES/2 times: a node that saves its output for backward."""
    x = tg.Tensor(x0, requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(NODES // 2):
        y = (y * SCALE).tanh()
    loss = y.sum()
    middle = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    return middle - start, end - middle, x.grad.numpy()


def numpy_tanh(x0: np.ndarray):
    """The same chain on raw arrays, keeping every output for the hand-written backward."""
    start = time.perf_counter()
    y, outputs = x0, []
    for _ in range(NODES // 2):
        y = np.tanh(y * SCALE)
        outputs.append(y)
    float(y.sum())
    middle = time.perf_counter()
    grad = np.ones_like(x0)
    for out in reversed(outputs):
        grad = grad * (1 - out * out) * SCALE
    end = time.perf_counter()
    return middle - start, end - middle, grad


WORKLOADS = {
    "y = y * a + b": (engine_affine, numpy_affine),
    "y = tanh(y * a)": (engine_tanh, numpy_tanh),
}


# --------------------------------------------------------------------------- measurement


def measure(run, x0):
    """Median forward, backward and total seconds over REPEATS runs (after one warm-up)."""
    run(x0)
    forward, backward, total = [], [], []
    for _ in range(REPEATS):
        f, b, _ = run(x0)
        forward.append(f)
        backward.append(b)
        total.append(f + b)
    return statistics.median(forward), statistics.median(backward), statistics.median(total)


def per_node_us(seconds: float) -> float:
    return seconds / NODES * 1e6


def main() -> str:
    x0 = np.linspace(-0.5, 0.5, 4, dtype=np.float32)
    rows = []
    for name, (engine_run, numpy_run) in WORKLOADS.items():
        # the engine and the hand-written reverse loop must agree, or the timing means nothing
        np.testing.assert_allclose(engine_run(x0)[2], numpy_run(x0)[2], rtol=1e-3)
        e_fwd, e_bwd, e_total = measure(engine_run, x0)
        n_fwd, n_bwd, n_total = measure(numpy_run, x0)
        rows.append(
            f"| `{name}` | {NODES} | {per_node_us(e_fwd):.2f} | {per_node_us(e_bwd):.2f} | "
            f"{per_node_us(e_total):.2f} | {per_node_us(n_total):.2f} | "
            f"{e_total / n_total:.1f}x |")

    report = "\n".join([
        "# Engine overhead per node",
        "",
        f"Chain of {NODES} tiny ops on a (4,) float32 array, forward then backward; median of "
        f"{REPEATS} runs after a warm-up. Time per node in microseconds. NumPy = the same "
        "arithmetic on raw arrays with a hand-written reverse loop (the floor).",
        "",
        "| workload | nodes | engine forward | engine backward | engine total "
        "| NumPy total | engine / NumPy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", Python {platform.python_version()}, NumPy {np.__version__}, "
        f"tinygrad_rnn {tg.__version__}.",
        "",
        "Regenerate with `.venv/bin/python benchmarks/bench_engine.py` (or `make bench`).",
        "",
    ])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return report


if __name__ == "__main__":
    start = time.perf_counter()
    print(main())
    print(f"(wrote {RESULTS} in {time.perf_counter() - start:.1f} s)")
