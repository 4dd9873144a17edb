"""The vanishing-gradient picture: the gradient reaching each step from a loss on the last.

It plots ||dL/dh_t|| for every earlier step t, for a tanh RNN, an LSTM and a GRU at
initialisation, and for LSTMs whose forget-gate bias starts at 1 and at 3.

In a tanh RNN the gradient is multiplied at every step by W_hh^T diag(1 - h_t^2), whose
norm is below 1 with the usual initialisation: it shrinks geometrically with distance. The
LSTM's cell state passes gradient back through the forget gate alone (dc_{t-1} = f_t * dc_t),
so with forget gates near 1 (a forget-gate bias of 1 or more) it travels much further.

    python examples/vanishing_gradients.py                       # T=100, writes a PNG
    python examples/vanishing_gradients.py --seq-len 200 --out g.png
    python examples/vanishing_gradients.py --quick

The same plot from the command line (without the forget bias 3 curve):
tinygrad-rnn gradflow --seq-len 100. Each cell has the same colour in both.
"""

import argparse

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.diagnostics import hidden_grad_norms, plot_grad_norms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--out", default="vanishing_gradients.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="short sequences (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.seq_len, args.hidden = 20, 16

    inputs = 8
    x = np.random.default_rng(args.seed).standard_normal((args.seq_len, 16, inputs))
    layers = {
        "tanh RNN": lambda: nn.RNN(inputs, args.hidden),
        "GRU": lambda: nn.GRU(inputs, args.hidden),
        "LSTM": lambda: nn.LSTM(inputs, args.hidden),
        "LSTM, forget bias 1": lambda: nn.LSTM(inputs, args.hidden, forget_bias=1.0),
        "LSTM, forget bias 3": lambda: nn.LSTM(inputs, args.hidden, forget_bias=3.0),
    }
    norms = {}
    for name, make in layers.items():
        tg.manual_seed(args.seed)  # the same random draw for every layer
        # default loss: the sum of the last step's output; returns ||dL/dh_t|| for t = 1..T
        norms[name] = hidden_grad_norms(make(), x.astype(np.float32))

    print(f"{'layer':22s} {'t=1':>10s} {'t=T/2':>10s} {'t=T':>10s}")
    for name, values in norms.items():
        print(f"{name:22s} {values[0]:10.2e} {values[len(values) // 2]:10.2e} "
              f"{values[-1]:10.2e}")
    try:
        plot_grad_norms(norms, args.out,
                        title=f"gradient reaching step t from a loss on step {args.seq_len}")
        print(f"wrote {args.out}")
    except ImportError as error:  # matplotlib is an optional extra
        print(error)


if __name__ == "__main__":
    main()
