"""Every script in examples/ runs to the end at its --quick size."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
EXPECTED = {  # a line each script prints at the end
    "adding_problem.py": "test MSE",
    "char_lm.py": "validation loss",
    "copy_task.py": "per symbol",
    "cpu_gpu_switch.py": "ms/step",
    "seq2seq_reverse.py": "greedy decoding",
    "sequence_classification.py": "test accuracy",
    "sine_forecast.py": "persistence",
    "torch_interop.py": "torch -> tinygrad_rnn",
    "vanishing_gradients.py": "LSTM, forget bias 1",
}


def test_every_example_is_listed():
    assert set(SCRIPTS) == set(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_quick(script, tmp_path):
    if script == "torch_interop.py" and importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert EXPECTED[script] in done.stdout
    assert "Traceback" not in done.stderr


def test_cpu_gpu_switch_explains_a_missing_gpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent / "without_cupy"))
    done = subprocess.run([sys.executable, str(EXAMPLES / "cpu_gpu_switch.py"), "--quick",
                           "--device", "cuda"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2
    assert "pip install cupy" in done.stderr and "Traceback" not in done.stderr


def test_cpu_gpu_switch_compares_the_devices(tmp_path):
    """Both devices, the same losses (the "cuda" one is the emulated GPU without a GPU)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / "cpu_gpu_switch.py"), "--quick",
                           "--compare"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cuda :" in done.stdout and "cpu  :" in done.stdout
    gap = float(done.stdout.split("cpu and cuda losses:")[1].split()[0])
    assert gap < 1e-4
