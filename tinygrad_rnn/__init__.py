"""tinygrad_rnn: a small reverse-mode autodiff engine on NumPy/CuPy, with recurrent networks
written as plain per-step code so that backpropagation through time is just backward()."""

from . import backend, functional, nn, ops  # noqa: F401
from .backend import available_devices, cuda_available, get_array_module, to_numpy  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .io import CheckpointError, load, save  # noqa: F401
from .scan import ScanError, scan, scan_loop, trace_step  # noqa: F401
from .tensor import (  # noqa: F401
    Tensor,
    apply_op,
    arange,
    cat,
    chunk,
    concat,
    enable_grad,
    full,
    get_default_dtype,
    is_grad_enabled,
    manual_seed,
    matmul,
    maximum,
    minimum,
    no_grad,
    ones,
    ones_like,
    rand,
    randn,
    set_default_dtype,
    split,
    stack,
    tensor,
    unbind,
    where,
    zeros,
    zeros_like,
)

__version__ = "0.1.0"
