"""Parameter kinds: which layer type each parameter belongs to, from its module's type alone (one
exception, fused experts, is read off the graph: below).

First link of the model level's chain (**kinds** -> graph -> positions -> roles -> detect -> schemes ->
plan): the layer type of each parameter, before any graph is read.

A kind is not yet a role: a ``linear`` weight may turn out to be a stem, a branch end or a head once
the graph is read (:mod:`idinit.positions`). Kinds: ``linear``, ``linear_t`` (HF ``Conv1D``, stored
``(in, out)``), ``fused_qkv`` (``nn.MultiheadAttention.in_proj_weight``), ``conv``,
``conv_transpose``, ``recurrent_ih`` / ``recurrent_hh`` / ``recurrent_hr``, ``norm_weight`` /
``norm_bias``, ``bias``, ``embedding``, ``token`` (MultiheadAttention's ``bias_k`` / ``bias_v``),
``activation`` (PReLU), ``experts`` (a stack of linear layers in one 3-D parameter: see below),
``contracted`` (one linear layer held as a raw parameter of 3+ axes: :func:`read_kinds`) and
``unknown`` (a parameter a custom module owns directly: the graph decides).

``experts`` and ``contracted`` are the kinds read off the graph (:func:`read_kinds`), since no layer type says
it: Mixture-of-Experts layers keep their experts' weights fused, ``(experts, out, in)`` (transformers
5's Mixtral, Qwen-MoE, OLMoE, DeepSeek-V3, ...) or ``(experts, in, out)`` (GPT-OSS, Llama 4), in a
module of their own. A 3-D parameter of such a module that the forward pass multiplies as matrices,
each its last two axes, one per index of its first (``x @ w[e]``, ``F.linear(x, w[e])``, a batched or
grouped matmul over ``w``), is a stack of linear layers; how the matmul takes them says which axis
is the input (layout ``stacked`` for ``(experts, out, in)``, ``stacked_t`` for ``(experts, in, out)``).
A 2-D parameter viewed along its dim 0 as such a stack before the matmul, ``w.view(experts, -1,
w.shape[1])[e]`` (DBRX stores its experts ``(experts * ffn, hidden)``), is the same stack stored flat:
layout ``stacked_flat`` / ``stacked_t_flat``, ``ParamInfo.stack`` the number of matrices.

A norm is any ``torch.nn`` normalisation layer or any module whose class name, or a base class's,
ends in ``Norm`` (``LlamaRMSNorm``, ``T5LayerNorm``, ``LayerNorm2d``), where a dimension, ``Act`` (a norm
with its activation fused in) and a precision (``Fp32``) may follow (timm's ``RmsNormAct2d``,
``RmsNormFp32``), and whose parameters are vectors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

__all__ = ["ParamInfo", "closing_weight", "kind_of", "parameter_infos", "read_kinds", "unit_scale_at_zero"]

MATRIX_KINDS = {"linear", "linear_t", "fused_qkv", "conv", "conv_transpose", "experts", "contracted"}
RECURRENT_KINDS = {"recurrent_ih", "recurrent_hh", "recurrent_hr"}
NORM_KINDS = {"norm_weight", "norm_bias"}
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1, "RNN": 1}
# "Norm", then what only qualifies it: a dimension, a fused activation, the precision it computes in
_NORM_NAME = re.compile(r"Norm(\d*d|\d+|Act|Fp32|Fp16|Bf16)*$")


@dataclass
class ParamInfo:
    """A parameter as the plan sees it: its canonical name, other names (tied), kinds and layout."""

    name: str
    param: nn.Parameter
    module: str
    kinds: list[str]
    aliases: list[str] = field(default_factory=list)
    # rows | t (HF Conv1D) | transpose01 (ConvTranspose) | stored (grouped ConvTranspose) | stacked /
    # stacked_t (experts: each w[e] read as rows / as t) | stacked_flat / stacked_t_flat (the same, for a
    # 2-D parameter whose rows are ``stack`` blocks, one matrix each) | matrix<k> / matrix<k>_t (contracted:
    # the tensor viewed (prod(shape[:k]), -1), read as rows / as t)
    layout: str = "rows"
    gates: int = 1
    stack: int = 0

    @property
    def kind(self) -> str:
        return self.kinds[0]


# ---------------------------------------------------------------------------------------------
# parameter kinds (from the module type alone)

def _torch_norms() -> tuple:
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    return norms + (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else norms


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _torch_norms()) or any(_NORM_NAME.search(c.__name__) for c in type(module).__mro__)


def unit_scale_at_zero(module: nn.Module) -> bool:
    """Whether a custom norm layer leaves its normalised input as it is with its weight at 0, not 1:
    Gemma's RMSNorm (``x_hat * (1 + weight)``), ConvNeXt-V2's GlobalResponseNorm (``x + gamma * (x * N(x))
    + beta``). Setting such a weight to 1, the paper's unit norm scale, would double every output or add
    a path the model keeps closed. Measured, not guessed from names: with every parameter of the module at
    0, a norm that multiplies by its weight outputs exact zeros; these do not. The probe runs on small
    CPU copies (any device, meta included; the module and the global RNG are untouched); torch.nn's own
    norms multiply, and a module the probe cannot run counts as one that multiplies. A subclass of a torch
    norm with a forward of its own is probed too (Nemotron's ``LayerNorm1P`` normalises with ``weight + 1``)."""
    torch_forward = type(module).forward.__module__.startswith("torch.")
    if isinstance(module, _torch_norms()) and torch_forward or not _is_norm(module):
        return False
    out = _output_with_weight(module, 0.0)
    return out is not None and bool(torch.isfinite(out).all()) and bool(out.abs().amax() > 0)


def closing_weight(module: nn.Module) -> float | None:
    """The weight at which a norm of :func:`unit_scale_at_zero` outputs exact zeros, its other parameters at
    0: -1 for a norm scaling by ``1 + weight`` (Gemma, Nemotron); None where no constant weight does
    (GlobalResponseNorm adds its input back). What ``zeros_`` is to a norm that multiplies, when a scheme
    closes a branch with its norm (Zero-γ, idinit's ``branch_end_norm="zero"``)."""
    out = _output_with_weight(module, -1.0)
    return -1.0 if out is not None and bool(torch.isfinite(out).all()) and not out.any() else None


def _output_with_weight(module: nn.Module, value: float) -> torch.Tensor | None:
    """``module`` run (functionally, on small CPU inputs) with its weight at ``value`` and its other
    parameters at 0; None where its weight is not a float vector or no input layout fits."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not weight.is_floating_point():
        return None
    state = {n: torch.zeros(t.shape) for n, t in module.named_parameters()}
    state["weight"] = torch.full(weight.shape, value)
    state.update({n: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t.detach().cpu().clone()
                  for n, t in module.named_buffers()})
    c = weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 3, c), (2, 5, c), (2, c, 3, 3)):  # channels last, tokens, channels first
        x = torch.randn(shape, generator=generator)
        try:
            with torch.no_grad():
                out = torch.func.functional_call(module, state, (x,))
        except Exception:  # noqa: BLE001 - this layout is not the module's: try the next one
            continue
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            return out
    return None


def kind_of(module: nn.Module, local: str, param: torch.Tensor) -> str:
    """The kind of parameter ``local`` of ``module``: a layer type, not yet a role."""
    if isinstance(module, nn.MultiheadAttention):
        if local == "in_proj_weight":
            return "fused_qkv"
        if local in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return "linear"
        return "token" if local in ("bias_k", "bias_v") else "bias"
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        for prefix, kind in (("weight_ih", "recurrent_ih"), ("weight_hh", "recurrent_hh"), ("weight_hr", "recurrent_hr")):
            if local.startswith(prefix):
                return kind
        return "bias"
    layer = None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        layer = "conv_transpose"
    elif isinstance(module, nn.modules.conv._ConvNd):
        layer = "conv"
    elif isinstance(module, nn.Linear):
        layer = "linear"
    elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        layer = "linear_t"  # HF transformers' GPT-2 Conv1D stores (in, out)
    if layer is not None:
        return layer if local == "weight" else "bias" if local == "bias" else "unknown"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if _is_norm(module) and param.dim() == 1:
        return {"weight": "norm_weight", "bias": "norm_bias"}.get(local, "unknown")
    if isinstance(module, nn.PReLU):
        return "activation"
    return "unknown"


def parameter_infos(model: nn.Module) -> tuple[dict[str, ParamInfo], dict[str, str]]:
    """``({canonical name: ParamInfo}, {every name: canonical name})``."""
    canonical: dict[int, str] = {}
    infos: dict[str, ParamInfo] = {}
    for name, p in model.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(f"parameter {name!r} of {type(model).__name__} is uninitialised (a lazy module): "
                             "run one forward pass to materialise it before planning")
        canonical[id(p)] = name
        infos[name] = ParamInfo(name, p, name.rpartition(".")[0], [])
    aliases: dict[str, str] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(recurse=False):
            if id(p) not in canonical:
                continue
            full = f"{mod_name}.{local}" if mod_name else local
            info = infos[canonical[id(p)]]
            if full in aliases:
                continue
            aliases[full] = info.name
            if full != info.name:
                info.aliases.append(full)
            kind = kind_of(module, local, p)
            info.kinds.append(kind)
            if len(info.kinds) == 1:
                info.module = mod_name
                if kind == "linear_t":
                    info.layout = "t"
                elif kind == "conv_transpose":
                    info.layout = "transpose01" if module.groups == 1 else "stored"
                elif kind in ("recurrent_ih", "recurrent_hh"):
                    mode = getattr(module, "mode", None) or type(module).__name__.replace("Cell", "").upper()
                    info.gates = _GATES.get(mode, 1)
    return infos, aliases


def read_kinds(graph, infos: Mapping[str, ParamInfo]) -> list[str]:
    """Make ``experts`` or ``contracted`` the ``unknown`` parameters that every matmul of ``graph`` (a
    :class:`idinit.graph.DataGraph`) reads the same way as a stack of matrices or as one matrix
    (:attr:`~idinit.graph.DataGraph.readings`, :mod:`idinit.contraction`), with that reading as their layout,
    and their fused biases ``bias``; returns their names. Fused experts (module docstring); XLNet's
    ``rel_attn.q`` ``(d_model, n_head, d_head)``, read ``ibh,hnd->ibnd``, is the linear layer ``q.view(d_model,
    -1).t()``, its ``o``, read ``ibnd,hnd->ibh``, the linear layer ``o.view(d_model, -1)``. A parameter read two
    ways (``x @ w[e]`` here, ``x @ w[e].t()`` there, split into different numbers of matrices), or once as
    neither, is left as it was."""
    found = []
    for name, seen in graph.readings.items():
        info = infos.get(name)
        if info is None or info.kinds != ["unknown"] or len(seen) != 1 or None in seen:
            continue
        (layout, stack), = seen
        info.kinds = ["experts" if layout.startswith("stacked") else "contracted"]
        info.layout, info.stack = layout, stack
        found.append(name)
    return found + _stacked_biases(graph.ops, infos, found)


def _stacked_biases(ops, infos: Mapping[str, ParamInfo], stacks: list[str]) -> list[str]:
    """Make ``bias`` the ``unknown`` parameters of shape ``(experts, out)`` added to what a stack of
    experts computes, directly or through reshapes (GPT-OSS: ``x @ w[e] + b[e]``, or ``out.add_(b[index])``,
    seen as ``CopySlices``)."""
    outputs = {}
    for n, op in enumerate(ops):
        for name in getattr(op, "stacked", ()):
            if name in stacks:
                info = infos[name]
                shape = info.param.shape
                if info.stack:  # flat: (stack * rows, cols), each block (out, in) or, ``_t``, (in, out)
                    shape = (info.stack, shape[0] // info.stack, shape[1])
                outputs[n] = (shape[0], shape[2] if info.layout.startswith("stacked_t") else shape[1])

    def source(n: int) -> int:  # back through reshapes and transposes of the experts' output
        for _ in range(3):
            op = ops[n]
            if n in outputs or op.kind != "call" or op.params or len(set(op.data_inputs)) != 1:
                break
            n = op.data_inputs[0]
        return n

    found = []
    for op in ops:
        if op.kind != "add" and op.fn != "CopySlices" or len(op.params) != 1:
            continue
        info = infos.get(op.params[0])
        if info is not None and info.kinds == ["unknown"] and \
                any(outputs.get(source(i)) == tuple(info.param.shape) for i in op.data_inputs):
            info.kinds = ["bias"]
            found.append(info.name)
    return found
