"""Positions: where each linear / conv layer sits in a model's data-flow graph.

Reads a :class:`idinit.graph.DataGraph` (from torch.fx or autograd) and finds:

- **branch ends.** A residual ``add`` is one whose two inputs share an ancestor (the fork) and at
  least one of which has a linear / conv layer between the fork and the add. The side with more
  such layers is the branch, the other the skip (an identity, a parameter-free option-A shortcut, or
  a projection shortcut, whose layers stay ``identity``). Walking back from the add along the branch,
  through norms, scales, bias adds and activations, the first linear / conv layers reached close the
  branch (``branch_end``); the norms passed on the way close it too (``branch_end_norm``, the ones
  "zero_gamma" zeroes). A product with a sigmoid gate (squeeze-excitation) is not followed into the
  gate. An ``add`` that feeds a softmax (attention scores plus a mask or position bias) is not a
  residual.
- **attention.** Every scaled-dot-product-attention call, and every softmax between two matmuls, is
  an attention core; walking back from its query, key and value operands (through reshapes, rotary
  embeddings, q/k norms) gives the projections, walking forward from its output gives the output
  projection. A projection feeding several operands is fused (``attention_qkv``).
- **stem** and **head.** A linear / conv layer with no layer (nor embedding) upstream is a stem; one
  with no layer downstream, outside every residual branch and not an attention projection, is a head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from idinit.graph import DataGraph
from idinit.kinds import op_class
from idinit.roles import strongest

__all__ = ["Analysis", "analyse"]

# Op classes (idinit.kinds.op_class) a walk along a branch or an attention operand cannot pass:
# the layer it looks for may lie behind them, but is not theirs to give.
_WALLS = ("block", "opaque", "recurrent", "embedding", "input")


@dataclass
class Analysis:
    roles: dict[int, tuple[str, str]]  # matrix op -> (role, note)
    end_norms: set[int]                # norm ops that close a residual branch
    residual_adds: int
    notes: list[str]


@dataclass
class _Residual:
    add: int
    branch: int          # the add's input on the branch side
    branch_ops: set[int]  # ops between the fork and the add, branch side
    skip_ops: set[int]    # the same, skip side (a projection shortcut's layers)


class _Graph:
    """A DataGraph with each op's class and consumers, and the walks the analysis needs."""

    def __init__(self, graph: DataGraph, kinds: Mapping[str, set], owners: Mapping[str, str]):
        self.ops = graph.ops
        self.classes = [op_class(op, kinds, owners) for op in graph.ops]
        self.users = graph.consumers()

    def plain(self, n: int) -> bool:
        return self.classes[n] == "plain" and self.ops[n].kind != "matmul"

    def ancestors(self, start: int) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            for i in self.ops[stack.pop()].data_inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
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


def _residuals(g: _Graph, notes: list[str]) -> list[_Residual]:
    """Every residual add, with its branch and skip sides (module docstring)."""
    found = []
    for a, op in enumerate(g.ops):
        ins = list(dict.fromkeys(op.data_inputs))
        if op.kind != "add" or g.classes[a] != "plain" or len(ins) != 2:
            continue
        if g.reaches(a, "softmax", g.plain):
            continue  # attention scores plus a mask or a position bias
        left, right = ins
        anc_l, anc_r = g.ancestors(left), g.ancestors(right)
        common = anc_l & anc_r
        if not common:
            continue  # e.g. token embedding + position embedding: no fork
        side_l, side_r = g.after_fork(anc_l - common, common), g.after_fork(anc_r - common, common)
        layers_l, layers_r = (sum(g.classes[n] in ("matrix", "block", "opaque") for n in side)
                              for side in (side_l, side_r))
        if layers_l == layers_r == 0:
            continue  # x + f(x) with no layer in f (GELU's tanh approximation, ...)
        if layers_l == layers_r:
            notes.append(f"the add {g.where(a)}: both inputs hold {layers_l} layer(s) after their fork, so which "
                         "one is the residual branch is ambiguous; neither gets a branch end (state it with overrides=)")
            continue
        if layers_l > layers_r:
            found.append(_Residual(a, left, side_l, side_r))
        else:
            found.append(_Residual(a, right, side_r, side_l))
    return found


def _branch_end(g: _Graph, r: _Residual, residual_adds: set[int]) -> tuple[list[int], list[int], list[int]]:
    """Walk back from the add along the branch: ``(layers closing it, norms on the way, walls hit)``."""
    def is_gate(n: int) -> bool:
        return g.ops[n].kind == "sigmoid" or g.reaches(n, "sigmoid", g.plain, forward=False, limit=3)

    ends, norms, walls, stack, seen = [], [], [], [r.branch], set()
    while stack:
        n = stack.pop()
        if n in seen or n not in r.branch_ops:
            continue
        seen.add(n)
        if n in residual_adds or g.classes[n] in _WALLS:
            walls.append(n)  # a nested residual, an opaque call, ...
            continue
        if g.classes[n] == "matrix":
            ends.append(n)
            continue
        if g.classes[n] == "norm":
            norms.append(n)
        ins = g.ops[n].data_inputs
        if g.ops[n].kind == "mul" and len(set(ins)) == 2:
            ins = [i for i in ins if not is_gate(i)]  # squeeze-excitation: follow the features, not the gate
        stack.extend(ins)
    return ends, norms, walls


def _attention(g: _Graph, residual_adds: set[int]) -> tuple[dict[int, set[str]], set[int]]:
    """``({projection op: letters it feeds}, {output projection ops})`` over every attention core."""
    def open_(n: int) -> bool:
        return n not in residual_adds and g.classes[n] not in _WALLS

    def back(n: int) -> bool:  # reshapes, rotary embeddings, scaling, q/k norms
        return open_(n) and g.classes[n] in ("plain", "param", "norm")

    def ahead(n: int) -> bool:  # merging heads
        return open_(n) and g.classes[n] in ("plain", "param") and g.ops[n].kind not in ("softmax", "sdpa")

    letters: dict[int, set[str]] = {}
    outs: set[int] = set()
    for n, op in enumerate(g.ops):
        core = None
        if op.kind == "sdpa" and len(op.inputs) >= 3 and None not in op.inputs[:3]:
            core = (n, *op.inputs[:3])
        elif op.kind == "softmax":
            core = _math_attention(g, n)
        if core is None:
            continue
        out, q, k, v = core
        for letter, operand in (("q", q), ("k", k), ("v", v)):
            for layer in g.layers_from(operand, forward=False, through=back):
                letters.setdefault(layer, set()).add(letter)
        outs |= g.layers_from(out, forward=True, through=ahead)
    return letters, outs - set(letters)


def _math_attention(g: _Graph, softmax: int):
    """``softmax(q @ k^T ...) @ v`` written out: ``(output op, q, k, v)`` or None."""
    # scores may pass bias adds (relative position tables), masks and scaling on their way
    def passable(n: int) -> bool:
        return g.classes[n] in ("plain", "param") and g.ops[n].kind not in ("matmul", "softmax", "sdpa")

    def first_matmul(starts, forward: bool, path: set[int]):
        queue, seen = list(starts), set()
        while queue:
            n = queue.pop(0)
            if n in seen:
                continue
            seen.add(n)
            if g.ops[n].kind == "matmul" and g.classes[n] == "plain":
                return n
            if passable(n):
                path.add(n)
                queue.extend(g.users[n] if forward else g.ops[n].data_inputs)
        return None

    scores = first_matmul(g.ops[softmax].data_inputs, False, set())
    if scores is None or len(g.ops[scores].inputs) < 2 or None in g.ops[scores].inputs[-2:]:
        return None
    q, k = g.ops[scores].inputs[-2:]
    path = {softmax}
    mix = first_matmul(g.users[softmax], True, path)
    if mix is None:
        return None
    values = [i for i in g.ops[mix].inputs[-2:] if i is not None and i not in path]
    return (mix, q, k, values[0]) if len(values) == 1 else None


def analyse(graph: DataGraph, kinds: Mapping[str, set], owners: Mapping[str, str]) -> Analysis:
    """Positional roles of the graph's linear / conv ops (see the module docstring)."""
    g = _Graph(graph, kinds, owners)
    notes: list[str] = []
    found: dict[int, list[tuple[str, str]]] = {}
    residuals = _residuals(g, notes)
    residual_adds = {r.add for r in residuals}
    end_norms: set[int] = set()
    in_branch: set[int] = set()
    for r in residuals:
        in_branch |= r.branch_ops
        for n in r.skip_ops:
            if g.classes[n] == "matrix":
                found.setdefault(n, []).append(("identity", "projection shortcut"))
        ends, norms, walls = _branch_end(g, r, residual_adds)
        for n in ends:
            found.setdefault(n, []).append(("branch_end", "closes a residual branch"))
        if ends:
            end_norms.update(norms)
        elif not any(g.classes[n] in ("block", "opaque") for n in walls):  # those are reported on their own
            stopped = ", ".join(sorted({g.ops[n].label for n in walls})) or "nothing"
            notes.append(f"the residual add {g.where(r.add)}: no linear/conv layer closes its branch (the walk back "
                         f"stopped at {stopped}); no branch end there")

    letters, outs = _attention(g, residual_adds)
    for n, held in letters.items():
        found.setdefault(n, []).append(("attention_" + "".join(c for c in "qkv" if c in held),
                                        "fused projection" if len(held) > 1 else ""))
    for n in outs:
        found.setdefault(n, []).append(("attention_out", ""))

    layers = ("matrix", "block", "opaque", "recurrent")
    upstream = [False] * len(g.ops)
    for n, op in enumerate(g.ops):
        upstream[n] = any(upstream[i] or g.classes[i] in layers + ("embedding",) for i in op.data_inputs)
    downstream = [False] * len(g.ops)
    for n in reversed(range(len(g.ops))):
        downstream[n] = any(downstream[u] or g.classes[u] in layers for u in g.users[n])
    for n in range(len(g.ops)):
        if g.classes[n] != "matrix":
            continue
        if not downstream[n] and n not in in_branch and n not in letters and n not in outs:
            found.setdefault(n, []).append(("head", "final layer"))
        if not upstream[n]:
            found.setdefault(n, []).append(("stem", "first layer"))
        found.setdefault(n, []).append(("identity", ""))
    picked = {}
    for n, candidates in found.items():
        role = strongest(r for r, _ in candidates)
        picked[n] = (role, next((note for r, note in candidates if r == role and note), ""))
    return Analysis(picked, end_norms, len(residuals), notes)
