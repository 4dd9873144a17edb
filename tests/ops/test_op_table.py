"""OpInfo-style table of every differentiable op, as PyTorch's test suite does it.

Each `OpInfo` names an op, gives a function of Tensors, the input shapes to try (including
broadcasting pairs and 0-d scalars) and an input domain on which the op is smooth (positive
for log/sqrt, away from 0 for abs/div, away from ties for max/relu/clip). Every entry is

* gradchecked in float64 against central differences (`tg.gradcheck`), and
* checked to keep float32 in float32: outputs and every input's `.grad`.

The functions take a namespace first (`ns`), so the same table also drives
`test_torch_parity.py`, where `ns` maps the same names onto PyTorch. Hypothesis fuzzing of
the broadcasting binary ops against NumPy closes the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
from tinygrad_rnn import functional as F

# --------------------------------------------------------------------------- input domains
# A domain is called as domain(rng, shape, position) and returns float64 values; `position`
# is the input's index, so two inputs of one op can be kept apart.


def normal(rng, shape, position):
    return rng.standard_normal(shape)


def positive(rng, shape, position):
    """In [0.5, 2]: log, sqrt, fractional powers and bases of tensor powers are smooth."""
    return rng.uniform(0.5, 2.0, shape)


def nonzero(rng, shape, position):
    """|x| in [0.5, 2], either sign: safe divisors."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, shape)


def probability(rng, shape, position):
    return rng.uniform(0.1, 0.9, shape)


CLIP_LOW, CLIP_HIGH = -0.3, 0.45


def distinct(rng, shape, position):
    """Shuffled grid values 0.25 apart, offset 0.1 + 0.05 * position.

    No two elements of one input tie (max/min reductions), no element of input 0 equals one
    of input 1 (maximum/minimum), none is 0 (abs, relu) or a clip bound: every kink of a
    piecewise op is at least 0.05 away, far beyond the finite-difference step.
    """
    size = int(np.prod(shape, dtype=int))
    grid = (rng.permutation(size) - size // 2) * 0.25 + 0.1 + 0.05 * position
    return grid.reshape(shape)


# --------------------------------------------------------------------------- namespaces


class TinygradNamespace:
    """What the table's functions call, spelled for tinygrad_rnn."""

    name = "tinygrad_rnn"
    F = F
    cat, concat, stack = staticmethod(tg.cat), staticmethod(tg.concat), staticmethod(tg.stack)
    where = staticmethod(tg.where)
    layer_norm = staticmethod(F.layer_norm)  # one node, affine included
    maximum, minimum = staticmethod(tg.maximum), staticmethod(tg.minimum)

    @staticmethod
    def const(array, like=None):
        """A NumPy constant (indices, masks; cast to like's dtype when given)."""
        return array if like is None else array.astype(like.dtype)

    @staticmethod
    def index_tensor(array, like):
        """An index given as a Tensor on like's device."""
        return tg.Tensor(array, device=like.device)

    @staticmethod
    def amax(x, **kwargs):
        return x.max(**kwargs)

    @staticmethod
    def amin(x, **kwargs):
        return x.min(**kwargs)

    @staticmethod
    def manual_seed(seed):
        tg.manual_seed(seed)



TG = TinygradNamespace()


def ramp(shape):
    """Deterministic float64 constant of a given shape, none of it zero."""
    size = int(np.prod(shape, dtype=int))
    return np.linspace(0.5, 1.5, size).reshape(shape)


def mask(shape):
    """Deterministic boolean pattern of a given shape, with both values present."""
    size = int(np.prod(shape, dtype=int))
    return (np.arange(size) % 3 != 1).reshape(shape)


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One op under test: fn(ns, *tensors) -> Tensor or tuple of Tensors.

    shapes: the cases, each a tuple with one shape per input. domain: one domain for all
    inputs or a tuple with one per input. torch: False where PyTorch has no spelling with
    the same meaning (negative-step slices, our seeded dropout mask). gradcheck: False only
    where the gradient is, by definition, not the derivative of the forward (padding_idx).
    """

    name: str
    fn: Callable
    shapes: tuple
    domain: Callable | tuple = normal
    torch: bool = True
    gradcheck: bool = True

    def domain_for(self, position: int) -> Callable:
        return self.domain[position] if isinstance(self.domain, tuple) else self.domain


UNARY = (((3, 4),), ((),), ((2, 3, 2),))
BINARY = (
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((2, 1, 4), (3, 1)),
    ((), (2, 3)),
    ((3, 4), ()),
    ((4,), (2, 3, 4)),
)
MATMUL = (
    ((3,), (3,)),
    ((2, 3), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3, 4)),
    ((2, 2, 3), (3, 4)),
    ((2, 1, 2, 3), (3, 3, 2)),  # batch dims (2, 1) and (3,) broadcast to (2, 3)
    ((3,), (2, 3, 4)),
    ((2, 2, 3), (3,)),
)
REDUCE = (((3, 4, 2),),)
MATRIX = (((3, 4),),)
LOGITS = (((4, 5),),)
TARGET = np.array([1, 0, 4, 2])
TARGET_IGNORED = np.array([1, -100, 4, -100])
TARGET_REPEATED = np.array([2, 0, 2, 1])
TOKENS = np.array([[0, 3, 1], [3, 3, 4]])  # repeated rows accumulate; 1 is padding below

OPS: list[OpInfo] = [
    # ---- arithmetic, tensor with tensor (broadcasting)
    OpInfo("add", lambda ns, a, b: a + b, BINARY),
    OpInfo("sub", lambda ns, a, b: a - b, BINARY),
    OpInfo("mul", lambda ns, a, b: a * b, BINARY),
    OpInfo("div", lambda ns, a, b: a / b, BINARY, (normal, nonzero)),
    OpInfo("pow_tensor", lambda ns, a, b: a**b, BINARY, (positive, normal)),
    OpInfo("neg", lambda ns, a: -a, UNARY),
    OpInfo("pow_int", lambda ns, a: a**3, UNARY),
    OpInfo("pow_float", lambda ns, a: a**0.5, UNARY, positive),
    OpInfo("pow_negative", lambda ns, a: a**-1.5, UNARY, positive),
    # ---- Python scalars on either side (they take the tensor's dtype)
    OpInfo("add_scalar", lambda ns, a: a + 2.5, UNARY),
    OpInfo("sub_scalar", lambda ns, a: a - 1, UNARY),
    OpInfo("mul_scalar", lambda ns, a: a * 1.5, UNARY),
    OpInfo("div_scalar", lambda ns, a: a / 4.0, UNARY),
    OpInfo("radd_scalar", lambda ns, a: 2.5 + a, UNARY),
    OpInfo("rsub_scalar", lambda ns, a: 1.5 - a, UNARY),
    OpInfo("rmul_scalar", lambda ns, a: 3 * a, UNARY),
    OpInfo("rdiv_scalar", lambda ns, a: 2.0 / a, UNARY, nonzero),
    OpInfo("rpow_scalar", lambda ns, a: 2.0**a, UNARY),
    # ---- NumPy arrays on either side (broadcast over the last axis)
    OpInfo("add_array", lambda ns, a: a + ns.const(ramp(a.shape[-1:]), a), UNARY),
    OpInfo("radd_array", lambda ns, a: ns.const(ramp(a.shape[-1:]), a) + a, UNARY),
    OpInfo("rsub_array", lambda ns, a: ns.const(ramp(a.shape[-1:]), a) - a, UNARY),
    OpInfo("rmul_array", lambda ns, a: ns.const(ramp(a.shape[-1:]), a) * a, UNARY),
    OpInfo("rdiv_array", lambda ns, a: ns.const(ramp(a.shape[-1:]), a) / a, UNARY, nonzero),
    OpInfo("rmatmul_array", lambda ns, a: ns.const(ramp((2, a.shape[0])), a) @ a, MATRIX),
    OpInfo("matmul", lambda ns, a, b: a @ b, MATMUL),
    OpInfo("linear", lambda ns, x, w, b: ns.F.linear(x, w, b),
           (((4, 3), (5, 3), (5,)), ((2, 4, 3), (5, 3), (5,)))),
    OpInfo("linear_no_bias", lambda ns, x, w: ns.F.linear(x, w), (((4, 3), (5, 3)),)),
    # ---- elementwise functions
    OpInfo("exp", lambda ns, a: a.exp(), UNARY),
    OpInfo("log", lambda ns, a: a.log(), UNARY, positive),
    OpInfo("sqrt", lambda ns, a: a.sqrt(), UNARY, positive),
    OpInfo("abs", lambda ns, a: a.abs(), UNARY, distinct),
    OpInfo("tanh", lambda ns, a: a.tanh(), UNARY),
    OpInfo("sigmoid", lambda ns, a: a.sigmoid(), UNARY),
    OpInfo("relu", lambda ns, a: a.relu(), UNARY, distinct),
    OpInfo("softplus", lambda ns, a: ns.F.softplus(a * 4.0), UNARY),
    OpInfo("functional_unary", lambda ns, a: ns.F.relu(ns.F.tanh(ns.F.sigmoid(a) - 0.5) + 0.1),
           UNARY),
    OpInfo("clip", lambda ns, a: a.clip(CLIP_LOW, CLIP_HIGH), UNARY, distinct),
    OpInfo("clip_min", lambda ns, a: a.clip(min=CLIP_LOW), UNARY, distinct),
    OpInfo("clamp_max", lambda ns, a: a.clamp(max=CLIP_HIGH), UNARY, distinct),
    OpInfo("maximum", lambda ns, a, b: a.maximum(b), BINARY, distinct),
    OpInfo("minimum", lambda ns, a, b: a.minimum(b), BINARY, distinct),
    OpInfo("maximum_function", lambda ns, a, b: ns.maximum(a, b), BINARY, distinct),
    OpInfo("minimum_function", lambda ns, a, b: ns.minimum(a, b), BINARY, distinct),
    OpInfo("where", lambda ns, a, b: ns.where(
        ns.const(mask(np.broadcast_shapes(a.shape, b.shape))), a, b), BINARY),
    OpInfo("where_small_condition", lambda ns, a, b: ns.where(ns.const(mask((4,))), a, b),
           (((3, 4), (3, 1)), ((2, 1, 4), (3, 4)))),
    OpInfo("where_scalar", lambda ns, a: ns.where(ns.const(mask(a.shape)), a, 0.0), UNARY),
    # ---- reductions: NumPy (axis/keepdims) and PyTorch (dim/keepdim) spellings
    OpInfo("sum", lambda ns, a: a.sum(), REDUCE + UNARY[:2]),
    OpInfo("sum_axis", lambda ns, a: a.sum(axis=1), REDUCE),
    OpInfo("sum_axes_keepdims", lambda ns, a: a.sum(axis=(0, 2), keepdims=True), REDUCE),
    OpInfo("sum_dim_keepdim", lambda ns, a: a.sum(dim=-1, keepdim=True), REDUCE),
    OpInfo("mean", lambda ns, a: a.mean(), REDUCE + UNARY[:2]),
    OpInfo("mean_axis", lambda ns, a: a.mean(axis=-1), REDUCE),
    OpInfo("mean_dims_keepdim", lambda ns, a: a.mean(dim=(0, 1), keepdim=True), REDUCE),
    OpInfo("max", lambda ns, a: ns.amax(a), REDUCE + UNARY[:2], distinct),
    OpInfo("max_axis", lambda ns, a: ns.amax(a, axis=1), REDUCE, distinct),
    OpInfo("max_dims_keepdim", lambda ns, a: ns.amax(a, dim=(0, 2), keepdim=True), REDUCE,
           distinct),
    OpInfo("min", lambda ns, a: ns.amin(a), REDUCE, distinct),
    OpInfo("min_axis_keepdims", lambda ns, a: ns.amin(a, axis=-1, keepdims=True), REDUCE,
           distinct),
    OpInfo("var", lambda ns, a: a.var(), REDUCE),
    OpInfo("var_dim", lambda ns, a: a.var(dim=1), REDUCE),
    OpInfo("var_population_keepdims",
           lambda ns, a: a.var(axis=(0, 2), keepdims=True, correction=0), REDUCE),
    OpInfo("var_unbiased_false", lambda ns, a: a.var(dim=0, unbiased=False), REDUCE),
    OpInfo("logsumexp_dim", lambda ns, a: a.logsumexp(dim=1), REDUCE),
    OpInfo("logsumexp_dims_keepdim", lambda ns, a: a.logsumexp(dim=(0, 2), keepdim=True),
           REDUCE),
    OpInfo("logsumexp_axis", lambda ns, a: a.logsumexp(axis=-1), REDUCE),
    OpInfo("logsumexp_large", lambda ns, a: (a * 300.0).logsumexp(dim=-1), MATRIX),
    # ---- shape ops
    OpInfo("reshape", lambda ns, a: a.reshape(4, 3), MATRIX),
    OpInfo("reshape_tuple_infer", lambda ns, a: a.reshape((2, -1)), MATRIX),
    OpInfo("view", lambda ns, a: a.view(12), MATRIX),
    OpInfo("transpose", lambda ns, a: a.transpose(0, 2), REDUCE),
    OpInfo("transpose_negative", lambda ns, a: a.transpose(-1, 0), MATRIX),
    OpInfo("T", lambda ns, a: a.T, MATRIX),
    OpInfo("permute", lambda ns, a: a.permute(2, 0, 1), REDUCE),
    OpInfo("permute_tuple", lambda ns, a: a.permute((1, 2, 0)), REDUCE),
    OpInfo("squeeze", lambda ns, a: a.squeeze(), (((3, 1, 4),),)),
    OpInfo("squeeze_dim", lambda ns, a: a.squeeze(1), (((3, 1, 4),),)),
    OpInfo("unsqueeze", lambda ns, a: a.unsqueeze(0), MATRIX),
    OpInfo("unsqueeze_negative", lambda ns, a: a.unsqueeze(-1), MATRIX),
    OpInfo("expand", lambda ns, a: a.expand(2, 3, 4), (((3, 1),),)),
    OpInfo("expand_keep", lambda ns, a: a.expand(-1, 4), (((3, 1),),)),
    OpInfo("broadcast_to", lambda ns, a: a.broadcast_to((2, 3, 4)), MATRIX),
    OpInfo("flatten", lambda ns, a: a.flatten(), REDUCE),
    OpInfo("flatten_from", lambda ns, a: a.flatten(1), REDUCE),
    OpInfo("flatten_range", lambda ns, a: a.flatten(0, 1), REDUCE),
    # ---- indexing
    OpInfo("getitem_int", lambda ns, a: a[1], MATRIX),
    OpInfo("getitem_negative_int", lambda ns, a: a[-1, 2], MATRIX),
    OpInfo("getitem_slices", lambda ns, a: a[1:3, ::2], MATRIX),
    OpInfo("getitem_ellipsis_none", lambda ns, a: a[..., None, 1], REDUCE),
    OpInfo("getitem_negative_step", lambda ns, a: a[::-1], MATRIX, torch=False),
    OpInfo("getitem_negative_step_2d", lambda ns, a: a[::-2, 3:0:-1], MATRIX, torch=False),
    OpInfo("getitem_repeated_indices", lambda ns, a: a[ns.const(np.array([0, 2, 0, 0]))],
           MATRIX),
    OpInfo("getitem_list_columns", lambda ns, a: a[:, [3, 3, 0]], MATRIX),
    OpInfo("getitem_index_pairs",
           lambda ns, a: a[ns.const(np.array([0, 2, 0])), ns.const(np.array([1, 1, 1]))],
           MATRIX),
    OpInfo("getitem_tensor_index", lambda ns, a: a[ns.index_tensor(np.array([1, 1, 2]), a)],
           MATRIX),
    OpInfo("getitem_bool_mask", lambda ns, a: a[ns.const(mask(a.shape))], MATRIX),
    OpInfo("getitem_bool_rows", lambda ns, a: a[ns.const(np.array([True, False, True]))],
           MATRIX),
    # ---- joining and splitting (several inputs, several outputs)
    OpInfo("cat", lambda ns, a, b: ns.cat([a, b], dim=1), (((2, 3), (2, 4)),)),
    OpInfo("concat_axis", lambda ns, a, b: ns.concat([a, b], axis=0), (((2, 3), (1, 3)),)),
    OpInfo("cat_three_negative_dim", lambda ns, a, b, c: ns.cat([a, b, c], dim=-1),
           (((2, 1), (2, 3), (2, 2)),)),
    OpInfo("stack", lambda ns, a, b: ns.stack([a, b]), (((2, 3), (2, 3)),)),
    OpInfo("stack_axis_last", lambda ns, a, b, c: ns.stack([a, b, c], axis=-1),
           (((2, 3), (2, 3), (2, 3)),)),
    OpInfo("stack_reused", lambda ns, a: ns.stack([a, a * 2.0, a], dim=1), MATRIX),
    OpInfo("split", lambda ns, a: a.split(2, dim=1), (((3, 5),),)),
    OpInfo("split_sizes", lambda ns, a: a.split([1, 3], dim=-1), (((2, 4),),)),
    OpInfo("split_one_output_used", lambda ns, a: a.split(2, dim=1)[1], (((3, 5),),)),
    OpInfo("chunk", lambda ns, a: a.chunk(2), (((4, 3),),)),
    OpInfo("chunk_uneven", lambda ns, a: a.chunk(3, dim=1), (((2, 5),),)),
    OpInfo("unbind", lambda ns, a: a.unbind(1), MATRIX),
    OpInfo("unbind_negative", lambda ns, a: a.unbind(-1), REDUCE),
    OpInfo("unbind_some_outputs_used", lambda ns, a: a.unbind(0)[2] * a.unbind(0)[0], MATRIX),
    # ---- softmax family
    OpInfo("softmax", lambda ns, a: a.softmax(dim=-1), MATRIX),
    OpInfo("softmax_dim0", lambda ns, a: a.softmax(0), REDUCE),
    OpInfo("softmax_functional", lambda ns, a: ns.F.softmax(a, dim=1), REDUCE),
    OpInfo("log_softmax", lambda ns, a: a.log_softmax(dim=-1), MATRIX),
    OpInfo("log_softmax_functional", lambda ns, a: ns.F.log_softmax(a * 50.0, dim=0), REDUCE),
    # ---- normalisation (one node, analytic backward)
    OpInfo("layer_norm", lambda ns, a: ns.layer_norm(a, a.shape[-1:]),
           (((3, 4),), ((2, 3, 5),))),
    OpInfo("layer_norm_two_axes", lambda ns, a: ns.layer_norm(a, a.shape[-2:], eps=1e-3),
           REDUCE),
    OpInfo("layer_norm_affine", lambda ns, a, w, b: ns.layer_norm(a, (4,), w, b),
           (((3, 4), (4,), (4,)),)),
    # ---- losses
    *[
        OpInfo(f"cross_entropy_{reduction}",
               lambda ns, a, r=reduction: ns.F.cross_entropy(a, ns.const(TARGET), reduction=r),
               LOGITS)
        for reduction in ("mean", "sum", "none")
    ],
    *[
        OpInfo(f"cross_entropy_ignore_index_{reduction}",
               lambda ns, a, r=reduction: ns.F.cross_entropy(a, ns.const(TARGET_IGNORED),
                                                             reduction=r),
               LOGITS)
        for reduction in ("mean", "sum", "none")
    ],
    OpInfo("cross_entropy_custom_ignore_index", lambda ns, a: ns.F.cross_entropy(
        a, ns.const(TARGET_REPEATED), ignore_index=2), LOGITS),
    OpInfo("cross_entropy_unbatched",
           lambda ns, a: ns.F.cross_entropy(a, ns.const(np.array(3))), (((5,),),)),
    OpInfo("nll_loss", lambda ns, a: ns.F.nll_loss(a.log_softmax(-1), ns.const(TARGET)), LOGITS),
    OpInfo("nll_loss_raw_sum", lambda ns, a: ns.F.nll_loss(
        a, ns.const(TARGET_IGNORED), reduction="sum"), LOGITS),
    *[
        OpInfo(f"mse_loss_{reduction}",
               lambda ns, a, b, r=reduction: ns.F.mse_loss(a, b, reduction=r),
               (((3, 4), (3, 4)),))
        for reduction in ("mean", "sum", "none")
    ],
    *[
        OpInfo(f"bce_with_logits_{reduction}",
               lambda ns, a, y, r=reduction: ns.F.binary_cross_entropy_with_logits(
                   a * 3.0, y, reduction=r),
               (((3, 4), (3, 4)),), (normal, probability))
        for reduction in ("mean", "sum", "none")
    ],
    OpInfo("bce_with_logits_pos_weight", lambda ns, a, y: ns.F.binary_cross_entropy_with_logits(
        a * 3.0, y, pos_weight=ns.const(np.array([0.5, 1.0, 2.0, 3.0]), a)),
        (((3, 4), (3, 4)),), (normal, probability)),
    OpInfo("embedding", lambda ns, w: ns.F.embedding(ns.const(TOKENS), w), (((5, 3),),)),
    # padding_idx stops the gradient of the padding row although the forward reads it:
    # checked against PyTorch as is, and gradchecked with the padding positions masked out
    OpInfo("embedding_padding_idx",
           lambda ns, w: ns.F.embedding(ns.const(TOKENS), w, padding_idx=1), (((5, 3),),),
           gradcheck=False),
    OpInfo("embedding_padding_idx_masked",
           lambda ns, w: ns.F.embedding(ns.const(TOKENS), w, padding_idx=1)
           * ns.const((TOKENS != 1)[..., None].astype(float), w),
           (((5, 3),),)),
    # ---- dropout: p=0 and eval mode are the identity; a seeded mask is the same in every
    # evaluation because fn re-seeds before drawing it
    OpInfo("dropout_p0", lambda ns, a: ns.F.dropout(a, 0.0), UNARY),
    OpInfo("dropout_eval", lambda ns, a: ns.F.dropout(a, 0.5, training=False), UNARY),
    OpInfo("dropout_seeded_mask",
           lambda ns, a: (ns.manual_seed(1234), ns.F.dropout(a, 0.5))[1], MATRIX, torch=False),
    # ---- a small composite: an Elman step, as a cell writes it
    OpInfo("rnn_cell_step", lambda ns, x, h, w_ih, w_hh, b: (x @ w_ih.T + h @ w_hh.T + b).tanh(),
           (((2, 3), (2, 4), (4, 3), (4, 4), (4,)),)),
]


def shape_id(shapes) -> str:
    return "&".join("x".join(map(str, shape)) or "scalar" for shape in shapes)


def op_cases(ops):
    """pytest params (op, shapes), one per op and shape case, with readable ids."""
    return [pytest.param(op, shapes, id=f"{op.name}[{shape_id(shapes)}]")
            for op in ops for shapes in op.shapes]


def make_arrays(op: OpInfo, shapes, seed: int = 0) -> list[np.ndarray]:
    """float64 inputs for one case, drawn from the op's domain."""
    rng = np.random.default_rng(seed)
    return [np.asarray(op.domain_for(i)(rng, shape, i), dtype=np.float64)
            for i, shape in enumerate(shapes)]


def as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# --------------------------------------------------------------------------- table tests


def test_table_names_are_unique():
    names = [op.name for op in OPS]
    assert len(names) == len(set(names))


def _graph_op_names(outputs) -> set[str]:
    """Class names of every op node reachable from the outputs (before backward)."""
    seen, names, stack = set(), set(), [t._node for t in outputs if t._node is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        stack.extend(t._node for t in node.inputs if t._node is not None)
    return names


def test_table_covers_every_exported_op():
    """Every differentiable Function subclass exported by tinygrad_rnn.ops appears in some
    table graph (masks and comparisons are never graph nodes: tests/ops/test_masks.py)."""
    exported = {name for name in dir(tg.ops)
                if isinstance(getattr(tg.ops, name), type)
                and issubclass(getattr(tg.ops, name), tg.ops.Function)
                and getattr(tg.ops, name) is not tg.ops.Function
                and getattr(tg.ops, name).differentiable}
    used = set()
    for op in OPS:
        for shapes in op.shapes:
            inputs = [tg.Tensor(a, requires_grad=True) for a in make_arrays(op, shapes)]
            used |= _graph_op_names(as_tuple(op.fn(TG, *inputs)))
    assert exported - used == set()


@pytest.mark.parametrize("op, shapes", op_cases([op for op in OPS if op.gradcheck]))
def test_gradcheck(op, shapes, device):
    inputs = [tg.Tensor(a, requires_grad=True, device=device) for a in make_arrays(op, shapes)]
    assert tg.gradcheck(lambda *xs: op.fn(TG, *xs), inputs)


@pytest.mark.parametrize("op, shapes", op_cases(OPS))
def test_float32_in_float32_out(op, shapes, device):
    """float32 inputs (with Python scalar and NumPy operands) give float32 outputs and grads."""
    inputs = [tg.Tensor(a.astype(np.float32), requires_grad=True, device=device)
              for a in make_arrays(op, shapes)]
    outputs = as_tuple(op.fn(TG, *inputs))
    for k, out in enumerate(outputs):
        assert out.dtype == np.float32, f"output {k} is {out.dtype}"
        assert out.device == device
    loss = None
    for out in outputs:
        loss = out.sum() if loss is None else loss + out.sum()
    assert loss.dtype == np.float32
    loss.backward()
    for i, t in enumerate(inputs):
        assert t.grad is not None, f"input {i} got no gradient"
        assert t.grad.dtype == np.float32, f"input {i} grad is {t.grad.dtype}"
        assert t.grad.shape == t.shape
        assert np.isfinite(t.grad.numpy()).all()


@pytest.mark.parametrize("op, shapes", op_cases(OPS))
def test_no_grad_records_nothing(op, shapes):
    """Under no_grad the same forward values come out, with no graph attached."""
    arrays = make_arrays(op, shapes)
    expected = as_tuple(op.fn(TG, *[tg.Tensor(a, requires_grad=True) for a in arrays]))
    with tg.no_grad():
        outputs = as_tuple(op.fn(TG, *[tg.Tensor(a, requires_grad=True) for a in arrays]))
    for out, ref in zip(outputs, expected, strict=True):
        assert not out.requires_grad or out.is_leaf  # identity ops may return their input
        np.testing.assert_array_equal(out.numpy(), ref.numpy())


# --------------------------------------------------------------------------- fuzzing
# Broadcast-compatible shape pairs for the binary ops; forward against NumPy, gradients of
# sum(op(a, b)) against the closed forms summed back to each input's shape.


def sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Reference un-broadcast, written independently of the engine's."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


BINARY_REFERENCE = {
    # name: (op on tensors, numpy forward, d/da, d/db) of the elementwise value
    "add": (lambda a, b: a + b, np.add, lambda a, b: np.ones_like(a + b),
            lambda a, b: np.ones_like(a + b)),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b: np.ones_like(a + b),
            lambda a, b: -np.ones_like(a + b)),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b: b + 0 * a, lambda a, b: a + 0 * b),
    "div": (lambda a, b: a / b, np.divide, lambda a, b: 1 / b + 0 * a,
            lambda a, b: -a / b**2),
    "maximum": (tg.maximum, np.maximum, lambda a, b: (a > b) + 0.0 * b,
                lambda a, b: (b > a) + 0.0 * a),
    "minimum": (tg.minimum, np.minimum, lambda a, b: (a < b) + 0.0 * b,
                lambda a, b: (b < a) + 0.0 * a),
}

shape_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                max_side=3)


@pytest.mark.parametrize("name", sorted(BINARY_REFERENCE))
@settings(max_examples=30, deadline=None)
@given(shapes=shape_pairs, seed=st.integers(0, 2**16))
def test_binary_broadcasting_fuzz(name, shapes, seed):
    op, forward, d_a, d_b = BINARY_REFERENCE[name]
    shape_a, shape_b = shapes.input_shapes
    rng = np.random.default_rng(seed)
    a = distinct(rng, shape_a, 0)
    b = nonzero(rng, shape_b, 1) if name == "div" else distinct(rng, shape_b, 1)
    ta, tb = tg.Tensor(a, requires_grad=True), tg.Tensor(b, requires_grad=True)
    out = op(ta, tb)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.numpy(), forward(a, b), rtol=1e-12)
    out.sum().backward()
    assert ta.grad.shape == shape_a and tb.grad.shape == shape_b
    np.testing.assert_allclose(ta.grad.numpy(), sum_to_shape(d_a(a, b), shape_a), rtol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), sum_to_shape(d_b(a, b), shape_b), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=3),
       seed=st.integers(0, 2**16))
def test_where_broadcasting_fuzz(shapes, seed):
    shape_cond, shape_a, shape_b = shapes.input_shapes
    rng = np.random.default_rng(seed)
    cond = rng.random(shape_cond) < 0.5
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ta, tb = tg.Tensor(a, requires_grad=True), tg.Tensor(b, requires_grad=True)
    out = tg.where(cond, ta, tb)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a, b))
    out.sum().backward()
    full = np.ones(shapes.result_shape)
    assert ta.grad.shape == shape_a and tb.grad.shape == shape_b
    np.testing.assert_array_equal(ta.grad.numpy(), sum_to_shape(np.where(cond, full, 0), shape_a))
    np.testing.assert_array_equal(tb.grad.numpy(), sum_to_shape(np.where(cond, 0, full), shape_b))
