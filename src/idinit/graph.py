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
    # autograd matmuls: the parameters multiplied as a stack of matrices, matrix by matrix (fused experts,
    # whose fused biases idinit.kinds looks for; idinit.contraction.record)
    stacked: tuple = ()

    @property
    def data_inputs(self) -> list[int]:
        return [i for i in self.inputs if i is not None]


@dataclass
class DataGraph:
    ops: list[Op] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    source: str = ""
    # {parameter: readings} for each parameter of 3+ axes (or a 2-D one viewed as a stack) a matmul or einsum
    # reads: ``(layout, stack)`` as one matrix or a stack of matrices, None otherwise (idinit.contraction)
    readings: dict = field(default_factory=dict)

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
                    graph.readings.setdefault(names[id(value)], set()).update(
                        contraction.fx_readings(node, tuple(value.shape)))
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


def _function_context_params(fn, names: Mapping[int, str]) -> set[str]:
    """The parameters of the modules a custom ``torch.autograd.Function``'s backward node keeps as
    attributes of its context (a module, or a list / tuple / dict of them); empty for a built-in node."""
    if not isinstance(fn, torch.autograd.function.BackwardCFunction):
        return set()
    held: set[str] = set()
    for value in vars(fn).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, nn.Module):
                held.update(names[id(p)] for p in item.parameters() if id(p) in names)
    return held


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
    chains: dict[Any, tuple] = {}  # grad_fn -> where the axes of a parameter of 2+ axes are (idinit.contraction)

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
                if var.dim() >= 2:
                    chains[fn] = contraction.start(names[id(var)], tuple(var.shape))
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
        hidden = _function_context_params(fn, names)
        if hidden:
            # a custom autograd.Function: its forward ran unrecorded, so the weights of the modules it keeps on
            # its context (HF Reformer's reversible blocks, ctx.layers) reach no node; they are this call's
            params |= hidden
        label = f"{name} (a custom autograd.Function, whose forward autograd does not record)" if hidden else name
        has_data = any(s is not None and s[0] == "op" for s in seen)
        if not has_data and params and kind != "embedding":
            if fn in kept:
                graph.ops.append(Op("parameter", [], tuple(sorted(params)), name, fn="parameter"))
                status[fn] = ("op", len(graph.ops) - 1)
            else:
                status[fn] = ("param", frozenset(params))  # a weight chain: w.t(), w.expand(), table[idx]
                held = [chains[c] for c in kids if c in chains]
                if kind == "matmul":  # a projection of a constant (XLNet's position keys, r)
                    contraction.record(graph.readings, kids, chains)
                elif len(params) == 1 and len(held) == 1 and (state := contraction.step(fn, held[0])) is not None:
                    chains[fn] = state
            continue
        inputs = [s[1] if s is not None and s[0] == "op" else None for s in seen]
        stacked = contraction.record(graph.readings, kids, chains) if kind == "matmul" else ()
        graph.ops.append(Op(kind, inputs, tuple(sorted(params)), label, fn=name, stacked=stacked))
        status[fn] = ("op", len(graph.ops) - 1)
    graph.outputs = [status[t.grad_fn][1] for t in roots if status[t.grad_fn][0] == "op"]
    return graph, status
