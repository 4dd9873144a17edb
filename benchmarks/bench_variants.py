"""Training-step benchmark of the recurrent variants and of a cell a user writes, on tg.scan.

Every LSTM variant (peephole, cifg, layer_norm, forget_bias, zoneout and recurrent dropout in
training mode), the GRU of Cho et al. (reset_after=False), the plain cells and the
layer-normalised LSTM forced through tg.scan (fast="scan"; by default they run fused ops)
and the Minimal Gated Unit written as a step function (tg.scan against the same step in a
Python loop, tg.scan_loop), timed interleaved in one process against the plain LSTM's fused
path (its hand-written BPTT) and the composed per-step graph (fast=False).
Also the peak memory of one step (tracemalloc), with and without remat=True.

One step = forward over T steps, loss = sum of the outputs, full backward; one layer, float32.
Ratios are to the plain fused LSTM (to the fused GRU for the GRU rows, to the fused RNN for the
RNN rows, to the MGU's Python loop for the MGU): compare ratios, never absolute times.

usage: python benchmarks/bench_variants.py [--quick] [--reps N] [--out PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# bench_recurrent applies --threads to the BLAS, which reads it when it loads: it must come
# before NumPy, which is why the import sorter (I001) is told to leave this block alone
from bench_recurrent import (  # noqa: E402, I001
    _median,
    _ms,
    blas_note,
    peak_bytes,
    pin_malloc,
    time_interleaved,
)

import numpy as np  # noqa: E402

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402

CONFIGS = {"medium": (100, 64, 128, 256), "long": (1000, 8, 16, 32)}
QUICK_CONFIGS = {"tiny": (6, 3, 4, 5)}
RESULTS = HERE / "results" / "variants.md"

LSTM_VARIANTS = {  # name -> (LSTM keyword options, train mode)
    "peephole": ({"peephole": True}, False),
    "cifg": ({"cifg": True}, False),
    "layer_norm": ({"layer_norm": True}, False),
    "forget_bias": ({"forget_bias": 1.0}, False),
    "zoneout=0.1 (training)": ({"zoneout": 0.1}, True),
    "recurrent_dropout=0.25 (training)": ({"recurrent_dropout": 0.25}, True),
}
TARGETS = {"variant": {"medium": 1.3, "long": 2.5}, "plain_scan": {"medium": 1.15, "long": 2.0},
           "memory": 1.5, "remat_memory": 1.1, "remat_time": 1.4, "mgu_speed": 3.0,
           "mgu_memory": 0.6}


class MGU(nn.Module):
    """The Minimal Gated Unit (Zhou et al. 2016), written as a user would: a step function
    on Tensors, run by tg.scan or by a Python loop (tg.scan_loop)."""

    def __init__(self, input_size: int, hidden_size: int, use_scan: bool = True):
        super().__init__()
        bound = 1.0 / np.sqrt(hidden_size)
        for name, shape in (("W_f", (input_size, hidden_size)), ("U_f", (hidden_size, hidden_size)),
                            ("b_f", (hidden_size,)), ("W_n", (input_size, hidden_size)),
                            ("U_n", (hidden_size, hidden_size)), ("b_n", (hidden_size,))):
            setattr(self, name, nn.Parameter(tg.rand(*shape) * (2 * bound) - bound))
        self.hidden_size, self.use_scan = hidden_size, use_scan

    def step(self, h, x):
        f = (x @ self.W_f + h @ self.U_f + self.b_f).sigmoid()
        n = (x @ self.W_n + (f * h) @ self.U_n + self.b_n).tanh()
        h = (1 - f) * h + f * n
        return h, h

    def forward(self, xs):
        h0 = tg.zeros(xs.shape[1], self.hidden_size)
        run = tg.scan if self.use_scan else tg.scan_loop
        return run(self.step, h0, xs)[1]


def layer_step(layer, x):
    def run():
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        out = layer(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
    return run


def contenders(shape, remat: bool) -> dict:
    """name -> zero-argument training step."""
    T, B, I, H = shape
    x = tg.Tensor(np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32),
                  requires_grad=True)

    def make(cls, fast=True, train=False, **options):
        tg.manual_seed(0)
        layer = getattr(nn, cls)(I, H, fast=fast, **options)
        layer.train(train)
        return layer_step(layer, x)
    steps = {"LSTM fused": make("LSTM"), "LSTM scan": make("LSTM", "scan"),
             "LSTM composed": make("LSTM", False)}
    for name, (options, train) in LSTM_VARIANTS.items():
        steps[name] = make("LSTM", train=train, **options)
        if remat:
            steps[f"{name} remat"] = make("LSTM", train=train, remat=True, **options)
    # the one variant with a fused op of its own: also through scan, which it must beat
    steps["layer_norm scan"] = make("LSTM", "scan", layer_norm=True)
    steps.update({"GRU fused": make("GRU"), "GRU scan": make("GRU", "scan"),
                  "GRU reset_after=False": make("GRU", reset_after=False),
                  "RNN fused": make("RNN"), "RNN scan": make("RNN", "scan")})
    tg.manual_seed(0)
    steps["MGU loop"] = layer_step(MGU(I, H, use_scan=False), x)
    tg.manual_seed(0)
    steps["MGU scan"] = layer_step(MGU(I, H, use_scan=True), x)
    return steps


def baseline_of(name: str) -> str:
    if name.startswith("GRU"):
        return "GRU fused"
    if name.startswith("RNN"):
        return "RNN fused"
    if name.startswith("MGU"):
        return "MGU loop"
    return "LSTM fused"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--reps", type=int, default=None, help="timing rounds per config")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads (read before NumPy loads)")
    args = parser.parse_args(argv)
    malloc = pin_malloc()
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    rounds = args.reps or (2 if args.quick else 7)
    out = args.out or (HERE / "results" / "variants_quick.md" if args.quick else RESULTS)
    command = ((" --quick" if args.quick else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + (f" --out {args.out}" if args.out else ""))
    start = time.perf_counter()
    targets, tables = [], []

    def check(what, value, limit, at_least=False):
        met = value >= limit if at_least else value <= limit
        bound = "at least" if at_least else "at most"
        targets.append(f"| {what} | {value:.2f}x | {bound} {limit:.2f}x | "
                       f"{'yes' if met else 'NO'} |")

    for config, shape in configs.items():
        level = config if config in TARGETS["variant"] else "medium"
        steps = contenders(shape, remat=False)
        # the Python loops build graphs of every op of every step: timed in a pass of their
        # own, beside their baselines, so that their memory churn does not slow the others
        apart = ("LSTM composed", "MGU loop", "MGU scan")
        times = time_interleaved({k: v for k, v in steps.items() if k not in apart}, rounds,
                                 sparse=())
        slow = time_interleaved({k: steps[k] for k in ("LSTM fused", *apart)},
                                max(3, (rounds + 1) // 2), sparse=())
        median = {k: _median(v) for k, v in times.items()}
        slow_median = {k: _median(v) for k, v in slow.items()}
        tables += [f"### {config} (T, B, I, H) = {shape}", "",
                   "| contender | ms [p25, p75] | ratio | to |", "|---|---:|---:|---|"]
        for name, samples in [*times.items(), *((k, slow[k]) for k in apart)]:
            base = baseline_of(name)
            of = median if name in times else slow_median
            tables.append(f"| {name} | {_ms(samples)} | {of[name] / of[base]:.2f}x | "
                          f"{base} |")
        tables.append("")
        print(f"[{time.perf_counter() - start:6.1f} s] {config} timed", flush=True)
        for name in [*LSTM_VARIANTS, "GRU reset_after=False"]:
            check(f"{config}: {name} / {baseline_of(name)}",
                  median[name] / median[baseline_of(name)], TARGETS["variant"][level])
        for cell in ("LSTM", "GRU", "RNN"):
            check(f"{config}: {cell} scan / {cell} fused",
                  median[f"{cell} scan"] / median[f"{cell} fused"], TARGETS["plain_scan"][level])
        if level == "long":  # the target is for long sequences, where the loop costs most
            speedup = slow_median["MGU loop"] / slow_median["MGU scan"]
            check(f"{config}: MGU speed-up of scan over the loop", speedup,
                  TARGETS["mgu_speed"], at_least=True)

    memory_name = next(iter(configs))
    memory_shape = configs[memory_name]
    steps = contenders(memory_shape, remat=True)
    remat_times = time_interleaved({k: v for k, v in steps.items() if k in LSTM_VARIANTS
                                    or k.endswith(" remat")}, max(3, rounds // 2))
    peaks = {name: peak_bytes(run) / 2**20 for name, run in steps.items()}
    memory = [f"Peak memory of one step at {memory_name} {memory_shape} (tracemalloc), MiB, "
              "and the ratio to the plain fused LSTM (the MGU's to its Python loop); remat "
              "rows also give the time ratio to the same variant without remat.", "",
              "| contender | MiB | ratio | remat time ratio |", "|---|---:|---:|---:|"]
    for name, mib in peaks.items():
        base = "MGU loop" if name.startswith("MGU") else "LSTM fused"
        time_ratio = ""
        if name.endswith(" remat"):
            plain = name[:-len(" remat")]
            time_ratio = f"{_median(remat_times[name]) / _median(remat_times[plain]):.2f}x"
        memory.append(f"| {name} | {mib:.1f} | {mib / peaks[base]:.2f}x | {time_ratio} |")
    for name in LSTM_VARIANTS:
        check(f"{memory_name}: {name} peak memory / LSTM fused",
              peaks[name] / peaks["LSTM fused"], TARGETS["memory"])
        check(f"{memory_name}: {name} remat peak memory / LSTM fused",
              peaks[f"{name} remat"] / peaks["LSTM fused"], TARGETS["remat_memory"])
        check(f"{memory_name}: {name} remat time / without remat",
              _median(remat_times[f"{name} remat"]) / _median(remat_times[name]),
              TARGETS["remat_time"])
    check(f"{memory_name}: MGU scan peak memory / MGU loop", peaks["MGU scan"] /
          peaks["MGU loop"], TARGETS["mgu_memory"])
    report = "\n".join([
        "# Recurrent variants and a user's cell on tg.scan: one training step", "",
        "One step = forward over T steps, loss = sum of the outputs, backward to every "
        "weight and the input; one layer, float32, training step medians over "
        f"{rounds} interleaved rounds. The Python loops (`LSTM composed`, `MGU loop`), whose "
        "graphs of every op of every step churn memory enough to slow whatever runs next, "
        "are timed in a second pass of about half as many rounds, with `LSTM fused` and "
        "`MGU scan`; their ratios (and `MGU scan`'s) are to the times of that pass.", "",
        "Contenders: `fused` = the hand-written BPTT of ops/fused.py (the default for the "
        "plain cells and for `layer_norm`, whose own fused op `layer_norm scan` compares with "
        "scan), `scan` = tg.scan over the cell's equations (`fast=\"scan\"`; the default for "
        "every other variant), `composed` = the per-step graph (`fast=False`); `MGU` = the "
        "Minimal Gated Unit as a user's step function, through tg.scan and tg.scan_loop.", "",
        "## Targets", "",
        "| target | measured | limit | met |", "|---|---:|---:|---|", *targets, "",
        "## Step time", "", *tables,
        "## Peak memory", "", *memory, "",
        f"Machine: {os.cpu_count()} cores, NumPy {np.__version__}, tinygrad_rnn "
        f"{tg.__version__}. {blas_note()} Threads: "
        + (f"{args.threads} (--threads)." if args.threads else "the libraries' defaults.")
        + f" {malloc}", "",
        f"Regenerate with `.venv/bin/python benchmarks/bench_variants.py{command}`; this run "
        f"took {time.perf_counter() - start:.0f} s.", "",
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
