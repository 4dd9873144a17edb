"""The `tinygrad-rnn` command (also `python -m tinygrad_rnn`).

    tinygrad-rnn train --task adding --cell lstm --seq-len 100 --steps 3000 --out runs/adding
    tinygrad-rnn train --out runs/adding --steps 5000 --resume      # continue to step 5000
    tinygrad-rnn train --task charlm --out runs/charlm
    tinygrad-rnn sample --checkpoint runs/charlm --prime "Return the " --length 300
    tinygrad-rnn gradflow --seq-len 100 --out gradflow.png
    tinygrad-rnn info
    tinygrad-rnn demo --out runs/demo                                # what `make demo` runs
    tinygrad-rnn sweep --cell rnn,lstm --seq-len 25,50 --seeds 3     # a grid of runs on Dask

Each subcommand's --help lists its options. Exit status: 0 on success, 2 for bad
arguments, 1 when training diverges (NaN/inf loss), 130 after Ctrl-C (checkpoint saved).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import backend
from .tasks import DEFAULT_SEQ_LEN, TASKS

EXIT_DIVERGED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Per-task defaults where the generic ones do badly (chosen by the acceptance runs).
TASK_DEFAULTS = {
    "charlm": {"hidden": 256, "batch_size": 32, "lr": 2e-3, "embedding_dim": 64},
    "copy": {"hidden": 128, "lr": 3e-3},
    "adding": {"lr": 3e-3},
}
GENERIC_DEFAULTS = {"hidden": 64, "batch_size": 32, "lr": 1e-3, "embedding_dim": 32}


# --------------------------------------------------------------------------- argument types


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _within(parse, expected: str, valid):
    """An argparse type: `parse`, then 'expected <expected>' unless valid(value)."""
    def checked(text: str):
        value = parse(text)
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return checked


_positive_int = _within(_integer, "a positive integer", lambda v: v >= 1)
_non_negative_int = _within(_integer, "an integer >= 0", lambda v: v >= 0)
_positive_float = _within(_number, "a number > 0", lambda v: v > 0)
_non_negative_float = _within(_number, "a number >= 0", lambda v: v >= 0)
_probability = _within(_number, "a number in [0, 1)", lambda v: 0 <= v < 1)


# --------------------------------------------------------------------------- the parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help once: not when the help already states its
    default (per-task defaults), nor for a default of None or an off switch."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)


def _task_defaults_text(name: str) -> str:
    """'default 64; 256 for charlm, 128 for copy', from GENERIC_DEFAULTS and TASK_DEFAULTS."""
    generic = GENERIC_DEFAULTS[name]
    tasks_by_value: dict = {}
    for task, values in TASK_DEFAULTS.items():
        if values.get(name, generic) != generic:
            tasks_by_value.setdefault(values[name], []).append(task)
    per_task = [f"{value:g} for {' and '.join(tasks)}" for value, tasks in tasks_by_value.items()]
    return f"default {generic:g}" + (f"; {', '.join(per_task)}" if per_task else "")


def _number_or_none(text: str):
    return None if text.strip().lower() == "none" else _number(text)


def build_parser() -> argparse.ArgumentParser:
    from .train import CELLS, OPTIMIZERS

    parser = argparse.ArgumentParser(
        prog="tinygrad-rnn",
        description="Train and inspect recurrent networks built on tinygrad_rnn's autodiff "
                    "engine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  tinygrad-rnn train --task adding --cell lstm --seq-len 100 --steps 3000\n"
               "  tinygrad-rnn train --task charlm --out runs/charlm\n"
               "  tinygrad-rnn sample --checkpoint runs/charlm --prime 'Return the '\n"
               "  tinygrad-rnn gradflow --seq-len 100\n"
               "  tinygrad-rnn bench --cells lstm,gru\n"
               "  tinygrad-rnn info")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a model on a generated task",
        description="Train a recurrent model on a task, evaluate it on held-out data and "
                    "write DIR/metrics.json, DIR/loss.png and DIR/checkpoint.npz.",
        formatter_class=_HelpFormatter)
    train.add_argument("--task", choices=TASKS, default="adding", help="what to learn")
    train.add_argument("--cell", choices=tuple(CELLS), default="lstm",
                       help="recurrent cell (rnn = tanh Elman RNN, gru-v1 = Cho et al. 2014 "
                            "GRU, lnlstm = layer-normalised LSTM)")
    train.add_argument("--hidden", type=_positive_int, default=None,
                       help=f"hidden units ({_task_defaults_text('hidden')})")
    train.add_argument("--layers", type=_positive_int, default=1, help="stacked layers")
    train.add_argument("--seq-len", type=_positive_int, default=None,
                       help="sequence length (default per task: "
                            + ", ".join(f"{k} {v}" for k, v in DEFAULT_SEQ_LEN.items())
                            + "; for copy: the number of symbols to copy)")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help=f"sequences per step ({_task_defaults_text('batch_size')})")
    train.add_argument("--steps", type=_non_negative_int, default=1000,
                       help="total training steps (with --resume: the new total)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help=f"learning rate ({_task_defaults_text('lr')})")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam",
                       help="how the weights are updated")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                       help="L2 penalty (decoupled for adamw)")
    train.add_argument("--clip", type=_non_negative_float, default=1.0,
                       help="clip the gradient norm to this value (0: no clipping)")
    train.add_argument("--dropout", type=_probability, default=0.0,
                       help="dropout between stacked layers")
    train.add_argument("--forget-bias", type=_number, default=None,
                       help="initial forget-gate bias of LSTM cells (default: the "
                            "layer's own initialisation)")
    train.add_argument("--embedding-dim", type=_positive_int, default=None,
                       help="embedding size for token tasks "
                            f"({_task_defaults_text('embedding_dim')})")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where to train")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seeds the data, the initial weights and dropout")
    train.add_argument("--out", metavar="DIR", default=None,
                       help="output directory (default runs/TASK-CELL)")
    train.add_argument("--resume", action="store_true",
                       help="continue from DIR/checkpoint.npz up to --steps; the task, "
                            "model and optimizer options come from the checkpoint (giving a "
                            "different value is an error)")
    train.add_argument("--eval-every", type=_non_negative_int, default=0,
                       help="evaluate on held-out data every N steps (0: ten times per run)")
    train.add_argument("--eval-size", type=_positive_int, default=None,
                       help="held-out examples (default 1000; for charlm: 100000 "
                            "characters)")
    train.add_argument("--checkpoint-every", type=_non_negative_int, default=0,
                       help="write the checkpoint every N steps (0: at every evaluation)")
    train.add_argument("--text", metavar="FILE", default=None,
                       help="charlm: train on this UTF-8 text file instead of the docstrings "
                            "of the Python standard library")
    train.add_argument("--max-chars", type=_positive_int, default=1_000_000,
                       help="charlm: use at most this many characters of the text")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (the held-out scores are still printed)")
    train.set_defaults(handler=cmd_train)

    sample = commands.add_parser(
        "sample", help="generate text from a charlm checkpoint",
        formatter_class=_HelpFormatter)
    sample.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="checkpoint.npz, or the run directory holding it")
    sample.add_argument("--prime", default="\n", help="text to start from")
    sample.add_argument("--length", type=_positive_int, default=300,
                        help="characters to generate")
    sample.add_argument("--temperature", type=_non_negative_float, default=0.8,
                        help="softmax temperature (0: always the most likely character)")
    sample.add_argument("--seed", type=_non_negative_int, default=0,
                        help="seeds the random choice of each character")
    sample.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to run the model")
    sample.set_defaults(handler=cmd_sample)

    gradflow = commands.add_parser(
        "gradflow", help="plot per-step gradient norms of RNN, LSTM and GRU at initialisation",
        description="How much of the gradient of a loss on the last step reaches each earlier "
                    "step, ||dL/dh_t||, for freshly initialised layers: the vanishing-gradient "
                    "picture. Prints a table (t=1, t=T/2, t=T) and writes the plot to --out, "
                    "gradflow.png in the current directory by default. Besides the default "
                    "LSTM it draws an LSTM whose forget-gate bias starts at 1 (--forget-bias): "
                    "at initialisation that one is what keeps the curve flat.",
        formatter_class=_HelpFormatter)
    gradflow.add_argument("--seq-len", type=_positive_int, default=100,
                          help="sequence length T (the loss is on step T)")
    gradflow.add_argument("--hidden", type=_positive_int, default=64, help="hidden units")
    gradflow.add_argument("--input-size", type=_positive_int, default=8,
                          help="input features per step (drawn from N(0, 1))")
    gradflow.add_argument("--batch-size", type=_positive_int, default=16,
                          help="sequences in the batch")
    gradflow.add_argument("--cells", default="rnn,lstm,gru",
                          help=f"comma-separated cells to compare, from {', '.join(CELLS)}")
    gradflow.add_argument("--forget-bias", type=_number_or_none, default=1.0, metavar="B",
                          help="also draw an LSTM whose forget-gate bias starts at B, beside "
                               "the default LSTM ('none': leave it out)")
    gradflow.add_argument("--seed", type=_non_negative_int, default=0,
                          help="seeds the input and the weights (the same draw for every "
                               "layer)")
    gradflow.add_argument("--out", metavar="PNG", default="gradflow.png",
                          help="where to write the plot")
    gradflow.set_defaults(handler=cmd_gradflow)

    bench = commands.add_parser(
        "bench", help="time one training step of recurrent layers (fast and composed paths)",
        description="Median time of one training step (forward over all steps, loss = sum of "
                    "the outputs, backward to every weight and the input) of each layer, "
                    "through the fused fast path and through the composed per-step graph.",
        formatter_class=_HelpFormatter)
    bench.add_argument("--cells", default="rnn,lstm,gru",
                       help=f"comma-separated cells, from {', '.join(CELLS)}")
    bench.add_argument("--seq-len", type=_positive_int, default=100, help="time steps T")
    bench.add_argument("--batch-size", type=_positive_int, default=64, help="batch size B")
    bench.add_argument("--input-size", type=_positive_int, default=128,
                       help="input features I")
    bench.add_argument("--hidden", type=_positive_int, default=256, help="hidden units H")
    bench.add_argument("--layers", type=_positive_int, default=1, help="stacked layers")
    bench.add_argument("--repeats", type=_positive_int, default=5,
                       help="timed steps per path (after one warm-up step)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seeds the weights and the input")
    bench.set_defaults(handler=cmd_bench)

    info = commands.add_parser("info", help="versions, backends and devices")
    info.set_defaults(handler=cmd_info)

    demo = commands.add_parser(
        "demo", help="LSTM vs tanh RNN on the adding problem, plus the gradient-flow plot",
        description="Train an LSTM on the adding problem at a length where a tanh RNN fails, "
                    "train a tanh RNN the same way for contrast, and plot the gradient flow. "
                    "About a minute on two CPU cores.",
        formatter_class=_HelpFormatter)
    demo.add_argument("--out", metavar="DIR", default="runs/demo",
                      help="where the runs and pictures are written")
    demo.add_argument("--seq-len", type=_positive_int, default=DEMO["seq_len"],
                      help="sequence length of the adding problem")
    demo.add_argument("--steps", type=_positive_int, default=DEMO["steps"],
                      help="LSTM training steps")
    demo.add_argument("--rnn-steps", type=_non_negative_int, default=DEMO["rnn_steps"],
                      help="tanh RNN training steps (0: skip the contrast run)")
    demo.add_argument("--seed", type=_non_negative_int, default=0,
                      help="seeds the data and the weights")
    demo.add_argument("--quick", action="store_true", help="a few steps only (a smoke test)")
    demo.add_argument("--no-progress", action="store_true",
                      help="no progress bar (the held-out scores are still printed)")
    demo.set_defaults(handler=cmd_demo)

    from .sweep import add_train_axes

    sweep = commands.add_parser(
        "sweep", help="run a grid of train runs on Dask (this machine's cores or a cluster)",
        description="Run every combination of the comma-separated train options and seeds, "
                    "each as one `tinygrad-rnn train` with one BLAS thread, on a local Dask "
                    "cluster or on an existing one (--scheduler). Each result is appended to "
                    "DIR/results.jsonl as it finishes; at the end the success rate and median "
                    "steps to the task's target are printed and written to DIR/summary.md and "
                    "DIR/summary.png. Needs pip install 'tinygrad_rnn[sweep]'.",
        formatter_class=_HelpFormatter)
    sweep.add_argument("--grid", metavar="TOML", default=None,
                       help="read the grid from a TOML file (keys: train's options, seeds, seed, "
                            "target; a list is an axis); options given here override it")
    sweep.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                       help="run seeds 0 to N-1 (default: seed 0 only)")
    sweep.add_argument("--seed", metavar="S[,...]", default=None,
                       help="run these seeds (comma list), instead of --seeds")
    sweep.add_argument("--target", type=_number, default=None, metavar="VALUE",
                       help="held-out metric that counts as solved (default: the task's, "
                            "adding MSE below 0.01, copy and classify accuracy above 0.9)")
    sweep.add_argument("--out", metavar="DIR", default="runs/sweep", help="output directory")
    sweep.add_argument("--resume", action="store_true",
                       help="run only the rows missing from DIR/results.jsonl (without grid "
                            "options: the grid of DIR/sweep.json)")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       help="run on this Dask scheduler's workers (default: a local cluster)")
    sweep.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="local cluster: worker processes (default: one per core)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_train_axes(sweep, train)
    sweep.set_defaults(handler=cmd_sweep)
    return parser


# The demo's LSTM starts with a forget-gate bias of 1 (Gers et al. 2000; Jozefowicz et al.
# 2015): it breaks out of the 0.167 plateau after about 1300 steps at T=100, where a tanh
# RNN never does. About 15 ms per LSTM step and 4 ms per RNN step on one CPU core.
DEMO = {"seq_len": 100, "steps": 2500, "rnn_steps": 2500, "hidden": 64, "batch_size": 64,
        "lr": 3e-3, "forget_bias": 1.0}


# --------------------------------------------------------------------------- helpers


def _check_device(parser: argparse.ArgumentParser, device: str) -> str:
    try:
        return backend.normalize_device(device)
    except (RuntimeError, ValueError) as exc:
        parser.error(f"--device {device}: {exc}")


def _format_value(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def versus_baseline(metric: float, baseline: float, higher_is_better: bool = False) -> str:
    """How a result compares with its task's baseline, in words: '12.3x lower' for a loss
    well below it; 'no better than the baseline' for one above it or within 10% of it
    (with '2.0x higher' added when it is clearly worse); '' when there is nothing to say."""
    if metric is None or baseline is None:
        return ""
    if not (math.isfinite(metric) and math.isfinite(baseline)):
        return ""
    if higher_is_better:
        return "no better than the baseline" if metric <= baseline else ""
    if baseline <= 0 or metric <= 0:
        return ""
    if baseline / metric >= 1.1:
        return f"{baseline / metric:.1f}x lower"
    if metric / baseline >= 1.1:
        return f"no better than the baseline: {metric / baseline:.1f}x higher"
    return "no better than the baseline"


def result_line(result: dict) -> str:
    """'test mse 0.0031  vs  baseline (always 1.0) 0.1667' plus how much better."""
    metric, baseline = result["metric"], result["baseline"]
    line = (f"{result['task']}/{result['cell']}: held-out {result['metric_name']} "
            f"{_format_value(metric)}  vs  baseline ({result['baseline_name']}) "
            f"{_format_value(baseline)}")
    comparison = versus_baseline(metric, baseline, result["higher_is_better"])
    if comparison:
        line += f"  ({comparison})"
    if "bits_per_char" in result:
        line += (f"  [{result['bits_per_char']:.3f} bits/char; unigram entropy "
                 f"{result['unigram_entropy']:.3f} nats]")
    if "sequence_accuracy" in result.get("metrics", {}):
        line += f"  [whole sequences right: {result['metrics']['sequence_accuracy']:.3f}]"
    return line


# --------------------------------------------------------------------------- commands


def cmd_train(args, parser) -> int:
    from .train import TrainConfig, Trainer, TrainingError

    _check_device(parser, args.device)
    defaults = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(args.task, {})}
    out = Path(args.out) if args.out else Path("runs") / f"{args.task}-{args.cell}"
    if args.text is not None and args.task != "charlm":
        parser.error("--text is only for --task charlm")
    if args.text is not None and not Path(args.text).is_file():
        parser.error(f"--text: no such file: {args.text!r}")
    if args.forget_bias is not None and args.cell not in ("lstm", "peephole", "cifg", "lnlstm"):
        parser.error(f"--forget-bias applies to LSTM cells, not to --cell {args.cell}")
    if args.resume and not (out / "checkpoint.npz").is_file():
        parser.error(f"--resume: no checkpoint at {str(out / 'checkpoint.npz')!r}")
    if args.resume:
        _check_resume_options(args, parser, out)
    config = TrainConfig(
        task=args.task, cell=args.cell, hidden=args.hidden or defaults["hidden"],
        layers=args.layers, seq_len=args.seq_len,
        batch_size=args.batch_size or defaults["batch_size"], steps=args.steps,
        lr=args.lr or defaults["lr"], optimizer=args.optimizer, clip=args.clip,
        weight_decay=args.weight_decay, device=args.device, seed=args.seed,
        embedding_dim=args.embedding_dim or defaults["embedding_dim"], dropout=args.dropout,
        forget_bias=args.forget_bias, eval_every=args.eval_every, eval_size=args.eval_size,
        checkpoint_every=args.checkpoint_every, text=args.text, max_chars=args.max_chars)
    try:
        trainer = Trainer(config, out, resume=args.resume, progress=not args.no_progress)
    except ValueError as exc:  # e.g. a seq_len the task cannot use
        parser.error(str(exc))
    try:
        result = trainer.run()
    except TrainingError as exc:
        print(f"tinygrad-rnn train: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    print(result_line(result))
    print(f"wrote {out / 'metrics.json'}"
          + (f", {result['loss_png']}" if result["loss_png"] else "")
          + f", {out / 'checkpoint.npz'}  ({result['train_seconds']:.1f} s training)")
    if result["status"] == "interrupted":
        saved = result["checkpoint_step"]
        where = ("checkpoint saved" if saved == result["step"] else
                 f"the last checkpoint (step {saved}) is kept" if saved is not None else
                 "no checkpoint was written")
        print(f"interrupted at step {result['step']}: {where}; continue with "
              f"`tinygrad-rnn train --out {out} --steps {args.steps} --resume`", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# What --resume may change; every other train option comes from the checkpoint.
_RESUME_OPTIONS = {"steps", "device", "out", "resume", "no_progress"}


def _given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options written on the command line (defaults left out)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv))) - set(parser._defaults)
    finally:
        for action, default in saved:
            action.default = default


def _check_resume_options(args, parser, out: Path) -> None:
    """Refuse train options that differ from the checkpoint's: they would be ignored."""
    from .train import load_checkpoint

    try:
        saved = load_checkpoint(out)["config"]
    except (FileNotFoundError, ValueError) as exc:
        parser.error(f"--resume: {exc}")
    argv = getattr(args, "command_argv", None)
    if argv is None:  # called without main(): the options that differ from their defaults
        given = {name for name, value in vars(args).items()
                 if name in saved and value != parser.get_default(name)}
    else:
        given = _given_options(parser, argv)
    differing = [name for name in sorted(given - _RESUME_OPTIONS)
                 if saved.get(name) is not None and getattr(args, name) != saved[name]]
    if differing:
        def option(name, value):
            return f"--{name.replace('_', '-')} {value}"
        parser.error(
            "--resume continues the run in the checkpoint, which was trained with "
            + ", ".join(option(n, saved[n]) for n in differing) + "; it cannot change to "
            + ", ".join(option(n, getattr(args, n)) for n in differing)
            + ". Leave these options out (they come from the checkpoint), or train a new "
              "model into another --out directory.")


def cmd_sample(args, parser) -> int:
    from .train import load_model, sample_text

    _check_device(parser, args.device)
    try:
        config, model, checkpoint = load_model(args.checkpoint, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(f"--checkpoint: {exc}")
    vocab = checkpoint.get("vocab")
    if config.task != "charlm" or not vocab:
        parser.error(f"--checkpoint: {args.checkpoint!r} holds a model trained on the "
                     f"{config.task!r} task; sampling needs a charlm checkpoint "
                     "(tinygrad-rnn train --task charlm)")
    try:
        text = sample_text(model, list(vocab), args.prime, args.length, args.temperature,
                           args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(text)
    return 0


def gradient_flow(seq_len: int, cells=("rnn", "lstm", "gru"), hidden: int = 64,
                  input_size: int = 8, batch_size: int = 16, seed: int = 0,
                  forget_bias: float | None = None) -> dict:
    """{label: ||dL/dh_t|| for t = 1..T} at initialisation, for a loss on the last output
    (inputs N(0, 1)); with `forget_bias`, also an LSTM whose forget-gate bias starts there."""
    from .diagnostics import hidden_grad_norms
    from .train import build_recurrent

    x = np.random.default_rng(seed).standard_normal((seq_len, batch_size, input_size))
    layers = [(_LABELS.get(cell, cell), cell, None) for cell in cells]
    if forget_bias is not None:
        layers.append((f"LSTM, forget bias {forget_bias:g}", "lstm", forget_bias))
    norms = {}
    for label, cell, bias in layers:
        backend.manual_seed(seed)  # the same weights draw for every layer
        layer = build_recurrent(cell, input_size, hidden, forget_bias=bias)
        norms[label] = hidden_grad_norms(layer, x.astype(np.float32))
    return norms


_LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}


def write_gradflow(norms: dict, path: Path, seq_len: int) -> bool:
    """Save the gradient-flow plot; False (with a message) when matplotlib is missing."""
    from .diagnostics import plot_grad_norms

    try:
        plot_grad_norms(norms, str(path),
                        title=f"||dL/dh_t|| at initialisation, loss on step {seq_len}")
    except ImportError as exc:
        print(f"{exc}; no plot written", file=sys.stderr)
        return False
    return True


def gradflow_table(norms: dict) -> str:
    width = max(10, *(len(label) for label in norms))
    lines = [f"{'layer':{width}s} {'t=1':>10s} {'t=T/2':>10s} {'t=T':>10s} {'t=1 / t=T':>11s}"]
    for label, values in norms.items():
        first, middle, last = values[0], values[len(values) // 2], values[-1]
        ratio = first / last if last > 0 else float("nan")
        lines.append(f"{label:{width}s} {first:10.3g} {middle:10.3g} {last:10.3g} "
                     f"{ratio:11.3g}")
    return "\n".join(lines)


def cmd_gradflow(args, parser) -> int:
    from .train import CELLS

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if not cells or unknown:
        parser.error(f"--cells: expected names from {', '.join(CELLS)}, got {args.cells!r}")
    norms = gradient_flow(args.seq_len, cells, args.hidden, args.input_size, args.batch_size,
                          args.seed, args.forget_bias)
    print(f"gradient norm ||dL/dh_t|| reaching step t, loss on step T={args.seq_len}:")
    print(gradflow_table(norms))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if write_gradflow(norms, out, args.seq_len):
        print(f"wrote {out}")
    return 0


def time_training_step(layer, x, repeats: int) -> float:
    """Median seconds of one training step of `layer` on x, after one warm-up step."""
    seconds = []
    for _ in range(repeats + 1):
        layer.zero_grad()
        start = time.perf_counter()
        output, _ = layer(x)
        output.sum().backward()
        backend.synchronize(x.device)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:]))


def cmd_bench(args, parser) -> int:
    from .nn import fast_path
    from .tensor import randn
    from .train import CELLS, build_recurrent

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if not cells or unknown:
        parser.error(f"--cells: expected names from {', '.join(CELLS)}, got {args.cells!r}")
    device = _check_device(parser, args.device)
    shape = (args.seq_len, args.batch_size, args.input_size)
    print(f"one training step, (T, B, I, H) = ({', '.join(map(str, shape))}, {args.hidden}), "
          f"{args.layers} layer(s), float32, {device}; median of {args.repeats} steps, ms")
    print(f"{'cell':<10}{'fast':>10}{'composed':>11}{'composed / fast':>17}")
    for cell in cells:
        backend.manual_seed(args.seed)
        layer = build_recurrent(cell, args.input_size, args.hidden, args.layers).to(device)
        x = randn(*shape, device=device)
        layer.fast = False
        composed = time_training_step(layer, x, args.repeats) * 1e3
        layer.fast = True
        if fast_path.applies(layer):
            fast = time_training_step(layer, x, args.repeats) * 1e3
            print(f"{cell:<10}{fast:>10.2f}{composed:>11.2f}{composed / fast:>16.2f}x")
        else:  # a variant the fused ops do not cover: the composed path is the only one
            print(f"{cell:<10}{'n/a':>10}{composed:>11.2f}{'':>17}")
    return 0


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def info_text() -> str:
    from . import __version__

    lines = [f"tinygrad_rnn {__version__}",
             f"python       {platform.python_version()} ({platform.platform()})",
             f"numpy        {np.__version__}"]
    for name in ("tqdm", "matplotlib", "safetensors", "torch"):
        version = _version(name)
        lines.append(f"{name:12s} {version or 'not installed'}")
    lines.append("backends:")
    lines.append("  numpy (cpu)  available")
    if importlib.util.find_spec("cupy") is None:
        lines.append("  cupy (cuda)  not installed: pip install cupy-cuda12x "
                     "(or 'tinygrad_rnn[cuda]') on a machine with an NVIDIA GPU")
    elif backend.cuda_available():
        cupy = backend.require_cuda()
        count = cupy.cuda.runtime.getDeviceCount()
        names = []
        for i in range(count):
            name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        lines.append(f"  cupy (cuda)  {cupy.__version__}, {count} GPU(s): {', '.join(names)}")
    else:
        try:
            backend.require_cuda()
        except RuntimeError as exc:
            lines.append(f"  cupy (cuda)  unavailable: {exc}")
    lines.append(f"devices:       {', '.join(backend.available_devices())}")
    return "\n".join(lines)


def cmd_info(args, parser) -> int:
    print(info_text())
    return 0


def plot_demo(results: dict, norms: dict, path: Path, seq_len: int) -> bool:
    """One figure for the demo: held-out MSE of each model against steps, and the gradient
    flow at initialisation; each cell in its colour, as in every other plot."""
    from matplotlib.ticker import MaxNLocator

    from .diagnostics import cell_color, draw_grad_norms, legend_outside, use_log_scale
    from .train import import_pyplot

    plt = import_pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5), layout="constrained")
    baseline = next(iter(results.values()))["baseline"]
    values = [baseline]
    for label, result in results.items():
        points = [(e["step"], e["mse"]) for e in result["eval_history"] if "mse" in e]
        if points:
            left.plot(*zip(*points), "o-", color=cell_color(label), label=label)
            values += [v for _, v in points]
    left.axhline(baseline, color="gray", linestyle="--", label=f"always 1.0 ({baseline:.3f})")
    if use_log_scale(values):
        left.set_yscale("log")
    left.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    left.set_xlabel("training step")
    left.set_ylabel("held-out MSE")
    left.set_title(f"adding problem, T={seq_len}")
    legend_outside(left)
    draw_grad_norms(right, norms)
    right.set_title(f"gradient from a loss on step {seq_len}, at initialisation")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def demo_table(results: dict, baseline: float) -> str:
    """The demo's summary table: steps, held-out MSE, comparison with the baseline, time."""
    width = max(len(label) for label in results)
    lines = [f"{'model':{width}s} {'steps':>6s} {'test MSE':>10s} {'time':>8s}  vs baseline"]
    for label, result in results.items():
        comparison = versus_baseline(result["metric"], baseline) or "n/a"
        lines.append(f"{label:{width}s} {result['step']:6d} {result['metric']:10.4f} "
                     f"{result['train_seconds']:7.1f}s  {comparison}")
    return "\n".join(lines)


def cmd_demo(args, parser) -> int:
    from .train import TrainConfig, Trainer, TrainingError

    out = Path(args.out)
    steps, rnn_steps, seq_len = args.steps, args.rnn_steps, args.seq_len
    if args.quick:
        steps, rnn_steps, seq_len = 20, 10 if rnn_steps else 0, min(seq_len, 20)
    forget_bias = DEMO["forget_bias"]
    lstm_label = f"LSTM, forget bias {forget_bias:g}"  # as in gradflow.png
    started = time.perf_counter()
    print(f"tinygrad-rnn demo: the adding problem at T={seq_len} (Hochreiter & Schmidhuber "
          "1997).\nEach sequence holds random numbers, two of them marked; the answer is "
          "their sum.\nAlways answering 1.0 scores MSE 0.167. A tanh RNN cannot carry the "
          "marked numbers across\n~100 steps (its gradient vanishes on the way); an LSTM, "
          "whose cell state is a gated\nshortcut through time, can.\n", flush=True)
    results = {}
    runs = [("lstm", lstm_label, steps, forget_bias)]
    if rnn_steps:
        runs.append(("rnn", "tanh RNN", rnn_steps, None))
    for cell, label, cell_steps, bias in runs:
        config = TrainConfig(task="adding", cell=cell, seq_len=seq_len, steps=cell_steps,
                             hidden=DEMO["hidden"], batch_size=DEMO["batch_size"],
                             lr=DEMO["lr"], forget_bias=bias, seed=args.seed,
                             eval_every=max(1, cell_steps // 10),
                             eval_size=200 if args.quick else 1000)
        try:
            results[label] = Trainer(config, out / cell, progress=not args.no_progress).run()
        except TrainingError as exc:
            print(f"tinygrad-rnn demo: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        print(result_line(results[label]) + "\n", flush=True)
        if results[label]["status"] == "interrupted":
            return EXIT_INTERRUPTED
    norms = gradient_flow(seq_len, forget_bias=forget_bias)
    gradflow_png, demo_png = out / "gradflow.png", out / "demo.png"
    plotted = write_gradflow(norms, gradflow_png, seq_len)
    plot_demo(results, norms, demo_png, seq_len)
    total = time.perf_counter() - started

    baseline = results[lstm_label]["baseline"]
    print(f"adding problem, T={seq_len}: MSE on {200 if args.quick else 1000} held-out "
          f"sequences (baseline, always answering 1.0: {baseline:.4f})")
    print(demo_table(results, baseline))
    print(f"\ngradient reaching step t from a loss on step {seq_len}, at initialisation:")
    print(gradflow_table(norms))
    print("\nfiles:")
    if plotted:
        print(f"  {demo_png}   (both pictures side by side)")
        print(f"  {gradflow_png}   (gradient flow)")
    for (cell, label, _, _), result in zip(runs, results.values()):
        if result["loss_png"]:
            print(f"  {result['loss_png']}   ({label} training curve)")
        print(f"  {out / cell / 'checkpoint.npz'}   ({label} weights)")
    print(f"demo finished in {total:.0f} s")
    return 0


def cmd_sweep(args, parser) -> int:
    from .sweep import run_from_args

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    return run_from_args(args, parser, train_parser)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    subparser = parser._subparsers._group_actions[0].choices[args.command]
    args.command_argv = argv[argv.index(args.command) + 1:]  # what follows the command
    try:
        return args.handler(args, subparser)
    except KeyboardInterrupt:  # outside the training loop (which saves and returns)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
