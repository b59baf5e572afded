"""Known blocks: roles inside modules whose structure is fixed, by class (a fast path).

The registry is keyed by the class's import path as a string, so the library imports neither
torchvision nor transformers. Only the exact class matches (a subclass may change ``forward``).
It serves two purposes:

- the ``torch.nn`` composite modules (``MultiheadAttention``, ``Transformer*``), which torch.fx
  treats as single opaque calls, so that their insides get roles without a forward pass;
- a cross-check: ``tests/test_plan_detection.py`` asserts that the graph-based detection finds the
  same roles as these entries (``use_registry=False`` switches the registry off).

Everything else (the CIFAR ResNets of the lab, HF models, any user model) is found from the graph.
Each entry maps the block to ``{name relative to the block: role}``; norms and biases are left to
their types.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["block_roles", "is_registered", "registry_roles"]


def _mha(prefix: str, module: nn.Module) -> dict[str, str]:
    roles = {f"{prefix}out_proj.weight": "attention_out"}
    if getattr(module, "in_proj_weight", None) is not None:
        roles[f"{prefix}in_proj_weight"] = "attention_qkv"
    else:
        roles.update({f"{prefix}q_proj_weight": "attention_q", f"{prefix}k_proj_weight": "attention_k",
                      f"{prefix}v_proj_weight": "attention_v"})
    return roles


def _encoder_layer(module: nn.Module) -> dict[str, str]:
    # x + self_attn(...) and x + linear2(act(linear1(...))), pre- or post-norm alike: out_proj
    # and linear2 close the two residual branches.
    return {**_mha("self_attn.", module.self_attn), "linear1.weight": "identity", "linear2.weight": "branch_end"}


def _decoder_layer(module: nn.Module) -> dict[str, str]:
    return {**_encoder_layer(module), **_mha("multihead_attn.", module.multihead_attn)}


def _basic_block(module: nn.Module) -> dict[str, str]:
    roles = {"conv1.weight": "identity", "conv2.weight": "branch_end", "bn2.weight": "branch_end_norm"}
    if module.downsample is not None:
        roles["downsample.0.weight"] = "identity"
    return roles


def _bottleneck(module: nn.Module) -> dict[str, str]:
    roles = {"conv1.weight": "identity", "conv2.weight": "identity", "conv3.weight": "branch_end",
             "bn3.weight": "branch_end_norm"}
    if module.downsample is not None:
        roles["downsample.0.weight"] = "identity"
    return roles


def _container(module: nn.Module) -> dict[str, str]:
    """nn.TransformerEncoder / Decoder / Transformer: their layers are registered blocks themselves."""
    return {}


_ENTRIES: dict[str, Callable[[nn.Module], dict[str, str]]] = {
    "torch.nn.modules.activation.MultiheadAttention": lambda m: _mha("", m),
    "torch.nn.modules.transformer.TransformerEncoderLayer": _encoder_layer,
    "torch.nn.modules.transformer.TransformerDecoderLayer": _decoder_layer,
    "torch.nn.modules.transformer.TransformerEncoder": _container,
    "torch.nn.modules.transformer.TransformerDecoder": _container,
    "torch.nn.modules.transformer.Transformer": _container,
    "torchvision.models.resnet.BasicBlock": _basic_block,
    "torchvision.models.resnet.Bottleneck": _bottleneck,
}


def _key(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def is_registered(module: nn.Module) -> bool:
    return _key(module) in _ENTRIES


def block_roles(module: nn.Module) -> dict[str, str] | None:
    """The entry's roles for ``module`` (names relative to it), or None if its class is unknown."""
    entry = _ENTRIES.get(_key(module))
    return None if entry is None else entry(module)


def registry_roles(model: nn.Module, aliases: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{canonical parameter name: (role, "registry (Class)")}`` for every registered block in ``model``."""
    found: dict[str, tuple[str, str]] = {}
    for mod_name, module in model.named_modules():
        roles = block_roles(module)
        if not roles:
            continue
        for rel, role in roles.items():
            full = f"{mod_name}.{rel}" if mod_name else rel
            if full in aliases:
                found[aliases[full]] = (role, f"registry ({type(module).__name__})")
    return found
