"""Training recurrent models on the tasks of `tasks.py`: model builder, Trainer, sampling.

    from tinygrad_rnn.train import TrainConfig, Trainer
    result = Trainer(TrainConfig(task="adding", cell="lstm", seq_len=100, steps=3000),
                     out_dir="runs/adding").run()
    result["metric"], result["baseline"]

The model is an input layer (raw features, or an embedding for token tasks), a recurrent
layer chosen by name (`CELLS`) and a Linear head; many-to-one tasks read the last step's
output. The Trainer runs the loop with a progress bar, clips gradients, evaluates on the
held-out set, and writes to its output directory:

    checkpoint.npz   model, optimizer, data-stream and RNG state (atomic; for --resume)
    metrics.json     the final metric, the baseline, the configuration, timings
    loss.png         training loss and held-out metric against steps (needs matplotlib)

A NaN or infinite loss or gradient stops training before it reaches the weights, and the
last good checkpoint is kept. Ctrl-C finishes the current step, saves a checkpoint and
stops; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import backend, nn, optim
from . import functional as F
from . import io as tg_io
from .diagnostics import cell_color as _cell_color
from .diagnostics import legend_outside, use_log_scale
from .nn.utils import detach_state
from .tasks import IGNORE, TASK_CLASSES, Task, make_task
from .tensor import Tensor, no_grad

# name -> (layer class name in nn, extra keyword arguments)
CELLS = {
    "rnn": ("RNN", {"nonlinearity": "tanh"}),
    "rnn-relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "gru-v1": ("GRU", {"reset_after": False}),
    "peephole": ("LSTM", {"peephole": True}),
    "cifg": ("LSTM", {"cifg": True}),
    "lnlstm": ("LSTM", {"layer_norm": True}),
}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
              "adagrad": "Adagrad"}
CHECKPOINT = "checkpoint.npz"
FORMAT = "tinygrad_rnn.train/1"

_INSTALL_TRAIN = "pip install 'tinygrad_rnn[train]'"


class TrainingError(RuntimeError):
    """Training stopped for a reason the user should read (e.g. a non-finite loss)."""


# --------------------------------------------------------------------------- the model


def build_recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                    dropout: float = 0.0, forget_bias: float | None = None) -> nn.Module:
    """The recurrent layer for a cell name in CELLS (time-major input)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    class_name, kwargs = CELLS[cell]
    kwargs = dict(kwargs)
    if forget_bias is not None:
        if class_name != "LSTM":
            raise ValueError(f"forget_bias applies to LSTM cells only, not to {cell!r}")
        kwargs["forget_bias"] = forget_bias
    layer_class = getattr(nn, class_name)
    try:
        return layer_class(input_size, hidden_size, num_layers=num_layers, dropout=dropout,
                           **kwargs)
    except TypeError as exc:
        raise ValueError(f"cell {cell!r}: this version of nn.{class_name} does not accept "
                         f"{kwargs} ({exc})") from exc


class SequenceModel(nn.Module):
    """input layer -> recurrent layer -> Linear head.

    forward(x, state=None) -> (output, state). x: (T, B, input_size) float, or (T, B) token
    ids when `tokens`; output: (B, output_size) when `many_to_one`, else (T, B, output_size).
    """

    def __init__(self, cell: str, input_size: int, output_size: int, hidden_size: int = 64,
                 num_layers: int = 1, tokens: bool = False, embedding_dim: int = 32,
                 many_to_one: bool = True, dropout: float = 0.0,
                 forget_bias: float | None = None):
        super().__init__()
        self.tokens, self.many_to_one = tokens, many_to_one
        if tokens:
            self.embedding = nn.Embedding(input_size, embedding_dim)
            input_size = embedding_dim
        self.rnn = build_recurrent(cell, input_size, hidden_size, num_layers, dropout,
                                   forget_bias)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, state=None):
        if self.tokens:
            x = self.embedding(x)
        out, state = self.rnn(x, state)
        if self.many_to_one:
            out = out[-1]
        return self.head(out), state


def build_model(config: TrainConfig, input_size: int, output_size: int, tokens: bool,
                many_to_one: bool) -> SequenceModel:
    return SequenceModel(config.cell, input_size, output_size, config.hidden, config.layers,
                         tokens=tokens, embedding_dim=config.embedding_dim,
                         many_to_one=many_to_one, dropout=config.dropout,
                         forget_bias=config.forget_bias)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {name!r}")
    kwargs = {"lr": lr}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    return getattr(optim, OPTIMIZERS[name])(list(params), **kwargs)


def task_loss(task: Task, output: Tensor, y) -> Tensor:
    """The task's training loss: MSE, or cross-entropy over every step that has a target."""
    if task.loss_kind == "mse":
        return F.mse_loss(output, Tensor(y, device=output.device))
    classes = output.shape[-1]
    target = Tensor(np.asarray(y).reshape(-1), device=output.device)
    return F.cross_entropy(output.reshape(-1, classes), target, ignore_index=IGNORE)


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint and metrics.json)."""

    task: str = "adding"
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    seq_len: int | None = None  # None: the task's default
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adam"
    clip: float = 1.0  # max gradient norm; 0 turns clipping off
    weight_decay: float = 0.0
    device: str = "cpu"
    seed: int = 0
    embedding_dim: int = 32
    dropout: float = 0.0
    forget_bias: float | None = None
    eval_every: int = 0  # 0: ten evaluations per run
    eval_size: int | None = None  # held-out examples (characters for charlm); None: the task's
    checkpoint_every: int = 0  # 0: at every evaluation
    text: str | None = None  # charlm: a text file instead of the built-in corpus
    max_chars: int = 1_000_000  # charlm: cut the corpus here

    def validate(self) -> None:
        positive = ("hidden", "layers", "batch_size", "embedding_dim", "max_chars")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("seq_len", "eval_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.clip >= 0:
            raise ValueError(f"clip must be >= 0 (0 turns clipping off), got {self.clip!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def make_task_for(config: TrainConfig) -> Task:
    """The task a configuration names, built from its seed (and text file for charlm)."""
    options = {} if config.eval_size is None else {"eval_size": config.eval_size}
    if config.task == "charlm":
        options["max_chars"] = config.max_chars
        if config.text is not None:
            path = Path(config.text)
            try:
                options["text"] = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise ValueError(f"--text: cannot read {str(path)!r}: {exc.strerror}") from exc
            options["text_name"] = path.name
    elif config.text is not None:
        raise ValueError(f"--text is for the charlm task only, not {config.task!r}")
    return make_task(config.task, config.seq_len, seed=config.seed, **options)


# --------------------------------------------------------------------------- checkpoints


def _arrays(state) -> list[np.ndarray]:
    """A recurrent state (Tensor or nested tuple) as a flat list of NumPy arrays."""
    if state is None:
        return []
    if isinstance(state, Tensor):
        return [state.numpy()]
    return [a for s in state for a in _arrays(s)]


def _state_from(arrays: list, cell: str, device: str):
    """The inverse of _arrays for the state of a SequenceModel's recurrent layer."""
    if not arrays:
        return None
    tensors = [Tensor(np.asarray(a), device=device) for a in arrays]
    return tuple(tensors) if CELLS[cell][0] == "LSTM" else tensors[0]


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by the Trainer (a directory means its checkpoint.npz)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    checkpoint = tg_io.load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
        raise ValueError(f"{str(path)!r} is not a training checkpoint (format {found!r}, "
                         f"expected {FORMAT!r})")
    checkpoint["path"] = path
    return checkpoint


# --------------------------------------------------------------------------- the loop


class _Progress:
    """A tqdm bar when tqdm is installed, else a plain line every few percent."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.total, self.count, self.enabled, self.bar = total, initial, enabled, None
        self.every = max(1, total // 20)
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            print(f"{desc}: tqdm is not installed, printing plain progress lines "
                  f"({_INSTALL_TRAIN} for a progress bar)", file=sys.stderr)
            return
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                        unit="step", file=sys.stderr)

    def update(self, loss: float, **extra) -> None:
        self.count += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if self.count % 5 == 0 or self.count == self.total:
                self.bar.set_postfix(loss=f"{loss:.4f}", **extra, refresh=False)
        elif self.count % self.every == 0 or self.count == self.total:
            details = "".join(f"  {k} {v}" for k, v in extra.items())
            print(f"step {self.count}/{self.total}  loss {loss:.4f}{details}", file=sys.stderr,
                  flush=True)

    def write(self, message: str) -> None:
        """A line of the log (held-out scores): shown with or without the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Train one model on one task; see the module docstring for what it writes.

    Trainer(config, out_dir, resume=False, progress=True, on_step=None). `resume=True`
    continues from out_dir/checkpoint.npz (or `resume` itself when it is a path), taking the
    model and task settings from the checkpoint and `steps` from `config`. `on_step(trainer)`
    is called after every step (for tests and notebooks).
    """

    def __init__(self, config: TrainConfig, out_dir, resume=False, progress: bool = True,
                 on_step=None, quiet: bool = False):
        self.out_dir = Path(out_dir)
        checkpoint = None
        if resume:
            source = self.out_dir if resume is True else Path(resume)
            checkpoint = load_checkpoint(source)
            saved = TrainConfig.from_dict(checkpoint["config"])
            saved.steps, saved.device = config.steps, config.device
            config = saved
            if config.steps < int(checkpoint["step"]):
                raise ValueError(
                    f"--steps {config.steps} is below the checkpoint's step "
                    f"{int(checkpoint['step'])}: with --resume, steps is the new total, so "
                    f"give at least {int(checkpoint['step'])} (nothing was changed)")
        config.validate()
        self.config, self.progress, self.on_step, self.quiet = config, progress, on_step, quiet
        self.device = backend.normalize_device(config.device)
        backend.manual_seed(config.seed)
        self.task = make_task_for(config)
        # Record what the run actually uses (metrics.json, the checkpoint), not "None:
        # the task's default". A copy: the caller's config is left as it was.
        config = self.config = dataclasses.replace(
            config, seq_len=self.task.seq_len, eval_size=self.task.eval_size)
        self.model = build_model(config, self.task.input_size, self.task.output_size,
                                 self.task.input_kind == "tokens", self.task.many_to_one)
        self.model.to(self.device)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr,
                                        config.weight_decay)
        self.step = 0
        self.losses: list[float] = []
        self.eval_history: list[dict] = []
        self.state = None  # the carried hidden state of stateful tasks
        self.elapsed = 0.0  # training seconds, summed over resumptions
        self._stop_requested = False
        if checkpoint is not None:
            self._restore(checkpoint)

    # ----------------------------------------------------------------- checkpoints

    def checkpoint(self) -> dict:
        """Everything needed to continue exactly where training stands."""
        return {
            "format": FORMAT, "config": self.config.to_dict(), "step": self.step,
            "elapsed": self.elapsed, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "task_state": self.task.state_dict(),
            "rng_state": backend.get_rng_state(), "hidden": _arrays(self.state),
            "loss_history": np.asarray(self.losses, dtype=np.float64),
            "eval_history": self.eval_history, "vocab": getattr(self.task, "chars", None),
        }

    def save(self) -> Path:
        """Write out_dir/checkpoint.npz atomically (tg.save)."""
        path = self.out_dir / CHECKPOINT
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tg_io.save(self.checkpoint(), path)
        self.saved_step = self.step
        return path

    def _restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = int(checkpoint["step"])
        self.elapsed = float(checkpoint.get("elapsed", 0.0))
        self.eval_history = list(checkpoint["eval_history"])
        self.losses = [float(v) for v in checkpoint["loss_history"]]
        self.task.load_state_dict(checkpoint["task_state"])
        backend.set_rng_state(checkpoint["rng_state"])
        self.state = _state_from(checkpoint["hidden"], self.config.cell, self.device)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self) -> dict:
        """The task's metrics on its whole held-out set (no graph, dropout off)."""
        self.model.eval()
        totals = [0.0, 0]  # the metric's sum and count over the batches
        state = None
        outputs, targets = [], []
        try:
            with no_grad(), np.errstate(all="ignore"):  # non-finite scores are reported
                for x, y in self.task.eval_batches(256):
                    out, state = self.model(Tensor(x, device=self.device),
                                            state if self.task.stateful else None)
                    out = out.numpy()
                    total, count = self.task.score(out, y)
                    totals[0] += total
                    totals[1] += count
                    if hasattr(self.task, "sequence_accuracy"):
                        outputs.append(out)
                        targets.append(y)
        finally:
            self.model.train()
        result = {self.task.metric_name: totals[0] / max(totals[1], 1)}
        if outputs:
            result["sequence_accuracy"] = self.task.sequence_accuracy(
                np.concatenate(outputs, axis=1), np.concatenate(targets, axis=1))
        return result

    # ----------------------------------------------------------------- training

    def _install_interrupt_handler(self):
        """Ctrl-C asks the loop to stop after the current step; a second one stops now."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        return signal.signal(signal.SIGINT, handler)

    def request_stop(self) -> None:
        """Stop after the current step, as Ctrl-C does."""
        self._stop_requested = True

    def _train_step(self) -> tuple[float, float]:
        """One step; returns (loss, gradient norm) and leaves the weights untouched when
        either is not finite."""
        task, config = self.task, self.config
        x, y = task.train_batch(config.batch_size)
        state = None
        if task.stateful and not getattr(task, "new_epoch", False):
            state = detach_state(self.state)
        output, new_state = self.model(Tensor(x, device=self.device), state)
        loss = task_loss(task, output, y)
        loss_value = float(loss.item())
        if not math.isfinite(loss_value):
            return loss_value, float("nan")
        self.optimizer.zero_grad()
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = config.clip if config.clip > 0 else math.inf
        grad_norm = float(optim.clip_grad_norm_(params, max_norm).item())
        if not math.isfinite(grad_norm):
            return loss_value, grad_norm
        self.optimizer.step()
        if task.stateful:
            self.state = detach_state(new_state)
        return loss_value, grad_norm

    def _weights_finite(self) -> bool:
        return all(bool(np.isfinite(p.numpy()).all()) for p in self.model.parameters())

    def run(self) -> dict:
        """Train up to config.steps, evaluate, write metrics.json and loss.png.

        Returns the metrics dict; raises TrainingError on a non-finite loss (after writing
        what it can) and returns with status "interrupted" after Ctrl-C.
        """
        config, task = self.config, self.task
        self.out_dir.mkdir(parents=True, exist_ok=True)
        eval_every = config.eval_every or max(1, config.steps // 10)
        checkpoint_every = config.checkpoint_every or eval_every
        self.saved_step = self.step if self.step else None
        status, problem, hard_stop = "completed", None, False
        previous_handler = self._install_interrupt_handler()
        bar = None
        started = time.perf_counter()
        elapsed_before = self.elapsed
        try:
            self._say(f"training {config.cell} on {task.describe()}: hidden {config.hidden}, "
                      f"{config.layers} layer(s), batch {config.batch_size}, {config.optimizer} "
                      f"lr {config.lr:g}, steps {self.step}->{config.steps}, "
                      f"device {self.device}")
            bar = _Progress(config.steps, self.step, f"{config.task}/{config.cell}",
                            self.progress)
            shown = {}  # the latest held-out score, kept in the progress bar
            while self.step < config.steps:
                if self._stop_requested:
                    status = "interrupted"
                    break
                with np.errstate(all="ignore"):  # non-finite values are reported below
                    loss, grad_norm = self._train_step()
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    status = "diverged"
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    value = loss if not math.isfinite(loss) else grad_norm
                    problem = f"the {what} is {value} at step {self.step + 1}"
                    break
                self.step += 1
                self.losses.append(loss)
                self.elapsed = elapsed_before + time.perf_counter() - started
                if self.step % eval_every == 0 and self.step < config.steps:
                    metrics = self.evaluate()
                    self.eval_history.append({"step": self.step, **metrics})
                    shown = {f"test_{task.metric_name}": f"{metrics[task.metric_name]:.4f}"}
                    bar.write(f"step {self.step}: held-out {task.metric_name} "
                              f"{metrics[task.metric_name]:.4f}")
                if self.step % checkpoint_every == 0:
                    self.save()
                bar.update(loss, **shown)
                if self.on_step is not None:
                    self.on_step(self)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep the last checkpoint
            status, hard_stop = "interrupted", True
        finally:
            if bar is not None:
                bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        self.elapsed = elapsed_before + time.perf_counter() - started
        return self._finish(status, problem, hard_stop)

    def _finish(self, status: str, problem: str | None, hard_stop: bool = False) -> dict:
        """Save (unless diverged or stopped mid-step), evaluate, write metrics and plot."""
        config, task = self.config, self.task
        checkpoint = self.out_dir / CHECKPOINT
        # Evaluate first, so that the checkpoint written below holds this evaluation too
        # (a resumed run continues the history instead of losing this step's point).
        metrics = self.evaluate() if self._weights_finite() and not hard_stop else {}
        if metrics:
            if self.eval_history and self.eval_history[-1]["step"] == self.step:
                self.eval_history.pop()
            self.eval_history.append({"step": self.step, **metrics})
        if status == "diverged":
            if self.saved_step is not None:
                kept = f"the last good checkpoint (step {self.saved_step}) is kept in {checkpoint}"
            elif self._weights_finite():  # none written yet: the weights before the bad step
                self.save()
                kept = f"the weights of step {self.step} are saved in {checkpoint}"
            else:
                kept = "no checkpoint had been written yet"
        elif not hard_stop:
            self.save()
        result = {
            "status": status, "task": config.task, "cell": config.cell, "step": self.step,
            "metric_name": task.metric_name,
            "metric": metrics.get(task.metric_name, float("nan")),
            "baseline": task.baseline, "baseline_name": task.baseline_name,
            "higher_is_better": task.higher_is_better,
            "final_train_loss": float(np.mean(self.losses[-50:])) if self.losses else None,
            "metrics": metrics, "eval_history": self.eval_history,
            "train_seconds": round(self.elapsed, 3),
            "steps_per_second": round(len(self.losses) / self.elapsed, 2) if self.elapsed else None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "task_description": task.describe(),
            "config": config.to_dict(),
            "versions": versions(),
            "checkpoint": str(checkpoint) if checkpoint.exists() else None,
            "checkpoint_step": self.saved_step,
        }
        if config.task == "charlm":
            result["unigram_entropy"] = task.unigram_entropy()
            if metrics:
                result["bits_per_char"] = metrics["loss"] / math.log(2)
        if problem:
            result["problem"] = problem
        write_json(self.out_dir / "metrics.json", result)
        plotted = plot_training(self.losses, self.eval_history, task, self.out_dir / "loss.png",
                                title=f"{config.cell} on {task.describe()}",
                                color=_cell_color(config.cell))
        result["loss_png"] = str(self.out_dir / "loss.png") if plotted else None
        if status == "diverged":
            raise TrainingError(
                f"stopped: {problem}; {kept}. Nothing non-finite was written into the weights. "
                "Try a smaller --lr, or clip the gradient norm (--clip 1.0).")
        return result

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename); NaN/inf become null."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=2) + "\n")
    tmp.replace(path)


def versions() -> dict:
    from . import __version__
    return {"tinygrad_rnn": __version__, "python": platform.python_version(),
            "numpy": np.__version__}


# --------------------------------------------------------------------------- plots


def import_pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (with a message) if missing."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed, so no plot is written ({_INSTALL_TRAIN})",
              file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def centred_average(values, half_window: int) -> np.ndarray:
    """The mean of values[i - k : i + k + 1] at each i, with k = half_window shrunk near the
    ends so that the window stays centred on i: a smoothing with no lag (an exponential
    moving average trails a falling loss by about 1 / (1 - decay) steps)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        return values.copy()
    index = np.arange(n)
    k = np.minimum(np.minimum(index, n - 1 - index), max(0, int(half_window)))
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return (cumulative[index + k + 1] - cumulative[index - k]) / (2 * k + 1)


def plot_training(losses, eval_history, task: Task, path: Path, title: str = "",
                  color: str | None = None) -> bool:
    """Training loss (raw points, faint, under a centred moving average) and the held-out
    metric against steps, with the baseline as a dashed line, in the cell's colour.
    Returns False when matplotlib is missing."""
    plt = import_pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import MaxNLocator

    color = color or "tab:blue"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    if len(losses):
        steps = np.arange(1, len(losses) + 1)
        losses = np.asarray(losses, dtype=np.float64)
        ax_loss.plot(steps, losses, ".", color=color, alpha=0.2, markersize=2.5,
                     label="training loss (each step)", zorder=1)
        half_window = max(1, len(losses) // 100)
        ax_loss.plot(steps, centred_average(losses, half_window), color=color, zorder=2,
                     label=f"mean of {2 * half_window + 1} steps around each")
        if use_log_scale(losses):
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no training steps yet", transform=ax_loss.transAxes,
                     ha="center", va="center", color="gray")
        ax_loss.set_yticks([])
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"training {task.loss_kind.replace('_', '-')} loss")
    name = task.metric_name
    points = [(e["step"], e[name]) for e in eval_history if name in e]
    if points:
        ax_metric.plot(*zip(*points), "o-", color=color, label=f"held-out {name}")
    ax_metric.axhline(task.baseline, color="gray", linestyle="--",
                      label=f"baseline: {task.baseline_name} ({task.baseline:.3g})")
    if points and use_log_scale([v for _, v in points] + [task.baseline]):
        ax_metric.set_yscale("log")
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel(f"held-out {name}")
    for axes in (ax_loss, ax_metric):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        legend_outside(axes)
    fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True


# --------------------------------------------------------------------------- sampling


def load_model(checkpoint_path, device: str = "cpu"):
    """(config, model, checkpoint) rebuilt from a training checkpoint, in eval mode."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = TrainConfig.from_dict(checkpoint["config"])
    model_state = checkpoint["model"]
    output_size = model_state["head.weight"].shape[0]
    tokens = "embedding.weight" in model_state
    if tokens:
        input_size = model_state["embedding.weight"].shape[0]
    else:
        input_size = model_state["rnn.weight_ih_l0"].shape[1]
    many_to_one = TASK_CLASSES[config.task].many_to_one
    backend.manual_seed(config.seed)
    model = build_model(config, input_size, output_size, tokens, many_to_one)
    model.load_state_dict(model_state)
    model.to(backend.normalize_device(device)).eval()
    return config, model, checkpoint


def sample_text(model: SequenceModel, vocab: list[str], prime: str = "\n", length: int = 200,
                temperature: float = 1.0, seed: int = 0) -> str:
    """Continue `prime` by `length` characters drawn from the model's softmax at `temperature`
    (lower: more conservative; 0 picks the most likely character)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not prime:
        raise ValueError("prime must contain at least one character")
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(prime) - set(index))
    if unknown:
        raise ValueError(f"prime: characters not in the model's vocabulary: {''.join(unknown)!r}")
    rng = np.random.default_rng(seed)
    device = model.head.weight.device
    ids = np.array([index[ch] for ch in prime], dtype=np.int64)
    out = []
    with no_grad():
        logits, state = model(Tensor(ids[:, None], device=device))
        for _ in range(length):
            last = logits.numpy()[-1, 0].astype(np.float64)
            if temperature == 0:
                choice = int(last.argmax())
            else:
                z = last / temperature
                p = np.exp(z - z.max())
                choice = int(rng.choice(len(p), p=p / p.sum()))
            out.append(vocab[choice])
            logits, state = model(Tensor(np.array([[choice]], dtype=np.int64), device=device),
                                  state)
    return prime + "".join(out)
