"""Smoke tests of every `tinygrad-rnn` subcommand at tiny sizes, and of the Trainer's
promises: determinism, exact resumption, the NaN guard and clean Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import cli
from tinygrad_rnn.cli import main
from tinygrad_rnn.train import CELLS, TrainConfig, Trainer, TrainingError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "6", "--seq-len", "8", "--hidden", "8", "--eval-size", "40",
        "--no-progress"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("It was the best of times, it was the worst of times.\n" * 80)
    return path


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- train


@pytest.mark.parametrize("task", ["adding", "copy", "sine", "classify", "charlm"])
def test_train_every_task_writes_metrics_plot_and_checkpoint(task, tmp_path, text_file, capsys):
    extra = ["--text", text_file, "--eval-size", "400"] if task == "charlm" else []
    assert run_cli("train", "--task", task, "--out", tmp_path, *TINY, *extra) == 0
    printed = capsys.readouterr().out
    result = metrics(tmp_path)
    assert result["status"] == "completed" and result["step"] == 6
    assert np.isfinite(result["metric"]) and np.isfinite(result["baseline"])
    assert f"baseline ({result['baseline_name']})" in printed
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert load_checkpoint(tmp_path)["step"] == 6


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_train_every_cell(cell, tmp_path):
    assert run_cli("train", "--cell", cell, "--out", tmp_path, *TINY, "--steps", "2") == 0
    assert metrics(tmp_path)["config"]["cell"] == cell


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        run_cli("train", "--out", tmp_path / name, "--seed", seed, *TINY)
    a, b, c = (metrics(tmp_path / n) for n in "abc")
    assert a["metric"] == b["metric"] and a["final_train_loss"] == b["final_train_loss"]
    assert a["metric"] != c["metric"]


@pytest.mark.parametrize("task", ["adding", "charlm"])
def test_resume_gives_the_numbers_of_an_uninterrupted_run(task, tmp_path, text_file):
    extra = ["--text", text_file, "--eval-size", "400"] if task == "charlm" else []
    common = ["--task", task, "--optimizer", "adam", *TINY, *extra]
    run_cli("train", "--out", tmp_path / "straight", *common, "--steps", "8")
    run_cli("train", "--out", tmp_path / "resumed", *common, "--steps", "4")
    assert run_cli("train", "--out", tmp_path / "resumed", *common, "--steps", "8",
                   "--resume") == 0
    straight, resumed = (load_checkpoint(tmp_path / n) for n in ("straight", "resumed"))
    assert resumed["step"] == 8
    np.testing.assert_array_equal(straight["loss_history"], resumed["loss_history"])
    for name, value in straight["model"].items():
        np.testing.assert_array_equal(value, resumed["model"][name])
    assert metrics(tmp_path / "straight")["metric"] == metrics(tmp_path / "resumed")["metric"]


def test_resume_without_checkpoint_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("train", "--out", tmp_path, "--resume", *TINY)
    assert exc.value.code == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(steps=50, seq_len=8, hidden=8, eval_size=20, checkpoint_every=3)
    trainer = Trainer(config, tmp_path, progress=False, quiet=True)
    generate = trainer.task.generate

    def poisoned(rng, batch_size):
        x, y = generate(rng, batch_size)
        if trainer.step >= 7:
            x[0, 0, 0] = np.nan
        return x, y

    trainer.task.generate = poisoned
    with pytest.raises(TrainingError, match=r"loss is nan at step 8.*checkpoint \(step 6\)"):
        trainer.run()
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["step"] == 6
    assert all(np.isfinite(v).all() for v in checkpoint["model"].values())
    assert metrics(tmp_path)["status"] == "diverged"


def test_diverging_run_exits_1_with_a_clear_message(tmp_path, capsys):
    code = run_cli("train", "--out", tmp_path, *TINY, "--steps", "30", "--optimizer", "sgd",
                   "--lr", "1e30", "--clip", "0")
    err = capsys.readouterr().err
    assert code == 1
    assert "stopped: the loss is inf" in err and "--lr" in err
    assert "Warning" not in err


def test_ctrl_c_in_the_loop_saves_and_returns(tmp_path):
    def interrupt(trainer):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(TrainConfig(steps=1000, seq_len=8, hidden=8, eval_size=20), tmp_path,
                      progress=False, quiet=True, on_step=interrupt)
    result = trainer.run()
    assert result["status"] == "interrupted" and result["step"] == 3
    assert load_checkpoint(tmp_path)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_from_outside_exits_cleanly(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_rnn", "train", "--out", str(tmp_path), "--steps",
         "100000", "--seq-len", "8", "--hidden", "8", "--eval-size", "20", "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("training lstm on adding")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved" in err
    assert metrics(tmp_path)["status"] == "interrupted"
    assert load_checkpoint(tmp_path)["step"] >= 0


def test_plain_progress_lines_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    args = [a for a in TINY if a != "--no-progress"]
    assert run_cli("train", "--out", tmp_path, *args, "--steps", "20") == 0
    err = capsys.readouterr().err
    assert "tqdm is not installed" in err and "step 20/20" in err


def test_training_without_matplotlib_skips_the_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run_cli("train", "--out", tmp_path, *TINY) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "metrics.json").exists()


# --------------------------------------------------------------------------- sample


def test_sample_continues_the_prime(tmp_path, text_file, capsys):
    run_cli("train", "--task", "charlm", "--text", text_file, "--out", tmp_path, *TINY,
            "--eval-size", "400")
    capsys.readouterr()
    assert run_cli("sample", "--checkpoint", tmp_path, "--prime", "It was", "--length", 25,
                   "--seed", 1) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("It was") and len(text) == len("It was") + 25
    run_cli("sample", "--checkpoint", tmp_path / "checkpoint.npz", "--prime", "It was",
            "--length", 25, "--seed", 1)
    assert capsys.readouterr().out.rstrip("\n") == text  # same seed, same text
    with pytest.raises(SystemExit) as exc:
        run_cli("sample", "--checkpoint", tmp_path, "--prime", "Zebra€")
    assert exc.value.code == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err


def test_sample_needs_a_charlm_checkpoint(tmp_path, capsys):
    run_cli("train", "--out", tmp_path, *TINY, "--steps", "1")
    with pytest.raises(SystemExit) as exc:
        run_cli("sample", "--checkpoint", tmp_path)
    assert exc.value.code == 2
    assert "needs a charlm checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- the others


def test_gradflow_plots_and_shows_vanishing_gradients(tmp_path, capsys):
    png = tmp_path / "flow.png"
    assert run_cli("gradflow", "--seq-len", 30, "--hidden", 16, "--out", png) == 0
    out = capsys.readouterr().out
    assert "tanh RNN" in out and "LSTM" in out and "GRU" in out
    assert png.stat().st_size > 1000


def test_info_lists_versions_backends_and_devices(capsys):
    assert run_cli("info") == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "devices:" in out and "cpu" in out


def test_demo_quick(tmp_path, capsys):
    assert run_cli("demo", "--quick", "--out", tmp_path, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "test MSE" in out and "LSTM" in out and "tanh RNN" in out
    for name in ("lstm/loss.png", "rnn/loss.png", "gradflow.png", "lstm/checkpoint.npz"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.parametrize("argv, message", [
    ([], "required: COMMAND"),
    (["train", "--steps", "-1"], "--steps: expected an integer >= 0"),
    (["train", "--task", "nope"], "invalid choice: 'nope'"),
    (["train", "--cell", "nope"], "invalid choice: 'nope'"),
    (["train", "--lr", "0"], "--lr: expected a number > 0"),
    (["train", "--lr", "nan"], "--lr: expected a finite number"),
    (["train", "--dropout", "1"], "--dropout: expected a number in [0, 1)"),
    (["train", "--task", "adding", "--text", "x.txt"], "--text is only for --task charlm"),
    (["train", "--cell", "gru", "--forget-bias", "1"], "--forget-bias applies to LSTM"),
    (["train", "--task", "sine", "--seq-len", "100000"], "too long"),
    (["sample"], "--checkpoint"),
    (["sample", "--checkpoint", "/nonexistent"], "no checkpoint"),
    (["gradflow", "--cells", "rnn,nope"], "--cells"),
    (["gradflow", "--seq-len", "0"], "expected a positive integer"),
    (["bench", "--cells", "lstm,nope"], "--cells"),
    (["bench", "--repeats", "0"], "expected a positive integer"),
])
def test_bad_arguments_give_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


@pytest.mark.parametrize("command", ["train", "sample --checkpoint x"])
def test_cuda_without_cupy_says_how_to_get_it(command, capsys, cupy_missing):
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--device", "cuda"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "pip install cupy" in err


def test_console_script_and_module_are_the_same_command():
    done = subprocess.run([sys.executable, "-m", "tinygrad_rnn", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "usage: tinygrad-rnn" in done.stdout
    for command in ("train", "sample", "gradflow", "info", "demo"):
        assert command in done.stdout


def test_result_line_says_when_the_model_is_worse_than_the_baseline():
    result = {"task": "sine", "cell": "gru", "metric_name": "mse", "baseline_name": "last value",
              "higher_is_better": False, "metrics": {}}
    better = cli.result_line({**result, "metric": 0.01, "baseline": 0.1})
    worse = cli.result_line({**result, "metric": 0.2, "baseline": 0.1})
    assert "(10.0x lower)" in better
    assert "(no better than the baseline: 2.0x higher)" in worse
    # issue 14: 0.1768 against 0.1742 used to read "1.0x HIGHER"; a hair below, "1.0x lower"
    for metric in (0.1768, 0.1735):
        line = cli.result_line({**result, "metric": metric, "baseline": 0.1742})
        assert line.endswith("(no better than the baseline)") and "1.0x" not in line


def test_bench_times_both_paths_and_says_when_only_the_composed_one_exists(capsys):
    argv = ["bench", "--cells", "rnn,lstm,gru,peephole", "--seq-len", 4, "--batch-size", 2,
            "--input-size", 3, "--hidden", 5, "--repeats", 1]
    assert run_cli(*argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(T, B, I, H) = (4, 2, 3, 5)" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {"rnn", "lstm", "gru", "peephole"}
    for cell in ("rnn", "lstm", "gru"):
        fast, composed, ratio = rows[cell]
        assert float(fast) > 0 and float(composed) > 0 and ratio.endswith("x")
    assert rows["peephole"][0] == "n/a" and float(rows["peephole"][1]) > 0


# --------------------------------------------------------------------------- --device cuda
# (the emulated GPU where there is no real one: see tests/conftest.py)


def test_train_on_cuda_gives_the_cpu_numbers(tmp_path):
    common = ["--optimizer", "adam", *TINY]
    for device in ("cpu", "cuda"):
        assert run_cli("train", "--out", tmp_path / device, *common, "--device", device) == 0
    cpu, cuda = (load_checkpoint(tmp_path / d) for d in ("cpu", "cuda"))
    np.testing.assert_allclose(cuda["loss_history"], cpu["loss_history"], rtol=1e-4)
    for name, value in cpu["model"].items():
        np.testing.assert_allclose(cuda["model"][name], value, rtol=1e-4, atol=1e-5)
    assert metrics(tmp_path / "cuda")["config"]["device"] == "cuda"


def test_resume_on_cuda_with_dropout_is_exact(tmp_path):
    """The CUDA generator (dropout masks) is saved and restored with the checkpoint."""
    common = ["--layers", "2", "--dropout", "0.3", *TINY, "--device", "cuda"]
    run_cli("train", "--out", tmp_path / "straight", *common, "--steps", "8")
    run_cli("train", "--out", tmp_path / "resumed", *common, "--steps", "4")
    assert run_cli("train", "--out", tmp_path / "resumed", *common, "--steps", "8",
                   "--resume") == 0
    straight, resumed = (load_checkpoint(tmp_path / n) for n in ("straight", "resumed"))
    np.testing.assert_array_equal(straight["loss_history"], resumed["loss_history"])
    for name, value in straight["model"].items():
        np.testing.assert_array_equal(value, resumed["model"][name])


def test_sample_on_cuda(tmp_path, text_file, capsys):
    assert run_cli("train", "--task", "charlm", "--text", text_file, "--eval-size", "400",
                   "--out", tmp_path, *TINY, "--device", "cuda") == 0
    capsys.readouterr()
    assert run_cli("sample", "--checkpoint", tmp_path, "--prime", "It was", "--length", "20",
                   "--device", "cuda") == 0
    assert capsys.readouterr().out.startswith("It was")


def test_info_names_the_cuda_device(capsys):
    assert run_cli("info") == 0
    assert "cupy (cuda)" in capsys.readouterr().out
