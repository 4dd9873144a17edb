"""Every user mistake gets an exception of the right type naming the argument, the expected
and the actual value: never a silent wrong answer or an error from deep inside NumPy."""

import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn


def raises(exc, message):
    """pytest.raises matching the message literally (shapes are full of regex characters)."""
    return pytest.raises(exc, match=re.escape(message))


# --------------------------------------------------------------------------- recurrent layers


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_wrong_feature_size(cls):
    name = cls.__name__
    with raises(ValueError, f"{name}: input.shape[-1] must be input_size=5, got 7"):
        cls(5, 8)(tg.randn(3, 2, 7))
    with raises(ValueError, f"{name}: input.shape[-1] must be input_size=5, got 7"):
        cls(5, 8, batch_first=True)(tg.randn(3, 7))  # unbatched too


@pytest.mark.parametrize("shape", [(5,), (3, 2, 2, 5)])
def test_wrong_ndim(shape):
    with raises(ValueError, "LSTM: input must be 3-D (seq_len, batch, input_size) or 2-D "
                            f"(seq_len, input_size), got shape {shape}"):
        nn.LSTM(5, 8)(tg.randn(*shape))
    with raises(ValueError, "GRU: input must be 3-D (batch, seq_len, input_size)"):
        nn.GRU(5, 8, batch_first=True)(tg.randn(*shape))


def test_empty_sequence():
    with raises(ValueError, "LSTM: input must have at least one time step, got shape (0, 2, 5)"):
        nn.LSTM(5, 8)(tg.randn(0, 2, 5))
    with raises(ValueError, "GRU: input must have at least one time step, got shape (2, 0, 5)"):
        nn.GRU(5, 8, batch_first=True)(tg.randn(2, 0, 5))


def test_input_not_a_tensor():
    with raises(TypeError, "LSTM: input must be a Tensor, got ndarray"):
        nn.LSTM(5, 8)(np.zeros((3, 2, 5), dtype=np.float32))


def test_wrong_state_shapes():
    x = tg.randn(3, 2, 5)
    lstm = nn.LSTM(5, 8)
    with raises(ValueError, "LSTM: h_0.shape must be (1, 2, 8), got (1, 3, 8)"):
        lstm(x, (tg.randn(1, 3, 8), tg.randn(1, 2, 8)))
    with raises(ValueError, "LSTM: c_0.shape must be (1, 2, 8), got (2, 2, 8)"):
        lstm(x, (tg.randn(1, 2, 8), tg.randn(2, 2, 8)))
    with raises(ValueError, "LSTM: h_0.shape must be (4, 2, 3), got (4, 2, 8)"):
        nn.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=3)(
            x, (tg.randn(4, 2, 8), tg.randn(4, 2, 8)))
    with raises(ValueError, "GRU: hx.shape must be (2, 2, 8), got (1, 2, 8)"):
        nn.GRU(5, 8, bidirectional=True)(x, tg.randn(1, 2, 8))
    with raises(ValueError, "RNN: hx.shape must be (1, 8), got (1, 2, 8)"):
        nn.RNN(5, 8)(tg.randn(3, 5), tg.randn(1, 2, 8))  # unbatched input, batched state


def test_wrong_state_dtype_and_type():
    x = tg.randn(3, 2, 5)
    with raises(TypeError, "GRU: hx.dtype must be float32, got float64"):
        nn.GRU(5, 8)(x, tg.randn(1, 2, 8, dtype=np.float64))
    with raises(TypeError, "LSTM: c_0.dtype must be float32, got float64"):
        nn.LSTM(5, 8)(x, (tg.randn(1, 2, 8), tg.randn(1, 2, 8, dtype=np.float64)))
    with raises(TypeError, "RNN: hx must be a Tensor, got ndarray"):
        nn.RNN(5, 8)(x, np.zeros((1, 2, 8), dtype=np.float32))


def test_wrong_input_dtype():
    with raises(TypeError,
                "LSTM: input.dtype must be float32 (the parameters' dtype), got float64"):
        nn.LSTM(5, 8)(tg.randn(3, 2, 5, dtype=np.float64))
    with raises(TypeError,
                "RNN: input.dtype must be float64 (the parameters' dtype), got float32"):
        nn.RNN(5, 8).double()(tg.randn(3, 2, 5))


@pytest.mark.parametrize("hx", ["tensor", "one-tuple", "triple"])
def test_lstm_hx_must_be_a_pair(hx):
    h = tg.randn(1, 2, 8)
    value = {"tensor": h, "one-tuple": (h,), "triple": (h, h, h)}[hx]
    with raises(TypeError, "LSTM: hx must be a tuple (h_0, c_0)"):
        nn.LSTM(5, 8)(tg.randn(3, 2, 5), value)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(hidden_size=0), "LSTM: hidden_size must be a positive integer, got 0"),
    (dict(hidden_size=2.5), "LSTM: hidden_size must be a positive integer, got 2.5"),
    (dict(input_size=0), "LSTM: input_size must be a positive integer, got 0"),
    (dict(num_layers=0), "LSTM: num_layers must be a positive integer, got 0"),
    (dict(dropout=1.5), "LSTM: dropout must be in [0, 1], got 1.5"),
    (dict(dropout=-0.1), "LSTM: dropout must be in [0, 1], got -0.1"),
    (dict(proj_size=8), "LSTM: proj_size must be 0 or in [1, hidden_size=8), got 8"),
    (dict(proj_size=9), "LSTM: proj_size must be 0 or in [1, hidden_size=8), got 9"),
    (dict(proj_size=-1), "LSTM: proj_size must be 0 or in [1, hidden_size=8), got -1"),
])
def test_invalid_lstm_constructor_args(kwargs, message):
    args = dict(input_size=5, hidden_size=8) | kwargs
    with raises(ValueError, message):
        nn.LSTM(**args)


def test_invalid_nonlinearity():
    with raises(ValueError, "RNN: nonlinearity must be one of ('tanh', 'relu'), got 'sigmoid'"):
        nn.RNN(5, 8, nonlinearity="sigmoid")
    with raises(ValueError, "RNNCell: nonlinearity must be one of ('tanh', 'relu'), "
                            "got 'sigmoid'"):
        nn.RNNCell(5, 8, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_invalid_sizes_other_classes(cls):
    with raises(ValueError, f"{cls.__name__}: hidden_size must be a positive integer, got 0"):
        cls(5, 0)
    with raises(ValueError, f"{cls.__name__}: input_size must be a positive integer, got -3"):
        cls(-3, 4)


# --------------------------------------------------------------------------- cells


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_cell_input_errors(cls):
    name = cls.__name__
    cell = cls(5, 8)
    with raises(ValueError, f"{name}: input.shape[-1] must be input_size=5, got 4"):
        cell(tg.randn(2, 4))
    with raises(ValueError, f"{name}: input must be 1-D (input_size,) or 2-D (batch, "
                            "input_size), got shape (3, 2, 5)"):
        cell(tg.randn(3, 2, 5))
    with raises(TypeError, f"{name}: input.dtype must be float32 (the parameters' dtype), "
                           "got float64"):
        cell(tg.randn(2, 5, dtype=np.float64))
    with raises(TypeError, f"{name}: input must be a Tensor, got list"):
        cell([0.0] * 5)


def test_cell_state_errors():
    x = tg.randn(2, 5)
    with raises(ValueError, "GRUCell: hx.shape must be (2, 8), got (3, 8)"):
        nn.GRUCell(5, 8)(x, tg.randn(3, 8))
    with raises(ValueError, "RNNCell: hx.shape must be (8,), got (2, 8)"):
        nn.RNNCell(5, 8)(tg.randn(5), tg.randn(2, 8))  # unbatched input, batched state
    with raises(ValueError, "LSTMCell: hx[1].shape must be (2, 8), got (3, 8)"):
        nn.LSTMCell(5, 8)(x, (tg.randn(2, 8), tg.randn(3, 8)))
    with raises(TypeError, "LSTMCell: hx[1].dtype must be float32, got float64"):
        nn.LSTMCell(5, 8)(x, (tg.randn(2, 8), tg.randn(2, 8, dtype=np.float64)))
    with raises(TypeError, "GRUCell: hx must be a Tensor, got ndarray"):
        nn.GRUCell(5, 8)(x, np.zeros((2, 8), dtype=np.float32))


def test_lstm_cell_hx_must_be_a_pair():
    # a (2, H) tensor would otherwise be unpacked row by row into h and c for 1-D input
    with raises(TypeError, "LSTMCell: hx must be a tuple (h, c)"):
        nn.LSTMCell(5, 8)(tg.randn(5), tg.randn(2, 8))


# --------------------------------------------------------------------------- other layers


def test_linear_wrong_input_features():
    with raises(ValueError, "Linear: input.shape[-1] must be in_features=5, got 7"):
        nn.Linear(5, 3)(tg.randn(2, 7))
    with raises(ValueError, "Linear: input.shape[-1] must be in_features=5, got a 0-d tensor"):
        nn.Linear(5, 3)(tg.tensor(1.0))
    with raises(ValueError, "Linear: in_features must be a positive integer, got 0"):
        nn.Linear(0, 3)
    with raises(ValueError, "Linear: out_features must be a positive integer, got True"):
        nn.Linear(3, True)


# --------------------------------------------------------------------------- devices


def test_cuda_unavailable_is_explained(cupy_missing):
    with pytest.raises(RuntimeError, match="device 'cuda' is not available.*pip install cupy"):
        nn.LSTM(5, 8, device="cuda")
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"):
        nn.Linear(5, 8).to("cuda")


def test_wrong_device():
    if not tg.cuda_available():
        pytest.skip("mixing devices needs a GPU")
    lstm = nn.LSTM(5, 8)  # on the CPU
    with raises(RuntimeError, "LSTM: input is on 'cuda' but the parameters are on 'cpu'"):
        lstm(tg.randn(3, 2, 5, device="cuda"))
    lstm.to("cuda")
    with raises(RuntimeError, "LSTM: h_0 is on 'cpu' but input is on 'cuda'"):
        lstm(tg.randn(3, 2, 5, device="cuda"), (tg.randn(1, 2, 8), tg.randn(1, 2, 8)))
    cell = nn.GRUCell(5, 8)
    with raises(RuntimeError, "GRUCell: input is on 'cuda' but the parameters are on 'cpu'"):
        cell(tg.randn(2, 5, device="cuda"))
    with pytest.raises(RuntimeError, match="cuda.*cpu|cpu.*cuda"):
        nn.Linear(5, 3)(tg.randn(2, 5, device="cuda"))
