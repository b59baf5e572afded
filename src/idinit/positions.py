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
from typing import Mapping

from idinit.graph import DataGraph
from idinit.kinds import op_class
from idinit.roles import strongest

__all__ = ["Analysis", "analyse"]


@dataclass
class Analysis:
    roles: dict[int, tuple[str, str]]   # op -> (role, note) for matrix ops
    end_norms: set[int]                 # norm ops closing a branch
    residual_adds: int
    notes: list[str]


def _ancestors(graph: DataGraph, start: int) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        for i in graph.ops[stack.pop()].data_inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return seen


def _after_fork(graph: DataGraph, side: set[int], common: set[int]) -> set[int]:
    """The nodes of ``side`` that lie downstream of the fork (``common``): the path fork -> add."""
    rel: set[int] = set()
    for n in sorted(side):
        if any(i in common or i in rel for i in graph.ops[n].data_inputs):
            rel.add(n)
    return rel


def _reaches(graph, users, start, target_kind, through, forward=True, limit=10) -> bool:
    """Whether an op of ``target_kind`` is reached from ``start`` within ``limit`` hops through
    ops whose class is in ``through``."""
    frontier, seen = [start], {start}
    for _ in range(limit):
        nxt = []
        for n in frontier:
            for m in (users[n] if forward else graph.ops[n].data_inputs):
                if m in seen:
                    continue
                seen.add(m)
                if graph.ops[m].kind == target_kind:
                    return True
                if through(m):
                    nxt.append(m)
        frontier = nxt
    return False


def analyse(graph: DataGraph, kinds: Mapping[str, set], owners: Mapping[str, str]) -> Analysis:
    """Positional roles of the graph's linear / conv ops (see the module docstring)."""
    ops = graph.ops
    classes = [op_class(op, kinds, owners) for op in ops]
    users = graph.consumers()
    plain = lambda n: classes[n] == "plain" and ops[n].kind != "matmul"  # noqa: E731
    notes: list[str] = []

    # 1. residual adds and their branch / skip sides
    residuals = []
    for a, op in enumerate(ops):
        ins = list(dict.fromkeys(op.data_inputs))
        if op.kind != "add" or classes[a] != "plain" or len(ins) != 2:
            continue
        if _reaches(graph, users, a, "softmax", plain):
            continue  # attention scores + mask / position bias
        left, right = ins
        anc_l, anc_r = _ancestors(graph, left), _ancestors(graph, right)
        common = anc_l & anc_r
        if not common:
            continue
        rel_l, rel_r = _after_fork(graph, anc_l - common, common), _after_fork(graph, anc_r - common, common)
        count = lambda rel: sum(classes[n] in ("matrix", "block", "opaque") for n in rel)  # noqa: E731
        m_l, m_r = count(rel_l), count(rel_r)
        if m_l == m_r == 0:
            continue
        if m_l == m_r:
            notes.append(f"the add {_where(graph, classes, a)}: both inputs hold {m_l} layer(s) after their fork; which one is the "
                         "residual branch is ambiguous, so neither side gets a branch end (state it with overrides=)")
            continue
        (b_in, b_rel), (s_rel) = ((left, rel_l), rel_r) if m_l > m_r else ((right, rel_r), rel_l)
        residuals.append((a, b_in, b_rel, s_rel))
    residual_set = {r[0] for r in residuals}

    def is_gate(n: int) -> bool:
        return ops[n].kind == "sigmoid" or _reaches(graph, users, n, "sigmoid", plain, forward=False, limit=3)

    roles: dict[int, list[tuple[str, str]]] = {}
    end_norms: set[int] = set()
    in_branch: set[int] = set()
    for a, b_in, b_rel, s_rel in residuals:
        in_branch |= b_rel
        for n in s_rel:
            if classes[n] == "matrix":
                roles.setdefault(n, []).append(("identity", "projection shortcut"))
        ends, norms, blocked, stack, seen = [], [], [], [b_in], set()
        while stack:
            n = stack.pop()
            if n in seen or n not in b_rel:
                continue
            seen.add(n)
            if n in residual_set or classes[n] in ("block", "opaque", "recurrent", "embedding", "input"):
                blocked.append(n)
                continue
            if classes[n] == "matrix":
                ends.append(n)
                continue
            if classes[n] == "norm":
                norms.append(n)
            ins = ops[n].data_inputs
            if ops[n].kind == "mul" and len(set(ins)) == 2:
                ins = [i for i in ins if not is_gate(i)]
            stack.extend(ins)
        for n in ends:
            roles.setdefault(n, []).append(("branch_end", "closes a residual branch"))
        if ends:
            end_norms.update(norms)
        elif not any(classes[n] in ("block", "opaque") for n in blocked):  # those are reported on their own
            what = ", ".join(sorted({ops[n].label for n in blocked})) or "nothing"
            notes.append(f"the residual add {_where(graph, classes, a)}: no linear/conv layer closes its branch (the walk back "
                         f"stopped at {what}); no branch end there")

    # 2. attention cores and their projections
    attention_ops: set[int] = set()
    stop = lambda n: n in residual_set or classes[n] in ("block", "opaque", "recurrent", "embedding", "input")  # noqa: E731
    through_back = lambda n: classes[n] in ("plain", "param", "norm") and not stop(n)  # noqa: E731

    def back_to_layers(start: int) -> set[int]:
        found, stack, seen = set(), [start], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if classes[n] == "matrix":
                found.add(n)
            elif through_back(n):
                stack.extend(ops[n].data_inputs)
        return found

    def forward_to_layers(start: int) -> set[int]:
        found, stack, seen = set(), list(users[start]), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if classes[n] == "matrix":
                found.add(n)
            elif classes[n] in ("plain", "param") and not stop(n) and ops[n].kind not in ("softmax", "sdpa"):
                stack.extend(users[n])
        return found

    letters: dict[int, set[str]] = {}
    outs: set[int] = set()
    for n, op in enumerate(ops):
        core = None
        if op.kind == "sdpa" and len(op.inputs) >= 3 and None not in op.inputs[:3]:
            core = (n, *op.inputs[:3])
        elif op.kind == "softmax":
            core = _math_attention(graph, users, classes, n)
        if core is None:
            continue
        out, q, k, v = core
        for letter, operand in (("q", q), ("k", k), ("v", v)):
            for layer in back_to_layers(operand):
                letters.setdefault(layer, set()).add(letter)
        for layer in forward_to_layers(out):
            if layer not in letters:
                outs.add(layer)
    for layer, held in letters.items():
        role = "attention_" + "".join(c for c in "qkv" if c in held)
        roles.setdefault(layer, []).append((role, "fused projection" if len(held) > 1 else ""))
        attention_ops.add(layer)
    for layer in outs:
        roles.setdefault(layer, []).append(("attention_out", ""))
        attention_ops.add(layer)

    # 3. stem and head
    layerish = {"matrix", "block", "opaque", "recurrent"}
    up = [False] * len(ops)
    for n, op in enumerate(ops):
        up[n] = any(up[i] or classes[i] in layerish or classes[i] == "embedding" for i in op.data_inputs)
    down = [False] * len(ops)
    for n in reversed(range(len(ops))):
        down[n] = any(down[u] or classes[u] in layerish for u in users[n])
    for n in range(len(ops)):
        if classes[n] != "matrix":
            continue
        if not down[n] and n not in in_branch and n not in attention_ops:
            roles.setdefault(n, []).append(("head", "final layer"))
        if not up[n]:
            roles.setdefault(n, []).append(("stem", "first layer"))
        roles.setdefault(n, []).append(("identity", ""))
    picked = {}
    for n, found in roles.items():
        role = strongest(r for r, _ in found)
        picked[n] = (role, next((note for r, note in found if r == role and note), ""))
    return Analysis(picked, end_norms, len(residuals), notes)


def _where(graph: DataGraph, classes, add: int) -> str:
    """Locate an op for a message by the parameters nearest upstream of it (autograd ops have no names)."""
    found, frontier, seen = [], list(graph.ops[add].data_inputs), set()
    while frontier and not found:
        nxt = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            if graph.ops[n].params:
                found.extend(graph.ops[n].params)
            else:
                nxt.extend(graph.ops[n].data_inputs)
        frontier = nxt
    modules = sorted({p.rpartition(".")[0] or p for p in found})
    return f"after {' and '.join(modules[:3])}" if modules else f"at {graph.ops[add].label}"


def _math_attention(graph: DataGraph, users, classes, softmax: int):
    """``softmax(q @ k^T ...) @ v`` written out: returns ``(output op, q, k, v)`` or None."""
    ops = graph.ops
    # scores may pass through bias adds (relative position tables) and masks on the way to the softmax
    passable = lambda n: classes[n] in ("plain", "param") and ops[n].kind not in ("matmul", "softmax", "sdpa")  # noqa: E731
    scores, stack, seen = None, list(ops[softmax].data_inputs), set()
    while stack and scores is None:
        n = stack.pop(0)
        if n in seen:
            continue
        seen.add(n)
        if ops[n].kind == "matmul" and classes[n] == "plain":
            scores = n
        elif passable(n):
            stack.extend(ops[n].data_inputs)
    if scores is None or len(ops[scores].inputs) < 2 or None in ops[scores].inputs[-2:]:
        return None
    q, k = ops[scores].inputs[-2:]
    path, stack, mix = {softmax}, list(users[softmax]), None
    while stack and mix is None:
        n = stack.pop(0)
        if n in path:
            continue
        if ops[n].kind == "matmul" and classes[n] == "plain":
            mix = n
        elif passable(n):
            path.add(n)
            stack.extend(users[n])
    if mix is None or len(ops[mix].inputs) < 2:
        return None
    others = [i for i in ops[mix].inputs[-2:] if i is not None and i not in path]
    if len(others) != 1:
        return None
    return mix, q, k, others[0]
