"""The hand-written NumPy LSTM training step (see numpy_baselines.py, which also has GRU and
tanh-RNN baselines in the same style)."""

try:  # imported as benchmarks.numpy_lstm
    from .numpy_baselines import lstm_step_numpy  # noqa: F401
except ImportError:  # run from the benchmarks folder, or loaded as a plain file
    from numpy_baselines import lstm_step_numpy  # noqa: F401
