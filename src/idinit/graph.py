"""The data-flow graph of a model, from torch.fx or from the autograd graph of one forward pass.

Second link of the model level's chain (kinds -> **graph** -> positions -> roles -> detect -> schemes ->
plan): the model's data flow, which positions reads.

Both sources are reduced to the same small form, a :class:`DataGraph`: a list of operations in
topological order, each with its data inputs (positional, ``None`` where an argument is not data)
and the parameters it consumes directly. Parameters reach an operation through "weight chains"
(``w.t()``, ``cls_token.expand(...)``, ``table[index]``): such chains carry no data, so they are
folded into the operation that consumes them, except where a chain is added to a value computed
from it (a class token that is the stream of a block: an op of its own, kind ``parameter``).
:mod:`idinit.detect` reads roles off this form.

- :func:`fx_graph` needs no inputs: it traces the model symbolically with :mod:`torch.fx`. Modules
  of ``torch.nn`` are leaves (fx's rule), so ``nn.MultiheadAttention`` and the ``nn.Transformer*``
  modules appear as single calls; :mod:`idinit.registry` knows their insides.
- :func:`autograd_graph` runs one forward pass on ``example_inputs`` (eval mode, gradients on,
  buffers restored afterwards) and walks ``grad_fn.next_functions`` back from the outputs. It sees
  every model fx cannot trace (data-dependent control flow, HF transformers) and sees inside
  ``torch.nn`` modules.
"""
from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from idinit import contraction
from idinit.forward_pass import GraphUnavailable, _tensors, run_forward  # noqa: F401 (check reads _tensors here)

__all__ = ["Op", "DataGraph", "fx_graph", "autograd_graph", "GraphUnavailable"]


@dataclass
class Op:
    """One operation: ``kind`` is one of ``input, parameter, add, mul, matmul, sdpa, softmax, sigmoid,
    topk, cat, embedding, call``; ``inputs`` are indices of earlier ops (``None``: not data). A
    ``parameter`` op is a weight chain kept as a value of its own (:func:`_parameter_sources`)."""

    kind: str
    inputs: list
    params: tuple
    label: str
    block: str | None = None
    # what was called: the function, method or module class (fx) or the backward node (autograd);
    # ``label`` names the call site (a module path), which says nothing of an nn.ReLU named "1"
    fn: str = ""
    # autograd matmuls: ``(parameter, layout, count)`` for each parameter multiplied as a stack of matrices,
    # layout ``rows`` when each matrix is stored (out, in), ``t`` when (in, out); ``count`` 0 for a 3-D stack
    # (one matrix per index of its dim 0), else the matrices a 2-D parameter's dim 0 is viewed as (DBRX)
    stacked: tuple = ()

    @property
    def data_inputs(self) -> list[int]:
        return [i for i in self.inputs if i is not None]


@dataclass
class DataGraph:
    ops: list[Op] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    source: str = ""
    # {parameter: layouts} for each raw parameter of 3+ axes a matmul or einsum reads as one matrix
    # (idinit.contraction; None where one reads it otherwise)
    contracted: dict = field(default_factory=dict)

    def consumers(self) -> list[list[int]]:
        users: list[list[int]] = [[] for _ in self.ops]
        for index, op in enumerate(self.ops):
            for i in dict.fromkeys(op.data_inputs):
                users[i].append(index)
        return users


# ---------------------------------------------------------------------------------------------
# torch.fx

_FX_KINDS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", "add": "add", "add_": "add",
    "__add__": "add", "__radd__": "add",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", "mul": "mul", "mul_": "mul",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "matmul", torch.mm: "matmul",
    torch.baddbmm: "matmul", torch.einsum: "matmul", "matmul": "matmul", "bmm": "matmul", "mm": "matmul", "baddbmm": "matmul",
    F.scaled_dot_product_attention: "sdpa",
    F.softmax: "softmax", torch.softmax: "softmax", "softmax": "softmax",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.hardsigmoid: "sigmoid", "sigmoid": "sigmoid",
    torch.cat: "cat", torch.concat: "cat", torch.topk: "topk", "topk": "topk",
    F.embedding: "embedding", F.embedding_bag: "embedding",
}
_FX_MODULE_KINDS = ((nn.Softmax, "softmax"), (nn.Sigmoid, "sigmoid"), (nn.Hardsigmoid, "sigmoid"),
                    (nn.Embedding, "embedding"), (nn.EmbeddingBag, "embedding"))
# Calls whose result describes a tensor (its shape, device) rather than carrying its data: a mask
# built from x.shape does not depend on x's values, and autograd would not see it either.
_FX_META_METHODS = {"size", "dim", "numel", "nelement", "type", "get_device", "stride", "is_contiguous",
                    # a new tensor of x's shape / dtype holds none of x's values: timm's DropPath multiplies the
                    # branch by x.new_empty(shape).bernoulli_(p), which is no second computed path (zoo audit)
                    "new_empty", "new_zeros", "new_ones", "new_full"}
_FX_META_FUNCTIONS = {torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like,
                      torch.randn_like, torch.randint_like}
_FX_META_ATTRS = {"shape", "device", "dtype", "ndim", "is_cuda", "requires_grad"}


_FX_ADDCMUL = {torch.addcmul, "addcmul", "addcmul_"}


def _append_addcmul(graph: DataGraph, label: str, operands: list) -> int | None:
    """Append ``addcmul(input, tensor1, tensor2) = input + value * tensor1 * tensor2`` as the product and
    the sum it is, given the status of each operand (``("op", index)``, ``("param", names)`` or other);
    returns the sum's index, or None when the product holds no data (then the call is one op like any
    other). When the input and a factor are both parameters, the pair is an affine, a norm's weight and
    bias without the normalisation (timm ResMLP's ``Affine``: ``torch.addcmul(beta, alpha, x)``): both
    ops say so (``fn="affine"``), and :mod:`idinit.detect` gives the factor 1 and the input 0 (zoo audit)."""
    def index(state) -> int | None:
        return state[1] if state and state[0] == "op" else None

    def held(*states) -> tuple:
        return tuple(sorted(set().union(*(s[1] for s in states if s and s[0] == "param"))))

    shift, *factors = operands
    if all(index(f) is None for f in factors):
        return None
    fn = "affine" if held(shift) and held(*factors) else "addcmul"
    graph.ops.append(Op("mul", [index(f) for f in factors], held(*factors), label, fn=fn))
    graph.ops.append(Op("add", [index(shift), len(graph.ops) - 1], held(shift), label, fn=fn))
    return len(graph.ops) - 1


def _fx_kind(node) -> str:
    target = node.target
    if node.op == "call_function" and target is builtins.getattr:
        return "meta" if len(node.args) > 1 and node.args[1] in _FX_META_ATTRS else "call"
    if node.op == "call_function" and target is builtins.len:
        return "meta"
    if node.op == "call_method" and target in _FX_META_METHODS:
        return "meta"
    if node.op == "call_function" and target in _FX_META_FUNCTIONS:
        return "meta"
    try:
        return _FX_KINDS.get(target, "call")
    except TypeError:  # unhashable target
        return "call"


def fx_graph(model: nn.Module, names: Mapping[int, str], is_block: Callable[[nn.Module], bool]) -> DataGraph:
    """Trace ``model`` with :mod:`torch.fx` (no inputs needed); ``names`` maps ``id(parameter)`` to
    its canonical name; ``is_block(module)`` marks modules to keep as single opaque calls."""
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return is_block(m) or super().is_leaf_module(m, qualname)

    try:
        fx = _Tracer().trace(model)
    except Exception as err:  # fx raises many types (TraceError, TypeError, AttributeError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise GraphUnavailable(f"torch.fx could not trace {type(model).__name__}: {type(err).__name__}: "
                               f"{first[:200]}") from err

    def module_params(module: nn.Module) -> tuple:
        return tuple(dict.fromkeys(names[id(p)] for p in module.parameters() if id(p) in names))

    graph, status = _fx_convert(model, fx, names, is_block, module_params, set())
    kept = _parameter_sources({node: list(node.users) for node in fx.nodes}, status, graph)
    return _fx_convert(model, fx, names, is_block, module_params, kept)[0] if kept else graph


def _fx_convert(model, fx, names, is_block, module_params, kept: set) -> tuple[DataGraph, dict]:
    """The fx nodes as a DataGraph; the weight chains in ``kept`` become ops of their own
    (:func:`_parameter_sources`)."""
    graph = DataGraph(source="torch.fx")
    # status of every fx node: ("op", index) | ("param", frozenset of names) | ("const", None)
    status: dict[Any, tuple[str, Any]] = {}
    for node in fx.nodes:
        if node.op == "placeholder":
            graph.ops.append(Op("input", [], (), node.name))
            status[node] = ("op", len(graph.ops) - 1)
            continue
        if node.op == "get_attr":
            value = _resolve(model, node.target)
            if isinstance(value, torch.Tensor) and id(value) in names and node in kept:
                graph.ops.append(Op("parameter", [], (names[id(value)],), node.name, fn="parameter"))
                status[node] = ("op", len(graph.ops) - 1)
            elif isinstance(value, torch.Tensor) and id(value) in names:
                status[node] = ("param", frozenset([names[id(value)]]))
                if value.dim() >= 3:  # how each einsum reads it (idinit.contraction)
                    graph.contracted.setdefault(names[id(value)], set()).update(
                        contraction.fx_readings(node, names[id(value)], tuple(value.shape)))
            else:
                status[node] = ("const", None)
            continue
        if node.op == "output":
            graph.outputs = [status[n][1] for n in _node_args(node) if status.get(n, ("",))[0] == "op"]
            continue
        args = _node_args(node)
        if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            args = _sdpa_args(node) + [a for a in args if a not in _sdpa_args(node)]
        seen = [status.get(a, ("const", None)) for a in args]
        inputs = [s[1] if s[0] == "op" else None for s in seen]
        params: set = set().union(*[s[1] for s in seen if s[0] == "param"]) if seen else set()
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            kind = next((k for cls, k in _FX_MODULE_KINDS if isinstance(module, cls)), "call")
            block = node.target if is_block(module) else None
            own = module_params(module)
            if block is None and all(i is None for i in inputs):
                # a layer fed constants only (HF Swin-V2's position-bias MLP over a coordinate grid) computes a
                # table from parameters, as the autograd graph sees it: a weight chain, not a layer on the data
                held = frozenset([*own, *params])
                status[node] = ("param", held) if held else ("const", None)
                if held and node in kept:
                    graph.ops.append(Op("parameter", [], tuple(sorted(held)), node.target, fn="parameter"))
                    status[node] = ("op", len(graph.ops) - 1)
                continue
            graph.ops.append(Op(kind, inputs, tuple(dict.fromkeys([*own, *sorted(params)])), node.target, block,
                                type(module).__name__))
            status[node] = ("op", len(graph.ops) - 1)
            continue
        if node.op in ("call_function", "call_method") and node.target in _FX_ADDCMUL:
            operands = [node.args[i] if len(node.args) > i else node.kwargs.get(key)
                        for i, key in enumerate(("input", "tensor1", "tensor2"))]
            index = _append_addcmul(graph, node.name, [status.get(a, ("const", None)) for a in operands])
            if index is not None:
                status[node] = ("op", index)
                continue
        kind = _fx_kind(node)
        if kind == "meta":
            status[node] = ("const", None)
        elif any(i is not None for i in inputs) or (kind == "embedding" and params):
            called = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            graph.ops.append(Op(kind, inputs, tuple(sorted(params)), node.name, fn=called))
            status[node] = ("op", len(graph.ops) - 1)
        elif params and node in kept:
            graph.ops.append(Op("parameter", [], tuple(sorted(params)), node.name, fn="parameter"))
            status[node] = ("op", len(graph.ops) - 1)
        elif params:
            status[node] = ("param", frozenset(params))
        else:
            status[node] = ("const", None)
    return graph, status


def _parameter_sources(users: Mapping[Any, list], status: Mapping[Any, tuple], graph: DataGraph) -> set:
    """The weight chains to keep as values of their own (an op of kind ``parameter``, no inputs)
    instead of folding them into their consumers: those added once to a computed value and read by
    some other operation as well. CaiT's first class-attention block computes ``x_cls + gamma_1 *
    attn(cat(x_cls, x))`` with ``x_cls = cls_token.expand(B, -1, -1)``: the expanded token is the
    stream, the skip of a residual branch that reads it too. Folded into the add, it made a bias add
    and the branch was lost (zoo audit). A parameter added once and read nowhere else (a position
    table, a bias) stays folded, and so does one added in several places (a query position added in
    every decoder layer): a shared offset, not one stream."""
    def readers(key, seen: set) -> list:  # the ops reading ``key``, through weight chains
        found = []
        for user in users.get(key, ()):
            if user not in seen:
                seen.add(user)
                state = status.get(user, ("",))[0]
                found.extend([user] if state == "op" else readers(user, seen) if state == "param" else [])
        return found

    def is_add(user) -> bool:
        return status.get(user, ("",))[0] == "op" and graph.ops[status[user][1]].kind == "add"

    shared = set()
    for key, state in status.items():
        # the add reads the chain itself: ConViT's ``sigmoid(gating) * pos_proj(rel_indices)``, a chain too, is
        # added to attention scores, but the gating it starts from is no stream
        if state[0] == "param" and sum(map(is_add, dict.fromkeys(users.get(key, ())))) == 1:
            kinds = [graph.ops[status[user][1]].kind for user in readers(key, set())]
            if len(kinds) > 1 and kinds.count("add") == 1:
                shared.add(key)
    # the chain's last link before it forks (``cls_token.expand(...)``, not ``cls_token``): the ops reading it
    # are then the cat and the add, which say what the parameter is (idinit.detect)
    return {key for key in shared if not any(user in shared for user in users.get(key, ()))}


def _resolve(model: nn.Module, target: str):
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _node_args(node) -> list:
    import torch.fx

    found: list = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _sdpa_args(node) -> list:
    picked = []
    for position, key in enumerate(("query", "key", "value")):
        value = node.args[position] if len(node.args) > position else node.kwargs.get(key)
        picked.append(value)
    return picked


# ---------------------------------------------------------------------------------------------
# autograd

def _autograd_kind(name: str) -> str:
    base = name.rstrip("0123456789")
    if "ScaledDotProduct" in base or "FlashAttention" in base or "EfficientAttention" in base:
        return "sdpa"
    return {
        "AddBackward": "add", "MulBackward": "mul",
        "MmBackward": "matmul", "BmmBackward": "matmul", "BaddbmmBackward": "matmul", "GroupedMmBackward": "matmul",
        "AddmmBackward": "matmul", "MatmulBackward": "matmul",
        "SoftmaxBackward": "softmax", "SafeSoftmaxBackward": "softmax", "SigmoidBackward": "sigmoid", "HardsigmoidBackward": "sigmoid",
        "CatBackward": "cat", "TopkBackward": "topk", "EmbeddingBackward": "embedding", "EmbeddingBagBackward": "embedding",
        # torch.max's values: a top-1 router's weights (Switch Transformers' max of the softmax, zoo audit)
        "EmbeddingDenseBackward": "embedding", "MaxBackward": "topk",
    }.get(base, "call")


# Weight-chain nodes a stacked weight's matrices pass unchanged, up to the swap of their two axes.
_KEEPS_MATRICES = {"ToCopyBackward0", "AliasBackward0", "CloneBackward0"}


def _chain_step(fn, chain: tuple) -> tuple | None:
    """The weight chain ``(parameter, rank, swapped, count)`` after backward node ``fn``, for a chain that
    keeps a stacked weight's last two axes as the matrices and its first as the stack: picking
    matrices (``w[e]``, ``w[index]``) and swapping the two axes (``w[e].t()``, ``w[e].T``,
    ``w.transpose(-2, -1)``) are followed; anything else ends the chain (None). ``count`` is None for
    a 3-D parameter; for a 2-D one, 0 until a view splits its dim 0 into ``count`` blocks of rows,
    ``w.view(count, -1, w.shape[1])`` (DBRX's experts stored ``(experts * ffn, hidden)``, zoo audit)."""
    name, rank, swapped, count = chain
    node = type(fn).__name__
    if node in _KEEPS_MATRICES:
        return chain
    if node in ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"):
        before = tuple(getattr(fn, "_saved_self_sym_sizes", ()))
        metadata = getattr(fn, "_input_metadata", ())  # the view's own shape
        after = tuple(metadata[0].shape) if len(metadata) == 1 else ()
        if count == 0 and not swapped and len(before) == 2 and len(after) == 3 and after[2] == before[1] \
                and after[0] * after[1] == before[0]:
            return name, 3, False, after[0]
        return None
    if node == "SelectBackward0" and rank == 3 and getattr(fn, "_saved_dim", None) == 0:
        return name, 2, swapped, count
    if node == "IndexBackward0" and rank == 3:
        indices = getattr(fn, "_saved_indices", ())
        if len(indices) == 1 and isinstance(indices[0], torch.Tensor) and indices[0].dim() == 1:
            return chain  # w[index]: a batch of whole matrices
        return None
    if node == "TBackward0" and rank == 2 or node == "PermuteBackward0" and \
            tuple(getattr(fn, "_saved_dims", ())) == (*range(rank - 2), rank - 1, rank - 2):
        return name, rank, not swapped, count
    if node == "TransposeBackward0":
        dims = {(d if d < 2 ** 63 else d - 2 ** 64) % rank for d in (fn._saved_dim0, fn._saved_dim1)}
        return (name, rank, not swapped, count) if dims == {rank - 2, rank - 1} else None
    return None


def _stacked(kids: list, chains: Mapping) -> tuple:
    """``(parameter, layout, count)`` for the stacked weights a matmul node multiplies: the left factor of
    ``A @ B`` is read (out, in), the right one (in, out) (the last two of its inputs are the factors:
    ``addmm``'s first is the bias). A 2-D parameter whose dim 0 no view split is no stack."""
    found = []
    for position, kid in enumerate(kids[-2:]):
        chain = chains.get(kid)
        if chain is not None and chain[1] in (2, 3) and chain[3] != 0:
            left = position == 0 and len(kids) > 1
            found.append((chain[0], "rows" if left != chain[2] else "t", chain[3] or 0))
    return tuple(found)


def autograd_graph(model: nn.Module, names: Mapping[int, str], example_inputs: Any) -> DataGraph:
    """The graph of one forward pass on ``example_inputs`` (see :func:`run_forward`)."""
    roots = run_forward(model, example_inputs)
    graph, status = _autograd_convert(roots, names, set())
    users: dict[Any, list] = {}
    for fn in status:
        for child, _ in getattr(fn, "next_functions", ()):
            if child is not None:
                users.setdefault(child, []).append(fn)
    kept = _parameter_sources(users, status, graph)
    return _autograd_convert(roots, names, kept)[0] if kept else graph


def _autograd_convert(roots: list[torch.Tensor], names: Mapping[int, str], kept: set) -> tuple[DataGraph, dict]:
    """The backward nodes behind ``roots`` as a DataGraph; the weight chains in ``kept`` become ops
    of their own (:func:`_parameter_sources`)."""
    graph = DataGraph(source="autograd")
    # status per grad_fn: ("op", index) | ("param", frozenset)
    status: dict[Any, tuple[str, Any]] = {}
    inputs_of: dict[int, int] = {}
    chains: dict[Any, tuple] = {}  # grad_fn -> (stacked parameter, rank, swapped, count): see _chain_step
    axes: dict[Any, tuple] = {}  # grad_fn -> where a raw N-D parameter's axes are (idinit.contraction)

    def children(fn) -> list:
        return [c for c, _ in fn.next_functions]

    stack = [(fn, False) for fn in dict.fromkeys(t.grad_fn for t in roots)]
    while stack:
        fn, expanded = stack.pop()
        if fn in status:
            continue
        if type(fn).__name__ == "AccumulateGrad":
            var = fn.variable
            if id(var) in names and fn in kept:
                graph.ops.append(Op("parameter", [], (names[id(var)],), "parameter", fn="parameter"))
                status[fn] = ("op", len(graph.ops) - 1)
            elif id(var) in names:
                status[fn] = ("param", frozenset([names[id(var)]]))
                if var.dim() in (2, 3):
                    chains[fn] = (names[id(var)], var.dim(), False, None if var.dim() == 3 else 0)
                if var.dim() >= 3:
                    axes[fn] = contraction.start(names[id(var)], tuple(var.shape))
            else:
                index = inputs_of.get(id(var))
                if index is None:
                    graph.ops.append(Op("input", [], (), "input"))
                    index = inputs_of[id(var)] = len(graph.ops) - 1
                status[fn] = ("op", index)
            continue
        kids = children(fn)
        if not expanded:
            stack.append((fn, True))
            stack.extend((c, False) for c in kids if c is not None and c not in status)
            continue
        seen = [status.get(c) if c is not None else None for c in kids]
        name = type(fn).__name__
        if name.startswith("AddcmulBackward") and len(seen) == 3:
            index = _append_addcmul(graph, name, seen)
            if index is not None:
                status[fn] = ("op", index)
                continue
        kind = _autograd_kind(name)
        params = set().union(*[s[1] for s in seen if s is not None and s[0] == "param"]) if seen else set()
        has_data = any(s is not None and s[0] == "op" for s in seen)
        if not has_data and params and kind != "embedding":
            if fn in kept:
                graph.ops.append(Op("parameter", [], tuple(sorted(params)), name, fn="parameter"))
                status[fn] = ("op", len(graph.ops) - 1)
            else:
                status[fn] = ("param", frozenset(params))  # a weight chain: w.t(), w.expand(), table[idx]
                stacked = [chains[c] for c in kids if c in chains]
                if len(params) == 1 and len(stacked) == 1 and (step := _chain_step(fn, stacked[0])) is not None:
                    chains[fn] = step
                held = [axes[c] for c in kids if c in axes]
                if kind == "matmul":  # a projection of a constant (XLNet's position keys, r)
                    contraction.record(graph.contracted, fn, kids, axes)
                elif len(params) == 1 and len(held) == 1 and (state := contraction.step(fn, held[0])) is not None:
                    axes[fn] = state
            continue
        inputs = [s[1] if s is not None and s[0] == "op" else None for s in seen]
        stacked = _stacked(kids, chains) if kind == "matmul" else ()
        if kind == "matmul":
            contraction.record(graph.contracted, fn, kids, axes)
        graph.ops.append(Op(kind, inputs, tuple(sorted(params)), name, fn=name, stacked=stacked))
        status[fn] = ("op", len(graph.ops) - 1)
    graph.outputs = [status[t.grad_fn][1] for t in roots if status[t.grad_fn][0] == "op"]
    return graph, status
