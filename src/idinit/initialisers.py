"""The initialisers a plan entry can name, and how one is drawn into (a block of) a parameter.

Used by :meth:`idinit.plan.Plan.apply` for the entries the batched pattern writer
(:mod:`idinit.patterns`) does not take: the ``torch.nn.init`` draws, on views of weights stored
transposed and on the row blocks of fused projections.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

import idinit.init as tensor_init

__all__ = ["FUNCTIONS", "INITIALISERS", "RANDOM", "entry_view", "row_blocks", "draw_into"]

FUNCTIONS = {
    "identity_": tensor_init.identity_,
    "channel_identity_": tensor_init.channel_identity_,
    "zero_preserving_": tensor_init.zero_preserving_,
    "hadamard_": tensor_init.hadamard_,
    "kaiming_normal_": nn.init.kaiming_normal_,
    "kaiming_uniform_": nn.init.kaiming_uniform_,
    "xavier_uniform_": nn.init.xavier_uniform_,
    "xavier_normal_": nn.init.xavier_normal_,
    "orthogonal_": nn.init.orthogonal_,
    "normal_": nn.init.normal_,
    "uniform_": nn.init.uniform_,
}
# initialisers that draw random numbers (the two identities only for their loose noise)
RANDOM = {"identity_", "channel_identity_", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_",
          "xavier_normal_", "orthogonal_", "normal_", "uniform_"}
# every name a plan entry may hold: the functions above and what Plan.apply writes itself
INITIALISERS = tuple(FUNCTIONS) + ("ones_", "zeros_", "reset_parameters", "keep", "weight_norm_g")
# draws independent of each other, whose distribution depends on the shape through the fans only
_ELEMENTWISE = {"kaiming_normal_", "kaiming_uniform_", "xavier_uniform_", "xavier_normal_", "normal_", "uniform_"}


def entry_view(param: torch.Tensor, layout: str) -> torch.Tensor:
    """The parameter as its entry sees it: ``"t"`` / ``"transpose01"`` for weights stored (in, out, ...)."""
    if layout == "t":
        return param.t()
    if layout == "transpose01":
        return param.transpose(0, 1)
    return param


def row_blocks(view: torch.Tensor, blocks: int) -> tuple[torch.Tensor, ...]:
    """The row blocks filled separately (fused q/k/v projections, recurrent gate stacks)."""
    if blocks > 1 and view.shape[0] % blocks == 0:
        return view.chunk(blocks, 0)
    return (view,)


def draw_into(view: torch.Tensor, init: str, args: Mapping[str, Any], generator) -> None:
    """One ``torch.nn.init`` initialiser on one (block of a) parameter."""
    kwargs = dict(args, generator=generator) if generator is not None else dict(args)
    if not view.is_contiguous() and init in _ELEMENTWISE and view.dim() >= 2 and view.transpose(0, 1).is_contiguous():
        # a (out, in, ...) view of a tensor stored (in, out, ...) (HF Conv1D, ConvTranspose): the draws are
        # independent, so they go straight into the storage, whose fan_in is the view's fan_out (Xavier
        # uses both, symmetrically): no full-size buffer and no transposed copy (3x the draw on the CPU)
        if "mode" in kwargs:
            kwargs["mode"] = {"fan_in": "fan_out", "fan_out": "fan_in"}[kwargs["mode"]]
        elif init.startswith("kaiming"):  # torch's default mode is fan_in
            kwargs["mode"] = "fan_out"
        FUNCTIONS[init](view.transpose(0, 1), **kwargs)
        return
    # other fills go through a contiguous buffer: orthogonal_ needs view_as(), which a transposed
    # view cannot give
    target = view if view.is_contiguous() else torch.empty(view.shape, dtype=view.dtype, device=view.device)
    FUNCTIONS[init](target, **kwargs)
    if target is not view:
        view.copy_(target)
