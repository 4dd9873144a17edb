"""The generated tasks: shapes, determinism, baselines, held-out data."""

import math

import numpy as np
import pytest

from tinygrad_rnn.tasks import IGNORE, TASKS, CharLM, make_task, stdlib_docstrings

TEXT = "The quick brown fox jumps over the lazy dog.\n" * 200


def small(name, **options):
    if name == "charlm":
        options.setdefault("text", TEXT)
        options.setdefault("eval_size", 2000)
    else:
        options.setdefault("eval_size", 300)
    return make_task(name, seq_len=12, seed=3, **options)


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_numbers(name):
    a, b = small(name), small(name)
    for _ in range(2):
        (xa, ya), (xb, yb) = a.train_batch(4), b.train_batch(4)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a.baseline == b.baseline
    xa, _ = next(a.eval_batches(8))
    xb, _ = next(b.eval_batches(8))
    np.testing.assert_array_equal(xa, xb)


@pytest.mark.parametrize("name", ["adding", "copy", "sine", "classify"])
def test_other_seed_other_numbers(name):
    a, b = small(name), make_task(name, seq_len=12, seed=4, eval_size=300)
    assert not np.array_equal(a.train_batch(8)[0], b.train_batch(8)[0])


@pytest.mark.parametrize("name", TASKS)
def test_shapes_and_dtypes(name):
    task = small(name)
    x, y = task.train_batch(5)
    assert x.shape[:2] == (task.seq_len if name not in ("copy",) else 2 * 12 + 1, 5)
    if task.input_kind == "real":
        assert x.dtype == np.float32 and x.shape[2] == task.input_size
    else:
        assert x.dtype == np.int64 and x.ndim == 2
        assert 0 <= x.min() and x.max() < task.input_size
    if task.loss_kind == "mse":
        assert y.dtype == np.float32 and y.shape == (5, task.output_size)
    elif task.many_to_one:
        assert y.dtype == np.int64 and y.shape == (5,)
    else:
        assert y.dtype == np.int64 and y.shape == x.shape


def test_training_and_held_out_streams_differ():
    task = small("adding")
    x_eval, _ = task.eval_data()
    x_train, _ = task.train_batch(x_eval.shape[1])
    assert not np.array_equal(x_train, x_eval)


def test_adding_problem():
    task = make_task("adding", seq_len=40, seed=0, eval_size=4000)
    x, y = task.train_batch(64)
    markers = x[:, :, 1]
    assert (markers.sum(0) == 2).all()
    assert (markers[:20].sum(0) == 1).all() and (markers[20:].sum(0) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * markers).sum(0), rtol=1e-6)
    assert abs(task.baseline - 1 / 6) < 0.02  # Var(u1 + u2) for always answering 1.0


def test_copy_task_targets_only_the_recall_steps():
    task = make_task("copy", seq_len=5, seed=0, eval_size=100)
    x, y = task.train_batch(3)
    assert x.shape == (11, 3)
    np.testing.assert_array_equal(y[6:], x[:5])
    assert (y[:6] == IGNORE).all()
    assert (x[5] == task.delimiter).all() and (x[6:] == 0).all()
    assert task.baseline == 1 / 8
    perfect = np.eye(task.output_size)[np.where(y == IGNORE, 0, y)]
    assert task.score(perfect, y) == (15.0, 15)
    assert task.sequence_accuracy(perfect, y) == 1.0


def test_copy_task_with_delay():
    task = make_task("copy", seq_len=3, seed=0, eval_size=10, delay=4)
    x, y = task.train_batch(2)
    assert x.shape == (2 * 3 + 1 + 4, 2)
    assert (x[3 + 4] == task.delimiter).all()


def test_sine_windows_predict_the_next_value():
    task = make_task("sine", seq_len=20, seed=1, eval_size=50)
    x, y = task.eval_data()
    assert x.shape == (20, 50, 1) and y.shape == (50, 1)
    series = task.series
    start = int(np.flatnonzero(np.isclose(series, x[0, 0, 0]))[0])
    np.testing.assert_array_equal(x[:, 0, 0], series[start:start + 20])
    assert y[0, 0] == series[start + 20]
    assert start >= task.split  # held-out windows come from the end of the series
    assert 0 < task.baseline < 0.02  # persistence is a decent but beatable forecaster


def test_classify_labels_and_baseline():
    task = make_task("classify", seq_len=30, seed=0, eval_size=400)
    _, y = task.eval_data()
    assert set(np.unique(y)) == {0, 1, 2, 3}
    assert 0.25 <= task.baseline < 0.35


def test_charlm_streams_and_truncated_bptt_continuity():
    task = small("charlm")
    x1, y1 = task.train_batch(4)
    x2, _ = task.train_batch(4)
    np.testing.assert_array_equal(x1[1:], y1[:-1])  # y is x shifted by one character
    assert task.decode(x1[:, 0]) + task.decode(x2[:, 0][:1]) == task.decode(
        np.concatenate([x1[:, 0], x2[:1, 0]]))
    assert y1[-1, 0] == x2[0, 0]  # the next batch continues each stream
    assert task.decode(task.encode("fox")) == "fox"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        task.encode("€")


def test_charlm_epoch_wraps_and_state_roundtrip():
    task = small("charlm")
    state = task.state_dict()
    first = task.train_batch(8)
    task.load_state_dict(state)
    np.testing.assert_array_equal(task.train_batch(8)[0], first[0])
    wrapped = False
    for _ in range(200):
        task.train_batch(8)
        wrapped |= task.new_epoch
    assert wrapped


def test_charlm_baseline_is_the_unigram_cross_entropy():
    task = small("charlm")
    assert task.baseline == pytest.approx(task.unigram_entropy(), rel=0.05)
    assert task.baseline < math.log(len(task.chars))


def test_stdlib_corpus_is_deterministic_text():
    text = stdlib_docstrings(max_chars=20_000)
    assert len(text) == 20_000
    assert text == stdlib_docstrings(max_chars=20_000)
    task = CharLM(32, text=text, eval_size=1000)
    assert 40 < len(task.chars) < 200


@pytest.mark.parametrize("bad, match", [
    (dict(name="nope"), "task must be one of"),
    (dict(name="adding", seq_len=0), "seq_len must be a positive integer"),
    (dict(name="charlm", text="too short"), "too few"),
])
def test_bad_arguments_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        make_task(**bad)
