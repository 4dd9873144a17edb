"""Hand-written NumPy training steps for one LSTM, GRU and tanh-RNN layer: the baselines that
tinygrad_rnn's recurrent layers are timed against.

Each function runs one single-layer, unidirectional layer forward over a whole sequence and
backpropagates through time by hand, the way a careful NumPy programmer would write it:

* the input projection x W_ih^T + b for all T steps is one GEMM before the loop;
* inside the loop there is one fused GEMM per step for all gates (h W_hh^T);
* the backward loop only carries the recurrent gradient (one GEMM per step); the weight
  gradients dW_ih, dW_hh and the input gradient dx are batched GEMMs over all steps after it.

The loss is L = sum(output * grad_output) (grad_output defaults to ones: the sum of the
outputs), so `grad_output` is dL/d(output). Gate order and weight layout are PyTorch's
(LSTM [i, f, g, o], GRU [r, z, n]). Shapes: x (T, B, I), W_ih (G*H, I), W_hh (G*H, H).
Every function returns a dict with the output, the final state(s), the loss and the
gradients of every weight, the input and the initial state(s). dtype in = dtype out.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(x):
    # tanh form: no overflow warning for large |x|, same value as 1 / (1 + exp(-x))
    return 0.5 * (np.tanh(0.5 * x) + 1)


def _prepare(x, W_hh, grad_output, states, hidden_size, num_states):
    T, B, _ = x.shape
    dtype = x.dtype
    states = [np.zeros((B, hidden_size), dtype) if s is None else s for s in states]
    if grad_output is None:
        grad_output = np.ones((T, B, hidden_size), dtype)
    return T, B, dtype, states[:num_states], grad_output


def lstm_step_numpy(x, W_ih, W_hh, b, h0=None, c0=None, grad_output=None) -> dict:
    """One LSTM training step (forward + BPTT) with the combined bias b = b_ih + b_hh (4H,).

    Returns output (T, B, H), h_n, c_n (B, H), loss, and dx, dW_ih, dW_hh, db, dh0, dc0.
    """
    H = W_hh.shape[1]
    T, B, dtype, (h, c), dy = _prepare(x, W_hh, grad_output, [h0, c0], H, 2)
    # forward: hoisted input GEMM, then one gate GEMM per step. The pre-activations are
    # turned into the activations in place: acts[t] = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    acts = (x.reshape(T * B, -1) @ W_ih.T + b).reshape(T, B, 4 * H)
    h_all = np.empty((T + 1, B, H), dtype)  # h_all[t] is the state before step t
    c_all = np.empty((T + 1, B, H), dtype)
    tanh_c = np.empty((T, B, H), dtype)
    h_all[0], c_all[0] = h, c
    for t in range(T):
        a = acts[t]
        a += h_all[t] @ W_hh.T
        a[:, :2 * H] = _sigmoid(a[:, :2 * H])
        a[:, 2 * H:3 * H] = np.tanh(a[:, 2 * H:3 * H])
        a[:, 3 * H:] = _sigmoid(a[:, 3 * H:])
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_all[t + 1] = f * c_all[t] + i * g
        tanh_c[t] = np.tanh(c_all[t + 1])
        h_all[t + 1] = o * tanh_c[t]
    output = h_all[1:]
    loss = float((output * dy).sum())

    # backward through time: only the recurrent GEMM inside the loop. The gate gradients
    # overwrite the activations of their step once those have been used.
    d_gates = acts
    dh = np.zeros((B, H), dtype)
    dc = np.zeros((B, H), dtype)
    for t in range(T - 1, -1, -1):
        a = acts[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        dh = dh + dy[t]
        dc = dc + dh * o * (1 - tanh_c[t] * tanh_c[t])
        di = dc * g * i * (1 - i)
        df = dc * c_all[t] * f * (1 - f)
        dg = dc * i * (1 - g * g)
        do = dh * tanh_c[t] * o * (1 - o)
        dc = dc * f
        a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:] = di, df, dg, do
        dh = a @ W_hh
    # weight and input gradients: batched over all time steps
    d_flat = d_gates.reshape(T * B, 4 * H)
    return {
        "output": output, "h_n": h_all[T], "c_n": c_all[T], "loss": loss,
        "dx": (d_flat @ W_ih).reshape(x.shape),
        "dW_ih": d_flat.T @ x.reshape(T * B, -1),
        "dW_hh": d_flat.T @ h_all[:T].reshape(T * B, H),
        "db": d_flat.sum(axis=0),
        "dh0": dh, "dc0": dc,
    }


def gru_step_numpy(x, W_ih, W_hh, b_ih, b_hh, h0=None, grad_output=None) -> dict:
    """One GRU training step (PyTorch's form: n = tanh(x_n + r * (h W_hn^T + b_hn))).

    The biases stay separate because b_hn sits inside the reset gate's product.
    Returns output, h_n, loss, dx, dW_ih, dW_hh, db_ih, db_hh, dh0.
    """
    H = W_hh.shape[1]
    T, B, dtype, (h,), dy = _prepare(x, W_hh, grad_output, [h0], H, 1)
    x_gates = (x.reshape(T * B, -1) @ W_ih.T + b_ih).reshape(T, B, 3 * H)
    h_all = np.empty((T + 1, B, H), dtype)
    r_all, z_all, n_all = (np.empty((T, B, H), dtype) for _ in range(3))
    hn_all = np.empty((T, B, H), dtype)  # h W_hn^T + b_hn, needed for dr
    h_all[0] = h
    for t in range(T):
        h_gates = h_all[t] @ W_hh.T + b_hh
        xg = x_gates[t]
        r = r_all[t] = _sigmoid(xg[:, :H] + h_gates[:, :H])
        z = z_all[t] = _sigmoid(xg[:, H:2 * H] + h_gates[:, H:2 * H])
        hn_all[t] = h_gates[:, 2 * H:]
        n = n_all[t] = np.tanh(xg[:, 2 * H:] + r * hn_all[t])
        h_all[t + 1] = (1 - z) * n + z * h_all[t]
    output = h_all[1:]
    loss = float((output * dy).sum())

    dx_gates = x_gates  # no longer needed: its steps are overwritten by their gradients
    dh_gates = np.empty((T, B, 3 * H), dtype)
    dh = np.zeros((B, H), dtype)
    for t in range(T - 1, -1, -1):
        r, z, n = r_all[t], z_all[t], n_all[t]
        dh = dh + dy[t]
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (h_all[t] - n) * z * (1 - z)
        dr = dn * hn_all[t] * r * (1 - r)
        dxg, dhg = dx_gates[t], dh_gates[t]
        dxg[:, :H] = dhg[:, :H] = dr
        dxg[:, H:2 * H] = dhg[:, H:2 * H] = dz
        dxg[:, 2 * H:] = dn
        dhg[:, 2 * H:] = dn * r
        dh = dh * z + dhg @ W_hh
    dxg_flat = dx_gates.reshape(T * B, 3 * H)
    dhg_flat = dh_gates.reshape(T * B, 3 * H)
    return {
        "output": output, "h_n": h_all[T], "loss": loss,
        "dx": (dxg_flat @ W_ih).reshape(x.shape),
        "dW_ih": dxg_flat.T @ x.reshape(T * B, -1),
        "dW_hh": dhg_flat.T @ h_all[:T].reshape(T * B, H),
        "db_ih": dxg_flat.sum(axis=0), "db_hh": dhg_flat.sum(axis=0),
        "dh0": dh,
    }


def rnn_step_numpy(x, W_ih, W_hh, b, h0=None, grad_output=None) -> dict:
    """One Elman tanh-RNN training step with the combined bias b = b_ih + b_hh (H,).

    Returns output, h_n, loss, dx, dW_ih, dW_hh, db, dh0.
    """
    H = W_hh.shape[1]
    T, B, dtype, (h,), dy = _prepare(x, W_hh, grad_output, [h0], H, 1)
    x_pre = (x.reshape(T * B, -1) @ W_ih.T + b).reshape(T, B, H)
    h_all = np.empty((T + 1, B, H), dtype)
    h_all[0] = h
    for t in range(T):
        h_all[t + 1] = np.tanh(x_pre[t] + h_all[t] @ W_hh.T)
    output = h_all[1:]
    loss = float((output * dy).sum())

    d_pre = x_pre  # no longer needed: its steps are overwritten by their gradients
    dh = np.zeros((B, H), dtype)
    for t in range(T - 1, -1, -1):
        d_pre[t] = (dh + dy[t]) * (1 - output[t] * output[t])
        dh = d_pre[t] @ W_hh
    d_flat = d_pre.reshape(T * B, H)
    return {
        "output": output, "h_n": h_all[T], "loss": loss,
        "dx": (d_flat @ W_ih).reshape(x.shape),
        "dW_ih": d_flat.T @ x.reshape(T * B, -1),
        "dW_hh": d_flat.T @ h_all[:T].reshape(T * B, H),
        "db": d_flat.sum(axis=0),
        "dh0": dh,
    }
