"""Values a model set on purpose before initialisation, and the ``overwritten_prior`` flag of
:func:`idinit.check` for those the initialisation changed (a prior bias such as RetinaNet's
``-4.6``, a learned scale, a norm weight other than 1)."""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from idinit.findings import Flag
from idinit.kinds import NORM_KINDS
from idinit.values import default_bias_bound

__all__ = ["overwritten_priors", "reference_state"]


def reference_state(reference) -> dict[str, torch.Tensor] | None:
    """``check``'s ``reference=`` as float64 CPU tensors by name (None stays None); a wrong type is a
    ``TypeError`` naming what was passed."""
    if reference is None:
        return None
    if isinstance(reference, nn.Module):
        reference = reference.state_dict()
    if not isinstance(reference, Mapping) or not all(isinstance(v, torch.Tensor) for v in reference.values()):
        raise TypeError("reference must be a state dict (name -> tensor) taken before initialisation, or a module "
                        f"built the same way and not initialised; got {type(reference).__name__}")
    return {k: v.detach().to("cpu", torch.float64, copy=True) for k, v in reference.items() if v.is_floating_point()}


def _default_range(module: nn.Module, leaf: str, kinds: set) -> tuple[float, float] | None:
    """The values PyTorch's own ``reset_parameters`` gives this parameter: ``(low, high)``; None for
    parameters with no default (learned scales, gates), which a model always sets on purpose."""
    if "norm_weight" in kinds:
        return (1.0, 1.0)
    bound = default_bias_bound(module) if "bias" in kinds else None
    if bound is not None:  # nn.Linear / ConvNd and the recurrent layers (1/sqrt(hidden_size), no weight attribute)
        return (-bound, bound)
    if kinds & NORM_KINDS or "bias" in kinds and not isinstance(getattr(module, "weight", None), torch.Tensor):
        return (0.0, 0.0)
    weight = getattr(module, "weight", None)
    if "bias" in kinds and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        fan_in = min(weight.numel() // weight.shape[0], weight.numel() // weight.shape[1])
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        return (-bound, bound)
    return None


def overwritten_priors(model: nn.Module, kinds: Mapping[str, set], ref: Mapping[str, torch.Tensor]) -> list[Flag]:
    """An ``overwritten_prior`` flag for each bias, norm parameter or scale (at most one dimension)
    whose value before initialisation was set on purpose (outside PyTorch's default range, a constant
    other than it, or a parameter with no default) and that differs now. ``kinds``: each parameter's
    kinds (:func:`idinit.kinds.parameter_infos`)."""
    flags = []
    for name, p in model.named_parameters():
        if name not in ref or p.dim() > 1 or ref[name].shape != p.shape:
            continue
        before, now = ref[name], p.detach().to("cpu", torch.float64)
        size = before.abs().max().item() if before.numel() else 0.0
        if before.numel() == 0 or (now - before).abs().max().item() <= 1e-6 * max(1.0, size):
            continue
        module = model.get_submodule(name.rpartition(".")[0])
        default = _default_range(module, name.rpartition(".")[2], kinds.get(name, set()))
        constant = before.numel() > 1 and bool((before == before.flatten()[0]).all())
        if default is not None:
            low, high = default
            outside = before.min().item() < low - 1e-6 * max(1, abs(low)) or before.max().item() > high + 1e-6 * max(1, abs(high))
            if not outside and not (constant and low < high and before.flatten()[0].item() != 0):
                continue
        flags.append(Flag("overwritten_prior", [name], f"{name} was {_describe(before)} before initialisation (a value "
                          f"the model set on purpose) and is {_describe(now)} now",
                          f"keep it: plan with overrides={{{name!r}: 'keep'}}, or copy it back after init_"))
    return flags


def _describe(t: torch.Tensor) -> str:
    flat = t.flatten()
    if flat.numel() and bool((flat == flat[0]).all()):
        return f"{flat[0].item():.4g}" if flat.numel() == 1 else f"all {flat[0].item():.4g}"
    return f"in [{flat.min().item():.3g}, {flat.max().item():.3g}]"
