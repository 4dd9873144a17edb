"""Fused recurrent layers: one layer, one direction, all T steps as ONE graph node.

The composed path (nn/cells.py) records about ten small ops per time step, so a sequence of
T steps is ~10*T graph nodes and BPTT is the engine walking them. The ops here compute the
same numbers with backpropagation through time written out by hand on raw arrays, the way a
hand-written NumPy LSTM does it:

* forward: the input's share of the gates for all steps is one GEMM, (T*B, I) @ (I, G*H),
  written into a preallocated (T, B, G*H) buffer; each step adds one GEMM h_{t-1} @ W_hh^T and
  applies the gate nonlinearities in place in that buffer, which is then kept for backward
  (no per-step allocation: every temporary is allocated once per call);
* backward: the reverse loop does only what is sequential, the gate derivatives and one GEMM
  dgates_t @ W_hh per step, and stores dgates in a (T, B, G*H) buffer; after the loop the
  weight gradients of all steps are one GEMM each (dgates^T @ x, dgates^T @ h_prev), the bias
  gradients one sum, and the input gradient one GEMM dgates @ W_ih.

One node per sequence rather than one per step: the per-step cell math is the loop inside it,
and owning the whole loop is what lets the weight gradients of all steps be one GEMM each.
The layers (nn/recurrent.py, `fast=True`) use these ops for the plain RNN, LSTM (with or
without projection) and GRU, and for the layer-normalised LSTM (`LayerNormLSTMLayer`, an
LSTMLayer with the norms in its step math), and tests/nn/test_fast_path.py proves they give
the composed path's outputs and gradients.

The per-step gate math is a small object (`_LSTMMath`, `_GRUMath`, `_LayerNormLSTMMath`) with
one body for NumPy and CuPy; on the GPU the plain cells' steps run as fused elementwise
kernels (fused_cuda.py).

Sigmoids are computed as (1 + tanh(a/2)) / 2 (as ops.Sigmoid does): no overflow, and it lets
one tanh call serve all four LSTM gates (per-column scale and offset pick sigmoid or tanh).
The step math calls ufuncs with `out=` and 0-d constants (`xp.multiply(a, b, out=a)`, not
`a *= b` or `1 - a`): on the small arrays of a long sequence the cost of each call is what
counts, and this is its cheapest form.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from . import fused_cuda
from .function import Function
from .normalization import row_dot


def _steps(length: int, reverse: bool) -> range:
    """Time indices in the order a direction visits them."""
    return range(length - 1, -1, -1) if reverse else range(length)


def _input_projection(xp, x, W_ih, bias):
    """x W_ih^T + bias for all steps as one GEMM: x (T, B, I) -> a new (T, B, G*H) array."""
    T, B, I = x.shape
    out = xp.matmul(x.reshape(T * B, I), W_ih.T)
    if bias is not None:
        out += bias
    return out.reshape(T, B, W_ih.shape[0])


def _transposed(xp, W, rows_per_block: int = 16):
    """W^T as a contiguous array, made once per sequence: the per-step GEMM h @ W^T runs
    10-50% faster on it than on the transposed view. Copied 16 rows of W at a time: one
    transposing copy of a large matrix is ~8x slower (every write misses the cache)."""
    if fused_cuda.is_cupy(xp):
        return xp.ascontiguousarray(W.T)  # one kernel on the GPU
    out = xp.empty((W.shape[1], W.shape[0]), dtype=W.dtype)
    for start in range(0, W.shape[0], rows_per_block):
        out[:, start:start + rows_per_block] = W[start:start + rows_per_block].T
    return out


def _recurrent_weight_grad(dgates, outputs, h0, reverse: bool):
    """dW_hh = sum_t dgates_t^T @ h_{t-1}: one GEMM for the steps whose previous state is an
    output of this layer, plus the first visited step, whose previous state is h0."""
    G = dgates.shape[2]
    if reverse:
        later, previous, first = dgates[:-1], outputs[1:], dgates[-1]
    else:
        later, previous, first = dgates[1:], outputs[:-1], dgates[0]
    grad = later.reshape(-1, G).T @ previous.reshape(-1, previous.shape[2])
    grad += first.T @ h0
    return grad


def _input_side_grads(needs, dgates_flat, x, W_ih):
    """dx = dgates @ W_ih and dW_ih = dgates^T @ x, each one GEMM over all T*B rows."""
    T, B, I = x.shape
    dx = (dgates_flat @ W_ih).reshape(T, B, I) if needs[0] else None
    dW_ih = dgates_flat.T @ x.reshape(T * B, I)
    return dx, dW_ih


class _SequenceOp(Function):
    """Common bits: optional inputs (biases, projection), the choice of gate math, and
    variable lengths.

    saves_inputs: the backward reads the inputs and arrays derived from them (the weights,
    a contiguous W_hh^T, activations computed with them), so the engine raises when one of
    the inputs was changed in place between forward and backward (optimizer step).

    last: optional int array (B,) (NumPy or CuPy, kept as NumPy), the step at which each
    sequence ends (its length minus one; forward direction only). The loop still runs all
    T steps, since a sequence's valid steps never see the ones after its end; the final
    state returned for row b is the one of step last[b], and in backward its gradient
    enters at that step. The caller zeroes the outputs past each end (and their gradients).
    """

    saves_inputs = True

    def __init__(self, reverse: bool = False, bias: bool = True, cuda_kernels: bool = True,
                 last=None):
        if last is not None and reverse:
            raise ValueError("fused layers take last= in the forward direction only; reverse "
                             "each sequence's valid part before and after instead")
        self.reverse, self.bias, self.cuda_kernels = reverse, bias, cuda_kernels
        # kept on the host whatever it came as: the loops read it step by step in Python
        self.last = None if last is None else backend.to_numpy(last).astype(np.int64)

    def _use_kernels(self) -> bool:
        return self.cuda_kernels and fused_cuda.is_cupy(self.xp)

    def _at_last(self, sequence, offset: int = 0):
        """Row b of sequence[last[b] + offset] for every b (the final states with lengths)."""
        xp = self.xp
        return sequence[xp.asarray(self.last + offset), xp.arange(sequence.shape[1])]

    def _endings(self) -> dict:
        """{step t: the rows (device index array) whose sequence ends at t}; {} without last."""
        if self.last is None:
            return {}
        return {int(t): self.xp.asarray(np.flatnonzero(self.last == t))
                for t in np.unique(self.last)}

    def _final_grad(self, grad_last, like):
        """The buffer the backward loop carries a state's gradient in: with lengths it starts at
        zero (each row's final gradient enters at its own last step, see `_enter`)."""
        if grad_last is None or self.last is not None:
            return self.xp.zeros_like(like)
        return grad_last.copy()

    @staticmethod
    def _enter(carried, grad_last, rows) -> None:
        """Add the final-state gradient of the rows whose sequence ends at this step."""
        if rows is not None and grad_last is not None:
            carried[rows] += grad_last[rows]


# --------------------------------------------------------------------------- LSTM


class _LSTMMath:
    """One LSTM step's elementwise math on preallocated (B, 4H) / (B, H) arrays, in place.

    Gate order [i, f, g, o] (PyTorch's). The scratch arrays are allocated once per layer call.
    forward and backward take the step t first, for the maths that keep arrays per step
    (`_LayerNormLSTMMath`); this one keeps none.
    """

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.xp, self.H = xp, hidden
        # sigmoid(a) = tanh(a/2) / 2 + 1/2 on the i, f, o columns; tanh(a) on g.
        self.scale = xp.full(4 * hidden, 0.5, dtype=dtype)
        self.scale[2 * hidden:3 * hidden] = 1
        self.offset = xp.full(4 * hidden, 0.5, dtype=dtype)
        self.offset[2 * hidden:3 * hidden] = 0
        self.tanh_column = 1 - 2 * self.offset  # 1 on the g columns, 0 elsewhere
        self.one = xp.ones((), dtype=dtype)
        self.tmp = xp.empty((batch, hidden), dtype=dtype)
        self.tmp2 = xp.empty((batch, hidden), dtype=dtype)
        self.derivative = xp.empty((batch, 4 * hidden), dtype=dtype)
        self.tmp_gates = xp.empty((batch, 4 * hidden), dtype=dtype)

    def _split(self, gates):
        H = self.H
        return gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]

    def forward(self, t, gates, recurrent, c_prev, c, tanh_c, h):
        """gates (B, 4H): x-part of the pre-activations in, activations [i, f, g, o] out.

        c = f * c_prev + i * g;  tanh_c = tanh(c);  h = o * tanh_c.
        """
        xp = self.xp
        o = self.cell(gates, recurrent, c_prev, c)
        xp.tanh(c, out=tanh_c)
        xp.multiply(o, tanh_c, out=h)

    def cell(self, gates, recurrent, c_prev, c):
        """The gate activations (in place in gates) and the new cell c = f * c_prev + i * g;
        returns the output gate's activation (a view of gates)."""
        xp = self.xp
        xp.add(gates, recurrent, out=gates)
        xp.multiply(gates, self.scale, out=gates)
        xp.tanh(gates, out=gates)
        xp.multiply(gates, self.scale, out=gates)
        xp.add(gates, self.offset, out=gates)
        i, f, g, o = self._split(gates)
        xp.multiply(f, c_prev, out=c)
        xp.multiply(i, g, out=self.tmp)
        xp.add(c, self.tmp, out=c)
        return o

    def backward(self, t, gates, c_prev, c, tanh_c, dh, dc):
        """gates (B, 4H): activations in, grads of the pre-activations [i, f, g, o] out.
        dh: grad of this step's h. dc: grad of c from later steps in, grad of c_prev out.
        Returns the gradient of h_{t-1} W_hh^T: here the gates' own.

        Each activation is read before its slot is overwritten by its gradient.
        """
        xp, tmp = self.xp, self.tmp
        gate_views = self.output_backward(gates, tanh_c, dh, tmp)  # h = o * tanh(c)
        xp.add(dc, tmp, out=dc)
        self.cell_backward(gates, gate_views, c_prev, dc)
        return gates

    def output_backward(self, gates, tanh_out, dh, out):
        """h = o * tanh_out: do (written over o) and the gradient of tanh's input (to out).
        First keeps the derivatives of the activations, while they are still there (for
        `cell_backward`): sigmoid' = s (1 - s), tanh' = (1 - g) (1 + g); both are
        (1 - a) (a + q), q = 1 on g, else 0. Returns the gates' views [i, f, g, o]."""
        xp, tmp, tmp2, derivative = self.xp, self.tmp, self.tmp2, self.derivative
        xp.subtract(self.one, gates, out=derivative)
        xp.add(gates, self.tanh_column, out=self.tmp_gates)
        xp.multiply(derivative, self.tmp_gates, out=derivative)
        gate_views = self._split(gates)
        o = gate_views[3]
        xp.multiply(dh, tanh_out, out=tmp2)        # do = dh * tanh(.)
        xp.multiply(tmp2, tanh_out, out=tmp)       # d(.) = dh * o * (1 - tanh(.)^2)
        xp.subtract(dh, tmp, out=tmp)
        xp.multiply(tmp, o, out=out)
        xp.copyto(o, tmp2)
        return gate_views

    def cell_backward(self, gates, gate_views, c_prev, dc):
        """dc: the full gradient of this step's c in, c_prev's out; gates: the grads of the
        pre-activations out (the derivatives kept by `output_backward`)."""
        xp, tmp, derivative = self.xp, self.tmp, self.derivative
        i, f, g, _ = gate_views
        xp.multiply(dc, i, out=tmp)                # c = f * c_prev + i * g: dg = dc * i,
        xp.multiply(dc, g, out=i)                  # di = dc * g,
        xp.copyto(g, tmp)
        xp.multiply(dc, f, out=tmp)                # dc_prev = dc * f,
        xp.multiply(dc, c_prev, out=f)             # df = dc * c_prev
        xp.copyto(dc, tmp)
        xp.multiply(gates, derivative, out=gates)


class LSTMLayer(_SequenceOp):
    """A whole LSTM layer in one direction (optionally with a projection), one node.

    inputs:  x (T, B, I), h0 (B, P), c0 (B, H), W_ih (4H, I), W_hh (4H, P),
             [b_ih (4H,), b_hh (4H,)] when bias, [W_hr (P, H)] when proj;  P = H without proj.
    outputs: y (T, B, P) (h of every step), h_T (B, P), c_T (B, H) (the last visited step).

        gates_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh = [i, f, g, o] pre-activations
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g);  h_t = sigmoid(o) * tanh(c_t)
        (then h_t W_hr^T with a projection).

    Memory: like a hand-written NumPy LSTM, the backward writes the gate gradients over the
    saved gate activations of the same step, so one (T, B, 4H) buffer serves both. A second
    backward through the same graph (retain_graph=True) first recomputes the forward.
    """

    num_outputs = 3

    def __init__(self, reverse: bool = False, bias: bool = True, proj: bool = False,
                 cuda_kernels: bool = True, last=None):
        super().__init__(reverse, bias, cuda_kernels, last)
        self.proj = proj

    def _math(self, batch, hidden, dtype):
        if self._use_kernels():
            return fused_cuda.LSTMKernels(self.xp, batch, hidden, dtype)
        return _LSTMMath(self.xp, batch, hidden, dtype)

    def forward(self, x, h0, c0, W_ih, W_hh, *optional):
        self.arrays = (x, h0, c0, W_ih, W_hh, *optional)
        return self._forward(*self.arrays)

    def _optional(self, optional):
        """(b_ih, b_hh, W_hr, the rest) from the inputs after W_hh (None where absent)."""
        b_ih, b_hh = optional[:2] if self.bias else (None, None)
        rest = optional[2 if self.bias else 0:]
        W_hr = rest[0] if self.proj else None
        return b_ih, b_hh, W_hr, rest[1 if self.proj else 0:]

    def _step_math(self, steps, batch, hidden, dtype, rest):
        """The per-step gate math for this call (rest: the inputs after the standard ones)."""
        return self._math(batch, hidden, dtype)

    def _input_gates(self, x, W_ih, b_ih, b_hh, rest):
        """The input's share of the pre-activations of all steps, a new (T, B, 4H) array."""
        return _input_projection(self.xp, x, W_ih, None if b_ih is None else b_ih + b_hh)

    def _recurrent_weight(self, W_hh):
        """The W_hh the loops multiply by (h W_hh^T forward, the gradient times W_hh back)."""
        return W_hh

    def _tanh_buffer(self, math, steps, batch, hidden, dtype):
        """Where step t keeps tanh of its cell output: tanh_c[t], (B, H)."""
        return self.xp.empty((steps, batch, hidden), dtype=dtype)

    def _forward(self, x, h0, c0, W_ih, W_hh, *optional):
        xp, reverse = self.xp, self.reverse
        b_ih, b_hh, W_hr, rest = self._optional(optional)
        T, B, _ = x.shape
        H, P, dtype = c0.shape[1], h0.shape[1], x.dtype
        math = self._step_math(T, B, H, dtype, rest)
        gates = self._input_gates(x, W_ih, b_ih, b_hh, rest)
        cells = xp.empty((T + 1, B, H), dtype=dtype)  # c_0 .. c_T in visiting order
        tanh_c = self._tanh_buffer(math, T, B, H, dtype)
        y = xp.empty((T, B, P), dtype=dtype)
        h_cell = xp.empty((T, B, H), dtype=dtype) if self.proj else y  # h before projection
        recurrent = xp.empty((B, 4 * H), dtype=dtype)
        cells[T if reverse else 0] = c0
        W_rec = self._recurrent_weight(W_hh)
        h_prev, W_hh_T = h0, _transposed(xp, W_rec)
        for t in _steps(T, reverse):
            new, prev = (t, t + 1) if reverse else (t + 1, t)
            xp.matmul(h_prev, W_hh_T, out=recurrent)
            math.forward(t, gates[t], recurrent, cells[prev], cells[new], tanh_c[t],
                         h_cell[t])
            if W_hr is not None:
                xp.matmul(h_cell[t], W_hr.T, out=y[t])
            h_prev = y[t]
        self.saved = (gates, cells, tanh_c, y, h_cell, math, W_rec)
        if self.last is not None:  # cells[t + 1] is the c of step t
            return y, self._at_last(y), self._at_last(cells, 1)
        return y, h_prev.copy(), cells[0 if reverse else T].copy()

    def backward(self, grads):
        dy, dh_last, dc_last = grads
        xp, reverse = self.xp, self.reverse
        if self.saved is None:  # a second backward: the first one used up the activations
            self._forward(*self.arrays)
        x, h0, _, W_ih, _, *optional = self.arrays
        W_hr = self._optional(optional)[2]
        gates, cells, tanh_c, y, h_cell, math, W_rec = self.saved
        self.saved = None
        T, B, P = y.shape
        H = cells.shape[2]
        dh = self._final_grad(dh_last, h0)
        dc = self._final_grad(dc_last, cells[0])
        endings = self._endings()
        # With a projection, the step's h grad (B, P) is kept for dW_hr and mapped to (B, H).
        dproj = xp.empty_like(y) if self.proj else None
        dh_cell = xp.empty((B, H), dtype=y.dtype) if self.proj else dh
        for t in _steps(T, not reverse):
            new, prev = (t, t + 1) if reverse else (t + 1, t)
            if endings:
                self._enter(dh, dh_last, endings.get(t))
                self._enter(dc, dc_last, endings.get(t))
            if self.proj:
                if dy is None:
                    dproj[t] = dh
                else:
                    xp.add(dy[t], dh, out=dproj[t])
                xp.matmul(dproj[t], W_hr, out=dh_cell)
            elif dy is not None:
                xp.add(dh, dy[t], out=dh)
            # (no name kept for the gradient math.backward returns: it may be a view of an
            # array that _weight_grads frees)
            xp.matmul(math.backward(t, gates[t], cells[prev], cells[new], tanh_c[t], dh_cell,
                                    dc), W_rec, out=dh)
        # gates now holds the gradients of the pre-activations
        dx, dW_ih, dW_hh, db, rest_grads = self._weight_grads(math, x, h0, W_ih, gates, cells,
                                                              tanh_c, y)
        grads = [dx, dh, dc, dW_ih, dW_hh]
        if self.bias:
            grads += [db, db]
        if self.proj:
            grads.append(dproj.reshape(T * B, P).T @ h_cell.reshape(T * B, H))
        return tuple(grads + rest_grads)

    def _weight_grads(self, math, x, h0, W_ih, dgates, cells, tanh_c, y):
        """(dx, dW_ih, dW_hh, db, [grads of the rest]) once the loop has turned the gates
        into the pre-activations' gradients."""
        T, B, G = dgates.shape
        flat = dgates.reshape(T * B, G)
        dx, dW_ih = _input_side_grads(self.needs_input_grad, flat, x, W_ih)
        dW_hh = _recurrent_weight_grad(dgates, y, h0, self.reverse)
        return dx, dW_ih, dW_hh, flat.sum(axis=0) if self.bias else None, []


# --------------------------------------------------------------------------- layer-normalised LSTM


class _RowNorm:
    """Layer normalisation over the last axis of (rows, n) arrays, forward and backward, on
    preallocated outputs: the arithmetic of ops.LayerNorm for the fused loops.

    Row means are a product with a (n, 1) vector of 1/n; sums of products are one
    `ops.normalization.row_dot` per call, as in ops.LayerNorm. inv_std = 1 / sqrt(var + eps)
    is computed as sqrt(n) / sqrt(sum of squares + n eps): three calls on a (rows, 1) vector.
    """

    def __init__(self, xp, n: int, dtype, eps: float):
        self.xp, self.n = xp, n
        self.averager = xp.full((n, 1), 1.0 / n, dtype=dtype)
        self.n_eps, self.sqrt_n, self.inv_n = n * eps, float(n) ** 0.5, 1.0 / n

    def forward(self, a, out, inv_std=None, mean=None):
        """out = (a - mean) * inv_std (out may be a); returns inv_std (rows, 1). inv_std and
        mean: (rows, 1) arrays to write them to (new ones when None)."""
        mean = self.xp.matmul(a, self.averager, out=mean)
        self.xp.subtract(a, mean, out=out)
        return self.scale(out, out, inv_std)

    def scale(self, centered, out, inv_std=None):
        """out = centered * inv_std for rows of mean zero (out may be centered)."""
        xp = self.xp
        inv_std = row_dot(xp, centered, centered, out=inv_std)
        xp.add(inv_std, self.n_eps, out=inv_std)
        xp.sqrt(inv_std, out=inv_std)
        xp.divide(self.sqrt_n, inv_std, out=inv_std)
        xp.multiply(centered, inv_std, out=out)
        return inv_std

    def backward(self, dxhat, xhat, inv_std, out, centre: bool = True, scratch=None):
        """out = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std, the gradient of
        the normalised input (see ops.LayerNorm). scratch (default: xhat, then overwritten)
        takes xhat * mean(dxhat * xhat); out may be dxhat or scratch. centre=False leaves out
        mean(dxhat): the caller then takes the rows' mean out of whatever it multiplies them
        with (`centred_rows`)."""
        xp = self.xp
        scratch = xhat if scratch is None else scratch
        mean_dxhat = xp.matmul(dxhat, self.averager) if centre else None
        mean_product = row_dot(xp, dxhat, xhat)
        xp.multiply(mean_product, self.inv_n, out=mean_product)
        xp.multiply(xhat, mean_product, out=scratch)
        xp.subtract(dxhat, scratch, out=out)
        if centre:
            xp.subtract(out, mean_dxhat, out=out)
        xp.multiply(out, inv_std, out=out)


def centred_rows(W):
    """W minus the mean of its rows: x @ W^T has rows of mean zero for any x, and for the
    gradient g of a product whose rows have mean zero, g @ W = (g - mean(g)) @ W-centred."""
    return W - W.mean(axis=0)


class _LayerNormLSTMMath(_LSTMMath):
    """The step math of the layer-normalised LSTM: `_LSTMMath` with LN(h W_hh^T) before the
    gates and LN(c) before the output's tanh.

    The layer hands in h W_hh^T for a W_hh whose rows have mean zero (`centred_rows`), so the
    recurrent term comes out of the GEMM already centred, and the gradient backward returns
    for it is the norm's without its mean (see `_RowNorm.backward`).

    Kept per step (t-indexed (T, B, 1) arrays): the 1/std of the recurrent term and the mean
    and 1/std of c. The normalised recurrent terms xhat_hh (B, 4H each) live in a window of
    `window` consecutive steps, whose slots backward reuses for the gradients of h W_hh^T;
    with window=T (the default) forward fills them all and they are kept, with a shorter
    window (remat) backward makes each window's again from the outputs, one GEMM per window,
    and sums its share of dW_hh before moving on (`bind` hands over the outputs).

    Neither LN(c) nor its tanh is kept: backward recomputes them from c (the tanh_c argument
    is one (B, H) scratch array for every step), over c's slot, where c is not read again
    once its step's backward has run; the slot then keeps d gain_c's terms, dLN(c) * LN(c)
    before the gain.
    """

    def __init__(self, xp, steps: int, batch: int, hidden: int, dtype, eps: float,
                 gain_hh, gain_c, bias_c, window: int | None = None):
        super().__init__(xp, batch, hidden, dtype)
        G = 4 * hidden
        self.gain_hh, self.gain_c, self.bias_c = gain_hh, gain_c, bias_c
        self.norm_hh = _RowNorm(xp, G, dtype, eps)
        self.norm_c = _RowNorm(xp, hidden, dtype, eps)
        self.steps, self.window = steps, min(window or steps, steps)
        self.xhat_hh = xp.empty((self.window, batch, G), dtype=dtype)
        # the steps [lo, hi) whose xhat_hh the window holds: forward fills all when it can
        self.lo, self.hi = (0, steps) if self.window == steps else (0, 0)
        self.grad_W_hh = None  # sum of the windows' shares of dW_hh (W_hh centred)
        self.inv_std_hh = xp.empty((steps, batch, 1), dtype=dtype)
        self.mean_c = xp.empty((steps, batch, 1), dtype=dtype)
        self.inv_std_c = xp.empty((steps, batch, 1), dtype=dtype)
        self.cell_tanh = xp.empty((batch, hidden), dtype=dtype)
        # d gain_hh and d bias_c, summed over the steps here and over the rows at the end
        self.grad_gain_hh = xp.zeros((batch, G), dtype=dtype)
        self.grad_bias_c = xp.zeros((batch, hidden), dtype=dtype)

    def forward(self, t, gates, recurrent, c_prev, c, tanh_c, h):
        """As `_LSTMMath.forward` with the (centred) recurrent term normalised first (its bias
        is in the gates already) and tanh_c = tanh(LN(c))."""
        xp, xhat = self.xp, self.xhat_hh[t % self.window]
        self.norm_hh.scale(recurrent, xhat, self.inv_std_hh[t])
        xp.multiply(xhat, self.gain_hh, out=recurrent)
        o = self.cell(gates, recurrent, c_prev, c)
        self.norm_c.forward(c, tanh_c, self.inv_std_c[t], self.mean_c[t])
        self._cell_output(tanh_c, tanh_c)
        xp.multiply(o, tanh_c, out=h)

    def _cell_output(self, chat, out):
        """out = tanh(LN(c)) from the normalised c (out may be chat)."""
        xp = self.xp
        xp.multiply(chat, self.gain_c, out=out)
        xp.add(out, self.bias_c, out=out)
        xp.tanh(out, out=out)

    def backward(self, t, gates, c_prev, c, tanh_c, dh, dc):
        """As `_LSTMMath.backward`; returns the gradient of h_{t-1} W_hh^T less its mean (in
        xhat_hh's slot). Leaves dLN(c) * LN(c) before the gain (d gain_c's terms) in c."""
        xp, tmp, tmp2 = self.xp, self.tmp, self.tmp2
        inv_std_c = self.inv_std_c[t]
        xp.subtract(c, self.mean_c[t], out=c)           # c -> its normalised form
        xp.multiply(c, inv_std_c, out=c)
        self._cell_output(c, tanh_c)
        gate_views = self.output_backward(gates, tanh_c, dh, tanh_c)  # dLN(c)
        xp.add(self.grad_bias_c, tanh_c, out=self.grad_bias_c)
        xp.multiply(tanh_c, self.gain_c, out=tmp)
        self.norm_c.backward(tmp, c, inv_std_c, out=tmp, scratch=tmp2)
        xp.multiply(c, tanh_c, out=c)                   # d gain_c's terms
        xp.add(dc, tmp, out=dc)
        self.cell_backward(gates, gate_views, c_prev, dc)
        if not self.lo <= t < self.hi:
            self.flush()
            self._refill(t)
        xhat, dxhat = self.xhat_hh[t - self.lo], self.tmp_gates
        xp.multiply(gates, xhat, out=dxhat)
        xp.add(self.grad_gain_hh, dxhat, out=self.grad_gain_hh)
        xp.multiply(gates, self.gain_hh, out=dxhat)
        self.norm_hh.backward(dxhat, xhat, self.inv_std_hh[t], out=xhat, centre=False)
        return xhat

    def bind(self, outputs, h0, W_hh, reverse: bool):
        """The layer's outputs y (T, B, P), h0, the centred W_hh and the direction: what
        backward needs to make a window's xhat_hh again and its share of dW_hh."""
        self.outputs, self.h0, self.W_hh, self.reverse = outputs, h0, W_hh, reverse
        self.W_hh_T = None  # made on the first refill: only remat needs it

    def _previous(self, lo: int, hi: int):
        """[(first step, h_{t-1} of the steps from there on (n, B, P))] for the steps
        lo..hi-1: runs of the outputs, and h0 for the first visited step."""
        y, last = self.outputs, self.steps - 1
        if hi <= lo:
            return []
        if self.reverse:
            runs = [(lo, y[lo + 1:min(hi, last) + 1])]
            return runs + [(last, self.h0[None])] if hi > last else runs
        runs = [(max(lo, 1), y[max(lo, 1) - 1:hi - 1])]
        return [(0, self.h0[None])] + runs if lo == 0 else runs

    def _refill(self, t: int):
        """Make xhat_hh of the window of steps holding t again, from the outputs."""
        xp, G = self.xp, self.xhat_hh.shape[2]
        if self.W_hh_T is None:
            self.W_hh_T = _transposed(xp, self.W_hh)
        self.lo = t - t % self.window
        self.hi = min(self.lo + self.window, self.steps)
        for start, h_prev in self._previous(self.lo, self.hi):
            n, B, P = h_prev.shape
            if n:
                rows = self.xhat_hh[start - self.lo:start - self.lo + n]
                xp.matmul(h_prev.reshape(n * B, P), self.W_hh_T, out=rows.reshape(n * B, G))
                xp.multiply(rows, self.inv_std_hh[start:start + n], out=rows)

    def flush(self):
        """Add the window's share of dW_hh (its slots hold the gradients of h W_hh^T by now):
        sum over its steps of grad_t^T h_{t-1}, one GEMM per run of outputs."""
        G = self.xhat_hh.shape[2]
        for start, h_prev in self._previous(self.lo, self.hi):
            n, B, P = h_prev.shape
            if n:
                grads = self.xhat_hh[start - self.lo:start - self.lo + n].reshape(n * B, G)
                share = grads.T @ h_prev.reshape(n * B, P)
                if self.grad_W_hh is None:
                    self.grad_W_hh = share
                else:
                    self.grad_W_hh += share
        self.lo = self.hi = 0


class LayerNormLSTMLayer(LSTMLayer):
    """A whole layer-normalised LSTM layer (Ba et al. 2016) in one direction, one node: what
    `lstm_variant_step` with layer_norm computes, with its BPTT written out like LSTMLayer's.

    inputs:  LSTMLayer's, then ln_weight_ih, ln_bias_ih, ln_weight_hh, ln_bias_hh (4H,) and
             ln_weight_c, ln_bias_c (H,).  outputs: LSTMLayer's.

        gates_t = LN(x_t W_ih^T) * g_ih + LN(h_{t-1} W_hh^T) * g_hh + b  (b: every bias)
        c_t as in the LSTM;  h_t = sigmoid(o) * tanh(LN(c_t) * g_c + b_c)

    Both matrix products that are normalised use weights with centred rows (`centred_rows`):
    their outputs need no mean taken out, and their gradients no mean either; dW_ih and dW_hh
    get the rows' mean taken out once at the end instead.

    Memory: the gate buffer and the normalised recurrent terms (4H per step each), c and h
    (H each), and one number per row for each norm. The normalised input term is not kept
    (backward needs it only through I x I products, or makes it again), nor is tanh(LN(c)),
    recomputed per step. remat=True keeps the normalised recurrent terms of a window of steps
    only (a few MiB), made again in backward from the outputs, one GEMM per window: about
    the plain fused LSTM's memory, for one more recurrent GEMM's time. No CUDA kernels: on
    CuPy the same array code runs.
    """

    # elements (a few MiB of float32) of the input's gates normalised at a time in backward
    # when I > 2H, and of the normalised recurrent terms kept at a time with remat=True
    CHUNK_ELEMENTS = 2 ** 19

    def __init__(self, reverse: bool = False, bias: bool = True, proj: bool = False,
                 eps: float = 1e-5, remat: bool = False, last=None):
        super().__init__(reverse, bias, proj, cuda_kernels=False, last=last)
        self.eps, self.remat = eps, remat

    def _step_math(self, steps, batch, hidden, dtype, rest):
        _, _, gain_hh, _, gain_c, bias_c = rest
        window = max(1, self.CHUNK_ELEMENTS // (batch * 4 * hidden)) if self.remat else None
        return _LayerNormLSTMMath(self.xp, steps, batch, hidden, dtype, self.eps,
                                  gain_hh, gain_c, bias_c, window)

    def _forward(self, x, h0, c0, W_ih, W_hh, *optional):
        outputs = super()._forward(x, h0, c0, W_ih, W_hh, *optional)
        _, _, _, y, _, math, W_centred = self.saved
        math.bind(y, h0, W_centred, self.reverse)
        return outputs

    def _recurrent_weight(self, W_hh):
        return centred_rows(W_hh)

    def _tanh_buffer(self, math, steps, batch, hidden, dtype):
        return [math.cell_tanh] * steps  # not kept: backward recomputes it

    def _input_gates(self, x, W_ih, b_ih, b_hh, rest):
        gain_ih, bias_ih, _, bias_hh, _, _ = rest
        bias = bias_ih + bias_hh
        if b_ih is not None:
            bias += b_ih + b_hh
        W_centred = centred_rows(W_ih)
        gates = _input_projection(self.xp, x, W_centred, None)
        rows = gates.reshape(-1, gates.shape[2])
        inv_std = _RowNorm(self.xp, rows.shape[1], x.dtype, self.eps).scale(rows, rows)
        # kept for backward, which does not keep the normalised rows (T * B numbers)
        self.input_norm = W_centred, inv_std
        rows *= gain_ih
        rows += bias
        return gates

    def _weight_grads(self, math, x, h0, W_ih, dgates, cells, tanh_c, y):
        T, B, G = dgates.shape
        H = G // 4
        flat = dgates.reshape(T * B, G)
        db = flat.sum(axis=0)  # every bias adds to the pre-activations
        math.flush()
        dW_hh = math.grad_W_hh
        dW_hh -= dW_hh.mean(axis=0)
        grad_gain_hh = math.grad_gain_hh.sum(axis=0)
        # the normalised recurrent terms (T, B, 4H without remat) and the weights that made
        # them are no longer needed: free them before the input's norm
        math.xhat_hh = math.W_hh = math.W_hh_T = None
        dx, dW_ih, dgain_ih = self._input_norm_grads(flat, x.reshape(T * B, -1))
        # d gain_c's terms are in the slots of the steps' c (all but c0, the c_prev of the
        # first visited step)
        gain_c_terms = (cells[:-1] if self.reverse else cells[1:]).reshape(T * B, H)
        rest_grads = [dgain_ih, db, grad_gain_hh, db, gain_c_terms.sum(axis=0),
                      math.grad_bias_c.sum(axis=0)]
        return (None if dx is None else dx.reshape(x.shape), dW_ih, dW_hh,
                db if self.bias else None, rest_grads)

    def _input_norm_grads(self, dA, x):
        """(dx, dW_ih, d gain_ih) of A = LN(x W_ih^T) * gain_ih + bias, from dA (rows, 4H)
        (overwritten when I > 2H); x: (rows, I).

        With W the row-centred W_ih and s each row's 1/std (both kept from forward),
        xhat = s * (x W^T), dxhat = dA * gain and m = mean(dxhat * xhat) per row, the norm's
        backward without its mean is v = s * (dxhat - m * xhat); then dx = v W, dW_ih = v^T x
        less its rows' mean, d gain = sum(dA * xhat). Written out with xs = s * x, these need xhat
        only through I x I products:

            d gain = rowsum(W * (dA^T xs)),   Q = dA (gain * W),   m = rowdot(xs, Q) / 4H,
            dW_ih = gain * (dA^T xs) - W (xs^T (m * xs)),   dx = s * (Q - m * (xs (W^T W)))

        two GEMMs the size of the plain LSTM's dx and dW_ih, and I x I ones: no (rows, 4H)
        array at all. For I > 2H those cost more than making xhat again, which is then done,
        a chunk of rows at a time.
        """
        xp = self.xp
        gain = self._optional(self.arrays[5:])[3][0]
        W, s = self.input_norm
        G, I = W.shape
        needs_dx = self.needs_input_grad[0]
        if 2 * I <= G:
            xs = x * s
            N = dA.T @ xs
            dgain = xp.einsum("gi,gi->g", W, N)
            Q = dA @ (gain[:, None] * W)
            m = row_dot(xp, xs, Q)
            m *= 1.0 / G
            scratch = xp.multiply(xs, m)  # one (rows, I) array for both products
            dW_ih = gain[:, None] * N
            dW_ih -= W @ (xs.T @ scratch)
            dx = None
            if needs_dx:
                xp.matmul(xs, W.T @ W, out=scratch)
                scratch *= m
                dx = Q
                dx -= scratch
                dx *= s
        else:
            dgain = xp.zeros(G, dtype=x.dtype)
            norm = _RowNorm(xp, G, x.dtype, self.eps)
            chunk = max(1, self.CHUNK_ELEMENTS // G)
            for start in range(0, len(x), chunk):
                rows = slice(start, start + chunk)
                xhat = xp.matmul(x[rows], W.T)
                xhat *= s[rows]
                dxhat = dA[rows]
                dgain += xp.einsum("ij,ij->j", dxhat, xhat)
                xp.multiply(dxhat, gain, out=dxhat)
                norm.backward(dxhat, xhat, s[rows], out=dxhat, centre=False)
            dx = dA @ W if needs_dx else None
            dW_ih = dA.T @ x
        self.input_norm = None
        dW_ih -= dW_ih.mean(axis=0)
        return dx, dW_ih, dgain


# --------------------------------------------------------------------------- GRU


class _GRUMath:
    """One GRU step's elementwise math (PyTorch's form, reset gate after the matmul).

    Gate order [r, z, n]. The activations are kept gate by gate in contiguous arrays (r and z
    as one (2, B, H) block): NumPy ops on contiguous arrays cost a third of those on column
    slices of a (B, 3H) row, and a long sequence of small steps is all per-op cost.
    The scratch arrays are allocated once per layer call.
    """

    def __init__(self, xp, batch: int, hidden: int, dtype):
        self.xp, self.H = xp, hidden
        self.tmp = xp.empty((batch, hidden), dtype=dtype)
        self.tmp2 = xp.empty((batch, hidden), dtype=dtype)
        self.one_minus_z = xp.empty((batch, hidden), dtype=dtype)
        self.one, self.half = xp.ones((), dtype=dtype), xp.full((), 0.5, dtype=dtype)

    def _gate_major(self, row):
        """The r and z columns of a (B, 3H) row as a (2, B, H) view."""
        B, H = row.shape[0], self.H
        return row[:, :2 * H].reshape(B, 2, H).transpose(1, 0, 2)

    def forward(self, x_gates, recurrent, b_hn, h_prev, rz, n, h_n, h):
        """x_gates (B, 3H) = x W_ih^T + b_ih (+ b_hr, b_hz); recurrent (B, 3H) = h_prev W_hh^T.
        Out: rz (2, B, H) = [r, z], n, h_n = h_prev W_hn^T + b_hn (kept for backward), h.

        r, z = sigmoid(.);  n = tanh(x_n + r * h_n);  h = (1 - z) * n + z * h_prev.
        """
        xp, H, half = self.xp, self.H, self.half
        xp.add(self._gate_major(x_gates), self._gate_major(recurrent), out=rz)
        xp.multiply(rz, half, out=rz)              # sigmoid(a) = tanh(a/2) / 2 + 1/2
        xp.tanh(rz, out=rz)
        xp.multiply(rz, half, out=rz)
        xp.add(rz, half, out=rz)
        r, z = rz[0], rz[1]
        if b_hn is None:
            xp.copyto(h_n, recurrent[:, 2 * H:])
        else:
            xp.add(recurrent[:, 2 * H:], b_hn, out=h_n)
        xp.multiply(r, h_n, out=self.tmp)
        xp.add(x_gates[:, 2 * H:], self.tmp, out=n)
        xp.tanh(n, out=n)
        xp.subtract(h_prev, n, out=h)             # h = n + z * (h_prev - n)
        xp.multiply(h, z, out=h)
        xp.add(h, n, out=h)

    def backward(self, rz, n, h_n, h_prev, dh, dh_gates, dx_n):
        """dh: grad of this step's h, in; its direct part dh * z, out (the caller adds the
        part through W_hh). dh_gates (B, 3H) out: grads of h W_hh^T + b_hh. dx_n (B, H) out:
        grad of the x-side n pre-activation (the x-side r, z grads equal the h-side ones)."""
        xp, H, one, tmp, tmp2 = self.xp, self.H, self.one, self.tmp, self.tmp2
        r, z = rz[0], rz[1]
        one_minus_z = self.one_minus_z
        xp.subtract(one, z, out=one_minus_z)
        xp.multiply(n, n, out=tmp)                 # h = n + z (h_prev - n):
        xp.subtract(one, tmp, out=tmp)             # dn = dh (1 - z), through tanh: (1 - n^2)
        xp.multiply(dh, one_minus_z, out=tmp2)
        xp.multiply(tmp2, tmp, out=dx_n)
        xp.subtract(h_prev, n, out=tmp)            # dz = dh (h_prev - n), through sigmoid
        xp.multiply(tmp, dh, out=tmp)
        xp.multiply(tmp, z, out=tmp)
        xp.multiply(tmp, one_minus_z, out=dh_gates[:, H:2 * H])
        xp.multiply(dx_n, h_n, out=tmp)            # n = tanh(x_n + r * h_n): dr = dn * h_n
        xp.subtract(one, r, out=tmp2)
        xp.multiply(tmp2, r, out=tmp2)
        xp.multiply(tmp, tmp2, out=dh_gates[:, :H])
        xp.multiply(dx_n, r, out=dh_gates[:, 2 * H:])  # d(h_n) = dn * r
        xp.multiply(dh, z, out=dh)


class GRULayer(_SequenceOp):
    """A whole GRU layer (PyTorch's form) in one direction, one node.

    inputs:  x (T, B, I), h0 (B, H), W_ih (3H, I), W_hh (3H, H), [b_ih (3H,), b_hh (3H,)].
    outputs: y (T, B, H) (h of every step), h_T (B, H) (the last visited step).

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr),  z likewise,
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)),  h' = (1 - z) * n + z * h.
    """

    num_outputs = 2

    def _math(self, batch, hidden, dtype):
        if self._use_kernels():
            return fused_cuda.GRUKernels(self.xp, batch, hidden, dtype)
        return _GRUMath(self.xp, batch, hidden, dtype)

    def forward(self, x, h0, W_ih, W_hh, *biases):
        xp, reverse = self.xp, self.reverse
        T, B, _ = x.shape
        H, dtype = h0.shape[1], x.dtype
        math = self._math(B, H, dtype)
        b_hn = None
        x_bias = None
        if self.bias:
            b_ih, b_hh = biases
            x_bias = b_ih.copy()
            x_bias[:2 * H] += b_hh[:2 * H]  # b_hr, b_hz add to the pre-activations directly
            b_hn = b_hh[2 * H:]             # b_hn sits inside r * (.)
        x_gates = _input_projection(xp, x, W_ih, x_bias)
        rz = xp.empty((T, 2, B, H), dtype=dtype)
        n = xp.empty((T, B, H), dtype=dtype)
        h_n = xp.empty((T, B, H), dtype=dtype)
        y = xp.empty((T, B, H), dtype=dtype)
        recurrent = xp.empty((B, 3 * H), dtype=dtype)
        h_prev, W_hh_T = h0, _transposed(xp, W_hh)
        for t in _steps(T, reverse):
            xp.matmul(h_prev, W_hh_T, out=recurrent)
            math.forward(x_gates[t], recurrent, b_hn, h_prev, rz[t], n[t], h_n[t], y[t])
            h_prev = y[t]
        # backward does not read x_gates: it reuses the buffer for the gate gradients
        self.saved = (x, h0, W_ih, W_hh, x_gates, rz, n, h_n, y, math)
        return y, (self._at_last(y) if self.last is not None else h_prev.copy())

    def backward(self, grads):
        dy, dh_last = grads
        xp, reverse = self.xp, self.reverse
        x, h0, W_ih, W_hh, dgates, rz, n, h_n, y, math = self.saved
        T, B, H = y.shape
        # dgates (the x_gates buffer): h side first; its n columns become the x side
        dx_n = xp.empty_like(y)
        dh = self._final_grad(dh_last, h0)
        endings = self._endings()
        through_W_hh = xp.empty_like(h0)
        for t in _steps(T, not reverse):
            if endings:
                self._enter(dh, dh_last, endings.get(t))
            if dy is not None:
                xp.add(dh, dy[t], out=dh)
            first = t == (T - 1 if reverse else 0)
            h_prev = h0 if first else y[t + 1 if reverse else t - 1]
            math.backward(rz[t], n[t], h_n[t], h_prev, dh, dgates[t], dx_n[t])
            xp.matmul(dgates[t], W_hh, out=through_W_hh)
            xp.add(dh, through_W_hh, out=dh)
        flat = dgates.reshape(T * B, 3 * H)
        dW_hh = _recurrent_weight_grad(dgates, y, h0, reverse)
        db_hh = flat.sum(axis=0) if self.bias else None
        dgates[:, :, 2 * H:] = dx_n           # now the grads of x W_ih^T + b_ih
        dx, dW_ih = _input_side_grads(self.needs_input_grad, flat, x, W_ih)
        grads = (dx, dh, dW_ih, dW_hh)
        if self.bias:
            grads += (flat.sum(axis=0), db_hh)
        return grads


# --------------------------------------------------------------------------- Elman RNN


class RNNLayer(_SequenceOp):
    """A whole Elman RNN layer in one direction, one node.

    inputs:  x (T, B, I), h0 (B, H), W_ih (H, I), W_hh (H, H), [b_ih (H,), b_hh (H,)].
    outputs: y (T, B, H), h_T (B, H).   h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).
    """

    num_outputs = 2

    def __init__(self, reverse: bool = False, bias: bool = True, nonlinearity: str = "tanh",
                 last=None):
        super().__init__(reverse, bias, last=last)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNLayer: nonlinearity must be 'tanh' or 'relu', "
                             f"got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def forward(self, x, h0, W_ih, W_hh, *biases):
        xp, reverse = self.xp, self.reverse
        bias = biases[0] + biases[1] if self.bias else None
        y = _input_projection(xp, x, W_ih, bias)  # pre-activations, turned into h in place
        recurrent = xp.empty_like(h0)
        zero = xp.zeros((), dtype=x.dtype)
        h_prev, W_hh_T = h0, _transposed(xp, W_hh)
        for t in _steps(x.shape[0], reverse):
            xp.matmul(h_prev, W_hh_T, out=recurrent)
            h = y[t]
            xp.add(h, recurrent, out=h)
            if self.nonlinearity == "tanh":
                xp.tanh(h, out=h)
            else:
                xp.maximum(h, zero, out=h)
            h_prev = h
        self.saved = (x, h0, W_ih, W_hh, y)
        return y, (self._at_last(y) if self.last is not None else h_prev.copy())

    def backward(self, grads):
        dy, dh_last = grads
        xp, reverse = self.xp, self.reverse
        x, h0, W_ih, W_hh, y = self.saved
        T, B, H = y.shape
        dpre = xp.empty_like(y)
        dh = self._final_grad(dh_last, h0)
        endings = self._endings()
        derivative = xp.empty_like(h0)
        one = xp.ones((), dtype=y.dtype)
        for t in _steps(T, not reverse):
            if endings:
                self._enter(dh, dh_last, endings.get(t))
            if dy is not None:
                xp.add(dh, dy[t], out=dh)
            if self.nonlinearity == "tanh":        # tanh' = 1 - h^2
                xp.multiply(y[t], y[t], out=derivative)
                xp.subtract(one, derivative, out=derivative)
            else:                                  # relu' = 1 where h > 0 (h >= 0: sign(h))
                xp.sign(y[t], out=derivative)
            xp.multiply(dh, derivative, out=dpre[t])
            xp.matmul(dpre[t], W_hh, out=dh)
        flat = dpre.reshape(T * B, H)
        dx, dW_ih = _input_side_grads(self.needs_input_grad, flat, x, W_ih)
        grads = (dx, dh, dW_ih, _recurrent_weight_grad(dpre, y, h0, reverse))
        if self.bias:
            db = flat.sum(axis=0)
            grads += (db, db)
        return grads

