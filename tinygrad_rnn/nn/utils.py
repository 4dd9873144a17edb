"""Helpers around the recurrent layers (PyTorch's torch.nn.utils, plus truncated BPTT).

pad_sequence      a list of (L_i, *) sequences -> one padded (T, B, *) batch (+ lengths)
detach_state      cut a recurrent state (Tensor or nested tuple) from the graph
truncated_bptt    run a long sequence in chunks, carrying the state and detaching it between
                  chunks, so the graph in memory never holds more than one chunk
clip_grad_norm_, clip_grad_value_   re-exported from tinygrad_rnn.optim.clip
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import backend
from ..tensor import Tensor, cat, full, stack

try:  # optim.clip imports nothing from nn, so this is not a cycle
    from ..optim.clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
except ModuleNotFoundError as error:  # pragma: no cover - only while optim is not there yet
    if error.name is None or not error.name.startswith("tinygrad_rnn.optim"):
        raise

__all__ = ["pad_sequence", "detach_state", "truncated_bptt", "clip_grad_norm_",
           "clip_grad_value_"]


def pad_sequence(sequences: Sequence, batch_first: bool = False, padding_value: float = 0.0,
                 *, return_lengths: bool = False):
    """Stack sequences of different lengths into one padded batch (torch's pad_sequence).

    sequences: a list of B arrays or Tensors of shape (L_i, *) with the same trailing shape
    and dtype. Returns a Tensor (T, B, *) (or (B, T, *) with batch_first), T = max L_i, with
    `padding_value` after each sequence's end; with return_lengths=True, (padded, lengths)
    where lengths is an int64 NumPy array (B,), ready for `rnn(padded, lengths=lengths)`.
    Differentiable: gradients flow back to the Tensors that require them.
    """
    if isinstance(sequences, (Tensor, np.ndarray)) or not len(sequences):
        raise ValueError("pad_sequence: sequences must be a non-empty list of arrays/Tensors")
    tensors = [s if isinstance(s, Tensor) else Tensor(s) for s in sequences]
    first = tensors[0]
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise ValueError(f"pad_sequence: sequences[{i}] must have a time axis, got a scalar")
        if t.shape[1:] != first.shape[1:]:
            raise ValueError(f"pad_sequence: sequences[{i}].shape[1:] is {t.shape[1:]}, "
                             f"sequences[0].shape[1:] is {first.shape[1:]}")
        if t.dtype != first.dtype or t.device != first.device:
            raise TypeError(f"pad_sequence: sequences[{i}] is {t.dtype} on '{t.device}', "
                            f"sequences[0] is {first.dtype} on '{first.device}'")
    lengths = np.array([t.shape[0] for t in tensors], dtype=np.int64)
    longest = int(lengths.max())
    padded = []
    for t in tensors:
        if t.shape[0] < longest:
            pad = full((longest - t.shape[0], *t.shape[1:]), padding_value, dtype=t.dtype,
                       device=t.device)
            t = cat([t, pad], dim=0)
        padded.append(t)
    batch = stack(padded, dim=0 if batch_first else 1)
    return (batch, lengths) if return_lengths else batch


def detach_state(state):
    """The same state cut from the graph: a Tensor, None, or tuples/lists of them (LSTM's
    (h, c), a list of per-layer states, ...), keeping the structure."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    raise TypeError(f"detach_state: expected a Tensor or a (nested) tuple/list of Tensors, "
                    f"got {type(state).__name__}")


def _time_slice(value, start: int, stop: int, dim: int):
    index = (slice(None),) * dim + (slice(start, stop),)
    return value[index]


def truncated_bptt(model: Callable, inputs, chunk_size: int, loss_fn: Callable, *,
                   targets=None, state=None, optimizer=None, time_dim: int | None = None):
    """Truncated backpropagation through time over one long sequence.

    The sequence is cut into chunks of `chunk_size` steps (the last may be shorter). For
    each chunk:

        output, state = model(chunk, state)          # state carried from the previous chunk
        loss = loss_fn(output, target_chunk)         # loss_fn(output) when targets is None
        loss.backward()                              # gradients flow back <= chunk_size steps
        optimizer.step(); optimizer.zero_grad()      # only when an optimizer is given
        state = detach_state(state)                  # the next chunk starts a fresh graph

    The graph in memory therefore never holds more than one chunk. Without an optimizer the
    gradients of all chunks accumulate in `.grad`, so one chunk as long as the sequence gives
    exactly full BPTT's gradients.

    model: anything called as model(chunk, state) -> (output, new_state), e.g. an nn.LSTM.
    inputs, targets: indexed along time_dim (default 1 when model.batch_first, else 0).
    Returns (losses, state): the list of per-chunk loss values (floats) and the final
    (detached) state.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"truncated_bptt: chunk_size must be a positive integer, "
                         f"got {chunk_size!r}")
    if time_dim is None:
        time_dim = 1 if getattr(model, "batch_first", False) else 0
    length = inputs.shape[time_dim]
    if targets is not None and targets.shape[time_dim] != length:
        raise ValueError(f"truncated_bptt: targets.shape[{time_dim}] must be the input's "
                         f"length {length}, got {targets.shape[time_dim]}")
    if optimizer is not None:
        optimizer.zero_grad()
    losses = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        output, state = model(_time_slice(inputs, start, stop, time_dim), state)
        if targets is None:
            loss = loss_fn(output)
        else:
            loss = loss_fn(output, _time_slice(targets, start, stop, time_dim))
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad()
        losses.append(float(backend.to_numpy(loss.data)))
        state = detach_state(state)
        del output, loss  # drop the chunk's graph before the next one is built
    return losses, state
