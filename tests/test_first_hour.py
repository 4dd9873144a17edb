"""What a new user meets in the first hour (issue 14): resume, logs, metrics.json, the
wording of results, help texts, and the plots, checked on the saved images themselves."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import cli, diagnostics, tasks
from tinygrad_rnn.cli import main
from tinygrad_rnn.tasks import make_task
from tinygrad_rnn.train import load_checkpoint, plot_training

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seq-len", "8", "--hidden", "8", "--eval-size", "40", "--no-progress"]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def figures(monkeypatch):
    """The figures the code under test closes, kept to be inspected after saving."""
    kept = []
    close = plt.close

    def keep(fig=None):
        if fig is not None and not isinstance(fig, str):
            kept.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return kept


def line_colour_in_image(png: Path, fig, line, samples: int = 40) -> float:
    """The fraction of a line's points whose pixel neighbourhood in the saved image has the
    line's intended colour (points hidden under other curves lower it)."""
    image = plt.imread(png)[..., :3]
    height = image.shape[0]
    expected = np.array(to_rgb(line.get_color()))
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    picks = np.linspace(0, len(x) - 1, min(samples, len(x))).astype(int)
    pixels = line.axes.transData.transform(np.column_stack([x[picks], y[picks]]))
    scale = image.shape[1] / (fig.get_figwidth() * fig.dpi)
    hits = 0
    for px, py in pixels * scale:
        row, col = int(round(height - py)), int(round(px))
        patch = image[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3].reshape(-1, 3)
        hits += bool((np.abs(patch - expected).max(axis=1) < 0.08).any())
    return hits / len(picks)


def legends_clear_of_axes(fig) -> None:
    """Every legend lies outside its axes (so it covers no data) and inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # a closed figure has lost its canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    figure_box = fig.bbox
    for axes in fig.axes:
        legend = axes.get_legend()
        if legend is None:
            continue
        box, frame = legend.get_window_extent(renderer), axes.get_window_extent(renderer)
        overlap_x = min(box.x1, frame.x1) - max(box.x0, frame.x0)
        overlap_y = min(box.y1, frame.y1) - max(box.y0, frame.y0)
        assert overlap_x <= 0 or overlap_y <= 0, f"the legend of {axes.get_title()!r} covers it"
        assert box.x0 >= 0 and box.y0 >= 0
        assert box.x1 <= figure_box.x1 + 1 and box.y1 <= figure_box.y1 + 1


# --------------------------------------------------------------------------- 4, 12: gradflow


def test_gradflow_draws_the_lstm_with_forget_bias_1_beside_the_default(tmp_path, capsys,
                                                                       figures):
    out = tmp_path / "g.png"
    assert run_cli("gradflow", "--seq-len", 30, "--hidden", 16, "--out", out) == 0
    table = capsys.readouterr().out
    rows = {line.rsplit(None, 4)[0]: float(line.split()[-1]) for line in table.splitlines()[2:]
            if line and not line.startswith("wrote")}
    assert set(rows) == {"tanh RNN", "LSTM", "GRU", "LSTM, forget bias 1"}
    assert rows["LSTM, forget bias 1"] > 100 * rows["LSTM"]  # the flat curve is this one
    labels = [line.get_label() for line in figures[-1].axes[0].get_lines()]
    assert labels == ["tanh RNN", "LSTM", "GRU", "LSTM, forget bias 1"]
    assert run_cli("gradflow", "--seq-len", 5, "--hidden", 4, "--forget-bias", "none",
                   "--out", out) == 0
    assert "forget bias" not in capsys.readouterr().out


def test_the_tutorial_says_what_gradflow_draws():
    text = (ROOT / "docs" / "tutorial.md").read_text()
    section = text[text.index("`tinygrad_rnn.diagnostics` does this"):text.index("## 8. GRU")]
    assert "much flatter ones for the gated cells" not in section
    assert '"LSTM": diagnostics.hidden_grad_norms(nn.LSTM(8, 16), x_long)' in section
    assert '"LSTM, forget bias 1"' in section and "tinygrad-rnn gradflow" in section
    assert "forget bias 1 beside" in section


def test_each_cell_has_one_colour_in_every_plot(tmp_path, figures):
    rng = np.random.default_rng(0)
    steps = np.arange(1, 41)
    norms = {"tanh RNN": 10.0 ** (-steps[::-1] / 4), "GRU": 10.0 ** (-steps[::-1] / 8),
             "LSTM": 10.0 ** (-steps[::-1] / 6), "LSTM, forget bias 1": 10.0 ** -(rng.random(40))}
    other_order = dict(reversed(list(norms.items())))
    diagnostics.plot_grad_norms(norms, tmp_path / "a.png")
    diagnostics.plot_grad_norms(other_order, tmp_path / "b.png")
    results = {label: {"baseline": 0.167, "eval_history": [{"step": 10 * i, "mse": v}
                                                           for i, v in enumerate(values, 1)]}
               for label, values in [("LSTM, forget bias 1", [0.15, 0.05, 0.01]),
                                     ("tanh RNN", [0.17, 0.168, 0.169])]}
    cli.plot_demo(results, norms, tmp_path / "demo.png", 40)
    expected = {"tanh RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green",
                "LSTM, forget bias 1": "tab:purple"}
    for fig, png in zip(figures, ["a.png", "b.png", "demo.png"]):
        for axes in fig.axes:
            for line in axes.get_lines():
                label = line.get_label()
                if label not in expected:
                    continue  # the baseline
                assert to_rgb(line.get_color()) == to_rgb(expected[label]), (png, label)
                assert line_colour_in_image(tmp_path / png, fig, line) > 0.5, (png, label)
    for script_label, cell in [("tanh RNN", "rnn"), ("gru", "gru"), ("LSTM", "lstm")]:
        assert diagnostics.cell_color(script_label) == diagnostics.CELL_COLORS[cell]


def test_vanishing_gradients_example_uses_the_cell_colours():
    source = (ROOT / "examples" / "vanishing_gradients.py").read_text()
    assert "plot_grad_norms" in source  # which colours by cell_color
    for label in ("tanh RNN", "GRU", "LSTM"):
        assert f'"{label}"' in source and diagnostics.cell_color(label) is not None


# --------------------------------------------------------------------------- 5-9: train, resume


def test_resume_keeps_the_evaluation_of_the_step_it_stopped_at(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--out", out, *TINY, "--steps", 20) == 0
    assert [e["step"] for e in load_checkpoint(out)["eval_history"]][-1] == 20
    assert run_cli("train", "--out", out, *TINY, "--steps", 40, "--resume") == 0
    history = [e["step"] for e in metrics(out)["eval_history"]]
    assert history == sorted(set(history)) and 20 in history and history[-1] == 40


def test_resume_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    run_cli("train", "--out", out, *TINY, "--steps", 12)
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        run_cli("train", "--out", out, *TINY, "--steps", 8, "--resume")
    assert exc.value.code == 2
    assert "--steps 8 is below the checkpoint's step 12" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


def test_resume_refuses_model_options_that_differ_from_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    run_cli("train", "--out", out, *TINY, "--steps", 4)
    with pytest.raises(SystemExit) as exc:
        run_cli("train", "--out", out, *TINY, "--steps", 8, "--resume", "--hidden", 32)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "trained with --hidden 8" in err and "--hidden 32" in err
    # the same values as the checkpoint (here all of TINY), --steps and --device are fine
    assert run_cli("train", "--out", out, *TINY, "--steps", 8, "--resume",
                   "--device", "cpu") == 0


def test_no_progress_keeps_the_evaluation_lines(tmp_path, capsys):
    assert run_cli("train", "--out", tmp_path, *TINY, "--steps", 10, "--eval-every", 5) == 0
    printed = capsys.readouterr()
    assert "step 5: held-out mse" in printed.out + printed.err


def test_metrics_json_records_the_resolved_configuration(tmp_path):
    assert run_cli("train", "--task", "copy", "--out", tmp_path, "--steps", 2, "--hidden", 8,
                   "--no-progress") == 0
    config = metrics(tmp_path)["config"]
    assert config["seq_len"] == tasks.DEFAULT_SEQ_LEN["copy"]
    assert config["eval_size"] == 1000
    assert None not in (config["hidden"], config["lr"], config["batch_size"])


# --------------------------------------------------------------------------- 10: the wording


def test_demo_table_says_no_better_than_the_baseline_in_words():
    results = {"LSTM, forget bias 1": {"step": 2500, "metric": 0.0021, "train_seconds": 40.0},
               "tanh RNN": {"step": 2500, "metric": 0.1768, "train_seconds": 10.0}}
    table = cli.demo_table(results, 0.1742)
    lstm_row, rnn_row = table.splitlines()[1:]
    assert lstm_row.endswith("83.0x lower")
    assert rnn_row.endswith("no better than the baseline") and "1.0x" not in rnn_row
    assert cli.versus_baseline(0.5, 0.25, higher_is_better=True) == ""
    assert cli.versus_baseline(0.2, 0.25, higher_is_better=True) == "no better than the baseline"


# --------------------------------------------------------------------------- 11, 13: loss.png


class _Adding:
    loss_kind, metric_name, baseline, baseline_name = "mse", "mse", 0.1667, "always 1.0"


def test_smoothed_loss_follows_the_raw_loss_without_lag(tmp_path, figures):
    """The adding problem's shape: the loss falls from ~1 to ~0.17 by step 10 and stays."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 1001)
    level = np.where(steps <= 10, 1.0 - 0.083 * (steps - 1), 0.17)
    raw = level * np.exp(0.3 * rng.standard_normal(steps.size))
    png = tmp_path / "loss.png"
    assert plot_training(raw, [], _Adding(), png, color="tab:blue")
    axes = figures[-1].axes[0]
    points, smooth = axes.get_lines()
    np.testing.assert_array_equal(points.get_ydata(), raw)
    assert points.get_linestyle() == "None" and points.get_alpha() < 0.5  # faint raw points
    assert points.get_zorder() < smooth.get_zorder()

    def first_step_below(values, threshold=0.25):
        return int(steps[np.argmax(np.asarray(values) < threshold)])

    lag = first_step_below(smooth.get_ydata()) - first_step_below(level)
    assert abs(lag) <= 5, f"the smoothed curve lags the data by {lag} steps"
    # after the drop it stays within 15% of the true level (no long tail from the start)
    assert np.all(np.abs(smooth.get_ydata()[30:] / 0.17 - 1) < 0.15 * 3)
    assert line_colour_in_image(png, figures[-1], smooth) > 0.8


def test_centred_average_has_no_lag_and_keeps_the_ends():
    from tinygrad_rnn.train import centred_average

    ramp = np.arange(100.0)
    np.testing.assert_allclose(centred_average(ramp, 5), ramp)  # linear data: unchanged
    assert centred_average([], 3).size == 0


def test_axes_integer_steps_linear_for_narrow_ranges_legends_clear(tmp_path, figures):
    history = [{"step": s, "mse": v} for s, v in [(2, 0.182), (4, 0.176), (6, 0.174)]]
    plot_training([0.18, 0.179, 0.177, 0.176, 0.175, 0.174], history, _Adding(),
                  tmp_path / "loss.png")
    fig = figures[-1]
    for axes in fig.axes:
        assert axes.get_yscale() == "linear"  # 0.174 .. 0.182: no 1.74x10^-1 labels
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    legends_clear_of_axes(fig)
    diagnostics.plot_grad_norms({"tanh RNN": 10.0 ** -np.arange(7.0), "LSTM": np.ones(7)},
                                tmp_path / "g.png")
    fig = figures[-1]
    assert fig.axes[0].get_yscale() == "log"
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    legends_clear_of_axes(fig)


def test_train_with_zero_steps_shows_no_matplotlib_warning(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cli("train", "--out", tmp_path, *TINY, "--steps", 0) == 0
    assert "Warning" not in capsys.readouterr().err
    assert (tmp_path / "loss.png").stat().st_size > 1000


# --------------------------------------------------------------------------- 14-16: text


def _subparsers():
    parser = cli.build_parser()
    return parser._subparsers._group_actions[0].choices


def test_each_default_is_stated_once_in_help():
    for command, sub in _subparsers().items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            text = (formatter._get_help_string(action) or "").replace(
                "%(default)s", str(action.default))
            assert "(default: None)" not in text, (command, action.dest)
            assert len(re.findall(r"\(default\b", text)) <= 1, (command, action.dest, text)
    train_help = _subparsers()["train"].format_help()
    assert "(default 64; 256 for charlm, 128 for copy)" in " ".join(train_help.split())


def test_gradflow_help_shows_its_defaults_and_where_it_writes():
    text = " ".join(_subparsers()["gradflow"].format_help().split())
    for option, default in [("--seq-len", 100), ("--hidden", 64), ("--input-size", 8),
                            ("--batch-size", 16), ("--forget-bias", 1.0), ("--seed", 0),
                            ("--out", "gradflow.png"), ("--cells", "rnn,lstm,gru")]:
        assert re.search(re.escape(option) + r" \S+ .*?\(default: " + re.escape(str(default)),
                         text), option
    assert "gradflow.png in the current directory" in text


def test_demo_duration_agrees_with_the_readme():
    readme = (ROOT / "README.md").read_text()
    said = re.search(r"The demo takes (about [\w ]+?) on", readme).group(1)
    help_text = " ".join(_subparsers()["demo"].format_help().split())
    assert said.capitalize() in help_text and "two minutes" not in help_text


def test_sample_error_names_the_task_in_good_english(tmp_path, capsys):
    run_cli("train", "--task", "adding", "--out", tmp_path, *TINY, "--steps", 1)
    with pytest.raises(SystemExit):
        run_cli("sample", "--checkpoint", tmp_path)
    err = capsys.readouterr().err
    assert "a 'adding'" not in err and "trained on the 'adding' task" in err


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_descriptions_are_whole_sentences(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    description = " ".join(done.stdout.split("\n\n")[1].split())
    assert description.endswith((".", ":", "!", "?")), description


# --------------------------------------------------------------------------- 17: tasks docs


def test_task_docstring_names_only_methods_that_exist():
    for name in re.findall(r"`(\w+)`", inspect.getdoc(tasks.Task)):
        assert hasattr(tasks.Task, name) or name in ("input_size",), name
    documented = (ROOT / "docs" / "api.md").read_text()
    for name in ("tasks.make_task", "tasks.Task.train_batch", "tasks.Task.eval_data"):
        assert f"`{name}(" in documented
    task = make_task("adding", seq_len=5)
    assert task.eval_data()[0].shape == (5, 1000, 2)
