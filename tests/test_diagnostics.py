"""diagnostics: per-step gradient norms, their plot, and the graph as DOT text."""

import re
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.diagnostics import hidden_grad_norms, plot_grad_norms, to_dot
from tinygrad_rnn.tensor import _topological_order

# --------------------------------------------------------------------------- hidden_grad_norms


def test_vanishing_gradient_tanh_rnn_versus_lstm_with_forget_bias():
    """At initialisation, over T=100 steps, the gradient of the last output reaching h_1 is
    orders of magnitude smaller in a tanh RNN than in an LSTM with forget bias 1."""
    tg.manual_seed(0)
    x = tg.randn(100, 4, 8, dtype=np.float64)
    rnn = nn.RNN(8, 32, dtype=np.float64)
    lstm = nn.LSTM(8, 32, dtype=np.float64, forget_bias=1.0)
    rnn_norms, lstm_norms = hidden_grad_norms(rnn, x), hidden_grad_norms(lstm, x)
    assert rnn_norms.shape == lstm_norms.shape == (100,)
    # both start from the same gradient at the last step: d(sum of h_T)/dh_T = 1
    np.testing.assert_allclose(rnn_norms[-1], np.sqrt(4 * 32))
    np.testing.assert_allclose(lstm_norms[-1], np.sqrt(4 * 32))
    assert rnn_norms[0] < 1e-6 * lstm_norms[0], (rnn_norms[0], lstm_norms[0])
    assert np.all(np.diff(np.log(rnn_norms)) > 0)  # decays steadily going back in time
    assert lstm_norms[0] > 0


def _manual_norms(cell, x, h=None):
    """The same quantity from a hand-written loop over a cell with retain_grad()."""
    state, hidden = h, []
    for x_t in x.unbind(0):
        state = cell(x_t, state)
        h_t = state[0] if isinstance(state, tuple) else state
        hidden.append(h_t.retain_grad())
    hidden[-1].sum().backward()
    return np.array([np.linalg.norm(h.grad.numpy()) for h in hidden])


@pytest.mark.parametrize("kind", ["rnn", "gru_cho", "lstm_peephole"])
def test_layer_norms_equal_a_hand_written_cell_loop(kind, rng):
    if kind == "rnn":
        layer, cell = nn.RNN(3, 5, dtype=np.float64), nn.RNNCell(3, 5, dtype=np.float64)
    elif kind == "gru_cho":
        layer = nn.GRU(3, 5, dtype=np.float64, reset_after=False)
        cell = nn.GRUCell(3, 5, dtype=np.float64, reset_after=False)
    else:
        layer = nn.LSTM(3, 5, dtype=np.float64, peephole=True)
        cell = nn.LSTMCell(3, 5, dtype=np.float64, peephole=True)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    x = tg.tensor(rng.standard_normal((7, 2, 3)))
    expected = _manual_norms(cell, x)
    np.testing.assert_allclose(hidden_grad_norms(layer, x), expected, rtol=1e-12)
    np.testing.assert_allclose(hidden_grad_norms(cell, x.numpy()), expected, rtol=1e-12)


def test_options_layers_directions_and_parameter_grads_untouched(rng):
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64)
    x = rng.standard_normal((2, 6, 3))  # (B, T, I): arrays are accepted
    before = lstm.weight_hh_l0.grad
    norms = hidden_grad_norms(lstm, x)
    assert norms.shape == (6,) and np.all(norms > 0)
    assert lstm.weight_hh_l0.grad is before and lstm._hidden_trace is None
    bottom = hidden_grad_norms(lstm, x, layer_index=0)
    assert bottom.shape == (6,) and not np.allclose(bottom, norms)
    # a many-to-many loss reaches every step directly
    many = hidden_grad_norms(lstm, x, loss_fn=lambda out: (out * out).sum())
    assert many.shape == (6,) and np.all(many > 0)
    h0 = (tg.zeros(4, 2, 4, dtype=np.float64), tg.zeros(4, 2, 4, dtype=np.float64))
    np.testing.assert_allclose(hidden_grad_norms(lstm, x, hx=h0), norms, rtol=1e-12)
    with pytest.raises(ValueError, match="layer_index"):
        hidden_grad_norms(lstm, x, layer_index=2)
    with pytest.raises(ValueError, match="one-element Tensor"):
        hidden_grad_norms(lstm, x, loss_fn=lambda out: out)
    with pytest.raises(TypeError, match="must be an RNN, LSTM, GRU or a cell"):
        hidden_grad_norms(nn.Linear(3, 4), x)


# --------------------------------------------------------------------------- plot


def test_plot_grad_norms_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "norms.png"
    norms = {"tanh RNN": np.logspace(-20, 0, 50), "LSTM": np.logspace(-5, 0, 50)}
    assert plot_grad_norms(norms, path, title="vanishing gradients") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_grad_norms_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_grad_norms({"a": np.ones(3)}, tmp_path / "x.png")


# --------------------------------------------------------------------------- to_dot

NODE = re.compile(r"^\s*(\w+)\s*\[(.*)\];\s*$")
EDGE = re.compile(r"^\s*(\w+)\s*->\s*(\w+)\s*;\s*$")
LABEL = re.compile(r'label="((?:[^"\\]|\\.)*)"')


def _parse(dot):
    """A tiny DOT reader: the digraph's nodes {id: label} and its edges [(source, target)]."""
    lines = dot.strip().splitlines()
    assert re.match(r"^digraph \w+ \{$", lines[0]) and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if edge := EDGE.match(line):
            edges.append(edge.groups())
        elif node := NODE.match(line):
            if node.group(1) not in ("node", "graph", "edge"):
                nodes[node.group(1)] = LABEL.search(node.group(2)).group(1)
        else:
            assert re.match(r"^\s*\w+=\w+;$", line), line
    return nodes, edges


def test_to_dot_small_expression():
    a = tg.randn(2, 3, requires_grad=True)
    b = tg.randn(2, 3, requires_grad=True)
    c = tg.randn(3)  # a constant
    loss = (a * b + c).sum()
    nodes, edges = _parse(to_dot(loss, names={"a": a, "b": b}))
    ops = sorted(label for label in nodes.values() if label.split()[0] in ("Mul", "Add", "Sum"))
    assert ops == ["Add (2, 3)", "Mul (2, 3)", "Sum ()"]
    assert sorted(label for name, label in nodes.items() if name.startswith("leaf")) == [
        "a (2, 3)", "b (2, 3)", "const (3,)"]
    assert len(nodes) == 6 and len(edges) == 5
    assert all(s in nodes and t in nodes for s, t in edges)
    by_label = {label.split()[0]: name for name, label in nodes.items()}
    assert (by_label["Mul"], by_label["Add"]) in edges and (by_label["a"], by_label["Mul"]) in edges


def test_to_dot_of_an_unrolled_lstm(rng):
    lstm = nn.LSTM(3, 4, dtype=np.float64)
    lstm.fast = False  # the composed path: one node per op of every step
    x = tg.tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    out, _ = lstm(x)
    loss = out[-1].sum()
    dot = to_dot(loss, names=dict(lstm.named_parameters()))
    nodes, edges = _parse(dot)
    graph_ops = _topological_order(loss._node)
    op_nodes = [n for n in nodes if n.startswith("op")]
    assert len(op_nodes) == len(graph_ops)
    assert len(edges) == sum(len(node.inputs) for node in graph_ops)
    assert sum(1 for label in nodes.values() if label.startswith("Tanh")) == 2 * 5
    assert "weight_hh_l0 (16, 4)" in nodes.values()
    assert any(label.startswith("Unbind 5 outputs") for label in nodes.values())
    loss.backward()
    with pytest.raises(RuntimeError, match="graph was freed"):
        to_dot(loss)


def test_to_dot_counts_match_the_graph_for_any_path(rng):
    """Whatever nodes the layer records (fused or composed), the DOT has one node per op and
    per distinct leaf, and one edge per op input."""
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    out, h_n = gru(tg.tensor(rng.standard_normal((4, 2, 3)).astype(np.float32)))
    loss = out.sum() + h_n.sum()
    nodes, edges = _parse(to_dot(loss))
    graph_ops = _topological_order(loss._node)
    leaves = {id(t) for node in graph_ops for t in node.inputs if t._node is None}
    assert len(nodes) == len(graph_ops) + len(leaves)
    assert len(edges) == sum(len(node.inputs) for node in graph_ops)


def test_to_dot_of_a_leaf():
    nodes, edges = _parse(to_dot(tg.ones(2)))
    assert list(nodes.values()) == ["const (2,)"] and edges == []


def _lstm_cell_tape():
    """One LSTM-cell step, as in STYLE.md, traced by tg.trace_step; with its weights."""
    B, I, H = 2, 3, 4
    weights = {"W_ih": tg.randn(4 * H, I, requires_grad=True),
               "W_hh": tg.randn(4 * H, H, requires_grad=True),
               "b": tg.randn(4 * H, requires_grad=True)}

    def step(carry, x):
        h, c = carry
        gates = x @ weights["W_ih"].T + h @ weights["W_hh"].T + weights["b"]
        i, f, g, o = gates.chunk(4, axis=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * (1.0 - 0.5 * c.tanh())  # a variant with scalar constants
        return (h, c), h

    tape = tg.trace_step(step, (tg.zeros(B, H), tg.zeros(B, H)), tg.randn(5, B, I))
    return tape, weights


def _attributes(dot):
    """{node id: its attribute text} of a DOT text."""
    return {m.group(1): m.group(2) for line in dot.splitlines() if (m := NODE.match(line))}


def test_to_dot_of_a_traced_lstm_step():
    tape, weights = _lstm_cell_tape()
    dot = to_dot(tape, names=weights)
    nodes, edges = _parse(dot)
    attributes = _attributes(dot)
    assert len(edges) == sum(len(e.ins) for e in tape.entries) + 3  # + the three outputs
    assert all(s in nodes and t in nodes for s, t in edges)
    # inputs, weights by name, scalar constants in grey
    assert {"carry[0] (2, 4)", "carry[1] (2, 4)", "x[0] (2, 3)", "W_ih (16, 3)",
            "W_hh (16, 4)", "b (16,)", "1", "0.5"} <= set(nodes.values())
    by_label = {label: name for name, label in nodes.items()}
    assert "fillcolor=lightgrey" in attributes[by_label["0.5"]]
    assert "fillcolor" not in attributes[by_label["W_hh (16, 4)"]]
    # one box per op; x @ W_ih^T runs on many steps at once, h @ W_hh^T in the loop
    boxes = [name for name, text in attributes.items() if "shape=box" in text]
    assert len(boxes) == len(tape.entries)
    matmuls = [name for name in boxes if nodes[name] == "MatMul (2, 16)"]
    assert len(matmuls) == 2
    hoisted = next(m for m in matmuls if (by_label["x[0] (2, 3)"], m) in edges)
    in_loop = next(m for m in matmuls if (by_label["carry[0] (2, 4)"], m) in edges)
    assert "dashed" in attributes[hoisted] and "dashed" not in attributes[in_loop]
    assert "on many steps at once" in dot  # the legend says what dashed means
    # W^T is computed once, on the weights alone
    transposes = [name for name in boxes if nodes[name].startswith("Permute")]
    assert transposes and all("dotted" in attributes[name] for name in transposes)
    # the outputs: double ellipses fed by the ops that make them
    for label in ("carry'[0] (2, 4)", "carry'[1] (2, 4)", "y[0] (2, 4)"):
        node = by_label[label]
        assert "peripheries=2" in attributes[node]
        assert sum(1 for _, target in edges if target == node) == 1
    assert nodes[next(s for s, t in edges if t == by_label["carry'[1] (2, 4)"])] == "Add (2, 4)"


def test_to_dot_of_a_step_that_passes_its_carry_through():
    """A carry returned unchanged is drawn from the input itself; no x, no y."""
    w = tg.ones(3, requires_grad=True)
    tape = tg.trace_step(lambda carry, x: ((carry[0] * w, carry[1]), None),
                         (tg.ones(3), tg.zeros(3)), length=4)
    nodes, edges = _parse(to_dot(tape))
    by_label = {label: name for name, label in nodes.items()}
    assert (by_label["carry[1] (3,)"], by_label["carry'[1] (3,)"]) in edges
    assert "const (3,)" in by_label and not any(label.startswith(("x[", "y["))
                                                for label in by_label)


def test_to_dot_rejects_other_arguments():
    with pytest.raises(TypeError, match=r"Tensor or a Tape \(from tg.trace_step\), got ndarray"):
        to_dot(np.ones(3))
