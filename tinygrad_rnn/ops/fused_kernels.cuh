// The per-element arithmetic of one LSTM / GRU step, forward and backward.
//
// One source text for two builds: the CUDA kernels in fused_cuda.py pass this file as their
// preamble (the GPU build), and the tests compile the very same text for the host and compare
// it with the NumPy step math of fused.py (_LSTMMath, _GRUMath). It includes nothing, so that
// NVRTC (which CuPy uses) and a host C++ compiler both take it as it is; `tanh` comes from the
// CUDA math library on the device and from <cmath> on the host.
//
// Sigmoids are computed as tanh(a/2)/2 + 1/2, as everywhere in the project: no overflow for
// saturated gates (|a| > 20), where exp(-a) would reach inf in float32.
#ifndef TINYGRAD_RNN_FUSED_KERNELS_CUH
#define TINYGRAD_RNN_FUSED_KERNELS_CUH

#if defined(__CUDACC__)
#define TINYGRAD_RNN_HD __host__ __device__
#else
#define TINYGRAD_RNN_HD
#endif

namespace tinygrad_rnn {

template <typename T>
TINYGRAD_RNN_HD inline T sigmoid(T a) {
    return T(0.5) * tanh(T(0.5) * a) + T(0.5);
}

// LSTM forward, gate order [i, f, g, o]. gi..go: the input's share of each pre-activation in,
// the activation out; ri..ro: the recurrent share.
//   c = f * c_prev + i * g;  tanh_c = tanh(c);  h = o * tanh_c
template <typename T>
TINYGRAD_RNN_HD inline void lstm_forward(T &gi, T &gf, T &gg, T &go,
                                         T ri, T rf, T rg, T ro, T c_prev,
                                         T &c, T &tanh_c, T &h) {
    gi = sigmoid(gi + ri);
    gf = sigmoid(gf + rf);
    gg = tanh(gg + rg);
    go = sigmoid(go + ro);
    c = gf * c_prev + gi * gg;
    tanh_c = tanh(c);
    h = go * tanh_c;
}

// LSTM backward. gi..go: the activations in, the gradients of the pre-activations out.
// dh: the gradient of this step's h; dc: the gradient of c from later steps in, of c_prev out.
template <typename T>
TINYGRAD_RNN_HD inline void lstm_backward(T &gi, T &gf, T &gg, T &go,
                                          T c_prev, T tanh_c, T dh, T &dc) {
    const T i = gi, f = gf, g = gg, o = go;
    const T dc_total = dc + dh * o * (T(1) - tanh_c * tanh_c);
    gi = dc_total * g * i * (T(1) - i);
    gf = dc_total * c_prev * f * (T(1) - f);
    gg = dc_total * i * (T(1) - g * g);
    go = dh * tanh_c * o * (T(1) - o);
    dc = dc_total * f;
}

// GRU forward (PyTorch's form, gate order [r, z, n]). x_*: the input's share of each
// pre-activation (with b_ih, and b_hr, b_hz); h_*: the recurrent share h_prev W_h*^T.
//   r, z = sigmoid(.);  h_n = h_hn + b_hn;  n = tanh(x_n + r * h_n);  h = (1 - z) n + z h_prev
template <typename T>
TINYGRAD_RNN_HD inline void gru_forward(T x_r, T x_z, T x_n, T h_r, T h_z, T h_hn, T b_hn,
                                        T h_prev, T &r, T &z, T &n, T &h_n, T &h) {
    r = sigmoid(x_r + h_r);
    z = sigmoid(x_z + h_z);
    h_n = h_hn + b_hn;
    n = tanh(x_n + r * h_n);
    h = n + z * (h_prev - n);
}

// GRU backward. dh: the gradient of this step's h in, its direct part dh * z out (the caller
// adds the part through W_hh). Out: the gradients of the recurrent pre-activations (dh_r,
// dh_z, dh_n) and of the input's n pre-activation (dx_n).
template <typename T>
TINYGRAD_RNN_HD inline void gru_backward(T r, T z, T n, T h_n, T h_prev, T &dh,
                                         T &dh_r, T &dh_z, T &dh_n, T &dx_n) {
    const T dn = dh * (T(1) - z) * (T(1) - n * n);
    dh_r = dn * h_n * r * (T(1) - r);
    dh_z = dh * (h_prev - n) * z * (T(1) - z);
    dh_n = dn * r;
    dx_n = dn;
    dh = dh * z;
}

}  // namespace tinygrad_rnn

#endif  // TINYGRAD_RNN_FUSED_KERNELS_CUH
