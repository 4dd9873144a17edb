"""One small class per op: forward(*arrays) -> array, backward(grad) -> grads, on raw arrays."""

from .elementwise import (  # noqa: F401
    Abs,
    Add,
    Clip,
    Compare,
    Div,
    Exp,
    Log,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    PowScalar,
    Relu,
    Sigmoid,
    Softplus,
    Sqrt,
    Sub,
    Tanh,
    Where,
)
from .function import Function, normalize_axes  # noqa: F401
from .linalg import Linear, MatMul  # noqa: F401
from .normalization import LayerNorm  # noqa: F401
from .random import BernoulliMask, DropoutMask  # noqa: F401
from .reduce import LogSoftmax, LogSumExp, Max, Mean, Min, Softmax, Sum, Var  # noqa: F401
from .shape import (  # noqa: F401
    BroadcastTo,
    Concat,
    Embedding,
    GetItem,
    Permute,
    Reshape,
    Split,
    Stack,
    Unbind,
)
