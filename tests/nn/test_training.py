"""End to end: recurrent models learn small tasks with a hand-written optimiser loop.

The update rule is written here (plain Adam on `p.data` / `p.grad.data`) so that these tests
depend on nothing but the nn layers and backward().
"""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn


class Regressor(nn.Module):
    """A recurrent layer read at the last time step, then a linear head to one number."""

    def __init__(self, rnn: nn.Module, hidden_size: int):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[:, -1])


class Adam:
    """Kingma & Ba 2015, written out on raw arrays; float32 stays float32."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad.data
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)
            p.data -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype)


def adding_problem(rng, n, steps):
    """Hochreiter & Schmidhuber's adding problem: channel 0 holds U(0, 1) values, channel 1
    marks two of them; the target is the sum of the two marked values."""
    values = rng.uniform(0, 1, (n, steps))
    markers = np.zeros((n, steps))
    for row in range(n):
        markers[row, rng.choice(steps, 2, replace=False)] = 1
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return x, (values * markers).sum(1, keepdims=True).astype(np.float32)


def train_adding(iterations, seq_len=10, hidden=16, batch=64, lr=0.01):
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    x_test, y_test = adding_problem(rng, 1000, seq_len)
    model = Regressor(nn.LSTM(2, hidden, batch_first=True), hidden)
    optimizer = Adam(model.parameters(), lr)
    losses = []
    for _ in range(iterations):
        x, y = adding_problem(rng, batch, seq_len)
        loss = nn.MSELoss()(model(tg.Tensor(x)), tg.Tensor(y))
        model.zero_grad()
        loss.backward()
        optimizer.step()
        assert loss.dtype == np.float32
        losses.append(loss.item())
    with tg.no_grad():
        test_mse = nn.MSELoss()(model(tg.Tensor(x_test)), tg.Tensor(y_test)).item()
    baseline = float(((y_test - y_test.mean()) ** 2).mean())  # predicting the mean
    return losses, test_mse, baseline, model


def test_lstm_learns_the_adding_problem():
    losses, test_mse, baseline, model = train_adding(500)
    assert baseline == pytest.approx(1 / 6, rel=0.1)  # Var(U + U) = 2/12
    assert test_mse < 0.1 * baseline, (test_mse, baseline)
    assert np.mean(losses[-20:]) < 0.1 * baseline
    assert np.mean(losses[:20]) > 0.5 * baseline  # it did start from chance
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_training_is_deterministic():
    first, test_a, _, model_a = train_adding(15)
    second, test_b, _, model_b = train_adding(15)
    assert first == second and test_a == test_b
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
def test_each_layer_learns_a_running_sum(cls):
    """Predict the sum of 5 values from U(-1, 1): trivial baseline Var = 5/3."""
    tg.manual_seed(0)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (512, 5, 1)).astype(np.float32)
    y = x.sum(axis=1)
    model = Regressor(cls(1, 16, batch_first=True), 16)
    optimizer = Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        idx = rng.choice(256, 64, replace=False)  # the first 256 rows are the training set
        loss = nn.MSELoss()(model(tg.Tensor(x[idx])), tg.Tensor(y[idx]))
        model.zero_grad()
        loss.backward()
        optimizer.step()
    with tg.no_grad():
        test_mse = nn.MSELoss()(model(tg.Tensor(x[256:])), tg.Tensor(y[256:])).item()
    assert test_mse < 0.02 * (5 / 3), test_mse
