"""Looking inside backpropagation through time.

hidden_grad_norms   ||dL/dh_t|| for every step t: the vanishing/exploding-gradient picture
plot_grad_norms     those curves on a log scale, saved to a file (needs matplotlib)
cell_color          the one colour each cell has in every plot of the project
to_dot              the recorded graph of a Tensor, or one traced step of tg.scan (a Tape), as
                    Graphviz DOT text
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .backend import to_numpy
from .nn.cells import RNNCellBase
from .nn.recurrent import RNNBase
from .scan import BATCH, CONST, Tape
from .tensor import Tensor, enable_grad, stack


def _as_input(x, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return Tensor(x, dtype=like.dtype, device=like.device)  # NumPy, CuPy or nested lists


def _run_cell(cell: RNNCellBase, x: Tensor, hx) -> tuple[Tensor, list[Tensor]]:
    """Loop a cell over x (T, B, I) or (T, I); return the stacked outputs and the h_t."""
    state, hidden = hx, []
    for x_t in x.unbind(0):
        state = cell(x_t, state)
        hidden.append(state[0] if isinstance(state, tuple) else state)
    return stack(hidden, dim=0), hidden


def hidden_grad_norms(layer, x, loss_fn: Callable | None = None, hx=None, *,
                      layer_index: int = -1) -> np.ndarray:
    """||dL/dh_t|| for t = 1..T, the gradient reaching each step's hidden state.

    layer: an RNN, LSTM or GRU (any options) or a cell (RNNCell, LSTMCell, GRUCell, looped
    over time). x: its input, a Tensor or array, (T, B, I) ((B, T, I) with batch_first).
    loss_fn(output) -> scalar Tensor; the default, output[-1].sum() (the last step's output:
    a many-to-one loss), makes the curve show how much gradient from the end reaches each
    earlier step. h_t is the hidden state the recurrence carries from step t to t + 1 (h,
    not c, for the LSTM), of layer `layer_index` (default the top one), both directions
    together; the norm is taken over the batch and the features. dL/dh_t is the total
    derivative: through the outputs and through every later step.

    Returns a float64 NumPy array (T,). Parameter gradients are left as they were.
    """
    if isinstance(layer, RNNBase):
        like = layer.weight_ih_l0
    elif isinstance(layer, RNNCellBase):
        like = layer.weight_ih
    else:
        raise TypeError(f"hidden_grad_norms: layer must be an RNN, LSTM, GRU or a cell, "
                        f"got {type(layer).__name__}")
    x = _as_input(x, like)
    params = list(layer.parameters())
    saved = [p.grad for p in params]
    try:
        with enable_grad():
            if isinstance(layer, RNNBase):
                if not -layer.num_layers <= layer_index < layer.num_layers:
                    raise ValueError(f"hidden_grad_norms: layer_index must be in "
                                     f"[-{layer.num_layers}, {layer.num_layers}), "
                                     f"got {layer_index}")
                layer._hidden_trace = {}
                try:
                    output, _ = layer(x, hx)
                    trace = layer._hidden_trace
                finally:
                    layer._hidden_trace = None
                index = layer_index % layer.num_layers
                directions = [trace[(index, reverse)]
                              for reverse in ((False, True) if layer.bidirectional else (False,))]
                if layer.batch_first and output.ndim == 3:
                    output = output.transpose(0, 1)  # the default loss reads time-major
            else:
                output, hidden = _run_cell(layer, x, hx)
                directions = [hidden]
            for hidden in directions:
                for h in hidden:
                    h.retain_grad()
            loss = output[-1].sum() if loss_fn is None else loss_fn(output)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError("hidden_grad_norms: loss_fn must return a one-element Tensor")
            loss.backward()
        norms = np.zeros(len(directions[0]))
        for hidden in directions:
            for t, h in enumerate(hidden):
                if h.grad is not None:
                    norms[t] += float((h.grad.numpy().astype(np.float64) ** 2).sum())
        return np.sqrt(norms)
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g


# One colour per cell, the same in every plot (gradflow.png, demo.png, loss.png, the
# tutorial's figure), keyed by the cell names of `tinygrad-rnn train --cell`. An LSTM whose
# forget-gate bias was set is drawn in a colour of its own beside the default LSTM.
CELL_COLORS = {
    "rnn": "tab:red",
    "rnn-relu": "tab:orange",
    "lstm": "tab:blue",
    "lstm-forget-bias": "tab:purple",
    "gru": "tab:green",
    "gru-v1": "tab:olive",
    "peephole": "tab:cyan",
    "cifg": "tab:brown",
    "lnlstm": "tab:pink",
}


def cell_color(label: str) -> str | None:
    """The colour of the cell a plot label names ("tanh RNN", "LSTM, forget bias 1", "gru",
    "GRU"...), or None for a label that names no known cell."""
    text = str(label).strip().lower()
    if text in CELL_COLORS:
        return CELL_COLORS[text]
    if "forget bias" in text or "forget_bias" in text:
        return CELL_COLORS["lstm-forget-bias"]
    for word, key in (("peephole", "peephole"), ("cifg", "cifg"), ("lnlstm", "lnlstm"),
                      ("lstm", "lstm"), ("gru", "gru"), ("relu", "rnn-relu"), ("rnn", "rnn")):
        if word in text:
            return CELL_COLORS[key]
    return None


def use_log_scale(values) -> bool:
    """A log axis only for positive values spanning at least a factor of 10: a narrow range
    (0.174 to 0.182) reads better on a linear axis than as 1.74x10^-1 .. 1.82x10^-1."""
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v)], dtype=np.float64)
    return values.size > 0 and bool((values > 0).all()) and values.max() >= 10 * values.min()


def legend_outside(axes, **options) -> None:
    """A legend to the right of the axes, so that it never covers the data (no legend when
    nothing is labelled, which matplotlib would warn about)."""
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                    borderaxespad=0.0, **options)


def draw_grad_norms(axes, norms: dict, xlabel: str = "time step t",
                    ylabel: str = "||dL/dh_t||") -> None:
    """Draw curves {label: (T,) array} on `axes`: each cell in its colour (CELL_COLORS),
    integer time steps, a log axis when the values span a factor of 10, legend outside."""
    from matplotlib.ticker import MaxNLocator

    used = set()
    everything = []
    for label, values in norms.items():
        values = np.asarray(values, dtype=np.float64)
        steps = np.arange(1, len(values) + 1)
        color = cell_color(label)
        style = "--" if color is not None and color in used else "-"  # a second variant
        used.add(color)
        # zeros (no gradient at all) cannot be drawn on a log axis
        axes.plot(steps, np.where(values > 0, values, np.nan), style, color=color,
                  label=str(label))
        everything.append(values[values > 0])
    if everything and use_log_scale(np.concatenate(everything)):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="both", alpha=0.3)
    legend_outside(axes)


def plot_grad_norms(norms: dict, path, title: str = "Gradient norm per time step",
                    xlabel: str = "time step t", ylabel: str = "||dL/dh_t||"):
    """Plot curves {label: (T,) array} (log scale) and save the figure to `path`.

    Each cell keeps its colour (`cell_color`), so the same cell looks the same in every plot.
    Needs matplotlib (used with the non-interactive Agg backend). Returns the path.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plot_grad_norms needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.5, 4), layout="constrained")
    try:
        draw_grad_norms(axes, norms, xlabel, ylabel)
        axes.set_title(title)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape(shape) -> str:
    return str(tuple(int(n) for n in shape))


def to_dot(graph: Tensor | Tape, names: dict | None = None) -> str:
    """A recorded graph as Graphviz DOT text (render with `dot -Tsvg`).

    graph: a Tensor, or a Tape from `tg.trace_step(step, init, xs)`.

    For a Tensor, its whole recorded graph: one node per op (box, labelled with the op's name
    and output shape) and one per leaf (ellipse: tensors that require grad, constants in
    grey), and an edge from each op's inputs to the op. Call it before backward(), which
    frees the graph.

    For a Tape, one step of the scan: the cell's equations as a picture. The step's inputs
    carry[i] and x[i] and the tensors it reads from outside (weights; scalar constants in
    grey) are ellipses, each op a box with its op name and per-step output shape, drawn by
    where the scan runs it: in the loop at every step (plain box), on many steps at once
    ("batch", blue dashed box) or once on constants alone ("const", grey dotted box). The
    step's outputs carry'[i] and y[i] are double ellipses; the graph's label is the legend.

    names ({label: Tensor}, e.g. dict(model.named_parameters())) labels those tensors by name.
    """
    if isinstance(graph, Tape):
        return _tape_to_dot(graph, names)
    if not isinstance(graph, Tensor):
        raise TypeError("to_dot: expected a Tensor or a Tape (from tg.trace_step), got "
                        f"{type(graph).__name__}")
    return _tensor_to_dot(graph, names)


_HEADER = ["digraph tinygrad_rnn {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']


def _tensor_to_dot(tensor: Tensor, names: dict | None) -> str:
    leaf_names = {id(t): name for name, t in (names or {}).items()}
    nodes: list[str] = []
    edges: list[str] = []
    ids: dict[int, str] = {}

    def leaf_node(t: Tensor) -> str:
        key = id(t)
        if key not in ids:
            ids[key] = f"leaf{len(ids)}"
            name = leaf_names.get(key)
            kind = name if name is not None else ("leaf" if t.requires_grad else "const")
            style = "" if t.requires_grad else ", style=filled, fillcolor=lightgrey"
            nodes.append(f"  {ids[key]} [shape=ellipse, label="
                         f"{_quote(f'{kind} {_shape(t.shape)}')}{style}];")
        return ids[key]

    order = []
    if tensor._node is None:
        leaf_node(tensor)
    else:
        # output shapes of each op, learnt from the tensors that carry them
        out_shapes = {id(tensor._node): {tensor._index: tensor.shape}}
        seen, pending = {id(tensor._node)}, [tensor._node]
        while pending:  # iterative: graphs of long sequences are deep
            node = pending.pop()
            inputs = node.__dict__.get("inputs")
            if inputs is None:
                raise RuntimeError("to_dot: the graph was freed by backward(); call to_dot "
                                   "before backward() (or use backward(retain_graph=True))")
            order.append(node)
            for t in inputs:
                child = t._node
                if child is not None:
                    out_shapes.setdefault(id(child), {})[t._index] = t.shape
                    if id(child) not in seen:
                        seen.add(id(child))
                        pending.append(child)
        for node in order:
            ids[id(node)] = f"op{len(ids)}"
            shapes = out_shapes[id(node)]
            if node.num_outputs > 1:
                shape_text = f"{node.num_outputs} outputs, e.g. {_shape(shapes[min(shapes)])}"
            else:
                shape_text = _shape(shapes[0])
            label = f"{type(node).__name__} {shape_text}"
            nodes.append(f"  {ids[id(node)]} [shape=box, label={_quote(label)}];")
        for node in order:
            for t in node.inputs:
                source = ids[id(t._node)] if t._node is not None else leaf_node(t)
                edges.append(f"  {source} -> {ids[id(node)]};")
    return "\n".join(_HEADER + nodes + edges + ["}"]) + "\n"


# how to_dot draws an op of a tape, by where the scan runs it
_TAPE_OP_STYLE = {
    BATCH: ', style="filled,dashed", fillcolor=lightblue',
    CONST: ', style="filled,dotted", fillcolor=lightgrey',
}
_TAPE_LEGEND = ("one step of tg.scan. Plain boxes: ops run in the loop, at every step. "
                "Blue dashed boxes: run on many steps at once (batch). Grey dotted boxes: run "
                "once, on constants (const). Double ellipses: the step's outputs.")


def _tape_to_dot(tape: Tape, names: dict | None) -> str:
    """One traced step as DOT text (see to_dot)."""
    tensor_names = {id(t): name for name, t in (names or {}).items()}
    nodes: list[str] = []
    edges: list[str] = []
    source: dict[int, str] = {}  # slot -> the node that holds its value

    def ellipse(node_id: str, label: str, extra: str = "") -> None:
        nodes.append(f"  {node_id} [shape=ellipse, label={_quote(label)}{extra}];")

    for i, slot in enumerate(tape.carry_in):
        source[slot] = f"carry{i}"
        ellipse(f"carry{i}", f"carry[{i}] {_shape(tape.shapes[slot])}")
    for i, slot in enumerate(tape.x_in):
        source[slot] = f"x{i}"
        ellipse(f"x{i}", f"x[{i}] {_shape(tape.shapes[slot])}")
    for j, (slot, t) in enumerate(tape.consts):
        source[slot] = f"const{j}"
        name = tensor_names.get(id(t))
        if name is not None:
            label = f"{name} {_shape(t.shape)}"
        elif t.ndim == 0:
            label = f"{to_numpy(t.data).item():g}"
        else:
            label = f"const {_shape(t.shape)}"
        grey = t.ndim == 0 or not t.requires_grad
        ellipse(f"const{j}", label, ", style=filled, fillcolor=lightgrey" if grey else "")
    for k, e in enumerate(tape.entries):
        op = f"op{k}"
        if e.multi:
            shape_text = f"{len(e.outs)} outputs, e.g. {_shape(tape.shapes[e.outs[0]])}"
        else:
            shape_text = _shape(tape.shapes[e.outs[0]])
        label = f"{e.cls.__name__} {shape_text}"
        nodes.append(f"  {op} [shape=box, label={_quote(label)}"
                     f"{_TAPE_OP_STYLE.get(e.kind, '')}];")
        for slot in e.ins:
            edges.append(f"  {source[slot]} -> {op};")
        for slot in e.outs:
            source[slot] = op
    for prefix, label, slots in (("carry_out", "carry'", tape.carry_out),
                                 ("y", "y", tape.y_out)):
        for i, slot in enumerate(slots):
            ellipse(f"{prefix}{i}", f"{label}[{i}] {_shape(tape.shapes[slot])}",
                    ", peripheries=2")
            edges.append(f"  {source[slot]} -> {prefix}{i};")
    legend = f"  graph [label={_quote(_TAPE_LEGEND)}, labelloc=b, fontsize=10];"
    return "\n".join(_HEADER + [legend] + nodes + edges + ["}"]) + "\n"
