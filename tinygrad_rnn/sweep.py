"""Grids of training runs on Dask distributed: the `tinygrad-rnn sweep` command.

    tinygrad-rnn sweep --task adding --cell rnn,gru,lstm --forget-bias 0,1 \\
        --seq-len 25,50,100 --seeds 3 --steps 2000 --out runs/sweep
    tinygrad-rnn sweep --grid grid.toml --scheduler tcp://10.0.0.5:8786   # on a cluster
    tinygrad-rnn sweep --out runs/sweep --resume                          # the missing rows

Every `train` option takes a comma list, and the grid is the product of the lists and of the
seeds (`--seeds N` for 0..N-1, or `--seed 3,7`). Each row of the grid is one
`tinygrad-rnn train` process with one BLAS thread, started by a Dask worker: a LocalCluster
on this machine's cores by default, or the workers of an existing cluster with
`--scheduler`. A combination that does not apply (`--forget-bias` with a GRU) is not run
as something else: the row runs without that option, and the combination is listed as
skipped. The sweep writes to its output directory:

    results.jsonl   one JSON object per finished run, appended the moment it finishes:
                    parameters, the exact `train` command, final metric, solved or not,
                    steps to the target, seconds, and the error if the run failed
    sweep.json      the grid, so that `--resume` alone can run the rows still missing
    summary.md      success rate and median steps to the target, per cell and option (rows)
                    by sequence length (columns); also printed at the end
    summary.png     the success rates as a heat map
    runs/ROW/       each run's own `train` output (metrics.json, loss.png, checkpoint.npz)

Dask is imported only when a sweep runs (`pip install 'tinygrad_rnn[sweep]'`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import TASK_CLASSES
from .train import CELLS, import_pyplot

INSTALL_SWEEP = "pip install 'tinygrad_rnn[sweep]'"
# Statuses of a run that --resume keeps; "lost" (Dask gave up on it after its workers died)
# and "interrupted" (Ctrl-C reached it) run again.
FINISHED = ("completed", "diverged", "error")
FORMAT = "tinygrad_rnn.sweep/1"
RESULTS, SPEC, SUMMARY_MD, SUMMARY_PNG = "results.jsonl", "sweep.json", "summary.md", "summary.png"

# What "solved" means for each task: (held-out metric, "<" or ">", threshold). Predicting
# the mean scores an adding-problem MSE of about 0.167; guessing scores copy accuracy 1/8.
TARGETS = {
    "adding": ("mse", "<", 0.01),
    "copy": ("accuracy", ">", 0.9),
    "classify": ("accuracy", ">", 0.9),
}

# One BLAS thread per run: the runs themselves fill the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# `train` options that are not axes of a grid: the sweep has its own (--out, --resume,
# --seed, --no-progress) and sets each run's output directory itself.
NOT_AXES = ("out", "resume", "seed", "no_progress", "help")


class GridError(ValueError):
    """A grid that cannot run, found before anything runs."""


# --------------------------------------------------------------------------- arguments


def axis_actions(train_parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{dest: action} of the `train` options that can be axes of a grid, in train's order."""
    return {action.dest: action for action in train_parser._actions
            if action.option_strings and action.dest not in NOT_AXES and action.nargs != 0}


def add_train_axes(parser: argparse.ArgumentParser, train_parser: argparse.ArgumentParser):
    """Give `parser` every `train` option that can be an axis, taking a comma list.

    The values are checked later, item by item, with train's own types and choices
    (`grid_from_args`), so that a bad value is reported before anything runs."""
    group = parser.add_argument_group(
        "train options", "the options of `tinygrad-rnn train`; a comma list (--cell rnn,lstm) "
                         "makes the option an axis of the grid")
    for dest, action in axis_actions(train_parser).items():
        help_text = action.help or ""  # train's help, already in argparse's format
        if action.choices:
            help_text = f"{help_text}; from {', '.join(map(str, action.choices))}".lstrip("; ")
        if action.default is not None and action.default is not argparse.SUPPRESS:
            help_text += f" (train's default: {action.default})"
        group.add_argument(*action.option_strings, dest=dest, default=None,
                           metavar=f"{action.metavar or dest.upper()}[,...]", help=help_text)


# --------------------------------------------------------------------------- the grid


@dataclass
class Row:
    """One run of the grid: the `train` arguments (strings, as the user wrote them)."""

    options: dict  # dest -> value string, in train's option order; includes "seed"
    params: dict  # dest -> parsed value (for results.jsonl and the summary)
    name: str = ""  # its directory under DIR/runs/

    def argv(self, flags: dict) -> list[str]:
        """The `train` arguments without --out."""
        return [item for dest, value in self.options.items() for item in (flags[dest], value)]


@dataclass
class Grid:
    """The product of the axes and the seeds, after the combinations that do not apply."""

    values: dict  # dest -> [value string, ...], in train's option order; seeds excluded
    seeds: list
    target: float | None = None
    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (combination text, reason)
    flags: dict = field(default_factory=dict)  # dest -> "--option"

    @property
    def axes(self) -> list[str]:
        """The options that take more than one value."""
        return [dest for dest, values in self.values.items() if len(values) > 1]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "options": self.values, "seeds": self.seeds,
                "target": self.target}


def _split(text: str) -> list[str]:
    return [item.strip() for item in str(text).split(",")]


def _read_grid_file(path: Path, flags: dict) -> dict:
    """{dest: [value strings]} (and "seeds", "seed", "target") from a TOML grid file."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise GridError("--grid: reading TOML needs Python 3.11 or `pip install tomli`") \
                from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GridError(f"--grid: cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"--grid {path}: not valid TOML: {exc}") from None
    known = {flag[2:]: dest for dest, flag in flags.items()}
    known.update({dest: dest for dest in flags}, seeds="seeds", seed="seed", target="target")
    found = {}
    for key, value in data.items():
        if key not in known:
            raise GridError(f"--grid {path}: unknown option {key!r}; expected train's options "
                            f"({', '.join(flag[2:] for flag in flags.values())}), seeds, "
                            "seed or target")
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, (bool, dict, list)) or not isinstance(item, (int, float, str)):
                raise GridError(f"--grid {path}: {key} = {item!r}: expected a number or a "
                                "string, or a list of them")
        found[known[key]] = [str(item) for item in items]
    return found


def _check_item(action: argparse.Action, flag: str, item: str):
    """`item` parsed by train's own type and choices, or a GridError naming the option."""
    if item == "":
        raise GridError(f"{flag}: empty value in the list")
    try:
        value = action.type(item) if action.type is not None else item
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise GridError(f"{flag} {item}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise GridError(f"{flag} {item}: unknown; expected one of "
                        f"{', '.join(map(str, action.choices))}")
    return value


def _not_applicable(options: dict) -> list[tuple[str, str, str]]:
    """(dest, the option that rules it out, reason) for each option that has no effect on
    this combination, which therefore runs without it (`train` refuses --forget-bias with a
    GRU, and would silently ignore the others)."""
    task, cell = options.get("task", "adding"), options.get("cell", "lstm")
    lstm_cells = [name for name, (layer, _) in CELLS.items() if layer == "LSTM"]
    token_tasks = [name for name, task_class in TASK_CLASSES.items()
                   if task_class.input_kind == "tokens"]
    found = []
    if "forget_bias" in options and CELLS[cell][0] != "LSTM":
        found.append(("forget_bias", "cell", f"applies to LSTM cells only "
                                             f"({', '.join(lstm_cells)})"))
    for dest in ("text", "max_chars"):
        if dest in options and task != "charlm":
            found.append((dest, "task", "applies to --task charlm only"))
    if "embedding_dim" in options and task not in token_tasks:
        found.append(("embedding_dim", "task",
                      f"applies to token tasks only ({', '.join(token_tasks)})"))
    if "dropout" in options and float(options["dropout"]) > 0 and \
            int(options.get("layers", "1")) == 1:
        found.append(("dropout", "layers", "acts between stacked layers: needs --layers 2 "
                                           "or more"))
    return found


def _row_name(row_options: dict, axes: list[str], flags: dict) -> str:
    parts = [f"{flags[dest][2:]}-{row_options[dest]}" for dest in axes if dest in row_options]
    parts.append(f"seed-{row_options['seed']}")
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", "_".join(parts))


def build_grid(values: dict, seeds: list[str], actions: dict, seed_action: argparse.Action,
               target: str | None = None) -> Grid:
    """Check every value with train's own types and choices, and expand the product.

    values: {dest: [value strings]} for the options given (one value: the same for every
    row); seeds: [seed strings]. Raises GridError naming the option on a bad value."""
    flags = {dest: action.option_strings[-1] for dest, action in actions.items()}
    flags["seed"] = "--seed"
    parsed = {}
    for dest in actions:  # train's order
        if dest not in values:
            continue
        items = values[dest]
        if not items:
            raise GridError(f"{flags[dest]}: empty list")
        parsed[dest] = {}
        for item in items:
            parsed[dest].setdefault(item, _check_item(actions[dest], flags[dest], item))
    if not seeds:
        raise GridError("--seed: empty list")
    seed_values = {item: _check_item(seed_action, "--seed", item) for item in seeds}
    target_value = None
    if target is not None:
        try:
            target_value = float(target)
        except ValueError:
            raise GridError(f"--target: expected a number, got {target!r}") from None
    values = {dest: list(items) for dest, items in parsed.items()}
    grid = Grid(values, list(seed_values), target_value, flags=flags)
    for task in values.get("task", ["adding"]):
        if task not in TARGETS and target_value is None:
            raise GridError(f"--task {task} has no standard target: give --target (the held-out "
                            f"{TASK_CLASSES[task].metric_name} that counts as solved)")
    axes = grid.axes
    seen, skipped = set(), {}
    for combination in itertools.product(*values.values()):
        options = dict(zip(values, combination))
        for dest, cause, reason in _not_applicable(options):
            label = (f"{flags[cause]} {options.get(cause, actions[cause].default)} "
                     f"{flags[dest]} {options[dest]}")
            skipped.setdefault(label, f"{flags[dest]} {reason}; run without it")
        for dest, _, _ in _not_applicable(options):
            del options[dest]
        key = tuple(options.items())
        if key in seen:
            continue
        seen.add(key)
        for seed in seed_values:
            row_options = {**options, "seed": seed}
            params = {dest: parsed[dest][value] for dest, value in options.items()}
            params["seed"] = seed_values[seed]
            grid.rows.append(Row(row_options, params, _row_name(row_options, axes, flags)))
    grid.skipped = list(skipped.items())
    names = [row.name for row in grid.rows]
    if len(set(names)) < len(names):  # values that look alike once made file-name safe
        for index, row in enumerate(grid.rows):
            row.name = f"{index:04d}_{row.name}"
    return grid


def grid_from_args(args: argparse.Namespace, train_parser: argparse.ArgumentParser) -> Grid:
    """The grid the command line (and --grid file, and for --resume sweep.json) asks for."""
    actions = axis_actions(train_parser)
    seed_action = next(a for a in train_parser._actions if a.dest == "seed")
    flags = {dest: action.option_strings[-1] for dest, action in actions.items()}
    given = {dest: _split(getattr(args, dest)) for dest in actions
             if getattr(args, dest, None) is not None}
    spec = {}
    if args.grid is not None:
        spec = _read_grid_file(Path(args.grid), flags)
    elif args.resume and not given and args.seeds is None and args.seed is None:
        saved = Path(args.out) / SPEC
        if not saved.is_file():
            raise GridError(f"--resume: no {SPEC} in {str(args.out)!r} to take the grid from")
        data = json.loads(saved.read_text())
        spec = {**data["options"], "seed": [str(s) for s in data["seeds"]]}
        if data.get("target") is not None:
            spec["target"] = [str(data["target"])]
    spec.update(given)
    seed_spec = {key: spec.pop(key) for key in ("seeds", "seed") if key in spec}
    if args.seeds is not None and args.seed is not None:
        raise GridError("give either --seeds N (seeds 0..N-1) or --seed LIST, not both")
    if args.seeds is not None:
        seed_spec = {"seeds": [str(args.seeds)]}
    elif args.seed is not None:
        seed_spec = {"seed": _split(args.seed)}
    if len(seed_spec) > 1:
        raise GridError("--grid: give either seeds = N or seed = [...], not both")
    if "seeds" in seed_spec:
        count = seed_spec["seeds"]
        number = _check_item(seed_action, "--seeds", count[0]) if len(count) == 1 else 0
        if number < 1:
            raise GridError(f"--seeds: expected a positive integer, got {', '.join(count)!r}")
        seeds = [str(s) for s in range(number)]
    else:
        seeds = seed_spec.get("seed", ["0"])
    target = spec.pop("target", [None])[0]
    if args.target is not None:
        target = str(args.target)
    return build_grid(spec, seeds, actions, seed_action, target)


# --------------------------------------------------------------------------- one run


def _die_with_parent() -> None:
    """In the child: be killed when the worker that started it dies (Linux), so that a
    killed worker leaves no run behind."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_train(argv: list[str], out_dir: str) -> dict:
    """Run `tinygrad-rnn train ARGV --out OUT_DIR` in a child process with one BLAS thread.

    Runs on a Dask worker. Returns the exit status, the run's metrics.json (when written),
    the last lines of its error output, the seconds it took and where it ran."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # never read a previous attempt's result
    command = [sys.executable, "-m", "tinygrad_rnn", "train", *argv, "--out", str(out),
               "--no-progress"]
    started = time.perf_counter()
    process = subprocess.run(command, env={**os.environ, **ONE_THREAD}, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    seconds = time.perf_counter() - started
    metrics = None
    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    return {"returncode": process.returncode, "metrics": metrics, "seconds": seconds,
            "stderr": "\n".join(process.stderr.strip().splitlines()[-5:]),
            "host": socket.gethostname(), "worker": worker}


def _meets(value, sign: str, threshold: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value < threshold if sign == "<" else value > threshold


def target_of(task: str, target: float | None) -> tuple[str, str, float]:
    """(metric name, "<" or ">", threshold) that counts as solved for a task."""
    task_class = TASK_CLASSES[task]
    if target is not None:
        return task_class.metric_name, ">" if task_class.higher_is_better else "<", target
    return TARGETS[task]


def make_record(row: Row, grid: Grid, command: str, outcome: dict | None,
                error: str | None = None) -> dict:
    """The results.jsonl line of one finished run."""
    task = row.params.get("task", "adding")
    metric_name, sign, threshold = target_of(task, grid.target)
    record = {"run": row.name, "params": row.params, "args": row.argv(grid.flags),
              "command": command, "status": "lost", "metric_name": metric_name,
              "metric": None, "baseline": None, "target": f"{metric_name} {sign} {threshold:g}",
              "solved": False, "steps_to_target": None, "steps": None, "seconds": None,
              "error": error, "worker": None, "host": None}
    if outcome is None:
        return record
    metrics = outcome["metrics"] or {}
    record.update(seconds=round(outcome["seconds"], 3), worker=outcome["worker"],
                  host=outcome["host"])
    if outcome["returncode"] == 0 and metrics.get("status") == "completed":
        record["status"] = "completed"
    elif metrics.get("status") in ("diverged", "interrupted"):  # Ctrl-C reached the run
        record["status"] = metrics["status"]
    else:
        record["status"] = "error"
    if record["status"] != "completed":
        record["error"] = outcome["stderr"] or f"train exited with status {outcome['returncode']}"
    if metrics:
        metric = metrics.get("metric")
        record.update(metric=metric, baseline=metrics.get("baseline"), steps=metrics.get("step"))
        record["solved"] = record["status"] == "completed" and _meets(metric, sign, threshold)
        for entry in metrics.get("eval_history", []):
            if _meets(entry.get(metric_name), sign, threshold):
                record["steps_to_target"] = entry["step"]
                break
    return record


# --------------------------------------------------------------------------- results


def read_results(path: Path) -> dict:
    """{args tuple: record} from results.jsonl; the last line of a run wins. A torn last
    line (the sweep killed while writing it) is ignored."""
    found = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        found[tuple(record["args"])] = record
    return found


def append_result(path: Path, record: dict) -> None:
    """One line, flushed to disk before the next run is counted."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _median(values):
    return statistics.median(values) if values else None


def summarize(grid: Grid, records: dict) -> dict:
    """{row label: {sequence length: stats}} over the grid's finished runs. A row label holds
    the values of the options that differ between rows: the axes, and an option that some
    rows run without (the forget bias of an LSTM next to a GRU)."""
    axes = [dest for dest in grid.values if dest != "seq_len"
            and len({row.options.get(dest) for row in grid.rows}) > 1]
    lengths = grid.values.get("seq_len", [None])
    cells = {}
    for row in grid.rows:
        label = tuple(row.options.get(dest) for dest in axes)
        cells.setdefault(label, {length: [] for length in lengths})
        record = records.get(tuple(row.argv(grid.flags)))
        cells[label][row.options.get("seq_len")].append((row, record))
    table = {}
    for label, by_length in cells.items():
        table[label] = {}
        for length, runs in by_length.items():
            done = [r for _, r in runs if r is not None]
            solved = [r for r in done if r["solved"]]
            metrics = [r["metric"] for r in done if r["metric"] is not None]
            table[label][length] = {
                "runs": len(runs), "finished": len(done), "solved": len(solved),
                "failed": sum(r["status"] != "completed" for r in done),
                "median_steps": _median([r["steps_to_target"] for r in solved]),
                "median_metric": _median(metrics)}
    return {"axes": axes, "lengths": lengths, "table": table}


def _entry(stats: dict) -> str:
    if stats["runs"] == 0:
        return ""
    if stats["finished"] == 0:
        return "not run"
    text = f"{stats['solved']}/{stats['finished']}"
    if stats["median_steps"] is not None:
        text += f" · {stats['median_steps']:g}"
    if stats["failed"]:
        text += f" ({stats['failed']} failed)"
    if stats["finished"] < stats["runs"]:
        text += f" (+{stats['runs'] - stats['finished']} missing)"
    return text


def _metric_entry(stats: dict) -> str:
    value = stats["median_metric"]
    return "" if value is None else f"{value:.4f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def summary_tables(grid: Grid, summary: dict) -> tuple[str, str]:
    """(solved table, median metric table) in Markdown."""
    flags = grid.flags
    label_header = [flags[dest][2:] for dest in summary["axes"]] or ["runs"]
    length_header = [f"T={length}" if length is not None else "all" for length in
                     summary["lengths"]]
    solved_rows, metric_rows = [], []
    for label, by_length in summary["table"].items():
        names = [value if value is not None else "-" for value in label] or ["all"]
        solved_rows.append(names + [_entry(by_length[n]) for n in summary["lengths"]])
        metric_rows.append(names + [_metric_entry(by_length[n]) for n in summary["lengths"]])
    return (_markdown(label_header + length_header, solved_rows),
            _markdown(label_header + length_header, metric_rows))


def target_text(grid: Grid) -> str:
    tasks = grid.values.get("task", ["adding"])
    parts = []
    for task in tasks:
        name, sign, threshold = target_of(task, grid.target)
        parts.append(f"{task}: held-out {name} {'below' if sign == '<' else 'above'} "
                     f"{threshold:g}")
    return "; ".join(parts)


def write_summary(grid: Grid, records: dict, out: Path, command: str,
                  seconds: float | None) -> tuple[str, bool]:
    """Write summary.md (and summary.png when matplotlib is there); return the text."""
    summary = summarize(grid, records)
    solved_table, metric_table = summary_tables(grid, summary)
    finished = [r for r in (records.get(tuple(row.argv(grid.flags))) for row in grid.rows) if r]
    metric_names = sorted({r["metric_name"] for r in finished}) or ["metric"]
    lines = [f"Solved: {target_text(grid)}, at the end of training.",
             "Each entry: runs solved / runs finished · median steps to first reach the target "
             "(over the solved runs; held-out evaluations happen every --eval-every steps, "
             "ten times per run by default).", "", solved_table, "",
             f"Median final held-out {' / '.join(metric_names)}:", "", metric_table, ""]
    lines.append(f"{len(finished)} of {len(grid.rows)} runs finished"
                 + (f" in {seconds:.0f} s" if seconds is not None else "") + ".")
    if grid.skipped:
        lines += ["", "Skipped combinations (not applicable, so not run as something else):"]
        lines += [f"* {combination}: {reason}" for combination, reason in grid.skipped]
    failed = [r for r in finished if r["status"] != "completed"]
    if failed:
        lines += ["", "Failed runs:"]
        lines += [f"* `{r['command']}`: {r['status']}: "
                  f"{(r['error'] or '').strip().splitlines()[-1] if r['error'] else ''}"
                  for r in failed]
    text = "\n".join(lines)
    (out / SUMMARY_MD).write_text(f"# Sweep\n\n```sh\n{command}\n```\n\n{text}\n",
                                  encoding="utf-8")
    return text, plot_summary(grid, summary, out / SUMMARY_PNG)


def plot_summary(grid: Grid, summary: dict, path: Path) -> bool:
    """Heat map of the success rate: rows by sequence length, each entry annotated with
    solved/finished and the median steps to the target. False when matplotlib is missing."""
    plt = import_pyplot()
    if plt is None:
        return False
    import numpy as np

    labels = [" ".join(f"{grid.flags[d][2:]}={v}" for d, v in zip(summary["axes"], label)
                       if v is not None) or "all" for label in summary["table"]]
    lengths = summary["lengths"]
    rates = np.full((len(labels), len(lengths)), np.nan)
    for i, by_length in enumerate(summary["table"].values()):
        for j, length in enumerate(lengths):
            stats = by_length[length]
            if stats["finished"]:
                rates[i, j] = stats["solved"] / stats["finished"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.4 * len(lengths) + 0.08 * max(map(len, labels)),
                                    1.2 + 0.45 * len(labels)))
    image = ax.imshow(rates, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_facecolor("0.9")  # combinations with no finished run yet
    for i, by_length in enumerate(summary["table"].values()):
        for j, length in enumerate(lengths):
            stats = by_length[length]
            if not stats["finished"]:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="0.4")
            else:
                text = f"{stats['solved']}/{stats['finished']}"
                if stats["median_steps"] is not None:
                    text += f"\n{stats['median_steps']:g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)),
                  [f"T={n}" if n is not None else "all" for n in lengths])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("sequence length")
    ax.set_title(f"solved ({target_text(grid)}) and median steps to target", fontsize=9)
    fig.colorbar(image, ax=ax, label="success rate")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True


# --------------------------------------------------------------------------- the sweep


def import_distributed():
    """dask.distributed, or an ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"tinygrad-rnn sweep runs on Dask distributed, which is not "
                          f"installed: {INSTALL_SWEEP}") from exc
    return distributed


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="sweep", unit="run", dynamic_ncols=True, file=sys.stderr)


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int):
    """A Client on `scheduler`, or on a LocalCluster of `workers` one-thread processes."""
    distributed = import_distributed()
    if scheduler is None:
        # Loopback only; the scheduler's web server on a free port, not on 8787, which
        # another cluster (another sweep) may hold.
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, host="127.0.0.1",
                                           dashboard_address="127.0.0.1:0", silence_logs=40)
        client = distributed.Client(cluster)
    else:
        cluster = None
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") \
                from None
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            client.close()
            raise ConnectionError(f"the Dask scheduler at {scheduler} has no workers (start "
                                  f"some with `dask worker {scheduler}`)") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def train_command(row: Row, grid: Grid, out: Path) -> str:
    """The shell command that reruns one row alone, exactly as the sweep runs it."""
    env = " ".join(f"{k}={v}" for k, v in ONE_THREAD.items())
    return f"{env} tinygrad-rnn train {shlex.join(row.argv(grid.flags))} --out " \
           f"{shlex.quote(str(out / 'runs' / row.name))}"


def sweep_command(grid: Grid, out: Path) -> str:
    parts = ["tinygrad-rnn", "sweep"]
    for dest, values in grid.values.items():
        parts += [grid.flags[dest], ",".join(values)]
    parts += ["--seed", ",".join(grid.seeds)]
    if grid.target is not None:
        parts += ["--target", f"{grid.target:g}"]
    return shlex.join(parts + ["--out", str(out)])


def run_sweep(grid: Grid, out: Path, resume: bool = False, scheduler: str | None = None,
              workers: int | None = None, progress: bool = True) -> int:
    """Run the rows of `grid` missing from out/results.jsonl; write the summary. Returns
    the exit status: 0, or 130 after Ctrl-C (every finished run is kept)."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    done = read_results(results)
    if done and not resume:
        raise GridError(f"{results} already holds {len(done)} results: add --resume to run "
                        "only the missing rows, or choose another --out")
    (out / SPEC).write_text(json.dumps(grid.to_dict(), indent=2) + "\n", encoding="utf-8")
    # A run that finished (even with an error) is kept; one that Dask lost or that was
    # interrupted runs again.
    todo = [row for row in grid.rows if done.get(tuple(row.argv(grid.flags)), {}).get("status")
            not in FINISHED]
    command = sweep_command(grid, out)
    print(f"sweep: {len(grid.rows)} runs"
          + (f", {len(grid.rows) - len(todo)} already in {results}" if resume else "")
          + f"; {len(todo)} to run on "
          + (scheduler if scheduler else f"a local Dask cluster of {workers} workers"),
          flush=True)
    for combination, reason in grid.skipped:
        print(f"  skipped {combination}: {reason}")
    started, status = time.perf_counter(), 0
    if todo:
        status = _run_rows(todo, grid, out, scheduler, workers, progress)
    seconds = time.perf_counter() - started
    text, plotted = write_summary(grid, read_results(results), out, command, seconds)
    print("\n" + text)
    print(f"\nwrote {results}, {out / SUMMARY_MD}" + (f", {out / SUMMARY_PNG}" if plotted else ""))
    if status:
        print(f"interrupted: the finished runs are in {results}; continue with "
              f"`tinygrad-rnn sweep --out {shlex.quote(str(out))} --resume`", file=sys.stderr)
    return status


def _run_rows(todo: list[Row], grid: Grid, out: Path, scheduler, workers, progress) -> int:
    from .cli import EXIT_INTERRUPTED

    results = out / RESULTS
    bar = _progress(len(todo), progress)
    solved = finished = 0
    try:
        with dask_client(scheduler, workers) as client:
            distributed = import_distributed()
            futures = {}
            # The first seed of every combination first: a sweep stopped early has covered
            # the whole grid at fewer seeds rather than part of it at all.
            for row in sorted(todo, key=lambda row: grid.seeds.index(row.options["seed"])):
                run_dir = (out / "runs" / row.name).resolve()
                priority = -grid.seeds.index(row.options["seed"])
                future = client.submit(run_train, row.argv(grid.flags), str(run_dir),
                                       key=f"train-{row.name}-{uuid.uuid4().hex[:8]}",
                                       pure=False, priority=priority)
                futures[future] = row
            for future in distributed.as_completed(futures):
                row = futures[future]
                command = train_command(row, grid, out)
                try:
                    record = make_record(row, grid, command, future.result())
                except Exception as exc:  # its workers died too often, or it could not start
                    record = make_record(row, grid, command, None,
                                         error=f"{type(exc).__name__}: {exc}")
                    if not isinstance(exc, distributed.KilledWorker):
                        record["status"] = "error"
                append_result(results, record)
                finished += 1
                solved += record["solved"]
                message = (f"{row.name}: {record['status']}"
                           + (f", {record['metric_name']} {record['metric']:.4f}"
                              if record["metric"] is not None else "")
                           + (" (solved)" if record["solved"] else ""))
                if record["error"]:
                    message += f": {record['error'].splitlines()[-1]}"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(solved=f"{solved}/{finished}", refresh=False)
                    if record["status"] != "completed":
                        bar.write(message, file=sys.stderr)
                elif progress:
                    print(f"[{finished}/{len(todo)}] {message}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    return 0


def run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                  train_parser: argparse.ArgumentParser) -> int:
    """`tinygrad-rnn sweep`: check the grid, then run it (see the module docstring)."""
    try:
        grid = grid_from_args(args, train_parser)
    except GridError as exc:
        parser.error(str(exc))
    try:
        import_distributed()
    except ImportError as exc:
        parser.error(str(exc))
    workers = args.workers
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
    try:
        return run_sweep(grid, Path(args.out), resume=args.resume, scheduler=args.scheduler,
                         workers=workers, progress=not args.no_progress)
    except GridError as exc:
        parser.error(str(exc))
    except ConnectionError as exc:
        print(f"tinygrad-rnn sweep: {exc}", file=sys.stderr)
        return 1
