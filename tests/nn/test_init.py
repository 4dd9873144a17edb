"""Initialisers: bounds, statistics, formulas, reproducibility under tg.manual_seed."""

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.nn import init


def _param(*shape, dtype=np.float64):
    return nn.Parameter(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_bounds_and_mean(dtype):
    tg.manual_seed(0)
    t = init.uniform_(_param(200, 100, dtype=dtype), -0.5, 2.0)
    values = t.numpy()
    assert t.dtype == dtype
    assert values.min() >= -0.5 and values.max() < 2.0
    assert values.min() < -0.49 and values.max() > 1.99  # fills the whole interval
    assert abs(values.mean() - 0.75) < 0.02
    assert abs(values.std() - 2.5 / math.sqrt(12)) < 0.01


def test_uniform_default_is_unit_interval():
    values = init.uniform_(_param(1000)).numpy()
    assert values.min() >= 0.0 and values.max() < 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_mean_std(dtype):
    tg.manual_seed(0)
    values = init.normal_(_param(200, 100, dtype=dtype), mean=3.0, std=0.5).numpy()
    assert values.dtype == dtype
    assert abs(values.mean() - 3.0) < 0.01
    assert abs(values.std() - 0.5) < 0.01


def test_constant_zeros_ones():
    t = _param(3, 2)
    np.testing.assert_array_equal(init.constant_(t, 0.25).numpy(), np.full((3, 2), 0.25))
    np.testing.assert_array_equal(init.ones_(t).numpy(), np.ones((3, 2)))
    np.testing.assert_array_equal(init.zeros_(t).numpy(), np.zeros((3, 2)))


def test_fan_in_and_fan_out():
    assert init.fan_in_and_fan_out(_param(8, 3)) == (3, 8)
    assert init.fan_in_and_fan_out(_param(8, 3, 5)) == (15, 40)
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.fan_in_and_fan_out(_param(8))


def test_calculate_gain_matches_torch(torch):
    for name in ["linear", "sigmoid", "tanh", "relu", "conv1d", "selu"]:
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    with pytest.raises(ValueError, match="softsign"):
        init.calculate_gain("softsign")


def _check_uniform_bound(values, bound):
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.98 * bound
    assert abs(values.std() - bound / math.sqrt(3)) < 0.03 * bound


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (60, 20, 5)])
def test_xavier_uniform_bound(shape):
    tg.manual_seed(0)
    t = init.xavier_uniform_(_param(*shape), gain=init.calculate_gain("tanh"))
    fan_in, fan_out = init.fan_in_and_fan_out(t)
    _check_uniform_bound(t.numpy(), 5 / 3 * math.sqrt(6 / (fan_in + fan_out)))


def test_xavier_normal_std():
    tg.manual_seed(0)
    values = init.xavier_normal_(_param(300, 200), gain=2.0).numpy()
    assert abs(values.mean()) < 0.005
    assert values.std() == pytest.approx(2.0 * math.sqrt(2 / 500), rel=0.02)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_uniform_bound(mode):
    tg.manual_seed(0)
    t = init.kaiming_uniform_(_param(300, 100), a=math.sqrt(5), mode=mode)
    fan = 100 if mode == "fan_in" else 300
    gain = math.sqrt(2 / (1 + 5))  # leaky_relu with slope sqrt(5): torch's Linear default
    _check_uniform_bound(t.numpy(), gain * math.sqrt(3 / fan))
    relu = init.kaiming_uniform_(_param(300, 100), nonlinearity="relu").numpy()
    _check_uniform_bound(relu, math.sqrt(2) * math.sqrt(3 / 100))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(_param(3, 3), mode="fan_avg")


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8), (4, 2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_orthogonal(shape, dtype):
    tg.manual_seed(0)
    gain = 1.5
    q = init.orthogonal_(_param(*shape, dtype=dtype), gain=gain).numpy().reshape(shape[0], -1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    rows, cols = q.shape
    if rows >= cols:
        np.testing.assert_allclose(q.T @ q, gain**2 * np.eye(cols), atol=tol)
    if rows <= cols:
        np.testing.assert_allclose(q @ q.T, gain**2 * np.eye(rows), atol=tol)
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.orthogonal_(_param(4))


def _lstm_weights(seed):
    tg.manual_seed(seed)
    return nn.LSTM(3, 5, num_layers=2, bidirectional=True).state_dict()


def test_same_seed_same_weights_different_seed_different():
    a, b, c = _lstm_weights(7), _lstm_weights(7), _lstm_weights(8)
    assert list(a) == list(b) == list(c)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])


def test_seed_reproduces_every_initialiser():
    def draw():
        tg.manual_seed(3)
        return [f(_param(4, 5)).numpy() for f in (
            init.uniform_, init.normal_, init.xavier_uniform_, init.xavier_normal_,
            init.kaiming_uniform_, init.orthogonal_)] + [tg.randn(3).numpy(), tg.rand(3).numpy()]

    for x, y in zip(draw(), draw()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_recurrent_init_within_inverse_sqrt_hidden(cls):
    hidden = 16
    kwargs = {} if "Cell" in cls.__name__ else {"num_layers": 2, "bidirectional": True}
    tg.manual_seed(0)
    module = cls(7, hidden, **kwargs)
    bound = 1 / math.sqrt(hidden)
    values = np.concatenate([p.numpy().ravel() for p in module.parameters()])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.95 * bound and abs(values.mean()) < 0.02 * 4
    for name, p in module.named_parameters():
        assert p.numpy().std() > 0.3 * bound, name  # every tensor actually got initialised


def test_lstm_projection_init_within_bound():
    module = nn.LSTM(3, 9, proj_size=4)
    assert np.abs(module.weight_hr_l0.numpy()).max() <= 1 / 3


def test_linear_init_within_inverse_sqrt_in_features():
    tg.manual_seed(0)
    layer = nn.Linear(25, 400)
    for p in (layer.weight, layer.bias):
        values = p.numpy()
        assert np.abs(values).max() <= 0.2 and np.abs(values).max() > 0.19


def test_embedding_init_is_standard_normal():
    tg.manual_seed(0)
    values = nn.Embedding(500, 40).weight.numpy()
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02


def test_layer_norm_init_is_ones_and_zeros():
    ln = nn.LayerNorm(6)
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(6))
