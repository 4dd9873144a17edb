"""tg.scan: a step function recorded once, replayed over T steps as one graph node.

    final_carry, ys = scan(step, init, xs)        # step(carry, x) -> (new_carry, y)

means, as jax.lax.scan,

    carry = init
    for t in range(T):
        carry, y = step(carry, xs[t])
        ys.append(y)
    return carry, stack(ys)

and that Python loop is exactly what the composed path of the recurrent layers runs. Run that
way, every step records its ops in the graph and `backward()` walks T copies of the step:
backpropagation through time, derived from the graph, but at the price of a Tensor, a graph
node and the engine's bookkeeping for every op of every step.

`scan` instead calls the step on Tensors once (twice, to check it), with a recorder in the
engine that notes each op it applies: its class, its settings and which values it read.
That list is the *tape*. The tape is then replayed for all T steps on raw arrays, as one
node of the graph:

* forward, step by step, each op's own `forward`; what an op keeps for its backward (its
  instance attributes) is kept per step by the scan node;
* backward, from step T-1 down to 0, each op's own `backward` in reverse order, with the
  gradient of the carry handed from step t+1 to step t. No derivative is written here.

Checks, broadcasting bookkeeping and ordering are settled once, when the tape is made. Ops
that do not depend on the carry leave the loop: those on tensors from outside the step
alone (a weight's transpose) run once; those on the step's x and such tensors run on many
steps at once, a chunk of 16 steps at a time (a step's `x @ W` becomes one big matmul per
chunk), when the op has a batched form (elementwise ops, matmul, reshapes, reductions over
given axes, ...). Only a chunk's worth of their values and gradients exists at any time.

Tensors the step reads by closure (weights) get their gradients like any other use. Ops that
draw random numbers (dropout, zoneout) are called again at every step, in the loop's order,
so the same seed gives the same numbers as the Python loop.

remat=True keeps only each step's carry (and random masks) and recomputes a step's
internals during backward: memory O(T x carry) plus one chunk, for about one more forward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from . import backend
from . import tensor as _engine
from .ops import (
    Abs,
    Add,
    Clip,
    Compare,
    Concat,
    Div,
    Embedding,
    Exp,
    Function,
    LayerNorm,
    Linear,
    Log,
    LogSoftmax,
    LogSumExp,
    MatMul,
    Max,
    Maximum,
    Mean,
    Min,
    Minimum,
    Mul,
    Neg,
    Permute,
    Pow,
    PowScalar,
    Relu,
    Reshape,
    Sigmoid,
    Softmax,
    Softplus,
    Split,
    Sqrt,
    Stack,
    Sub,
    Sum,
    Tanh,
    Unbind,
    Var,
    Where,
)
from .ops.fused import _steps
from .tensor import Tensor, _unbroadcast, is_grad_enabled, no_grad, stack

CARRY, BATCH, CONST = "carry", "batch", "const"  # where a slot's value comes from (see Tape)
# Steps per chunk. The ops that leave the loop (x @ W_ih) run over a chunk of steps at once,
# so that only a chunk's worth of their values and gradients exists at any time; the weight
# gradient of h_t @ W is one matmul per chunk (h_t and dy_t stacked). At least 16 steps, for
# BLAS to run at full speed; more for a small carry (up to 2**18 carry elements per chunk,
# at most 128 steps), where a chunk's own calls would otherwise weigh on tiny steps.
_CHUNK, _CHUNK_MAX, _CHUNK_ELEMENTS = 16, 128, 2**18


class ScanError(RuntimeError):
    """The step function cannot be recorded and replayed (the message says why)."""


# --------------------------------------------------------------------------- recording


@dataclass
class TapeEntry:
    """One op of the tape: the op's class and settings, the slots it reads and writes."""

    cls: type
    params: dict
    ins: list
    outs: list
    multi: bool
    fn: Function | None = None  # the op object that serves every step
    kind: str = CARRY  # CARRY: in the loop; BATCH: on a chunk of steps at once; CONST: once
    needs: tuple = ()  # per input: does its slot need a gradient?


@dataclass
class Tape:
    """The recorded step. Every value the step touches is a numbered slot:

    * slots of the carry and of x (the step's arguments),
    * CONST slots: tensors from outside the step (weights) and constants made inside it,
    * the outputs of the recorded ops, in order.
    """

    entries: list = field(default_factory=list)
    shapes: list = field(default_factory=list)  # per slot
    dtypes: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    consts: list = field(default_factory=list)  # (slot, Tensor)
    carry_in: list = field(default_factory=list)
    x_in: list = field(default_factory=list)
    carry_out: list = field(default_factory=list)
    y_out: list = field(default_factory=list)
    y_is_tuple: bool = False
    need: list = field(default_factory=list)  # per slot: does it need a gradient? (_plan)


class _Recorder:
    """Set as the engine's tracer while the step runs: each op applied is noted in the tape."""

    def __init__(self):
        self.tape = Tape()
        self.slots: dict[int, int] = {}  # id(Tensor) -> slot
        self.alive: list[Tensor] = []  # keeps ids unique while recording

    def add(self, t: Tensor, kind: str) -> int:
        slot = len(self.tape.shapes)
        self.slots[id(t)] = slot
        self.alive.append(t)
        self.tape.shapes.append(t.data.shape)
        self.tape.dtypes.append(t.data.dtype)
        self.tape.kinds.append(kind)
        return slot

    def slot_of(self, t: Tensor) -> int:
        slot = self.slots.get(id(t))
        if slot is None:  # from outside the step, or made inside it without an op
            slot = self.add(t, CONST)
            self.tape.consts.append((slot, t))
        return slot

    def refuse(self, t: Tensor, what: str) -> None:
        """Called by the Tensor methods that leave the graph (.item(), .numpy(), bool())."""
        slot = self.slots.get(id(t))
        if slot is not None and self.tape.kinds[slot] != CONST:
            raise ScanError(
                f"scan: the step calls {what} on a value computed from the carry or x; a "
                "recorded step is replayed on arrays, so it cannot branch on values or take "
                "them out of Tensor ops (use tg.where for a choice made per element)")

    def record(self, fn_cls, params, inputs, result) -> None:
        ins = [self.slot_of(t) for t in inputs]
        multi = isinstance(result, tuple)
        # CONST here means "computed from constants only"; _plan decides where it runs
        varies = fn_cls.random or any(self.tape.kinds[s] != CONST for s in ins)
        kind = CARRY if varies else CONST
        outs = [self.add(t, kind) for t in (result if multi else (result,))]
        self.tape.entries.append(TapeEntry(fn_cls, dict(params), ins, outs, multi))


def _as_tuple(value, what: str) -> tuple:
    """A Tensor or a tuple/list of Tensors -> a tuple of Tensors (checked)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            where = f"{what}[{i}]" if isinstance(value, (tuple, list)) else what
            raise TypeError(f"scan: {where} must be a Tensor, got {type(t).__name__}")
    return items


def _record(step, carry_arrays, x_arrays, structure) -> tuple[Tape, list]:
    """Run the step once on Tensors over the given arrays, recording every op it applies.
    Returns the tape and the new carry's arrays."""
    carry_is_tuple, xs_kind = structure
    recorder = _Recorder()
    carry = [Tensor._wrap(a) for a in carry_arrays]
    xs = [Tensor._wrap(a) for a in x_arrays]
    recorder.tape.carry_in = [recorder.add(t, CARRY) for t in carry]
    recorder.tape.x_in = [recorder.add(t, BATCH) for t in xs]
    step_carry = tuple(carry) if carry_is_tuple else carry[0]
    step_x = None if xs_kind is None else (tuple(xs) if xs_kind == "tuple" else xs[0])
    saved_generators = dict(backend._generators)
    backend._generators.clear()  # the recording draws from throwaway generators
    _engine._tracer = recorder
    try:
        with no_grad():
            out = step(step_carry, step_x)
    finally:
        _engine._tracer = None
        backend._generators.clear()
        backend._generators.update(saved_generators)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ScanError(f"scan: step must return (new_carry, y), got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, tuple) else ""))
    new_carry, y = out
    if carry_is_tuple != isinstance(new_carry, (tuple, list)):
        raise ScanError("scan: step must return a carry of the same structure as init "
                        f"({'a tuple' if carry_is_tuple else 'a Tensor'}), got "
                        f"{type(new_carry).__name__}")
    new_carry = _as_tuple(new_carry, "new_carry")
    if len(new_carry) != len(carry):
        raise ScanError(f"scan: step returned {len(new_carry)} carry tensors, init has "
                        f"{len(carry)}")
    for i, (old, new) in enumerate(zip(carry, new_carry)):
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ScanError(
                f"scan: step changes carry[{i}] from shape {old.shape}, dtype {old.dtype} to "
                f"shape {new.shape}, dtype {new.dtype}; a carry must keep its shape and dtype")
    recorder.tape.carry_out = [recorder.slot_of(t) for t in new_carry]
    if y is not None:
        recorder.tape.y_out = [recorder.slot_of(t) for t in _as_tuple(y, "y")]
    recorder.tape.y_is_tuple = isinstance(y, (tuple, list))
    _check_settings(recorder.tape)
    return recorder.tape, [t.data for t in new_carry]


def _check_settings(tape: Tape) -> None:
    """An array among an op's settings would be frozen at its first value: refuse it."""
    for k, e in enumerate(tape.entries):
        for name, value in e.params.items():
            items = value if isinstance(value, tuple) else (value,)
            if any(hasattr(item, "shape") and hasattr(item, "dtype") for item in items):
                raise ScanError(
                    f"scan: op {k} of the step ({e.cls.__name__}) takes an array as its "
                    f"setting '{name}' (an index or mask made from an array); a replayed "
                    "step would reuse its first value. Index with slices or integers, or pass "
                    "the array through xs and use tg.where / embedding.")


def _same_value(a, b) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(backend.get_array_module(a).array_equal(a, b))


def _check_same(first: Tape, second: Tape) -> None:
    """Two recordings at consecutive steps must be the same program on the same constants."""
    if len(first.entries) != len(second.entries):
        raise ScanError(
            f"scan: the step applied {len(first.entries)} ops at its first step and "
            f"{len(second.entries)} at its second; Python control flow that depends on values "
            "cannot be replayed (use tg.where)")
    const_of = [dict(tape.consts) for tape in (first, second)]
    for k, (a, b) in enumerate(zip(first.entries, second.entries)):
        same = a.cls is b.cls and a.ins == b.ins and a.outs == b.outs
        if same:
            try:
                same = bool(a.params == b.params)
            except ValueError:
                same = False
        if not same:
            raise ScanError(
                f"scan: op {k} of the step differs between two steps ({a.cls.__name__} "
                f"{a.params} then {b.cls.__name__} {b.params}); Python control flow or "
                "settings that depend on values cannot be replayed")
        for slot in a.ins:
            t0, t1 = const_of[0].get(slot), const_of[1].get(slot)
            if t0 is None or t0 is t1:
                continue
            if not _same_value(t0.data, t1.data):
                raise ScanError(
                    f"scan: op {k} of the step ({a.cls.__name__}) reads a tensor that is not "
                    "the carry, x, an op's result or a tensor from outside the step, and its "
                    "value changes from step to step (made from raw arrays, e.g. with .data, "
                    ".numpy() or a Python value that changes). A replayed step would reuse "
                    "its first value: compute it with Tensor ops, or pass it in xs.")


# --------------------------------------------------------------------------- planning

_ELEMENTWISE = (Add, Sub, Mul, Div, Neg, Pow, PowScalar, Exp, Log, Sqrt, Abs, Tanh, Sigmoid,
                Relu, Softplus, Clip, Maximum, Minimum, Where, Compare, _engine._Cast)
_AXIS_OPS = (Sum, Mean, Max, Min, Var, LogSumExp, Softmax, LogSoftmax, Split, Unbind,
             Concat, Stack)


def _shift_axes(axis):
    """An axis setting of a per-step op, for the same op with a leading T axis."""
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        return tuple(a if a < 0 else a + 1 for a in axis)
    return axis if axis < 0 else axis + 1


def _batched_params(e: TapeEntry, tape: Tape, kinds: list):
    """Settings of e's op applied to all T steps at once (inputs of kind BATCH get a leading
    T axis), or None when the op has no such form here."""
    cls, params = e.cls, e.params
    batch = [kinds[s] == BATCH for s in e.ins]
    ndims = [len(tape.shapes[s]) for s in e.ins]
    out_ndim = len(tape.shapes[e.outs[0]])
    if issubclass(cls, _ELEMENTWISE):
        ok = all(n == out_ndim if b else n <= out_ndim for b, n in zip(batch, ndims))
        return params if ok else None
    if cls is MatMul:
        (ba, bb), (na, nb) = batch, ndims
        if ba and bb:
            return params if na == nb and na >= 2 else None
        if ba:
            return params if nb <= 2 else None
        return params if nb >= 2 and na <= 2 else None
    if cls is Reshape:
        return {"shape": (-1,) + tuple(tape.shapes[e.outs[0]])}
    if cls is Permute:
        return {"axes": (0,) + tuple(a + 1 for a in params["axes"])}
    if cls is Linear:  # x of any leading shape, by constant weights
        return params if batch[0] and not any(batch[1:]) else None
    if cls is LayerNorm:  # x over all steps; weight and bias, if any, stay as they are
        ok = not any(batch[1:])
        return {**params, "axes": _shift_axes(params["axes"])} if ok else None
    if cls is Embedding:
        return params if batch == [False, True] else None
    if issubclass(cls, _AXIS_OPS):
        if cls in (Concat, Stack) and not all(batch):
            return None
        if "axis" in params and params["axis"] is None:
            return None
        return {**params, "axis": _shift_axes(params.get("axis", 0))}
    return None


def _plan(tape: Tape, xp, grad_slots: set) -> None:
    """Decide where each op runs (loop, on chunks of steps, once) and which inputs need a
    gradient; make the op objects."""
    kinds = list(tape.kinds)
    for e in tape.entries:
        in_kinds = {kinds[s] for s in e.ins}
        if CARRY in in_kinds or e.cls.random:
            e.kind = CARRY
        elif BATCH in in_kinds:
            params = _batched_params(e, tape, kinds)
            e.kind = CARRY if params is None else BATCH
            if params is not None:
                e.params = params
        else:
            e.kind = CONST
        for s in e.outs:
            kinds[s] = e.kind
        e.fn = e.cls(**e.params)
        e.fn.xp = xp
    tape.kinds = kinds
    # which slots need a gradient: those on a path from a slot in grad_slots
    need = [False] * len(kinds)
    for s in grad_slots:
        need[s] = True
    changed = True
    while changed:  # the carry loops back: repeat until nothing new needs a gradient
        changed = False
        for e in tape.entries:
            if e.cls.differentiable and any(need[s] for s in e.ins):
                for s in e.outs:
                    if not need[s]:
                        need[s] = changed = True
        for s_in, s_out in zip(tape.carry_in, tape.carry_out):
            if need[s_out] and not need[s_in]:
                need[s_in] = changed = True
    for e in tape.entries:
        e.needs = tuple(need[s] and e.cls.differentiable for s in e.ins)
        e.fn.needs_input_grad = e.needs  # ops may skip gradients nobody needs (MatMul)
    tape.need = need


# --------------------------------------------------------------------------- the node


class _Scan(Function):
    """The replayed tape as one graph node.

    Inputs: the initial carry tensors, the xs (T, ...), the tape's constants.
    Outputs: the final carry tensors, then the stacked ys (T, ...).

    A step of the loop is straight-line Python written from the tape once per call (see
    `_compile_forward` / `_compile_backward`; the texts stay in `forward_source` and
    `backward_source`): the ops' own forward and backward called on local variables, so
    that a step costs little more than its ops' own calls.
    """

    saves_inputs = True  # it keeps the constants (weights) for its backward

    def __init__(self, tape: Tape, length: int, reverse: bool, remat: bool, save: bool):
        self.tape, self.length, self.reverse, self.remat = tape, length, reverse, remat
        self.save = save  # whether a backward will follow (grad enabled, something needs it)

    def _chunks(self) -> list:
        """The steps in the order they run, cut into chunks of consecutive steps."""
        order = list(_steps(self.length, self.reverse))
        carry = sum(int(np.prod(self.tape.shapes[s])) for s in self.tape.carry_in)
        size = min(max(_CHUNK, _CHUNK_ELEMENTS // max(carry, 1)), _CHUNK_MAX)
        return [order[i:i + size] for i in range(0, self.length, size)]

    # ----------------------------------------------------------------- forward

    def forward(self, *arrays):
        tape, xp = self.tape, self.xp
        n_carry, n_x = len(tape.carry_in), len(tape.x_in)
        vals = [None] * len(tape.kinds)
        for (slot, _), a in zip(tape.consts, arrays[n_carry + n_x:]):
            vals[slot] = a
        self.xs = dict(zip(tape.x_in, arrays[n_carry:n_carry + n_x]))  # whole (T, ...) arrays
        for e in tape.entries:  # the ops on constants alone run here, once
            if e.kind == CONST:
                _run(e, vals)
        self.vals = vals
        self.loop = [e for e in tape.entries if e.kind == CARRY]
        self.batch = [e for e in tape.entries if e.kind == BATCH]
        self.layouts = _matmul_layouts(self.loop, tape, vals, xp)
        read = {s for e in self.loop for s in e.ins} | set(tape.carry_out) | set(tape.y_out)
        self.per_step = [s for s in sorted(read) if tape.kinds[s] == BATCH]
        self.current = [None] * len(self.per_step)  # their values over the chunk under way
        ys = [xp.empty((self.length,) + tape.shapes[s], dtype=tape.dtypes[s])
              for s in tape.y_out]
        mode = "record" if self.remat else ("keep" if self.save else None)
        run = self._compile_forward(mode, ys)
        carry = tuple(arrays[:n_carry])
        self.saved = [None] * self.length  # per step: what the loop's ops kept (or the carry)
        chunks = self._chunks()
        self.chunk_saved = [None] * len(chunks)  # per chunk: what the batched ops kept
        for c, steps in enumerate(chunks):
            t0 = min(steps)
            self._run_batch(t0, len(steps))
            if self.save and not self.remat:
                self.chunk_saved[c] = [e.fn.__dict__.copy() for e in self.batch]
            carry = run(steps, t0, self.saved, *carry)
        self.current[:] = [None] * len(self.per_step)
        # a carry that is also a y lives in ys (see _compile_forward): the final carry gets
        # memory of its own
        carry = tuple(c.copy() if s in tape.y_out else c for c, s in zip(carry, tape.carry_out))
        if not self.save:
            self.tape = self.saved = self.vals = self.layouts = self.xs = None
            self.chunk_saved = self.loop = self.batch = None
        elif not self.remat:
            self.xs = None  # backward reads what the ops kept, not the xs
        return carry + tuple(ys)

    def _run_batch(self, t0: int, n: int) -> None:
        """Run the ops that left the loop on steps t0 .. t0+n-1 at once; the loop then reads
        their values from `self.current`."""
        vals = self.vals
        for s, whole in self.xs.items():
            vals[s] = whole[t0:t0 + n]
        for e in self.batch:
            _run(e, vals)
        self.current[:] = [vals[s] for s in self.per_step]
        for s, kind in enumerate(self.tape.kinds):
            if kind == BATCH:
                vals[s] = None

    def _step_lines(self, env: dict, masks: str | None, indent: str) -> list:
        """The loop's ops for one step as lines of Python: op k's forward is env's op{k};
        values are locals v{slot}, constants k{slot}, this chunk's per-step values cur{j}[i].
        masks="record": the random ops' outputs are noted; "reuse": read back from masks."""
        lines = []
        for j, s in enumerate(self.per_step):
            lines.append(f"{indent}v{s} = cur[{j}][i]")
        for k, e in enumerate(self.loop):
            outs = ", ".join(f"v{o}" for o in e.outs) + ("," if e.multi and len(e.outs) == 1
                                                          else "")
            if e.cls.random and masks == "reuse":
                lines.append(f"{indent}{outs} = masks[{k}]  # {e.cls.__name__}, as drawn")
                continue
            env[f"op{k}"] = e.fn.forward
            args = ", ".join(self._name(env, s) for s in e.ins)
            lines.append(f"{indent}{outs} = op{k}({args})  # {e.cls.__name__}")
        return lines

    def _name(self, env: dict, s: int) -> str:
        """The name of slot s in the written-out code: a constant's value is put in env."""
        if self.tape.kinds[s] == CONST:
            env[f"k{s}"] = self.vals[s]
            return f"k{s}"
        return f"v{s}"

    def _kept_tuple(self, env: dict) -> str:
        """An expression: the tuple of what each loop op keeps for its backward after a step
        (a copy of its attributes; None for ops that need no gradient)."""
        items = []
        for k, e in enumerate(self.loop):
            env[f"fn{k}"] = e.fn  # (backward sets its __dict__ to a step's kept one)
            keeps = any(e.needs) and not e.cls.stores_shapes_only
            items.append(f"fn{k}.__dict__.copy()" if keeps else "None")
        return "(" + "".join(f"{item}, " for item in items) + ")"

    def _compile_forward(self, mode: str | None, ys: list):
        """The forward loop over a chunk of steps as straight-line Python (written once per
        call): run(steps, t0, saved, *carry) -> carry after the chunk. mode "keep": saved[t]
        = what the loop's ops keep for backward; "record" (remat): saved[t] = (the step's
        carry, its random masks); None: nothing (no backward will follow). A carry that is
        also a y (an LSTM's h) is read back from ys by the next step: one array, not two.
        `self.forward_source` holds the text, for the curious."""
        tape, env = self.tape, {"cur": self.current}
        carry = "".join(f"v{s}, " for s in tape.carry_in)
        lines = [f"def run(steps, t0, saved, {carry}):", "    for t in steps:",
                 "        i = t - t0"]
        if mode == "record":
            lines.append(f"        before = ({carry})")
        lines += self._step_lines(env, "record" if mode == "record" else None, "        ")
        if mode == "keep":
            lines.append(f"        saved[t] = {self._kept_tuple(env)}")
        elif mode == "record":
            masks = ", ".join(f"{k}: v{e.outs[0]}" for k, e in enumerate(self.loop)
                              if e.cls.random)
            lines.append(f"        saved[t] = (before, {{{masks}}})")
        for j, s in enumerate(tape.y_out):
            env[f"ys{j}"] = ys[j]
            lines.append(f"        ys{j}[t] = {self._name(env, s)}")
        new_carry = [f"ys{tape.y_out.index(s)}[t]" if s in tape.y_out else self._name(env, s)
                     for s in tape.carry_out]
        lines += [f"        {carry}= {', '.join(new_carry)},", f"    return ({carry})"]
        self.forward_source = "\n".join(lines)
        return _define(self.forward_source, env, "run")

    def _compile_recompute(self):
        """remat's recomputation of one step: recompute(i, masks, *carry) -> what the loop's
        ops keep (as in "keep" mode), the random ops' outputs read back from masks."""
        env = {"cur": self.current}
        carry = "".join(f"v{s}, " for s in self.tape.carry_in)
        lines = [f"def recompute(i, masks, {carry}):"]
        lines += self._step_lines(env, "reuse", "    ")
        lines.append(f"    return {self._kept_tuple(env)}")
        return _define("\n".join(lines), env, "recompute")

    # ----------------------------------------------------------------- backward

    def backward(self, grads):
        tape, xp = self.tape, self.xp
        n_carry, shapes, dtypes = len(tape.carry_in), tape.shapes, tape.dtypes
        g_carry = tuple(grads[:n_carry])
        g_ys = grads[n_carry:]
        g_x = {}  # x slot -> (T, ...) gradient
        g_const = {}  # slot -> gradient summed over the steps
        deferred = {}  # k -> ([a_t], [dy_t]) of a matmul by a constant (see below)
        for k, e in enumerate(self.loop):
            if _defers_weight_grad(e, tape):
                # h_t @ W for every t: W's gradient, sum_t h_t^T dy_t, is one matmul per
                # chunk of steps after their backward, not T small ones and T additions
                deferred[k] = ([], [])
        back, batch_slots, const_sites = self._compile_backward(
            deferred, [g is not None for g in g_ys])
        recompute = self._compile_recompute() if self.remat else None
        free = not (_engine.retaining_graph or self.remat)
        g_ys = [g for g in g_ys if g is not None]
        for c, steps in reversed(list(enumerate(self._chunks()))):
            t0, n = min(steps), len(steps)
            if self.remat:
                self._run_batch(t0, n)
            per_step = [[None] * n for _ in batch_slots]  # gradients at each step of the chunk
            g_carry, sums = back(steps[::-1], t0, self.saved, free, recompute, g_ys, per_step,
                                 *g_carry)
            g_chunk = {}  # slot -> (n, ...) gradient of a value of the ops that left the loop
            for s, grads in zip(batch_slots, per_step):
                if any(g is not None for g in grads):
                    zero = xp.zeros(shapes[s], dtype=dtypes[s])
                    g_chunk[s] = xp.stack([zero if g is None else g for g in grads])
            for s, total in zip(const_sites, sums):
                if total is not None:
                    _accumulate(g_const, s, total, shapes[s])
            for k, stash in deferred.items():
                self._flush_weight_grad(k, stash, g_const)
            if not self.remat:
                for e, attrs in zip(self.batch, self.chunk_saved[c]):
                    e.fn.__dict__.update(attrs)
                if free:
                    self.chunk_saved[c] = None
            self._backward_outside_loop(self.batch, g_chunk, g_const, n)
            for s in tape.x_in:
                if g_chunk.get(s) is not None:
                    if s not in g_x:
                        g_x[s] = xp.zeros((self.length,) + shapes[s], dtype=dtypes[s])
                    g_x[s][t0:t0 + n] = g_chunk[s]
        self.current[:] = [None] * len(self.per_step)
        for s, total in g_const.items():
            if total.shape != shapes[s]:
                g_const[s] = _unbroadcast(total, shapes[s])
        self._backward_outside_loop([e for e in tape.entries if e.kind == CONST], {},
                                    g_const)
        result = list(g_carry) + [g_x.get(s) for s in tape.x_in]
        result += [g_const.get(s) for s, _ in tape.consts]
        return tuple(result)

    def _compile_backward(self, deferred: dict, y_present: list):
        """The backward loop over a chunk of steps, in reverse, as straight-line Python:
        back(steps, t0, saved, free, recompute, g_ys, g_batch, *g_carry) -> (the gradient of
        the carry before the chunk, the constants' gradients summed over the chunk). Each
        op's saved attributes for the step are put back, then its own backward runs; the
        carry's gradient is handed from step t to step t-1. Per-step gradients of the values
        of ops that left the loop go into the lists g_batch[j][i]. `self.backward_source`
        holds the text. Returns (back, the slots of g_batch, the slot of each constant's
        sum)."""
        tape, shapes, dtypes, need = self.tape, self.tape.shapes, self.tape.dtypes, self.tape.need
        mixed = len({dtypes[s] for s in range(len(shapes)) if need[s]}) > 1
        env = {"unbroadcast": _unbroadcast}
        carry = [f"c{i}" for i in range(len(tape.carry_out))]
        batch_slots = [s for s in self.per_step if need[s]]
        ys = [j for j, present in enumerate(y_present) if present]
        lines = [f"def back(steps, t0, saved, free, recompute, g_ys, g_batch, "
                 f"{''.join(c + ', ' for c in carry)}):"]
        if ys:
            lines.append("    " + "".join(f"gy{j}, " for j in ys) + "= g_ys")
        if batch_slots:
            lines.append("    " + "".join(f"gb{s}, " for s in batch_slots) + "= g_batch")
        sites = []  # (name of the local sum, constant slot)
        body = []

        def gets(s, value):
            """Code adding `value` into the gradient of slot s."""
            if tape.kinds[s] == CONST:  # summed over the steps in place, in the broadcast
                name = f"sum{len(sites)}"  # shape, from a copy (value may be shared)
                sites.append((name, s))
                return [f"if {name} is None:", f"    {name} = {value}.copy()", "else:",
                        f"    {name} += {value}"]
            return [f"g{s} = {value} if g{s} is None else g{s} + {value}"]

        # the input gradients each op computes in the loop: a deferred matmul only its step
        # operand's (its weight's come once per chunk, see _flush_weight_grad)
        loop_needs = [(e.needs[0],) + (False,) * (len(e.ins) - 1) if k in deferred
                      else e.needs for k, e in enumerate(self.loop)]
        sources = [0] * len(shapes)  # per slot: how many gradients are added into it
        for s in tape.carry_out:
            sources[s] += 1
        for j, s in enumerate(tape.y_out):
            sources[s] += y_present[j]
        for e, needs in zip(self.loop, loop_needs):
            for s, n in zip(e.ins, needs):
                sources[s] += n
        slots = sorted({s for s in range(len(shapes)) if need[s] and tape.kinds[s] != CONST}
                       | set(tape.carry_in))
        body += [f"g{s} = None" for s in slots]
        for i, s in enumerate(tape.carry_out):
            if need[s]:
                body += [f"if c{i} is not None:"] + ["    " + x for x in gets(s, f"c{i}")]
        for j, s in enumerate(tape.y_out):
            if need[s] and y_present[j]:
                body += gets(s, f"gy{j}[t]")
        for k in range(len(self.loop) - 1, -1, -1):
            e, needs = self.loop[k], loop_needs[k]
            wanted = [(i, s) for i, (s, n) in enumerate(zip(e.ins, needs)) if n]
            if not wanted and k not in deferred:
                continue
            env[f"fn{k}"], env[f"op{k}"] = e.fn, e.fn.backward
            g_out = "[" + ", ".join(f"g{o}" for o in e.outs) + "]" if e.multi \
                else f"g{e.outs[0]}"
            present = " or ".join(f"g{o} is not None" for o in e.outs)
            restore = not e.cls.stores_shapes_only or k in deferred or k in self.layouts
            op_lines = [f"d = kept[{k}]"] if restore else []
            if k in self.layouts:
                env[f"layout{k}"] = self.layouts[k]
                op_lines.append(f"d['b'] = layout{k}")
            if k in deferred:
                env[f"needs{k}"] = needs
                env[f"stash_a{k}"], env[f"stash_dy{k}"] = (deferred[k][0].append,
                                                           deferred[k][1].append)
                op_lines += [f"d['needs_input_grad'] = needs{k}",
                             f"stash_a{k}(d['{_STEP_OPERAND[e.cls]}'])", f"stash_dy{k}({g_out})"]
            if restore:
                op_lines.append(f"fn{k}.__dict__ = d")
            if wanted:
                op_lines.append(f"r = op{k}({g_out})")
                if len(e.ins) == 1:  # its gradient may come alone or in a 1-tuple
                    op_lines.append("r = r if type(r) is tuple else (r,)")
            for i, s in wanted:
                exact = (issubclass(e.cls, _ELEMENTWISE) and shapes[s] == shapes[e.outs[0]]
                         or _by_constant_matrix(e, tape))  # gradients of the input's shape
                if exact and not mixed and tape.kinds[s] != CONST and sources[s] == 1:
                    op_lines.append(f"g{s} = r[{i}]")  # its only gradient, None or not
                    continue
                grad = [f"gi = r[{i}]"]
                if not exact and tape.kinds[s] != CONST:
                    env[f"shape{s}"] = shapes[s]
                    grad += [f"if gi.shape != shape{s}:", f"    gi = unbroadcast(gi, shape{s})"]
                if mixed:
                    env[f"dtype{s}"] = dtypes[s]
                    grad.append(f"gi = gi.astype(dtype{s}, copy=False)")
                grad += gets(s, "gi")
                op_lines += [f"if r[{i}] is not None:"] + ["    " + x for x in grad]
            body += [f"if {present}:  # {e.cls.__name__}"] + ["    " + x for x in op_lines]
        body += ["".join(f"c{i}, " for i in range(len(carry))) + "= "
                 + "".join(f"g{s}, " for s in tape.carry_in)] if carry else []
        body += [f"gb{s}[i] = g{s}" for s in batch_slots]
        lines += [f"    {name} = None" for name, _ in sites]
        lines += ["    for t in steps:", "        i = t - t0", "        kept = saved[t]",
                  "        if free:", "            saved[t] = None",
                  "        if recompute is not None:",
                  "            kept = recompute(i, kept[1], *kept[0])"]
        lines += ["        " + x for x in body]
        lines.append(f"    return ({''.join(c + ', ' for c in carry)}), ("
                     + "".join(f"{name}, " for name, _ in sites) + ")")
        self.backward_source = "\n".join(lines)
        return _define(self.backward_source, env, "back"), batch_slots, [s for _, s in sites]

    def _flush_weight_grad(self, k: int, stash: tuple, g_const: dict) -> None:
        """W's gradient (and b's, for Linear) from the stashed steps of loop op k (h_t @ W):
        the op's own backward, once, on those steps stacked; the stash is emptied."""
        a_list, dy_list = stash
        if not a_list:
            return
        e, xp = self.loop[k], self.xp
        fn = e.fn
        fn.__dict__ = dict(fn.__dict__)  # it is a step's kept dict, which a retained graph reuses
        setattr(fn, _STEP_OPERAND[e.cls], xp.concatenate(a_list))
        fn.needs_input_grad = (False,) + e.needs[1:]
        grads = fn.backward(xp.concatenate(dy_list))
        for slot, g, needed in zip(e.ins[1:], grads[1:], e.needs[1:]):
            if needed and g is not None:
                _accumulate(g_const, slot, g, self.tape.shapes[slot])
        a_list.clear()
        dy_list.clear()

    def _backward_outside_loop(self, entries: list, g_batch: dict, g_const: dict,
                               n: int = 0) -> None:
        """Backward of ops that left the loop, in reverse: those that ran over the n steps
        of a chunk at once (their gradients in g_batch, (n, ...)), or those on constants
        alone (W.T; gradients in g_const), after the loop."""
        tape = self.tape
        for e in reversed(entries):
            if not any(e.needs):
                continue
            store = g_batch if e.kind == BATCH else g_const
            g_out = [store.get(s) for s in e.outs]
            if all(x is None for x in g_out):
                continue
            in_grads = e.fn.backward(g_out if e.multi else g_out[0])
            if type(in_grads) is not tuple:
                in_grads = (in_grads,)
            for s, gi, needed in zip(e.ins, in_grads, e.needs):
                if gi is None or not needed:
                    continue
                batched = tape.kinds[s] == BATCH
                target = (n,) + tape.shapes[s] if batched else tape.shapes[s]
                if gi.shape != target:
                    gi = _unbroadcast(gi, target)
                if gi.dtype != tape.dtypes[s]:
                    gi = gi.astype(tape.dtypes[s])
                _accumulate(g_batch if batched else g_const, s, gi, target)


def _matmul_layouts(loop: list, tape: Tape, vals: list, xp) -> dict:
    """Matmuls of step values by a constant matrix W (h @ W_hh^T) read W in the layout BLAS
    is fastest with, made once per sequence: C-contiguous W for forward (h @ W), and a W
    whose transpose is C-contiguous for backward (dy @ W^T). Same values, so same numbers;
    returns {loop index: the backward layout}."""
    layouts = {}
    for k, e in enumerate(loop):
        if _by_constant_matrix(e, tape):
            w = vals[e.ins[1]] = xp.ascontiguousarray(vals[e.ins[1]])
            layouts[k] = xp.ascontiguousarray(w.T).T
    return layouts


def _by_constant_matrix(e: TapeEntry, tape: Tape) -> bool:
    """A 2-D matmul of a step value by a constant 2-D matrix (h @ W_hh^T)."""
    if e.cls is not MatMul:
        return False
    a, b = e.ins
    return (tape.kinds[a] != CONST and tape.kinds[b] == CONST
            and len(tape.shapes[a]) == 2 and len(tape.shapes[b]) == 2)


# the attribute in which a matmul by a constant keeps its per-step operand (h_t, x_t)
_STEP_OPERAND = {MatMul: "a", Linear: "x"}


def _defers_weight_grad(e: TapeEntry, tape: Tape) -> bool:
    """h_t @ W (or x_t W^T + b, Linear) in the loop, by constants whose gradient is needed:
    that gradient is summed over the steps by one matmul per chunk."""
    if e.cls is Linear:
        x, *weights = e.ins
        return (tape.kinds[x] != CONST and len(tape.shapes[x]) == 2
                and all(tape.kinds[w] == CONST for w in weights) and any(e.needs[1:]))
    return _by_constant_matrix(e, tape) and e.needs[1]


@functools.lru_cache(maxsize=256)
def _compiled(source: str):
    """Python's compilation of a written-out loop, kept: the same tape gives the same text
    at every call (a layer's every forward), and compiling it costs about 0.2 ms."""
    return compile(source, "<tg.scan>", "exec")


def _define(source: str, env: dict, name: str):
    """The function `name` that `source` defines, with env as its globals (the ops and the
    values it reads). Popped from env: the function's globals must not hold the function."""
    exec(_compiled(source), env)  # noqa: S102 - our own text, made from the tape
    return env.pop(name)


def _run(e: TapeEntry, vals: list) -> None:
    """Apply one entry's op to the values in its input slots (outside the loop)."""
    out = e.fn.forward(*[vals[s] for s in e.ins])
    if e.multi:
        for s, o in zip(e.outs, out):
            vals[s] = o
    else:
        vals[e.outs[0]] = out


def _add_into(total, g, shape):
    """total + g, where either may be None; gradients of different broadcast shapes are first
    summed to `shape` (a constant's gradient is kept in its broadcast shape until then)."""
    if total is None:
        return g
    if g is None:
        return total
    if total.shape == g.shape:
        return total + g
    return _unbroadcast(total, shape) + _unbroadcast(g, shape)


def _accumulate(store: dict, slot: int, g, shape: tuple) -> None:
    """store[slot] = store[slot] + g (a new array: g, and so the total, may be shared with
    other slots, so nothing is added in place). Gradients of different broadcast shapes are
    first summed to the slot's `shape`."""
    store[slot] = _add_into(store.get(slot), g, shape)


# --------------------------------------------------------------------------- the function


def _prepare(step, init, xs, length, reverse):
    """Check scan's arguments, record the step (twice) and plan the tape."""
    carry_is_tuple = isinstance(init, (tuple, list))
    init = _as_tuple(init, "init")
    if not init:
        raise ValueError("scan: init must hold at least one Tensor, got an empty tuple")
    xs_kind = None if xs is None else ("tuple" if isinstance(xs, (tuple, list)) else "tensor")
    xs = () if xs is None else _as_tuple(xs, "xs")
    if xs_kind is not None and not xs:
        raise ValueError("scan: xs must hold at least one Tensor (or be None with length=)")
    for i, x in enumerate(xs):
        if x.ndim == 0:
            raise ValueError(f"scan: xs[{i}] must have a leading time axis, got a 0-d tensor")
    steps = {x.shape[0] for x in xs}
    if len(steps) > 1:
        raise ValueError(f"scan: every xs must have the same length, got leading sizes "
                         f"{[x.shape[0] for x in xs]}")
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"scan: length must be an int, got {type(length).__name__}")
        if steps and length != next(iter(steps)):
            raise ValueError(f"scan: length={length} but xs have length {next(iter(steps))}")
        steps = {int(length)}
    if not steps:
        raise ValueError("scan: give xs, or length= when xs is None")
    T = next(iter(steps))
    if T < 1:
        raise ValueError(f"scan: the sequence must have at least one step, got length {T}")
    device = init[0].device
    for name, t in [(f"init[{i}]", t) for i, t in enumerate(init)] + \
            [(f"xs[{i}]", x) for i, x in enumerate(xs)]:
        if t.device != device:
            raise RuntimeError(f"scan: expected every tensor on '{device}', {name} is on "
                               f"'{t.device}'")
    order = _steps(T, reverse)
    structure = (carry_is_tuple, xs_kind)
    first_x = [x.data[order[0]] for x in xs]
    tape, carry_1 = _record(step, [c.data for c in init], first_x, structure)
    if T > 1:  # record the second step too: both must be the same program
        again, _ = _record(step, carry_1, [x.data[order[1]] for x in xs], structure)
        _check_same(tape, again)
    grad_slots = {s for s, t in zip(tape.carry_in, init) if t.requires_grad}
    grad_slots |= {s for s, x in zip(tape.x_in, xs) if x.requires_grad}
    grad_slots |= {s for s, t in tape.consts if t.requires_grad}
    xp = backend.get_array_module(init[0].data)
    _plan(tape, xp, grad_slots)
    return tape, init, xs, T, carry_is_tuple


def trace_step(step, init, xs=None, *, length: int | None = None,
               reverse: bool = False) -> Tape:
    """The tape `scan` would replay for these arguments, without running the loop.

    Tape.entries lists the step's ops in order (each with its op class, settings, the slots
    it reads and writes, and where it runs: "carry" in the loop, "batch" on chunks
    of steps at once, "const" once); diagnostics.to_dot(tape) draws it: the cell's equations as a
    picture.
    """
    return _prepare(step, init, xs, length, reverse)[0]


def scan(step, init, xs=None, *, length: int | None = None, reverse: bool = False,
         remat: bool = False):
    """Loop `step` over the leading axis of xs, as one graph node: returns (final_carry, ys).

    step(carry, x) -> (new_carry, y). carry: a Tensor or a tuple of Tensors, each keeping its
    shape and dtype from step to step. xs: a Tensor (T, ...), a tuple of them, or None with
    length=T (then x is None). y: a Tensor, a tuple of Tensors or None; ys stacks them along a
    new leading axis (None when y is None). reverse=True runs t = T-1 down to 0 (ys stay
    aligned with xs). remat=True recomputes each step's internals in backward instead of
    keeping them (memory O(T x carry)).

    The step is called twice on Tensors to record it; it must apply the same ops at every
    step (no Python control flow on values, no .item() / .numpy() of the carry or x, no
    arrays made from them outside Tensor ops): what cannot be replayed raises ScanError.
    """
    tape, init, xs, T, carry_is_tuple = _prepare(step, init, xs, length, reverse)
    inputs = list(init) + list(xs) + [t for _, t in tape.consts]
    save = is_grad_enabled() and any(tape.need[s] for s in tape.carry_in + tape.x_in
                                     + [slot for slot, _ in tape.consts])
    out = _engine._apply(_Scan, *inputs, tape=tape, length=T, reverse=reverse, remat=remat,
                         save=save)
    n_carry = len(init)
    node = out[0]._node
    if node is not None and not remat:  # the node's ops kept what backward needs of xs
        _engine._keep_edges_only(node, range(n_carry, n_carry + len(xs)))
    final, ys = out[:n_carry], out[n_carry:]
    final = tuple(final) if carry_is_tuple else final[0]
    if not tape.y_out:
        ys = None
    elif not tape.y_is_tuple:
        ys = ys[0]
    else:
        ys = tuple(ys)
    return final, ys


def scan_loop(step, init, xs=None, *, length: int | None = None, reverse: bool = False,
              on_step=None):
    """What `scan` computes, as the plain Python loop over Tensors: every step's ops are
    recorded in the graph one by one (the composed path, and the reference scan is tested
    against). on_step(t, carry), when given, sees each new carry (diagnostics use it)."""
    carry_is_tuple = isinstance(init, (tuple, list))
    carry = tuple(init) if carry_is_tuple else init
    xs_tuple = isinstance(xs, (tuple, list))
    steps = length if xs is None else (xs[0] if xs_tuple else xs).shape[0]
    slices = None if xs is None else [x.unbind(0) for x in (xs if xs_tuple else (xs,))]
    ys = [None] * steps
    for t in _steps(steps, reverse):
        x = None if slices is None else (tuple(s[t] for s in slices) if xs_tuple
                                          else slices[0][t])
        carry, ys[t] = step(carry, x)
        if on_step is not None:
            on_step(t, carry)
    if ys[0] is None:
        return carry, None
    if isinstance(ys[0], (tuple, list)):
        return carry, tuple(stack(list(parts), dim=0) for parts in zip(*ys))
    return carry, stack(ys, dim=0)
