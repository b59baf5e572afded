"""Known blocks: roles inside the ``torch.nn`` modules that torch.fx cannot see into.

torch.fx treats every ``torch.nn`` module as one call, so ``nn.MultiheadAttention`` and the
``nn.Transformer*`` modules are opaque in an fx graph. Their structure is fixed, so their roles are
written here, keyed by the class's import path (only the exact class matches: a subclass may change
``forward``). Everything else (torchvision, HF transformers, the lab's CIFAR ResNets, any user model)
is found from the graph; ``use_registry=False`` switches these entries off, and the tests check that the
autograd graph then finds the same roles. Each entry maps the block to ``{name relative to the block:
role}``; norms and biases are left to their types.
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
