"""Training-step benchmark of the recurrent layers: LSTM, GRU and tanh RNN.

One step = forward over all T steps, loss = sum of the outputs, full backward (weights, biases
and the input). Contenders, timed interleaved in one process (each round runs them in a fresh
random order, so machine noise hits all of them alike):

* fast      tinygrad_rnn layer with its fast path (one fused node per layer and direction)
* composed  the same layer with `fast = False` (the per-step composed graph)
* numpy     the hand-written NumPy BPTT of benchmarks/numpy_baselines.py
* torch     torch.nn.LSTM / GRU / RNN (when PyTorch is installed)
* GEMMs     only the matrix products of a step (the fused path's own, with preallocated
            outputs): the floor a NumPy implementation cannot go below

glibc's malloc hands freed memory back to the OS (heap trimming, mmap for big blocks) by
heuristics that depend on the order of allocations, so at small sizes one contender or another
pays thousands of page faults per step by luck (0 for one, ~1000 for the other, flipping with
unrelated changes). The benchmark therefore pins M_MMAP_THRESHOLD (32 MiB) and
M_TRIM_THRESHOLD for the whole process, the same for every contender, so that what is timed
is the computation; --malloc-defaults keeps glibc's behaviour.

Also: peak memory of one step (tracemalloc sees every NumPy allocation; not PyTorch's), and
step time at T = 200 and T = 2000 (linearity in T). float32 throughout. Results go to
benchmarks/results/recurrent.md as markdown tables of medians with [p25, p75] spread and
ratios; compare ratios, never absolute times, across runs.

usage: python benchmarks/bench_recurrent.py [--quick] [--no-torch] [--reps N] [--out PATH]
                                            [--threads N] [--malloc-defaults] [--profile CONFIG]

--threads N caps the BLAS/OpenMP threads of NumPy and PyTorch alike (set before they load):
on a machine shared with other work, one thread per process gives steadier ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import os
import platform
import pstats
import random
import sys
import time
import tracemalloc
from pathlib import Path


def _threads_from_argv(argv) -> int | None:
    """--threads N, read before NumPy is imported (BLAS reads its thread count at load)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return None


# also when another benchmark script imports this module first (bench_variants.py), which
# must then do so before it imports NumPy
THREADS = _threads_from_argv(sys.argv[1:])
if THREADS:
    if "numpy" in sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != str(THREADS):
        raise RuntimeError(f"--threads {THREADS}: NumPy was imported before bench_recurrent, so "
                           "its BLAS has already chosen its thread count; import bench_recurrent "
                           "first")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(THREADS)

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.insert(0, str(HERE))

import numpy_baselines  # noqa: E402

import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402

CONFIGS = {  # (T, B, I, H)
    "small": (50, 32, 32, 64),
    "medium": (100, 64, 128, 256),
    "large": (50, 64, 512, 1024),
    "long": (1000, 8, 16, 32),
}
QUICK_CONFIGS = {"tiny": (6, 3, 4, 5)}
LINEARITY = {"batch": 32, "input": 32, "hidden": 64, "steps": (200, 2000)}
QUICK_LINEARITY = {"batch": 2, "input": 3, "hidden": 4, "steps": (5, 50)}
MEMORY_CONFIG = "medium"
CELLS = {"lstm": ("LSTM", 4), "gru": ("GRU", 3), "rnn": ("RNN", 1)}
TARGETS = {"numpy": 1.2, "torch_large": 1.0, "linearity": 11.0, "memory": 1.1}
RESULTS = HERE / "results" / "recurrent.md"


# --------------------------------------------------------------------------- the contenders


class Case:
    """One cell at one size: our layer, its NumPy and PyTorch twins with the same weights,
    and a zero-argument step function per contender."""

    def __init__(self, cell: str, T: int, B: int, I: int, H: int, use_torch: bool, seed=0):
        cls_name, self.gates = CELLS[cell]
        self.cell, self.shape = cell, (T, B, I, H)
        tg.manual_seed(seed)
        self.layer = getattr(nn, cls_name)(I, H)  # float32, PyTorch's init
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((T, B, I), dtype=np.float32)
        self.x_tensor = tg.Tensor(self.x, requires_grad=True)
        self.weights = {k: v.data for k, v in self.layer.named_parameters()}
        self.steps = {"fast": lambda: self.ours(True), "composed": lambda: self.ours(False),
                      "numpy": self.numpy_step, "GEMMs": self._gemm_step()}
        if use_torch:
            self.steps["torch"] = self._torch_step(cls_name)

    def ours(self, fast: bool):
        self.layer.fast = fast
        for p in self.layer.parameters():
            p.grad = None
        self.x_tensor.grad = None
        out, _ = self.layer(self.x_tensor)
        out.sum().backward()

    def numpy_step(self):
        w = self.weights
        args = (self.x, w["weight_ih_l0"], w["weight_hh_l0"])
        if self.cell == "gru":
            return numpy_baselines.gru_step_numpy(*args, w["bias_ih_l0"], w["bias_hh_l0"])
        step = (numpy_baselines.lstm_step_numpy if self.cell == "lstm"
                else numpy_baselines.rnn_step_numpy)
        return step(*args, w["bias_ih_l0"] + w["bias_hh_l0"])

    def _gemm_step(self):
        """The matrix products of one fused step, alone, on preallocated outputs."""
        T, B, I, H = self.shape
        G = self.gates * H
        w = self.weights
        W_ih, W_hh = w["weight_ih_l0"], w["weight_hh_l0"]
        x_flat = self.x.reshape(T * B, I)
        rng = np.random.default_rng(1)
        hs = rng.standard_normal((T, B, H), dtype=np.float32) * 0.1
        dgates = rng.standard_normal((T, B, G), dtype=np.float32) * 0.1
        gates, rec, dh = np.empty((T * B, G), np.float32), np.empty((B, G), np.float32), \
            np.empty((B, H), np.float32)
        dx = np.empty((T * B, I), np.float32)

        W_hh_T = np.ascontiguousarray(W_hh.T)  # as the fused ops use it

        def run():
            np.matmul(x_flat, W_ih.T, out=gates)
            for t in range(T):
                np.matmul(hs[t], W_hh_T, out=rec)
            for t in range(T):
                np.matmul(dgates[t], W_hh, out=dh)
            flat = dgates.reshape(T * B, G)
            np.matmul(flat, W_ih, out=dx)
            flat.T @ x_flat
            flat.T @ hs.reshape(T * B, H)
        return run

    def _torch_step(self, cls_name):
        import torch
        ref = getattr(torch.nn, cls_name)(*self.shape[2:])
        ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.weights.items()})
        x = torch.from_numpy(self.x.copy()).requires_grad_()

        def run():
            ref.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = ref(x)
            out.sum().backward()
        return run


def time_interleaved(steps: dict, rounds: int, sparse=("composed",), seed=0) -> dict:
    """Seconds per contender over `rounds` rounds, each round in a fresh random order.
    Contenders in `sparse` (slow, for reference only) run in the first half of the rounds."""
    order = random.Random(seed)
    for run in steps.values():  # warm-up: caches, BLAS threads, lazy imports
        run()
    times = {name: [] for name in steps}
    sparse_rounds = max(3, (rounds + 1) // 2)
    for r in range(rounds):
        names = [n for n in steps if n not in sparse or r < sparse_rounds]
        order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def peak_bytes(run) -> int:
    """Peak bytes allocated during one call (after a warm-up), as tracemalloc sees them."""
    run()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _ms(samples) -> str:
    q25, q50, q75 = (np.percentile(samples, q) * 1e3 for q in (25, 50, 75))
    digits = 1 if q50 >= 10 else 2
    return f"{q50:.{digits}f} [{q25:.{digits}f}, {q75:.{digits}f}]"


def _median(samples) -> float:
    return float(np.median(samples))


def _ratio(times, a, b) -> str:
    if a not in times or b not in times:
        return "—"
    return f"{_median(times[a]) / _median(times[b]):.2f}x"


# --------------------------------------------------------------------------- the report


def step_tables(configs, rounds, use_torch, log) -> tuple[list[str], dict]:
    lines, ratios = [], {}
    cols = ["fast", "composed", "numpy"] + (["torch"] if use_torch else []) + ["GEMMs"]
    for cell in CELLS:
        lines += [f"### {CELLS[cell][0]}", "",
                  "| config (T, B, I, H) | " + " | ".join(f"{c} ms" for c in cols)
                  + " | fast / numpy | fast / torch | fast / GEMMs | composed / numpy |",
                  "|---|" + "---:|" * (len(cols) + 4)]
        for name, shape in configs.items():
            case = Case(cell, *shape, use_torch=use_torch)
            rounds_here = max(3, rounds * 2 // 3) if name == "large" else rounds
            times = time_interleaved(case.steps, rounds_here)
            ratios[cell, name] = {other: _median(times["fast"]) / _median(times[other])
                                  for other in times if other != "fast"}
            lines.append(f"| {name} {shape} | " + " | ".join(_ms(times[c]) for c in cols)
                         + f" | {_ratio(times, 'fast', 'numpy')} | "
                         f"{_ratio(times, 'fast', 'torch')} | {_ratio(times, 'fast', 'GEMMs')} | "
                         f"{_ratio(times, 'composed', 'numpy')} |")
            log(lines[-1])
        lines.append("")
    return lines, ratios


def linearity_table(spec, rounds, use_torch, log) -> tuple[list[str], dict]:
    short, long_ = spec["steps"]
    cols = ["fast", "composed", "numpy"] + (["torch"] if use_torch else [])
    lines = [f"Step time at T = {short} and T = {long_} (B = {spec['batch']}, I = {spec['input']},"
             f" H = {spec['hidden']}); ratio T = {long_} over T = {short} (linear: "
             f"{long_ / short:.0f}; target for fast: at most {TARGETS['linearity']:.0f}).", "",
             "| cell | " + " | ".join(f"{c} T={short} ms | {c} T={long_} ms | {c} ratio"
                                      for c in cols) + " |",
             "|---|" + "---:|" * (3 * len(cols))]
    ratios = {}
    for cell in CELLS:
        times = {}
        for T in (short, long_):
            case = Case(cell, T, spec["batch"], spec["input"], spec["hidden"], use_torch)
            steps = {k: v for k, v in case.steps.items() if k in cols}
            times[T] = time_interleaved(steps, rounds, sparse=())
        cells = []
        for c in cols:
            a, b = _median(times[short][c]), _median(times[long_][c])
            cells.append(f"{a * 1e3:.2f} | {b * 1e3:.1f} | {b / a:.2f}")
            ratios[cell, c] = b / a
        lines.append(f"| {CELLS[cell][0]} | " + " | ".join(cells) + " |")
        log(lines[-1])
    return lines + [""], ratios


def memory_table(config_name, shape, log) -> tuple[list[str], dict]:
    lines = [f"Peak memory allocated during one step at {config_name} {shape} (tracemalloc: "
             "NumPy arrays and Python objects; inputs and weights exist before and are not "
             f"counted; target for fast: at most {TARGETS['memory']}x numpy).", "",
             "| cell | fast MiB | composed MiB | numpy MiB | fast / numpy | composed / numpy |",
             "|---|---:|---:|---:|---:|---:|"]
    ratios = {}
    for cell in CELLS:
        case = Case(cell, *shape, use_torch=False)
        peak = {k: peak_bytes(case.steps[k]) / 2**20 for k in ("fast", "composed", "numpy")}
        ratios[cell] = peak["fast"] / peak["numpy"]
        lines.append(f"| {CELLS[cell][0]} | {peak['fast']:.1f} | {peak['composed']:.1f} | "
                     f"{peak['numpy']:.1f} | {ratios[cell]:.2f}x | "
                     f"{peak['composed'] / peak['numpy']:.2f}x |")
        log(lines[-1])
    return lines + [""], ratios


def targets_section(step_ratios, lin_ratios, mem_ratios, configs, use_torch,
                    mem_name, steps) -> list[str]:
    """Each performance target, its measured value and whether it is met."""
    rows = []

    def row(what, value, limit):
        met = "yes" if value <= limit else "NO"
        rows.append(f"| {what} | {value:.2f}x | {limit:.2f}x | {met} |")
    for cell in CELLS:
        for name in configs:
            row(f"{CELLS[cell][0]} {name}: fast / numpy", step_ratios[cell, name]["numpy"],
                TARGETS["numpy"])
        if use_torch and "large" in configs:
            row(f"{CELLS[cell][0]} large: fast / torch", step_ratios[cell, "large"]["torch"],
                TARGETS["torch_large"])
        row(f"{CELLS[cell][0]}: fast T={steps[1]} / T={steps[0]}", lin_ratios[cell, "fast"],
            TARGETS["linearity"])
        if cell in mem_ratios:
            row(f"{CELLS[cell][0]} {mem_name}: fast peak memory / numpy", mem_ratios[cell],
                TARGETS["memory"])
    return ["| target | measured | limit | met |", "|---|---:|---:|---|", *rows, ""]


def pin_malloc() -> str:
    """Stop glibc from returning freed memory to the OS between steps (see the docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20) and libc.mallopt(M_TRIM_THRESHOLD,
                                                                          1024 * 2**20)
    except (OSError, AttributeError):
        ok = False
    return ("malloc: glibc with M_MMAP_THRESHOLD=32 MiB, M_TRIM_THRESHOLD=1 GiB (pinned for "
            "all contenders)." if ok else "malloc: the platform's defaults.")


def blas_note() -> str:
    """Which OpenBLAS kernel NumPy runs (OPENBLAS_CORETYPE can force an older one), and with
    how many threads, as OpenBLAS itself reports them."""
    core, threads = "unknown", "unknown"
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("libscipy_openblas*.so")):
        try:
            blas = ctypes.CDLL(str(lib))
            get = blas.scipy_openblas_get_corename64_
            get.restype = ctypes.c_char_p
            core = get().decode()
            threads = str(blas.scipy_openblas_get_num_threads64_())
        except (OSError, AttributeError):
            pass
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"BLAS: NumPy's OpenBLAS, kernel {core}"
            + (f" (forced by OPENBLAS_CORETYPE={forced})" if forced else " (auto-detected)")
            + f", {threads} thread(s); PyTorch: its own MKL / oneDNN.")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--reps", type=int, default=None, help="timing rounds per config")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for NumPy and PyTorch (default: theirs)")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="keep glibc's malloc thresholds (page faults by luck, see above)")
    parser.add_argument("--profile", metavar="CONFIG", default=None,
                        help="print a cProfile of one LSTM step (fast and composed) and exit")
    args = parser.parse_args(argv)
    if args.profile:
        return profile(args.profile)
    malloc = "malloc: glibc's defaults (--malloc-defaults)." if args.malloc_defaults \
        else pin_malloc()
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch
        except ImportError:
            use_torch = False
        else:
            if args.threads:
                torch.set_num_threads(args.threads)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    spec = QUICK_LINEARITY if args.quick else LINEARITY
    rounds = args.reps or (2 if args.quick else 9)
    out = args.out or (HERE / "results" / "recurrent_quick.md" if args.quick else RESULTS)
    start = time.perf_counter()

    def log(line):
        print(f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True)

    steps, step_ratios = step_tables(configs, rounds, use_torch, log)
    linear, lin_ratios = linearity_table(spec, max(3, rounds // 2), use_torch, log)
    mem_name = next(iter(configs)) if args.quick else MEMORY_CONFIG
    memory, mem_ratios = memory_table(mem_name, configs[mem_name], log)
    report = "\n".join([
        "# Recurrent layers: one training step",
        "",
        "One step = forward over T steps, loss = sum of the outputs, backward to every weight, "
        "bias and the input; one layer, one direction, float32. Medians in ms with [p25, p75] "
        f"over {rounds} interleaved rounds (large: {max(3, rounds * 2 // 3)}; `composed`, "
        "the slow reference, in about half of them). Ratios < 1 mean the fast path is faster.",
        "",
        "Contenders: `fast` = tinygrad_rnn layer (default, fused node per layer and direction), "
        "`composed` = the same layer with `fast = False`, `numpy` = hand-written NumPy BPTT "
        "(benchmarks/numpy_baselines.py), `torch` = torch.nn layer, `GEMMs` = only the matrix "
        "products of a step (the floor for NumPy).",
        "",
        "## Targets",
        "",
        *targets_section(step_ratios, lin_ratios, mem_ratios, configs, use_torch, mem_name,
                         spec["steps"]),
        "`fast / GEMMs` is how far the fast path is above its own matrix products; a torch "
        "time below the `GEMMs` column is out of reach for any NumPy implementation on this "
        "BLAS.",
        "",
        "## Step time",
        "",
        *steps,
        "## Linearity in T",
        "",
        *linear,
        "## Peak memory",
        "",
        *memory,
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, NumPy {np.__version__}"
        + (f", PyTorch {__import__('torch').__version__}" if use_torch else "")
        + f", tinygrad_rnn {tg.__version__}. {blas_note()} Threads: "
        + (f"{args.threads} (--threads)." if args.threads else "the libraries' defaults.")
        + f" {malloc}",
        "",
        "Regenerate with `.venv/bin/python benchmarks/bench_recurrent.py` (or `make bench`); "
        f"this run took {time.perf_counter() - start:.0f} s.",
        "",
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}")
    return report


def profile(config: str) -> str:
    """cProfile of one LSTM step, fast and composed, at a named config (see CONFIGS)."""
    shape = {**CONFIGS, **QUICK_CONFIGS}[config]
    case = Case("lstm", *shape, use_torch=False)
    text = []
    for name in ("fast", "composed"):
        run = case.steps[name]
        run()
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
        print(f"== {name} LSTM step at {config} {shape}")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return "\n".join(text)


if __name__ == "__main__":
    main()
