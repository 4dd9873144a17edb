"""The NumPy baselines in benchmarks/ compute exactly what our layers compute (float64), so
timing against them compares equal work."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SEQ, BATCH, INPUT, HIDDEN = 6, 3, 4, 5


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baselines = _load("numpy_baselines")


def _ours(cls, dtype, with_state, rng):
    """Run our layer under L = sum(output * w); return the layer, the tensors and w."""
    tg.manual_seed(0)
    layer = cls(INPUT, HIDDEN, dtype=dtype)
    x = tg.Tensor(rng.standard_normal((SEQ, BATCH, INPUT)).astype(dtype), requires_grad=True)
    states = []
    if with_state:
        states = [tg.Tensor(rng.standard_normal((1, BATCH, HIDDEN)).astype(dtype),
                            requires_grad=True) for _ in range(2 if cls is nn.LSTM else 1)]
    hx = None if not states else tuple(states) if cls is nn.LSTM else states[0]
    output, final = layer(x, hx)
    w = rng.standard_normal(output.shape).astype(dtype)
    loss = (output * tg.Tensor(w)).sum()
    loss.backward()
    finals = list(final) if cls is nn.LSTM else [final]
    return layer, x, states, output, finals, loss, w


def _weights(layer):
    return {k: v for k, v in layer.state_dict().items()}


def _initial(states):
    return [s.numpy()[0] for s in states] or [None, None]


def _close(a, b, dtype, name):
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
    assert np.asarray(a).dtype == dtype, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no_h0"])
def test_numpy_lstm_matches_our_lstm(dtype, with_state):
    rng = np.random.default_rng(0)
    layer, x, states, output, finals, loss, w = _ours(nn.LSTM, dtype, with_state, rng)
    sd = _weights(layer)
    h0, c0 = _initial(states)
    ref = baselines.lstm_step_numpy(x.numpy(), sd["weight_ih_l0"], sd["weight_hh_l0"],
                                    sd["bias_ih_l0"] + sd["bias_hh_l0"], h0, c0, grad_output=w)
    _close(ref["output"], output.numpy(), dtype, "output")
    _close(ref["h_n"], finals[0].numpy()[0], dtype, "h_n")
    _close(ref["c_n"], finals[1].numpy()[0], dtype, "c_n")
    assert ref["loss"] == pytest.approx(loss.item(), rel=1e-10 if dtype == np.float64 else 1e-4)
    _close(ref["dx"], x.grad.numpy(), dtype, "dx")
    _close(ref["dW_ih"], layer.weight_ih_l0.grad.numpy(), dtype, "dW_ih")
    _close(ref["dW_hh"], layer.weight_hh_l0.grad.numpy(), dtype, "dW_hh")
    _close(ref["db"], layer.bias_ih_l0.grad.numpy(), dtype, "db")
    _close(ref["db"], layer.bias_hh_l0.grad.numpy(), dtype, "db")
    if with_state:
        _close(ref["dh0"], states[0].grad.numpy()[0], dtype, "dh0")
        _close(ref["dc0"], states[1].grad.numpy()[0], dtype, "dc0")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no_h0"])
def test_numpy_gru_matches_our_gru(dtype, with_state):
    rng = np.random.default_rng(1)
    layer, x, states, output, finals, loss, w = _ours(nn.GRU, dtype, with_state, rng)
    sd = _weights(layer)
    ref = baselines.gru_step_numpy(x.numpy(), sd["weight_ih_l0"], sd["weight_hh_l0"],
                                   sd["bias_ih_l0"], sd["bias_hh_l0"], _initial(states)[0],
                                   grad_output=w)
    _close(ref["output"], output.numpy(), dtype, "output")
    _close(ref["h_n"], finals[0].numpy()[0], dtype, "h_n")
    _close(ref["dx"], x.grad.numpy(), dtype, "dx")
    for key, name in [("dW_ih", "weight_ih_l0"), ("dW_hh", "weight_hh_l0"),
                      ("db_ih", "bias_ih_l0"), ("db_hh", "bias_hh_l0")]:
        _close(ref[key], getattr(layer, name).grad.numpy(), dtype, key)
    if with_state:
        _close(ref["dh0"], states[0].grad.numpy()[0], dtype, "dh0")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "no_h0"])
def test_numpy_rnn_matches_our_rnn(dtype, with_state):
    rng = np.random.default_rng(2)
    layer, x, states, output, finals, loss, w = _ours(nn.RNN, dtype, with_state, rng)
    sd = _weights(layer)
    ref = baselines.rnn_step_numpy(x.numpy(), sd["weight_ih_l0"], sd["weight_hh_l0"],
                                   sd["bias_ih_l0"] + sd["bias_hh_l0"], _initial(states)[0],
                                   grad_output=w)
    _close(ref["output"], output.numpy(), dtype, "output")
    _close(ref["h_n"], finals[0].numpy()[0], dtype, "h_n")
    _close(ref["dx"], x.grad.numpy(), dtype, "dx")
    _close(ref["dW_ih"], layer.weight_ih_l0.grad.numpy(), dtype, "dW_ih")
    _close(ref["dW_hh"], layer.weight_hh_l0.grad.numpy(), dtype, "dW_hh")
    _close(ref["db"], layer.bias_ih_l0.grad.numpy(), dtype, "db")
    if with_state:
        _close(ref["dh0"], states[0].grad.numpy()[0], dtype, "dh0")


def test_default_loss_is_the_sum_of_outputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((SEQ, BATCH, INPUT))
    W_ih, W_hh = rng.standard_normal((4 * HIDDEN, INPUT)), rng.standard_normal((4 * HIDDEN, HIDDEN))
    b = rng.standard_normal(4 * HIDDEN)
    plain = baselines.lstm_step_numpy(x, W_ih, W_hh, b)
    ones = baselines.lstm_step_numpy(x, W_ih, W_hh, b, grad_output=np.ones((SEQ, BATCH, HIDDEN)))
    assert plain["loss"] == pytest.approx(plain["output"].sum())
    for key in plain:
        np.testing.assert_array_equal(plain[key], ones[key])


def test_lstm_step_benchmark_runs_and_writes_its_table(tmp_path):
    bench = _load("bench_lstm_step")
    output = tmp_path / "lstm_step.md"
    table = bench.main(["--seq-len", "3", "--batch", "2", "--input-size", "4",
                        "--hidden-size", "5", "--repeats", "2", "--output", str(output)])
    assert output.read_text() == table
    assert "| tinygrad_rnn |" in table and "| NumPy by hand |" in table
    assert "T=3, B=2, I=4, H=5, float32" in table


def test_recurrent_benchmark_quick_run_writes_its_table(tmp_path):
    """bench_recurrent.py --quick: every contender runs and the results table is written."""
    bench = _load("bench_recurrent")
    output = tmp_path / "recurrent.md"
    bench.main(["--quick", "--no-torch", "--out", str(output)])
    text = output.read_text()
    for heading in ("## Targets", "### LSTM", "### GRU", "### RNN", "## Linearity in T",
                    "## Peak memory"):
        assert heading in text


def test_variants_benchmark_quick_run_writes_its_table(tmp_path):
    """bench_variants.py --quick: every contender runs, targets and tables are written."""
    bench = _load("bench_variants")
    output = tmp_path / "variants.md"
    bench.main(["--quick", "--out", str(output)])
    text = output.read_text()
    for line in ("## Targets", "## Step time", "## Peak memory", "| MGU scan |",
                 "| layer_norm remat |", "tiny: GRU reset_after=False / GRU fused"):
        assert line in text


def test_engine_benchmark_runs_and_writes_its_table(tmp_path, monkeypatch):
    """bench_engine.py at a tiny chain length: both contenders agree and the table is written."""
    bench = _load("bench_engine")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "engine.md")
    monkeypatch.setattr(bench, "NODES", 100)
    monkeypatch.setattr(bench, "REPEATS", 2)
    table = bench.main()
    assert (tmp_path / "engine.md").read_text() == table
    assert "| `y = y * a + b` | 100 |" in table and "engine / NumPy" in table
