"""Layers, cells and losses with PyTorch's names (torch.nn)."""

from . import init, utils  # noqa: F401
from .cells import GRUCell, LSTMCell, RNNCell  # noqa: F401
from .layers import (  # noqa: F401
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss  # noqa: F401
from .module import Module, ModuleList, Parameter, Sequential  # noqa: F401
from .recurrent import GRU, LSTM, RNN, RNNBase  # noqa: F401
