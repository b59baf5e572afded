"""Role detection: what every parameter of a model is.

Fifth link of the model level's chain (kinds -> graph -> positions -> roles -> **detect** -> schemes ->
plan): merges every source of roles into one role per parameter.

Each source of roles returns its own findings ``{parameter: Role}``; :func:`detect` merges them once,
the first source in this order that has a finding for a parameter giving its role
(:data:`PRECEDENCE`):

1. ``user``: what the user states (:mod:`idinit.roles`: ``overrides=`` > ``idinit.tag`` > a block's
   ``idinit_roles()``);
2. ``tied``: a parameter tied to an embedding stays an embedding (the paper leaves embeddings as the
   model made them, so a tied output layer is not re-initialised);
3. ``registry``: the known blocks of :mod:`idinit.registry`;
4. ``values``: what the model set on purpose (:mod:`idinit.values`: a prior bias is kept, a branch
   end behind a small layer scale gets IDI); ``keep_model_values=False`` switches it off;
5. ``graph``: the positions read off the model's graph (:mod:`idinit.positions`);
6. ``type``: the parameter's layer type alone (:mod:`idinit.kinds`).

A parameter no source places is ``unclassified``, with the graph's reason. The graph comes from the
autograd graph of one forward pass on ``example_inputs`` when they are given; otherwise from a
forward pass on example inputs built for the model where :mod:`idinit.inputs` knows how (HF
transformers models, torchvision detection models); otherwise from torch.fx. Schemes that place
every layer alike ("kaiming", ...) do not need it: without one they warn and go on; the others
raise, saying to pass ``example_inputs``.

Tied parameters are planned once, under their first name in ``named_parameters()``; the plan's note
lists the other names.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from idinit import registry, values
from idinit.graph import GraphUnavailable, autograd_graph, fx_graph
from idinit.inputs import buffers_rebuilt, example_inputs_for, model_kept
from idinit.dataflow import op_class
from idinit.kinds import MATRIX_KINDS, NORM_KINDS, RECURRENT_KINDS, ParamInfo, parameter_infos, read_kinds
from idinit.positions import ROUTER_NOTE, analyse
from idinit.roles import BRANCH_END_ROLES, strongest, user_roles

__all__ = ["Detection", "Role", "PRECEDENCE", "detect", "warn_caller"]

_LIBRARY_DIR = os.path.dirname(os.path.abspath(__file__))

# The sources of roles, strongest first (module docstring).
PRECEDENCE = ("user", "tied", "registry", "values", "graph", "type")


def warn_caller(message: str) -> None:
    """``warnings.warn`` pointed at the first frame outside the library's own modules (the user's call)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _LIBRARY_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


@dataclass
class Role:
    """A parameter's role, where it came from (``graph``, ``type``, ``tag``, ...) and a note for the plan."""

    role: str
    source: str
    note: str = ""


@dataclass
class Detection:
    """Everything :func:`idinit.plan` needs: the parameters, their roles, what could not be placed."""

    params: dict[str, ParamInfo]
    roles: dict[str, Role]
    unclassified: dict[str, str]
    residual: bool
    source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _GraphFindings:
    roles: dict[str, Role] = field(default_factory=dict)
    unclassified: dict[str, str] = field(default_factory=dict)
    residual: bool = False
    scaled: dict[str, set[str]] = field(default_factory=dict)  # branch end -> learned scales closing its branch
    # layers the graph saw outside every residual branch it found -> the registered block holding them ("": none)
    outside: dict[str, str] = field(default_factory=dict)


def detect(model: nn.Module, example_inputs: Any = None, overrides: Mapping[str, str] | None = None,
           use_registry: bool = True, need_positions: bool = True, keep_model_values: bool = True) -> Detection:
    """Roles of every parameter of ``model`` (see the module docstring). ``need_positions=False``
    (schemes that treat all layers alike) turns a missing graph into a warning instead of an error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if example_inputs is not None:
        example_inputs = _as_inputs(example_inputs)
    infos, aliases = parameter_infos(model)
    if not infos:
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to initialise")
    kinds = {name: set(info.kinds) for name, info in infos.items()}
    owners = {name: info.module for name, info in infos.items()}

    found: dict[str, dict[str, Role]] = {source: {} for source in PRECEDENCE}
    found["user"] = {n: Role(role, src) for n, (role, src) in user_roles(model, overrides, aliases).items()}
    if use_registry:
        found["registry"] = {n: Role(role, src) for n, (role, src) in registry.registry_roles(model, aliases).items()}
    found["tied"] = {n: Role("embedding", "tied", f"tied with {', '.join(info.aliases)}")
                     for n, info in infos.items() if info.aliases and "embedding" in kinds[n]}
    notes: list[tuple[str, list[str]]] = []  # (message, the modules its remedy names)
    settled = found["user"].keys() | found["registry"].keys()
    wanted = any((ks & MATRIX_KINDS or "unknown" in ks) and n not in settled for n, ks in kinds.items())
    graph, source, graph_found = None, "parameter types and the registry", _GraphFindings()
    if wanted:
        graph, source = _build_graph(model, infos, example_inputs, use_registry, need_positions)
    if graph is not None:
        # fused experts and N-D parameters read as one matrix: read off the graph (idinit.kinds)
        for name in read_kinds(graph, infos):
            kinds[name] = set(infos[name].kinds)
        graph_found = _graph_roles(graph, kinds, owners, notes)
    found["graph"] = graph_found.roles
    found["type"] = {n: r for n in infos if (r := _type_role(kinds[n])) is not None}
    if keep_model_values:
        found["values"] = _value_roles(model, infos, kinds, graph_found.scaled, {**found["type"], **found["graph"]})

    roles: dict[str, Role] = {}
    unclassified: dict[str, str] = {}
    for name, info in infos.items():
        candidates = [found[s][name] for s in PRECEDENCE if name in found[s]]
        if not candidates:
            unclassified[name] = graph_found.unclassified.get(name) or (
                "not a parameter of a known layer type, and no graph shows how it is used (pass example_inputs=)"
                if graph is None else "not a parameter of a known layer type, and not reached by the graph")
            continue
        role = Role(candidates[0].role, candidates[0].source, candidates[0].note)
        if role.source == "tied" and len(candidates) > 1 and candidates[1].role != "embedding":
            role.note += f", also a candidate for {candidates[1].role} ({candidates[1].source}): embedding wins"
        elif info.aliases and role.source != "tied":
            role.note = (role.note + "; " if role.note else "") + f"tied with {', '.join(info.aliases)}"
        block = graph_found.outside.get(name)
        inner = block and any(r.role == "branch_end" for q, r in found["registry"].items() if q.startswith(block + "."))
        if role.role == "attention_out" and block is not None and not inner and \
                role.source.startswith(("registry", "graph")):
            # an attention whose output no skip joins (an attention-pooling head: SigLIP's) closes no residual
            # branch: IDI as in a network without residuals (paper Sec. 3.1), not A.5's IDIZ (zoo audit); a
            # registered block with residuals of its own (nn.TransformerEncoderLayer) closes them inside
            role = Role("identity", role.source, "attention output projection outside every residual branch")
        roles[name] = role
    # a note whose remedy the user has applied (every module it names has a stated role) is dropped
    stated = {n.rpartition(".")[0] for n in found["user"]} | set(found["user"])
    notes = [text for text, modules in notes if not modules or not set(modules) <= stated]
    if notes:
        warn_caller("idinit role detection:\n- " + "\n- ".join(notes))
    residual = graph_found.residual or any(r.role == "branch_end" for r in roles.values()) or \
        any(r.role == "branch_end" for r in found["registry"].values())
    return Detection(infos, roles, unclassified, residual, source, notes)


def _value_roles(model: nn.Module, infos, kinds, scaled: Mapping[str, set[str]], base: Mapping[str, Role]) -> dict:
    """The ``values`` source (:mod:`idinit.values`): kept biases, branch ends behind a small layer scale.
    Memory nothing wrote since it was allocated is never kept (``values.written``)."""
    found: dict[str, Role] = {}
    for name, info in infos.items():
        if name in base and base[name].role == "bias":
            why = values.set_bias(model.get_submodule(info.module), info.param, kinds[name] == {"unknown"})
            if why and not values.written(info.param):
                found[name] = Role("bias", "values", f"looks set on purpose ({why}), but nothing wrote it since it "
                                   "was allocated (after to_empty() it is uninitialised memory): not kept; "
                                   f"overrides={{'{name}': 'keep'}} keeps it (a copy.deepcopy or a model loaded whole)")
            elif why:
                found[name] = Role("keep", "values", f"{why}: kept; overrides={{'{name}': 'bias'}} zeroes it")
    fresh = {s for scales in scaled.values() for s in scales
             if s in infos and not infos[s].param.is_meta and not values.written(infos[s].param)}
    redrawn = values.drawn_again(model, fresh) if fresh else {}
    for name, scales in scaled.items():
        small = values.small_scale({s: redrawn.get(s, infos[s].param) for s in scales if s in infos})
        if small:
            found[name] = Role("identity", "values", f"closes a residual branch that {small} already holds near "
                               f"zero: IDI here, not IDIZ on top of the scale; overrides={{'{name}': 'branch_end'}} "
                               "stacks both")
    return found


def _build_graph(model, infos, example_inputs, use_registry: bool, need_positions: bool):
    """``(graph or None, where the roles came from)``; raises when the scheme needs a graph and none
    can be had, the message's first line saying what to pass."""
    names = {id(info.param): name for name, info in infos.items()}
    remedy = ("pass example_inputs= (a tuple of positional arguments, or a dict of keyword arguments, for one "
              "forward pass, e.g. example_inputs=(torch.randn(1, 3, 224, 224),) or {'input_ids': ids}), or state "
              "the roles with overrides=")
    if example_inputs is not None:
        try:
            with buffers_rebuilt(model), model_kept(model):
                return autograd_graph(model, names, example_inputs), "autograd graph of one forward pass on example_inputs"
        except GraphUnavailable as err:
            raise ValueError(f"role detection failed on the example_inputs given: {err}") from err
    tried = []
    built = example_inputs_for(model)
    if built is not None:
        try:
            with buffers_rebuilt(model), model_kept(model):
                return autograd_graph(model, names, built[0]), f"autograd graph of one forward pass on {built[1]}"
        except GraphUnavailable as err:
            tried.append(f"{err} (on {built[1]})")
    try:
        return fx_graph(model, names, registry.is_registered if use_registry else (lambda m: False)), "torch.fx graph"
    except GraphUnavailable as err:
        tried.append(str(err))
    detail = "\n".join(f"  - {t}" for t in tried)
    if need_positions:
        raise ValueError(f"{type(model).__name__} needs example inputs to find where its residual branches end: "
                         f"{remedy}.\nWhat was tried:\n{detail}")
    warn_caller(f"{type(model).__name__}: no graph, so every layer is planned as 'identity' ({remedy}).\n"
                f"What was tried:\n{detail}")
    return None, "parameter types only (no graph)"


def _graph_roles(graph, kinds, owners, notes: list) -> _GraphFindings:
    """The ``graph`` source: roles from the graph's positions, and what it could not place."""
    found = analyse(graph, kinds, owners)
    notes.extend(found.notes)
    out = _GraphFindings(residual=found.residual_adds > 0)
    roles, unclassified = out.roles, out.unclassified
    if out.residual:
        inside = {p for n in found.in_branch for p in graph.ops[n].params}
        out.outside = {p: op.block or "" for op in graph.ops if op_class(op, kinds, owners) in ("matrix", "block")
                       for p in op.params if p not in inside}
    per_param: dict[str, list[tuple[str, str]]] = {}
    for n, (role, note) in found.roles.items():
        for p in graph.ops[n].params:
            if kinds[p] & MATRIX_KINDS:
                per_param.setdefault(p, []).append((role, note))
    for n, scales in found.scaled_ends.items():
        for p in graph.ops[n].params:
            if kinds[p] & MATRIX_KINDS:
                out.scaled.setdefault(p, set()).update(scales)
    for p, candidates in per_param.items():
        letters = {c for r, _ in candidates if r.startswith("attention_") and r != "attention_out" for c in r[10:]}
        if len(letters) > 1:  # one weight split between ops, as MultiheadAttention's cross-attention q | kv
            merged = "attention_" + "".join(c for c in "qkv" if c in letters)
            candidates = [(merged, "fused projection") if r.startswith("attention_") and r != "attention_out"
                          else (r, n) for r, n in candidates]
        role = strongest(r for r, _ in candidates)
        note = next((nt for r, nt in candidates if r == role and nt), "")
        if len({r for r, _ in candidates}) > 1:  # one module called in several places
            note = (note + "; " if note else "") + "used as " + ", ".join(sorted({r for r, _ in candidates}))
        roles[p] = Role(role, "graph", note)
        if role not in BRANCH_END_ROLES:
            out.scaled.pop(p, None)
    for n in found.routers:  # the whole router: a raw weight (Mixtral's F.linear(x, self.weight)), a bias (GPT-OSS)
        for p in graph.ops[n].params:
            roles[p] = Role("router", "graph", ROUTER_NOTE)
    for n in found.end_norms:
        for p in graph.ops[n].params:
            if "norm_weight" in kinds[p]:
                roles[p] = Role("branch_end_norm", "graph", "norm closing a residual branch")
    opaque = sorted({op.label for op in graph.ops if op_class(op, kinds, owners) == "opaque"})
    if opaque:
        held = sorted({owners[p] for op in graph.ops if op.label in opaque for p in op.params
                       if kinds[p] & MATRIX_KINDS})
        notes.append(("the graph cannot see inside " + ", ".join(opaque) + " (one call using the weights of "
                      f"{', '.join(held)}): these layers are planned as 'identity'. "
                      + ("State" if graph.source == "autograd" else "Pass example_inputs= to look inside, or state")
                      + " the layer that closes each residual branch, e.g. "
                      f"overrides={{'{held[-1] if held else '<module>'}': 'branch_end'}}", held))
    users = graph.consumers()
    for n, op in enumerate(graph.ops):
        inside = op.block or op.label in opaque
        # a weight chain kept as a value of its own (idinit.graph): the ops reading it say what it is
        readers = [graph.ops[u] for u in users[n]] if op.kind == "parameter" else [op]
        for p in op.params:
            if kinds[p] == {"unknown"} and p not in roles:
                usage = None if inside else next(((_usage_role(r, p), r.label) for r in readers
                                                  if _usage_role(r, p)), None)
                if usage:
                    roles[p] = Role(usage[0], "graph", f"used by {usage[1]}")
                else:
                    unclassified[p] = f"not a parameter of a known layer type, and used by {op.label}, which no rule covers"
            elif inside and p not in roles and kinds[p] & MATRIX_KINDS:
                roles[p] = Role("attention_qkv" if "fused_qkv" in kinds[p] else "identity", "type", f"inside {op.label}")
            elif p not in roles and kinds[p] & MATRIX_KINDS and op_class(op, kinds, owners) == "param":
                # a layer's weight that computes a table: IDI like any layer; a raw parameter read as matrices
                # (contracted, experts) on the way to a sum is the table itself: timm Gemma4-ViT's position table,
                # looked up as one_hot(positions) @ table, is an embedding (model's own init)
                usage = _usage_role(op, p) if kinds[p] & {"contracted", "experts"} else None
                roles[p] = Role(usage, "graph", f"used by {op.label}") if usage else \
                    Role("identity", "type", f"computes, from parameters alone, a table that {op.label} applies")
    for p, ks in kinds.items():
        if ks & MATRIX_KINDS and p not in roles:
            roles[p] = _sibling_role(p, roles) or Role("attention_qkv" if "fused_qkv" in ks else "identity", "type",
                                                       "not reached by the graph")
    return out


def _sibling_role(name: str, roles: Mapping[str, Role]) -> Role | None:
    """The role the graph gave the same parameter of the nearest numbered sibling module
    (``experts.expert_3.wo.weight`` -> ``experts.expert_0.wo.weight``), when those siblings agree: an
    expert the example pass routed no token to is still the end of its branch (zoo audit: Switch
    Transformers' unused experts kept IDI on ``wo``, so they would join their branch open)."""
    parts = name.split(".")
    for i in reversed(range(len(parts))):
        stem = parts[i].rstrip("0123456789")
        if stem == parts[i]:
            continue
        pattern = re.compile(re.escape(".".join(parts[:i] + [stem])) + r"\d+" + re.escape("".join("." + q for q in parts[i + 1:])))
        found = {(r.role, n) for n, r in roles.items() if r.source == "graph" and pattern.fullmatch(n)}
        if found and len({role for role, _ in found}) == 1:
            role, sibling = min(found)
            return Role(role, "graph", f"not reached by the graph; as its sibling {sibling}")
    return None


def _type_role(ks: set) -> Role | None:
    """The role a parameter's type alone gives (no position): None if the type has no rule."""
    if ks & MATRIX_KINDS:
        return Role("attention_qkv" if "fused_qkv" in ks else "identity", "type")
    if "recurrent_hh" in ks:
        return Role("recurrent", "type", "hidden-to-hidden")
    if ks & RECURRENT_KINDS:
        return Role("identity", "type", "input-to-hidden" if "recurrent_ih" in ks else "recurrent projection")
    if ks & NORM_KINDS:
        return Role("norm", "type")
    if "bias" in ks:
        return Role("bias", "type")
    if ks & {"embedding", "token"}:
        return Role("embedding", "type")
    if "activation" in ks:
        return Role("keep", "type", "activation parameter (PReLU)")
    return None


def _usage_role(op, name: str) -> str | None:
    op_kind = op.kind
    if op.fn == "affine":  # torch.addcmul(beta, alpha, x) (idinit.graph): a norm's weight (1) and bias (0)
        return "bias" if op_kind == "add" else "norm"
    if op_kind in ("add", "cat"):
        return "bias" if name.endswith("bias") else "embedding"
    if op_kind == "mul":
        return "scale"
    return None


def _as_inputs(example_inputs: Any) -> Any:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list, Mapping)):
        return tuple(example_inputs) if isinstance(example_inputs, list) else example_inputs
    raise TypeError("example_inputs must be a tuple of positional arguments or a dict of keyword arguments "
                    f"(or a single tensor), got {type(example_inputs).__name__}")
