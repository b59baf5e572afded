"""Positions: where each linear / conv layer sits in a model's data-flow graph.

Third link of the model level's chain (kinds -> graph -> **positions** -> roles -> detect -> schemes ->
plan): where each layer sits in the graph (residual branches, attention, stem, head).

Reads a :class:`idinit.graph.DataGraph` (from torch.fx or autograd), walked as an
:class:`idinit.dataflow.DataFlow`, and finds:

- **residual sums.** A chain of adds is read as one sum (``attn + mlp + x`` in the parallel blocks
  of Phi, GPT-J, GPT-NeoX and Falcon: an add whose only consumer is another add, neither input
  computed from the other, is a partial sum). The sum's terms that share an ancestor (the fork) are
  its paths; a term sharing none (a position table, a class embedding) is not. A path with no
  linear / conv layer after the fork is a skip, and then every path with layers is a residual
  branch; when every path holds layers, the one with fewest is a projection shortcut (its layers
  stay ``identity``) and a tie is a merge of parallel paths (Inception, RepVGG), not a residual.
- **merges are not residuals.** What a residual branch computes from the fork exists only to be
  added back. If a value on the way from the fork to the sum is also used elsewhere, the sum merges
  two paths of the network: a feature pyramid's ``lateral(c3) + upsample(p4)`` (``p4`` is also a
  pyramid output), a U-Net block's ``conv1(h) + temb(t)`` (the path from ``t`` runs through the
  previous blocks). No branch end is looked for there.
- **branch ends.** Walking back from the sum along each branch, through norms, scales, bias adds and
  activations, the first linear / conv layers reached close the branch (``branch_end``); the norms
  passed on the way close it too (``branch_end_norm``, the ones "zero_gamma" zeroes). A product with a
  sigmoid gate (squeeze-excitation) is not followed into the gate; a product of two computed paths
  that both hold layers (a state-space scan's ``C @ state``, ``B * x``) closes the branch itself, so
  the layers behind it (Mamba's ``x_proj``, ``dt_proj``) are no branch ends. Learned scales passed on
  the way are reported with the end (:mod:`idinit.values` decides about layer scale). A product with
  a Mixture-of-Experts router's top-k softmax weights is read as a gate too: the walk follows the experts.
  An ``add`` that feeds a softmax (attention scores plus a mask or position bias) is not a residual.
- **attention.** Every scaled-dot-product-attention call, and every softmax between two matmuls, is
  an attention core; walking back from its query, key and value operands (through reshapes, rotary
  embeddings, q/k norms) gives the projections, walking forward from its output gives the output
  projection. A projection feeding several operands is fused (``attention_qkv``).
- **stem** and **head.** A linear / conv layer with no layer upstream whose output passes a ReLU-like
  activation before the next layer is a stem; one with no layer downstream, outside every residual
  branch and not an attention projection, is a head. The stem's role is its gain: appendix B sets
  tau = sqrt(2) "for the first layer" of a ReLU network, the factor that makes up for the half of
  the signal the ReLU after it removes. Two readings follow. An embedding lookup is no layer here:
  its table is kept (GloVe / Word2Vec in Table 4, appendix B.4), so the first layer IDI initialises
  is the one after it (TextCNN's convolutions), unless that layer sits inside a residual branch (the
  first block of a language model): then it is a layer of that block. And a first layer that no
  ReLU-like activation follows (a ViT's patch projection, a Transformer's input projection, both
  feeding a residual stream whose activations sit inside the branches, appendix A.5) has nothing to
  make up for: it stays ``identity``, gain 1.
- **routers.** A layer whose output, through one-input ops only (softmax, sigmoid, casts, reshapes),
  reaches a top-k (``torch.max``'s values included) or a gather of its scores at picked indices, whose
  result then scales another computed path, picks a Mixture-of-Experts layer's experts: ``router``. Its
  output reaches the network only as that choice, so no identity is there to keep; IDI would read the
  first ``num_experts`` features of every token and send all of them to the same experts. A raw weight
  multiplied by the data (Mixtral's ``F.linear(x, self.weight)``) is one too: :mod:`idinit.detect` gives it
  the role.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping

from idinit.dataflow import RESHAPES, DataFlow, activation_name
from idinit.graph import DataGraph
from idinit.roles import BRANCH_END_ROLES, strongest

__all__ = ["Analysis", "analyse"]

# Op classes (idinit.dataflow.op_class) a walk along a branch or an attention operand cannot pass:
# the layer it looks for may lie behind them, but is not theirs to give.
_WALLS = ("block", "opaque", "recurrent", "embedding", "input")


@dataclass
class Analysis:
    roles: dict[int, tuple[str, str]]  # matrix op -> (role, note)
    end_norms: set[int]                # norm ops that close a residual branch
    residual_adds: int
    notes: list[tuple[str, list[str]]]  # (message, the modules its remedy names)
    scaled_ends: dict[int, set[str]]  # branch-end op -> learned scales between it and the add
    in_branch: set[int]  # ops inside some residual branch
    routers: set[int]  # ops (a layer, or a raw weight times the data) whose output picks experts


@dataclass
class _Residual:
    add: int
    branch: int          # the add's input on the branch side
    branch_ops: set[int]  # ops between the fork and the add, branch side
    skip_ops: set[int]    # the same, skip side (a projection shortcut's layers)


def _sum_trees(g: DataFlow) -> dict[int, list[int]]:
    """``{root add: its terms}``: chains of adds read as one sum. An add whose only consumer is another
    add (directly or through reshapes: Qwen2-MoE's ``(routed + shared).reshape(...)`` before the residual
    add), and neither of whose inputs is computed from the other, is a partial sum (``attn + mlp`` in
    ``attn + mlp + x``, the parallel blocks of Phi, GPT-J, GPT-NeoX): its terms join its consumer's. So is
    ``x + f(x)`` in Cohere's ``x + f(x) + g(x)``; not ``y + g(y)`` in ``x + (y + g(y))`` (x is in its past)."""
    def is_add(n: int) -> bool:
        return g.ops[n].kind == "add" and g.classes[n] == "plain" and len(set(g.ops[n].data_inputs)) == 2

    def into_add(n: int) -> list[int]:  # n and the reshapes between it and the add it flows into, or []
        path = [n]
        while len(g.users[path[-1]]) == 1 and not is_add(u := g.users[path[-1]][0]):
            if not (g.plain(u) and len(set(g.ops[u].data_inputs)) == 1 and activation_name(g.ops[u]) in RESHAPES):
                return []
            path.append(u)
        return path if len(g.users[path[-1]]) == 1 else []

    partial: dict[int, list[int]] = {}  # the value the consuming add reads -> (the partial add, its reshapes)
    for n in range(len(g.ops)):
        if is_add(n) and (path := into_add(n)):
            (left, right), past = dict.fromkeys(g.ops[n].data_inputs), g.ancestors(n)
            other = [i for i in g.ops[g.users[path[-1]][0]].data_inputs if i != path[-1]]
            if (left not in g.ancestors(right) and right not in g.ancestors(left)) or (
                    not set(other) & past and any({left, right} & g.ancestors(o) for o in other)):
                partial[path[-1]] = path

    def terms(n: int) -> list[int]:
        return [t for i in dict.fromkeys(g.ops[n].data_inputs) for t in (terms(partial[i][0]) if i in partial else [i])]

    def adds(n: int) -> set[int]:
        return {n}.union(*(set(partial[i]) | adds(partial[i][0]) for i in g.ops[n].data_inputs if i in partial))

    inner = {path[0] for path in partial.values()}
    return {n: (list(dict.fromkeys(terms(n))), adds(n)) for n in range(len(g.ops)) if is_add(n) and n not in inner}


def _layer_names(g: DataFlow, ops) -> str:
    """The modules of the layers among ``ops``, for a message (``blocks.0.mlp.fc2``, ...)."""
    names = sorted({p.rpartition(".")[0] or p for n in ops if g.classes[n] in ("matrix", "opaque", "block")
                    for p in g.ops[n].params})
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") if names else "no layer"


def _residuals(g: DataFlow) -> list[_Residual]:
    """Every residual sum, one :class:`_Residual` per branch (module docstring)."""
    found = []
    for a, (terms, adds) in _sum_trees(g).items():
        if len(terms) < 2 or g.reaches(a, "softmax", g.plain):
            continue  # attention scores plus a mask or a position bias
        ancestry = {t: g.ancestors(t) for t in terms}
        seen = Counter(n for anc in ancestry.values() for n in anc)
        common = {n for n, count in seen.items() if count > 1}
        # a term sharing no ancestor with the others (a position table, a class embedding) is no path
        linked = [t for t in terms if ancestry[t] & common]
        if len(linked) < 2:
            continue
        side = {t: g.after_fork(ancestry[t] - common, common) for t in linked}
        layers = {t: sum(g.classes[n] in ("matrix", "block", "opaque") for n in side[t]) for t in linked}
        branches = [t for t in linked if layers[t] > 0]
        if not branches:
            continue  # x + f(x) with no layer in f (GELU's tanh approximation, ...)
        skips = [t for t in linked if layers[t] == 0]
        if not skips:  # every path holds layers: the one with fewest is a projection shortcut
            fewest = min(layers.values())
            skips = [t for t in linked if layers[t] == fewest]
            if len(skips) > 1:
                continue  # paths of equal depth merged (Inception, RepVGG, FiLM's scale and shift): no skip
            branches = [t for t in linked if t not in skips]
        skip_ops = set().union(*(side[t] for t in skips))
        branch_ops = set().union(*(side[t] for t in branches))
        if not _private(g, adds, skips, side, common, branch_ops, skip_ops):
            continue  # two paths merged (a feature pyramid's top-down sum, a U-Net's skip), not a residual
        for t in branches:
            found.append(_Residual(a, t, side[t], skip_ops))
    return found


def _private(g: DataFlow, adds: set[int], skips, side, common, branch_ops: set[int], skip_ops: set[int]) -> bool:
    """Whether what the branches compute from the skip's fork is used by nothing but the sum.

    In ``x + f(x)`` the values inside ``f`` exist only to be added back; in a feature pyramid's
    ``lateral(c3) + upsample(p4)`` the path from ``c3`` to ``p4`` also feeds the next stage and the
    pyramid's own outputs. Values the branch takes from elsewhere (masks, a time embedding) are not
    checked: only what descends from the fork."""
    forks = set()
    for t in skips:
        forks |= {t} if t in common else {i for n in side[t] for i in g.ops[n].data_inputs if i in common}
    inside = branch_ops | skip_ops | adds
    region = branch_ops | common
    reached = set(forks)
    for n in sorted(region):
        if n not in forks and any(i in reached for i in g.ops[n].data_inputs):
            reached.add(n)
            if any(u not in inside and u not in region and u in g.live for u in g.users[n]):
                return False
    return True


def _branch_end(g: DataFlow, r: _Residual, residual_adds: set[int]):
    """Walk back from the add along the branch: ``(layers closing it, norms on the way, walls hit,
    scale parameters on the way)``. A product of two computed values that both hold layers of the
    branch (a state-space scan, a gated unit without an output layer) stops the walk: the layers
    behind it only modulate the branch, and zeroing them would not close it but stall it."""
    def is_gate(n: int) -> bool:
        # a sigmoid gate (squeeze-excitation), or an MoE router's weights (a softmax's top k, renormalised)
        return g.ops[n].kind == "sigmoid" or g.reaches(n, "sigmoid", g.plain, forward=False, limit=3) or \
            (g.reaches(n, "topk", g.plain, forward=False, limit=6) and g.reaches(n, "softmax", g.plain, False, 6))

    def layers_behind(n: int) -> frozenset:
        return frozenset(m for m in g.ancestors(n) & r.branch_ops if g.classes[m] == "matrix")

    ends, norms, walls, scales, stack, seen = [], [], [], set(), [r.branch], set()
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
        if g.ops[n].kind in ("mul", "matmul") and len(set(ins)) == 2:
            ins = [i for i in ins if not is_gate(i)]  # squeeze-excitation: follow the features, not the gate
            held = {layers_behind(i) for i in ins} - {frozenset()}
            # a product of two computed paths, each behind layers of its own; x * f(x) with f a statistic of x
            # (an inline RMSNorm after the branch's last layer: Gemma2's and OLMo2's post-norms) is no wall
            if g.classes[n] == "plain" and len(held) > 1:
                walls.append(n)
                continue
        if g.ops[n].kind == "mul" and g.classes[n] == "param":
            scales.update(g.ops[n].params)  # a layer scale / gate on the branch
        stack.extend(ins)
    return ends, norms, walls, scales


def _attention(g: DataFlow, residual_adds: set[int]) -> tuple[dict[int, set[str]], set[int]]:
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


def _math_attention(g: DataFlow, softmax: int):
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


ROUTER_NOTE = ("Mixture-of-Experts router (its output reaches the top-k that picks the experts): left to the "
               "model's own init under every scheme; IDI would read the first features only and send every token "
               "to the same experts")


def _routers(g: DataFlow, kinds: Mapping[str, set]) -> set[int]:
    """The ops whose output picks experts (module docstring): linear / conv layers, and matmuls of the data
    with a parameter of no known layer type (a raw router weight)."""
    def unary(n: int) -> bool:  # softmax, sigmoid, a cast, a reshape, a scaling by a constant
        return g.plain(n) and len(set(g.ops[n].data_inputs)) == 1

    def picks(n: int) -> bool:
        # a top-k or max of the scores (torch.fx names max by its call, autograd as the kind topk); or a gather
        # of softmax / sigmoid scores at indices a top-k computed (DeepSeek-V3's top-k returns indices only,
        # which autograd does not record)
        if g.ops[n].kind == "topk" or activation_name(g.ops[n]) == "max" and len(set(g.ops[n].data_inputs)) == 1:
            return True
        return activation_name(g.ops[n]) == "gather" and \
            any(g.reaches(n, kind, unary, False, 3) for kind in ("softmax", "sigmoid"))

    def scales_a_path(pick: int) -> bool:
        # the picked scores multiply a value not computed from them (the experts' outputs, or their inputs:
        # Llama 4); a classifier's top-k (a detector's best scores) is an output, no choice of a path
        def weighs(n: int) -> bool:
            ins = set(g.ops[n].data_inputs)
            return g.ops[n].kind in ("mul", "matmul") and len(ins) == 2 and \
                any(pick not in g.ancestors(i) for i in ins)
        return any(weighs(n) for n in _ahead(g, pick, g.plain, 10))

    found = set()
    for n, op in enumerate(g.ops):
        raw = g.classes[n] == "param" and (op.kind == "matmul" or op.fn == "linear") and bool(op.data_inputs) and \
            any(kinds[p] == {"unknown"} for p in op.params)
        if (g.classes[n] == "matrix" or raw) and any(picks(u) and scales_a_path(u) for u in _ahead(g, n, unary, 4)):
            found.add(n)
    return found


def _ahead(g: DataFlow, start: int, through, hops: int) -> list[int]:
    """The ops within ``hops`` steps downstream of ``start``, passing only ops ``through`` accepts."""
    found, frontier, seen = [], [start], {start}
    for _ in range(hops):
        nxt = [u for n in frontier for u in g.users[n] if u not in seen]
        seen.update(nxt)
        found.extend(dict.fromkeys(nxt))
        frontier = [u for u in dict.fromkeys(nxt) if through(u)]
    return found


def analyse(graph: DataGraph, kinds: Mapping[str, set], owners: Mapping[str, str]) -> Analysis:
    """Positional roles of the graph's linear / conv ops (see the module docstring)."""
    g = DataFlow(graph, kinds, owners)
    notes: list[tuple[str, list[str]]] = []
    found: dict[int, list[tuple[str, str]]] = {}
    residuals = _residuals(g)
    residual_adds = {r.add for r in residuals}
    end_norms: set[int] = set()
    in_branch: set[int] = set()
    scaled: dict[int, set[str]] = {}
    open_ends: list[tuple[_Residual, list[int]]] = []
    products: list[_Residual] = []
    for r in residuals:
        in_branch |= r.branch_ops
        for n in r.skip_ops:
            if g.classes[n] == "matrix":
                found.setdefault(n, []).append(("identity", "projection shortcut"))
        ends, norms, walls, scales = _branch_end(g, r, residual_adds)
        for n in ends:
            found.setdefault(n, []).append(("branch_end", "closes a residual branch"))
            if scales:
                scaled.setdefault(n, set()).update(scales)
        if ends:
            end_norms.update(norms)
        elif walls and all(g.classes[n] == "plain" and n not in residual_adds for n in walls):
            products.append(r)  # closed by a product of two computed paths: no layer to zero (said below)
        elif not any(g.classes[n] in ("block", "opaque") for n in walls):  # those are reported on their own
            open_ends.append((r, walls))
    for r in products:
        # A sum inside another residual's branch (Mamba's scan output + D * x, before out_proj closes the block) is
        # the layer's own arithmetic. A block's own sum ending in a product (CSATv2's x + pwconv2(h) * attn(...)) is
        # not closed by any rule, as zeroing one factor would stall it: the block does not start at identity.
        if r.add not in in_branch:
            notes.append((f"the residual add {g.where(r.add)}: its branch ({_layer_names(g, r.branch_ops)}) ends in "
                          f"a product of two computed paths, not in a linear/conv layer. No rule closes such a branch "
                          f"(zeroing one factor would stall it, not close it), so this block does not start at "
                          f"identity; idinit.check measures how far it is", []))
    closing = {n for n, candidates in found.items() if any(role == "branch_end" for role, _ in candidates)}
    for r, walls in open_ends:
        # the layers nearest the add behind what stopped the walk, less those closing a branch already
        nearest = sorted({p.rpartition(".")[0] or p for w in walls for m in g.layers_from(w, False, g.plain)
                          if g.classes[m] == "matrix" and m not in closing for p in g.ops[m].params})
        if not nearest:
            nearest = sorted({p.rpartition(".")[0] or p for m in r.branch_ops if g.classes[m] == "matrix"
                              for p in g.ops[m].params})[-1:]
        fix = ", ".join(f"'{m}': 'branch_end'" for m in nearest) or "'<last layer of the branch>': 'branch_end'"
        notes.append((f"the residual add {g.where(r.add)}: its branch ({_layer_names(g, r.branch_ops)}) ends in "
                      f"{_what(g, walls, residual_adds)}, not in a linear/conv layer, so nothing there is set to "
                      f"start near zero. To make the block start at identity, name the layer(s) whose output "
                      f"reaches the add: overrides={{{fix}}}", nearest))

    letters, outs = _attention(g, residual_adds)
    for n, held in letters.items():
        found.setdefault(n, []).append(("attention_" + "".join(c for c in "qkv" if c in held),
                                        "fused projection" if len(held) > 1 else ""))
    for n in outs:  # not one inside a branch whose output passes more layers first (Zamba's shared block: zoo audit)
        if n in closing or n not in in_branch:
            found.setdefault(n, []).append(("attention_out", ""))

    routers = _routers(g, kinds)
    for n in routers:
        if g.classes[n] == "matrix":
            found.setdefault(n, []).append(("router", ROUTER_NOTE))

    layers = ("matrix", "block", "opaque", "recurrent")
    upstream, embedded = [False] * len(g.ops), [False] * len(g.ops)
    for n, op in enumerate(g.ops):
        # an embedding lookup is not a layer here: its table is kept, the layer after it is the first (docstring)
        upstream[n] = any(upstream[i] or g.classes[i] in layers for i in op.data_inputs)
        embedded[n] = any(embedded[i] or g.classes[i] == "embedding" for i in op.data_inputs)
    downstream = [False] * len(g.ops)
    for n in reversed(range(len(g.ops))):
        downstream[n] = any(downstream[u] or g.classes[u] in layers for u in g.users[n])
    for n in (n for n in range(len(g.ops)) if g.classes[n] == "matrix"):
        if not downstream[n] and n not in in_branch and n not in letters and n not in outs:
            found.setdefault(n, []).append(("head", "final layer"))
        # after an embedding, a layer inside a residual branch is one of its block's layers (the first
        # block's MLP in a parallel-attention LM), not the network's first layer
        if not upstream[n] and not (embedded[n] and n in in_branch):
            found.setdefault(n, []).append(("stem", "first layer") if g.rectified(n) else
                                           ("identity", "first layer; no ReLU-like activation follows it, so no stem gain"))
        found.setdefault(n, []).append(("identity", ""))
    picked = {}
    for n, candidates in found.items():
        role = strongest(r for r, _ in candidates)
        picked[n] = (role, next((note for r, note in candidates if r == role and note), ""))
    return Analysis(picked, end_norms, len({r.add for r in residuals}), notes,
                    {n: scales for n, scales in scaled.items() if picked[n][0] in BRANCH_END_ROLES}, in_branch,
                    routers)


def _what(g: DataFlow, walls: list[int], residual_adds: set[int]) -> str:
    """What stopped a walk back along a branch, in words."""
    if any(n in residual_adds for n in walls):
        return "another residual sum"
    if any(g.classes[n] == "embedding" for n in walls):
        return "an embedding"
    if any(g.classes[n] == "input" for n in walls):
        return "a model input"
    return "a call no rule covers (" + ", ".join(sorted({g.ops[n].label for n in walls})) + ")" if walls else "nothing"
