"""A data-flow graph to walk: each op's class and consumers, and the walks that place layers in it.

:class:`DataFlow` reads an :class:`idinit.graph.DataGraph` (from torch.fx or autograd) with each op's class
(:func:`op_class`, from the kinds of the parameters it consumes: :mod:`idinit.kinds`); :mod:`idinit.positions`
(the chain's third link) walks it to find residual branches, attention and the stem. Ops are in topological order (a value's producer comes before its consumers).
"""
from __future__ import annotations

from typing import Callable, Mapping

from idinit.graph import DataGraph
from idinit.kinds import MATRIX_KINDS, NORM_KINDS, RECURRENT_KINDS

__all__ = ["DataFlow", "op_class", "activation_name", "RESHAPES"]

# Activations that zero or shrink one half-line, halving the second moment as ReLU does: the ones
# idinit.schemes.STEM_GAIN gives sqrt(2), by the name of the function, module class or backward node.
_RECTIFIERS = {"relu", "relu6", "leakyrelu", "prelu", "rrelu", "threshold", "hardtanh", "gelu", "quickgelu",
               "silu", "swish", "hardswish", "mish", "elu", "selu", "celu", "softplus"}
# Ops a walk from a stem to its activation stops at: another mixing of values, a saturating activation.
_NOT_RECTIFIED = ("softmax", "sdpa", "sigmoid", "matmul")
# The saturating factor s of a self-gated activation x * s(x) written as a formula (GELU's tanh and
# erf forms, SiLU, QuickGELU): s runs from 0 (for x << 0) to 1, so the product removes most of one
# half-line, as ReLU does.
_GATES = ("tanh", "erf", "sigmoid")
# Ops that only reshape a value (by :func:`activation_name`: fx call names and autograd nodes alike).
RESHAPES = {"view", "unsafeview", "reshape", "reshapealias", "alias", "flatten", "unflatten", "squeeze", "unsqueeze"}


def activation_name(op) -> str:
    """``ReluBackward0``, ``relu_1``, ``LeakyReLU``, ``GELUActivation`` -> ``relu``, ``relu``,
    ``leakyrelu``, ``gelu``."""
    name = (op.fn or op.label).rpartition(".")[2].lower().rstrip("0123456789_")
    for suffix in ("backward", "activation"):
        name = name.removesuffix(suffix).rstrip("0123456789_")
    return name.replace("_", "")


def op_class(op, kinds: Mapping[str, set], owners: Mapping[str, str]) -> str:
    """What a graph op is, from the kinds of the parameters it consumes: ``input``, ``block`` (a
    registered block seen as one call), ``embedding``, ``recurrent``, ``matrix`` (one linear / conv
    layer), ``opaque`` (one call using the weights of several layers), ``norm``, ``param`` (bias adds,
    scales, position tables) or ``plain`` (no parameters)."""
    if op.kind == "input":
        return "input"
    if op.block:
        return "block"
    if op.kind == "embedding":
        return "embedding"
    ks = set().union(*(kinds[p] for p in op.params)) if op.params else set()
    if ks & RECURRENT_KINDS:
        return "recurrent"
    if ks & MATRIX_KINDS and op.kind in ("add", "mul", "sdpa", "parameter"):
        # the weights reached this sum, product or attention (as its mask) through a chain without data: a
        # table computed from parameters alone (HF Swin-V2's position-bias MLP over a constant coordinate grid,
        # added to the attention scores; timm's RelPosMlp, passed as the mask), not a layer applied to the data.
        # A weight chain kept as a value of its own (kind ``parameter``) is one by construction: DETR's first
        # decoder self-attention reads only its object queries (zoo audit), no "call the graph cannot see inside"
        return "param"
    if ks & MATRIX_KINDS:
        weights = {owners[p] for p in op.params if kinds[p] & MATRIX_KINDS and "embedding" not in kinds[p]}
        return "opaque" if len(weights) > 1 else "matrix"
    if ks and ks <= NORM_KINDS:
        return "norm"
    if "embedding" in ks:
        return "embedding"
    return "param" if ks else "plain"


class DataFlow:
    """A DataGraph with each op's class and consumers, and the walks the analysis needs."""

    def __init__(self, graph: DataGraph, kinds: Mapping[str, set], owners: Mapping[str, str]):
        self.ops = graph.ops
        self.classes = [op_class(op, kinds, owners) for op in graph.ops]
        self.users = graph.consumers()
        # ops some output depends on: fx keeps dead code (Res2Net's unused ``spx[0]``), and a consumer that
        # leads nowhere must not make a residual branch look shared (zoo audit)
        self.live = set().union(*(self.ancestors(o) for o in graph.outputs)) if graph.outputs else set(range(len(self.ops)))

    def plain(self, n: int) -> bool:
        return self.classes[n] == "plain" and self.ops[n].kind != "matmul"

    def ancestors(self, start: int) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            new = [i for i in self.ops[stack.pop()].data_inputs if i not in seen]
            seen.update(new)
            stack.extend(new)
        return seen

    def after_fork(self, side: set[int], common: set[int]) -> set[int]:
        """The ops of ``side`` downstream of the fork (the ops in ``common``): the path fork -> add."""
        found: set[int] = set()
        for n in sorted(side):  # op indices are topological
            if any(i in common or i in found for i in self.ops[n].data_inputs):
                found.add(n)
        return found

    def reaches(self, start: int, kind: str, through: Callable[[int], bool], forward: bool = True,
                limit: int = 10) -> bool:
        """Whether an op of ``kind`` lies within ``limit`` hops of ``start`` along ops ``through`` accepts."""
        frontier, seen = [start], {start}
        for _ in range(limit):
            nxt = []
            for n in frontier:
                for m in (self.users[n] if forward else self.ops[n].data_inputs):
                    if m in seen:
                        continue
                    seen.add(m)
                    if self.ops[m].kind == kind:
                        return True
                    if through(m):
                        nxt.append(m)
            frontier = nxt
        return False

    def layers_from(self, start: int, forward: bool, through: Callable[[int], bool]) -> set[int]:
        """The first matrix ops reached from ``start`` (itself included when walking back) along ops
        ``through`` accepts."""
        found, stack, seen = set(), (list(self.users[start]) if forward else [start]), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if self.classes[n] == "matrix":
                found.add(n)
            elif through(n):
                stack.extend(self.users[n] if forward else self.ops[n].data_inputs)
        return found

    def rectified(self, start: int) -> bool:
        """Whether the output of ``start`` passes a ReLU-like activation before it reaches another layer
        (through reshapes, norms, bias and position adds, pooling, residual sums)."""
        stack, seen = list(self.users[start]), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            name = activation_name(self.ops[n])
            if name in _RECTIFIERS or self.self_gated(n, start):
                return True
            if self.classes[n] in ("plain", "param", "norm", "embedding") and name not in ("tanh", "softsign") \
                    and self.ops[n].kind not in _NOT_RECTIFIED:
                stack.extend(self.users[n])
        return False

    def self_gated(self, n: int, start: int) -> bool:
        """Whether op ``n`` is x * s(x) for a value x computed from ``start``, where s is a gate
        (:data:`_GATES`) of that same x: an activation written as a formula, which torch.fx traces
        into and autograd sees only as multiplications (HF's NewGELU, nanoGPT's gelu)."""
        op = self.ops[n]
        if op.kind != "mul" or len(set(op.data_inputs)) != 2:
            return False
        left, right = (self.ancestors(i) for i in dict.fromkeys(op.data_inputs))
        if start not in left or start not in right:
            return False  # one factor does not come from the layer: a gate from elsewhere

        def gate_on(side: set[int]) -> bool:
            return any((activation_name(self.ops[m]) in _GATES or self.ops[m].kind == "sigmoid")
                       and start in self.ancestors(m) for m in side)
        return gate_on(left - right) or gate_on(right - left)

    def where(self, n: int) -> str:
        """Name an op for a message by the parameters nearest upstream (autograd ops have no names)."""
        found, frontier, seen = [], list(self.ops[n].data_inputs), set()
        while frontier and not found:
            nxt = []
            for m in frontier:
                if m not in seen:
                    seen.add(m)
                    if self.ops[m].params:
                        found.extend(self.ops[m].params)
                    else:
                        nxt.extend(self.ops[m].data_inputs)
            frontier = nxt
        modules = sorted({p.rpartition(".")[0] or p for p in found})
        return f"after {' and '.join(modules[:3])}" if modules else f"at {self.ops[n].label}"
