"""`make gpu-check`: the GPU backend on a real NVIDIA GPU, with the Python found on the machine.

For a machine with a GPU, CuPy and PyTorch already installed and no network: no venv, no pip.
Steps (each reports what it could not run, and the whole stays under 8 minutes):

1. the "cuda" half of the test suite on the real device (pytest --no-emulate-cuda -k cuda),
   which includes the fused CUDA kernels against the generic path (tests/ops/test_fused_cuda.py);
2. a training step (forward over T steps, sum of the outputs, full backward) of the fast
   LSTM and GRU on the GPU, against PyTorch's cuDNN LSTM / GRU and against the CPU;
3. the results written to benchmarks/results/gpu.md.

usage: python benchmarks/gpu_check.py [--out PATH] [--skip-tests] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZES = {"medium": dict(T=100, B=32, I=64, H=256), "large": dict(T=200, B=64, I=256, H=1024)}
TEST_BUDGET_S = 300
BENCH_BUDGET_S = 150


def probe() -> tuple[object, object, list[str]]:
    """(cupy or None, torch-with-cuda or None, what is missing)."""
    missing = []
    from tinygrad_rnn import backend
    cupy = backend.require_cuda() if backend.cuda_available() else None
    if cupy is None:
        missing.append(f"GPU backend: {backend._cupy_error}")
    try:
        import torch
        if not torch.cuda.is_available():
            missing.append("PyTorch is installed but sees no CUDA GPU: no cuDNN comparison")
            torch = None
    except ImportError:
        missing.append("PyTorch is not installed: no cuDNN comparison")
        torch = None
    return cupy, torch, missing


def run_tests() -> str:
    command = [sys.executable, "-m", "pytest", "-q", "--no-emulate-cuda", "-k", "cuda",
               "-p", "no:cacheprovider", "tests"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=TEST_BUDGET_S, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    except subprocess.TimeoutExpired:
        return f"NOT FINISHED: the cuda tests ran past {TEST_BUDGET_S} s"
    except Exception as exc:  # pytest missing, ...
        return f"NOT RUN: {type(exc).__name__}: {exc}"
    lines = (done.stdout + done.stderr).strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    status = "passed" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return "\n".join([f"{status}: {summary}", *failures[:30]])


def _median_ms(step, sync, reps) -> float:
    step()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(cupy, torch, reps: int, deadline: float) -> list[str]:
    import numpy as np

    import tinygrad_rnn as tg
    from tinygrad_rnn import backend, nn

    rows = ["| cell | size (T, B, I, H) | tinygrad_rnn cuda ms | cuDNN ms | vs cuDNN | "
            "tinygrad_rnn cpu ms | cpu / cuda |", "|---|---|---|---|---|---|---|"]
    for cell in ("LSTM", "GRU"):
        for name, s in SIZES.items():
            if time.monotonic() > deadline:
                rows.append(f"| {cell} | {name} | not run: time budget spent | | | | |")
                continue
            x = np.random.default_rng(0).standard_normal((s["T"], s["B"], s["I"]))
            x = x.astype(np.float32)
            timings = {}
            for device in ("cuda", "cpu"):
                layer = getattr(nn, cell)(s["I"], s["H"]).to(device)
                xt = tg.tensor(x, device=device)

                def step(layer=layer, xt=xt):
                    layer.zero_grad()
                    layer(xt)[0].sum().backward()
                timings[device] = _median_ms(step, lambda d=device: backend.synchronize(d),
                                             reps if device == "cuda" else max(2, reps // 3))
            cudnn = float("nan")
            if torch is not None:
                module = getattr(torch.nn, cell)(s["I"], s["H"]).cuda()
                xt = torch.tensor(x, device="cuda")

                def torch_step(module=module, xt=xt):
                    module.zero_grad()
                    module(xt)[0].sum().backward()
                cudnn = _median_ms(torch_step, torch.cuda.synchronize, reps)
            rows.append(f"| {cell} | {name} {tuple(s.values())} | {timings['cuda']:.2f} | "
                        f"{cudnn:.2f} | {timings['cuda'] / cudnn:.2f}x | {timings['cpu']:.1f} | "
                        f"{timings['cpu'] / timings['cuda']:.1f}x |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.md")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    start = time.monotonic()
    cupy, torch, missing = probe()
    if cupy is None:
        print("gpu-check: could not run anything on a GPU:")
        for line in missing:
            print("  -", line)
        print("  (needs an NVIDIA GPU with CuPy installed; nothing was written)")
        return 1
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    report = ["# GPU check", "", f"GPU: {gpu}; CuPy {cupy.__version__}; "
              f"PyTorch {getattr(torch, '__version__', 'not available')}", ""]
    tests = "skipped (--skip-tests)" if args.skip_tests else run_tests()
    print("cuda tests:", tests)
    report += ["## cuda tests on the device", "", "```", tests, "```", ""]
    rows = bench(cupy, torch, args.reps, start + TEST_BUDGET_S + BENCH_BUDGET_S)
    print("\n".join(rows))
    report += ["## training step, float32 (median of the timed steps)", "", *rows, "",
               "Targets: LSTM within 1.5x of cuDNN at large; the GPU faster than the CPU at "
               "medium and large."]
    if missing:
        report += ["", "## not run", "", *(f"- {line}" for line in missing)]
        print("could not run:", *missing, sep="\n  - ")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out} ({time.monotonic() - start:.0f} s)")
    return 0 if tests.startswith(("passed", "skipped")) else 1


if __name__ == "__main__":
    sys.exit(main())
