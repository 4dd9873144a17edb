"""Sequence tasks with generated data: no downloads, plain NumPy, seed-deterministic.

Each task makes its own training batches from a seeded `numpy.random.Generator` and holds a
fixed held-out set made from a second, independent stream of the same seed, so the same seed
always gives the same numbers. Each task also knows its metric and the score of the trivial
predictor it has to beat (its *baseline*).

    task = make_task("adding", seq_len=100, seed=0)
    x, y = task.train_batch(32)       # x: (T, B, 2) float32, y: (B, 1) float32
    task.baseline                     # about 0.167: the MSE of always answering 1.0

Layouts are time-major, as the recurrent layers expect: real-valued inputs are (T, B, F)
float32, token inputs are (T, B) int64. Targets are (B, O) float32 for regression,
(B,) int64 for many-to-one classification and (T, B) int64 for per-step classification,
where IGNORE (-100, cross_entropy's default ignore_index) marks steps without a target.

The tasks:

* adding   -- the adding problem (Hochreiter & Schmidhuber 1997): add the two numbers marked
              in a long sequence. Baseline: always answer 1.0, MSE 1/6 = 0.167.
* copy     -- the copy (memory) task: read `seq_len` symbols, then a delimiter, then write the
              symbols back. Baseline: guessing, accuracy 1/8.
* sine     -- forecast the next value of a noisy sum of sines from a sliding window
              (many-to-one). Baseline: repeat the last value of the window (persistence).
* classify -- tell four noisy waveforms apart (sine, square, triangle, sawtooth) with random
              frequency, phase and amplitude. Baseline: always answer the most frequent class.
* charlm   -- a character-level language model, trained with truncated BPTT on the docstrings
              of the Python standard library (or any text file). Metric: validation loss in
              nats per character. Baseline: the unigram model (character frequencies).
"""

from __future__ import annotations

import ast
import math
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

IGNORE = -100  # target value for steps that have no target (cross_entropy's ignore_index)

TASKS = ("adding", "copy", "sine", "classify", "charlm")
DEFAULT_SEQ_LEN = {"adding": 50, "copy": 10, "sine": 30, "classify": 50, "charlm": 64}


class Task:
    """Base class: a data generator with a held-out set, a metric and a trivial baseline.

    Attributes set by subclasses:
        input_kind: "real" (float features) or "tokens" (integer ids, `input_size` of them).
        input_size: features per step, or the vocabulary size for tokens.
        output_size: outputs per step (regression values or class logits).
        many_to_one: the model answers once, after the last step (else at every step).
        loss_kind: "mse" or "cross_entropy".
        metric_name: what `score` measures ("mse", "accuracy" or "loss"), the number the
            Trainer reports on the held-out set.
        higher_is_better: True for accuracy.
        baseline, baseline_name: the trivial predictor's score on the held-out set.
        stateful: the hidden state carries over from one batch to the next (charlm).
    """

    name = "task"
    input_kind = "real"
    many_to_one = True
    loss_kind = "mse"
    metric_name = "mse"
    higher_is_better = False
    stateful = False
    baseline_name = ""

    def __init__(self, seq_len: int, seed: int = 0, eval_size: int = 1000):
        if not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise ValueError(f"{self.name}: seq_len must be a positive integer, got {seq_len!r}")
        if eval_size < 1:
            raise ValueError(f"{self.name}: eval_size must be positive, got {eval_size}")
        self.seq_len, self.seed, self.eval_size = int(seq_len), int(seed), int(eval_size)
        self.rng = np.random.default_rng([self.seed, 0])  # training stream
        self._eval_rng = np.random.default_rng([self.seed, 1])  # held-out stream
        self._eval_set = None

    # ----------------------------------------------------------------- data

    def generate(self, rng: np.random.Generator, batch_size: int):
        """`batch_size` fresh examples (x, y) drawn from `rng`."""
        raise NotImplementedError

    def train_batch(self, batch_size: int):
        """The next training batch (x, y) from the task's own training stream."""
        return self.generate(self.rng, batch_size)

    def eval_data(self):
        """The whole held-out set (x, y), made once from the held-out stream."""
        if self._eval_set is None:
            self._eval_set = self.generate(self._eval_rng, self.eval_size)
        return self._eval_set

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The held-out set in batches (the batch axis is 1 for x, 0 for y)."""
        x, y = self.eval_data()
        for start in range(0, y.shape[0], batch_size):
            yield x[:, start:start + batch_size], y[start:start + batch_size]

    # ----------------------------------------------------------------- scores

    def score(self, output: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """(sum, count) of the metric over a batch; the metric is sum / count over batches."""
        if self.metric_name == "mse":
            return float(((output - y) ** 2).sum()), int(y.size)
        if self.metric_name == "accuracy":
            valid = y != IGNORE
            return float((output.argmax(-1) == y)[valid].sum()), int(valid.sum())
        if self.metric_name == "loss":
            logits = output - output.max(-1, keepdims=True)
            log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            picked = np.take_along_axis(log_probs, y[..., None], axis=-1)
            return float(-picked.sum()), int(y.size)
        raise ValueError(f"unknown metric {self.metric_name!r}")

    @property
    def baseline(self) -> float:
        raise NotImplementedError

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """Where the training stream stands (for exact resumption)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def describe(self) -> str:
        return f"{self.name} (seq_len={self.seq_len})"


class AddingProblem(Task):
    """The adding problem (Hochreiter & Schmidhuber 1997).

    Each step carries two features: a value drawn from U(0, 1) and a marker that is 1 at
    exactly two steps (one in each half of the sequence) and 0 elsewhere. The target is the
    sum of the two marked values. Answering 1.0 always scores MSE Var(u1 + u2) = 1/6.
    x: (T, B, 2) float32, y: (B, 1) float32.
    """

    name = "adding"
    input_size, output_size = 2, 1

    def generate(self, rng, batch_size):
        T = self.seq_len
        if T < 2:
            raise ValueError(f"adding: seq_len must be at least 2, got {T}")
        values = rng.random((T, batch_size), dtype=np.float32)
        half = T // 2
        first = rng.integers(0, half, size=batch_size)
        second = rng.integers(half, T, size=batch_size)
        markers = np.zeros((T, batch_size), dtype=np.float32)
        batch = np.arange(batch_size)
        markers[first, batch] = 1.0
        markers[second, batch] = 1.0
        x = np.stack([values, markers], axis=-1)
        y = (values[first, batch] + values[second, batch])[:, None]
        return x, y.astype(np.float32)

    baseline_name = "always 1.0"

    @property
    def baseline(self) -> float:
        _, y = self.eval_data()
        return float(((y - 1.0) ** 2).mean())


class CopyTask(Task):
    """The copy task: remember a string of symbols and write it back after a delimiter.

    Tokens: 0 = blank, 1..K = symbols, K+1 = delimiter. The input is `seq_len` random
    symbols, `delay` blanks, the delimiter, then `seq_len` blanks during which the model must
    output the symbols in order; earlier steps have no target (IGNORE). Guessing scores
    accuracy 1/K. x: (2L+1+delay, B) int64, y: same shape, int64.
    """

    name = "copy"
    input_kind = "tokens"
    many_to_one = False
    loss_kind = "cross_entropy"
    metric_name = "accuracy"
    higher_is_better = True
    baseline_name = "chance"

    def __init__(self, seq_len: int, seed: int = 0, eval_size: int = 1000,
                 num_symbols: int = 8, delay: int = 0):
        super().__init__(seq_len, seed, eval_size)
        if num_symbols < 2:
            raise ValueError(f"copy: num_symbols must be at least 2, got {num_symbols}")
        if delay < 0:
            raise ValueError(f"copy: delay must be >= 0, got {delay}")
        self.num_symbols, self.delay = int(num_symbols), int(delay)
        self.delimiter = self.num_symbols + 1
        self.input_size = self.output_size = self.num_symbols + 2

    def generate(self, rng, batch_size):
        L = self.seq_len
        total = 2 * L + 1 + self.delay
        symbols = rng.integers(1, self.num_symbols + 1, size=(L, batch_size))
        x = np.zeros((total, batch_size), dtype=np.int64)
        x[:L] = symbols
        x[L + self.delay] = self.delimiter
        y = np.full((total, batch_size), IGNORE, dtype=np.int64)
        y[total - L:] = symbols
        return x, y

    def eval_batches(self, batch_size):
        x, y = self.eval_data()
        for start in range(0, x.shape[1], batch_size):
            yield x[:, start:start + batch_size], y[:, start:start + batch_size]

    @property
    def baseline(self) -> float:
        return 1.0 / self.num_symbols

    def sequence_accuracy(self, output: np.ndarray, y: np.ndarray) -> float:
        """Fraction of sequences copied without a single mistake."""
        recall = slice(y.shape[0] - self.seq_len, None)
        return float((output[recall].argmax(-1) == y[recall]).all(axis=0).mean())

    def describe(self) -> str:
        return (f"copy (seq_len={self.seq_len} symbols of {self.num_symbols}, delay={self.delay}, "
                f"{2 * self.seq_len + 1 + self.delay} steps)")


class SineForecast(Task):
    """Forecast the next value of a noisy sum of two sines from the last `seq_len` values.

    One long series s(t) = sin(w1 t + p1) + 0.5 sin(w2 t + p2) + noise is cut in two: the
    first 80% gives the training windows (at random positions), the last 20% the held-out
    windows. Many-to-one: x (T, B, 1) float32 is the window, y (B, 1) the value after it.
    Baseline: persistence, i.e. predicting that the next value equals the last one.
    """

    name = "sine"
    input_size, output_size = 1, 1
    baseline_name = "repeat the last value"

    def __init__(self, seq_len: int, seed: int = 0, eval_size: int = 1000,
                 length: int = 20000, noise: float = 0.02):
        super().__init__(seq_len, seed, eval_size)
        series_rng = np.random.default_rng([self.seed, 2])
        t = np.arange(length, dtype=np.float64)
        p1, p2 = series_rng.uniform(0, 2 * np.pi, size=2)
        series = np.sin(0.1 * t + p1) + 0.5 * np.sin(0.037 * t + p2)
        series += noise * series_rng.standard_normal(length)
        self.series = series.astype(np.float32)
        self.split = int(0.8 * length)
        if self.split - seq_len < 1 or length - self.split - seq_len < 1:
            raise ValueError(f"sine: seq_len={seq_len} is too long for a series of {length}")

    def _windows(self, starts):
        idx = starts[None, :] + np.arange(self.seq_len)[:, None]
        x = self.series[idx][..., None]
        y = self.series[starts + self.seq_len][:, None]
        return x, y

    def generate(self, rng, batch_size):
        starts = rng.integers(0, self.split - self.seq_len, size=batch_size)
        return self._windows(starts)

    def eval_data(self):
        if self._eval_set is None:
            last = len(self.series) - self.seq_len - 1
            count = min(self.eval_size, last - self.split + 1)
            starts = np.linspace(self.split, last, count).astype(np.int64)
            self._eval_set = self._windows(starts)
        return self._eval_set

    @property
    def baseline(self) -> float:
        x, y = self.eval_data()
        return float(((x[-1] - y) ** 2).mean())


class WaveformClassification(Task):
    """Sequence classification: which of four waveforms is this noisy sequence?

    Classes 0..3 = sine, square, triangle, sawtooth, each with a random period (8 to 20
    steps), phase and amplitude (0.5 to 1.5) plus Gaussian noise (std 0.3). Many-to-one:
    x (T, B, 1) float32, y (B,) int64. Baseline: always answer the most frequent class.
    """

    name = "classify"
    input_size = 1
    output_size = 4
    loss_kind = "cross_entropy"
    metric_name = "accuracy"
    higher_is_better = True
    baseline_name = "most frequent class"
    CLASSES = ("sine", "square", "triangle", "sawtooth")

    def generate(self, rng, batch_size):
        T = self.seq_len
        labels = rng.integers(0, 4, size=batch_size)
        period = rng.uniform(8, 20, size=batch_size)
        phase = rng.uniform(0, 1, size=batch_size)
        amplitude = rng.uniform(0.5, 1.5, size=batch_size)
        cycle = (np.arange(T)[:, None] / period + phase) % 1.0  # (T, B), position in [0, 1)
        waves = np.stack([
            np.sin(2 * np.pi * cycle),
            np.where(cycle < 0.5, 1.0, -1.0),
            4 * np.abs(cycle - 0.5) - 1,
            2 * cycle - 1,
        ])  # (4, T, B)
        x = waves[labels, :, np.arange(batch_size)].T * amplitude
        x = x + 0.3 * rng.standard_normal((T, batch_size))
        return x[..., None].astype(np.float32), labels.astype(np.int64)

    @property
    def baseline(self) -> float:
        _, y = self.eval_data()
        return float(np.bincount(y, minlength=4).max() / len(y))


# --------------------------------------------------------------------------- char LM


def stdlib_docstrings(max_chars: int = 1_000_000) -> str:
    """A corpus that exists offline on every machine: the docstrings of the top-level
    modules of the Python standard library (module, class and function docstrings, in file
    name order), cut at `max_chars`. Falls back to the builtins' docstrings when the
    standard library's sources are not installed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, size = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append(doc)
                    size += len(doc) + 2
        if size >= max_chars:
            break
    if size < 10_000:  # no sources: use what the interpreter itself carries
        import builtins
        docs += [getattr(builtins, name).__doc__ or "" for name in sorted(dir(builtins))]
    return "\n\n".join(docs)[:max_chars]


class CharLM(Task):
    """Character-level language model with truncated backpropagation through time.

    The training text is laid out as `batch_size` parallel streams; each batch is the next
    `seq_len` characters of every stream (x) and the same characters shifted by one (y),
    so the hidden state at the end of one batch is the right start for the next (stateful).
    The last 10% of the text is held out, read the same way. Metric: held-out loss in nats
    per character; baseline: the unigram model (training character frequencies).
    x, y: (T, B) int64.
    """

    name = "charlm"
    input_kind = "tokens"
    many_to_one = False
    loss_kind = "cross_entropy"
    metric_name = "loss"
    stateful = True
    baseline_name = "unigram model"

    def __init__(self, seq_len: int, seed: int = 0, eval_size: int = 100_000,
                 text: str | None = None, text_name: str | None = None,
                 max_chars: int = 1_000_000):
        super().__init__(seq_len, seed, eval_size)
        if text is None:
            text, text_name = stdlib_docstrings(max_chars), "Python standard library docstrings"
        text = text[:max_chars]
        if len(text) < 20 * (seq_len + 1):
            raise ValueError(f"charlm: the text has {len(text)} characters, too few for "
                             f"seq_len={seq_len} (need at least {20 * (seq_len + 1)})")
        self.text_name = text_name or "text"
        self.chars = sorted(set(text))
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.input_size = self.output_size = len(self.chars)
        ids = np.array([self.index[ch] for ch in text], dtype=np.int64)
        split = int(0.9 * len(ids))
        self.train_ids, self.val_ids = ids[:split], ids[split:][:eval_size + 1]
        self.position = 0  # where the training streams stand

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"charlm: characters not in the vocabulary: {''.join(unknown)!r}")
        return np.array([self.index[ch] for ch in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    @staticmethod
    def _streams(ids: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        length = (len(ids) - 1) // batch_size
        x = ids[:length * batch_size].reshape(batch_size, length).T
        y = ids[1:length * batch_size + 1].reshape(batch_size, length).T
        return x, y  # (length, B)

    def train_batch(self, batch_size: int):
        """The next chunk of every training stream; `new_epoch` is set when they wrap."""
        x, y = self._streams(self.train_ids, batch_size)
        if x.shape[0] < self.seq_len:
            raise ValueError(f"charlm: {len(self.train_ids)} training characters are too few "
                             f"for batch_size={batch_size} x seq_len={self.seq_len}")
        self.new_epoch = self.position + self.seq_len > x.shape[0]
        if self.new_epoch:
            self.position = 0
        start = self.position
        self.position += self.seq_len
        return x[start:self.position], y[start:self.position]

    def eval_batches(self, batch_size: int):
        x, y = self._streams(self.val_ids, min(batch_size, max(1, len(self.val_ids) // 64)))
        for start in range(0, x.shape[0], self.seq_len):
            yield x[start:start + self.seq_len], y[start:start + self.seq_len]

    @property
    def baseline(self) -> float:
        counts = Counter(self.train_ids.tolist())
        total = len(self.train_ids) + len(self.chars)  # add-one smoothing
        log_p = {i: math.log((counts.get(i, 0) + 1) / total) for i in range(len(self.chars))}
        return -float(np.mean([log_p[i] for i in self.val_ids[1:].tolist()]))

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the character distribution of the whole text."""
        counts = np.bincount(np.concatenate([self.train_ids, self.val_ids]))
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.position = int(state["position"])

    def describe(self) -> str:
        return (f"charlm on {self.text_name} ({len(self.train_ids) + len(self.val_ids):,} "
                f"characters, vocabulary {len(self.chars)}, seq_len={self.seq_len})")


TASK_CLASSES = {"adding": AddingProblem, "copy": CopyTask, "sine": SineForecast,
            "classify": WaveformClassification, "charlm": CharLM}


def make_task(name: str, seq_len: int | None = None, seed: int = 0, **options) -> Task:
    """Build a task by name; seq_len None takes the task's default (DEFAULT_SEQ_LEN)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"task must be one of {TASKS}, got {name!r}")
    if seq_len is None:
        seq_len = DEFAULT_SEQ_LEN[name]
    return TASK_CLASSES[name](seq_len, seed=seed, **options)
