"""Values a model set on purpose: read from the parameters themselves, kept unless the user says otherwise.

The graph says where a parameter sits; some models also say, through the values they gave it, what it
must start at. Two such cases change the plan (``keep_model_values=False`` in :func:`idinit.plan`
switches both off; an ``overrides=`` entry wins over either):

- **a bias set on purpose** is kept (role ``keep``) instead of zeroed: a focal-loss prior
  (torchvision's RetinaNet / FCOS ``cls_logits.bias = -log((1 - 0.01) / 0.01) = -4.6``, Lin et al.
  2017), Mamba's ``dt_proj.bias`` and Mamba2's ``dt_bias`` (the inverse softplus of time steps drawn
  in [1e-3, 0.1]). A bias counts as set on purpose when it is finite and not all zero, and either one
  constant (no random draw gives that), or outside the range that ``nn.Linear`` / ``nn.ConvNd`` /
  the recurrent layers draw their default biases from (no default draw gives that), or a parameter a
  custom module holds itself (no library default exists for it: the model chose its values).
- **a branch already closed by a small learned scale** (layer scale: timm's deit3, CaiT, ConvNeXt
  with gamma = 1e-6 per channel; a ReZero / SkipInit gate at 0): the scale already holds the block
  at identity, so its last layer gets IDI (role ``identity``) instead of IDIZ. Stacking both puts
  the branch end's gradient at gamma times IDIZ's, ~1e-10 instead of ~1e-2 (issue 8); with one of
  them the block starts at identity and the scale's own gradient is of the usual size. A scale is
  small when every entry is at most :data:`SMALL_SCALE` in magnitude.

Uninitialised memory is never taken for a value the model set. Values are unreadable on the meta
device, so neither rule fires there; after ``to_empty()`` they are whatever the memory held. So a value
is read only from memory that something wrote since it was allocated (:func:`written`: the tensor's
version counter, which every in-place write moves: an init function in the constructor,
``load_state_dict``, ``copy_``, the model's own init). A tensor never written since it was allocated
holds either what it was built from (``nn.Parameter(1e-6 * torch.ones(d))``) or, after ``to_empty()``,
uninitialised memory, and the two cannot be told apart:

- such a **bias** is not read: it gets the scheme's zeros, and if its values looked set on purpose the
  plan's note says so and how to keep them (``overrides={name: 'keep'}``, for a model copied with
  ``copy.deepcopy`` or loaded whole, which also start every tensor afresh);
- such a **scale** is judged on what the model's own init writes into it (timm's ``LayerScale``
  ``reset_parameters()``: the value ``init_`` then gives it), computed and undone without changing the
  model or the global RNG; a scale no method of the model draws is read as it is (``init_`` keeps it
  as it is anyway, and its notes name it).

A model's own init run after ``to_empty()`` writes its parameters, so a model materialised that way and
then given its own init (``idinit.hf.from_config`` does) keeps what that init set (Mamba's time steps).
Non-finite values never count.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from idinit import model_init

__all__ = ["SMALL_SCALE", "default_bias_bound", "written", "set_bias", "small_scale", "drawn_again"]

# [decision] A layer scale at most 1e-3 holds its branch within 1e-3 of zero at init, the regime
# IDIZ is for; larger ones (0.1 in some BEiT / EVA configurations) leave the branch open, and the
# branch end keeps IDIZ.
SMALL_SCALE = 1e-3


def written(param: torch.Tensor) -> bool:
    """Whether ``param`` was written in place since it was allocated (``to_empty()``, ``torch.empty`` and
    ``copy.deepcopy`` give a tensor no write yet; an inference tensor keeps no record: taken as written)."""
    try:
        return param._version > 0
    except RuntimeError:
        return True


def drawn_again(model: nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """What the model's own init (:mod:`idinit.model_init`) writes into parameters ``names``: ``{name:
    values}`` for those it writes. It runs on copies of the tensors of the parameters' modules (their
    subtrees, buffers included) put in their place, and the originals go back afterwards: the model,
    the record of writes on its tensors (:func:`written`) and the global RNG stay as they were. A
    parameter the root module holds is left out: its subtree is the whole model."""
    names = {n for n in names if n.rpartition(".")[0]}
    if not names:
        return {}
    originals: dict[tuple[int, str], tuple[dict, str, torch.Tensor]] = {}
    for prefix in {n.rpartition(".")[0] for n in names}:
        for module in model.get_submodule(prefix).modules():
            for store in (module._parameters, module._buffers):
                for key, tensor in store.items():
                    if tensor is not None:
                        originals.setdefault((id(store), key), (store, key, tensor))
    devices = sorted({t.device.index or 0 for _, _, t in originals.values() if t.device.type == "cuda"})
    try:
        with torch.no_grad():
            for store, key, tensor in originals.values():
                copy = tensor.detach().clone()
                store[key] = nn.Parameter(copy, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else copy
        with torch.random.fork_rng(devices=devices):
            unwritten = model_init.run_on_parameters(model, names, names, set())
            params = dict(model.named_parameters())
            return {n: params[n].detach().clone() for n in names if n not in unwritten}
    finally:
        for store, key, tensor in originals.values():
            store[key] = tensor


def _values(param: torch.Tensor) -> torch.Tensor | None:
    if param.is_meta or param.numel() == 0:
        return None
    values = param.detach().float().cpu()
    return values if bool(torch.isfinite(values).all()) else None


def default_bias_bound(module: nn.Module) -> float | None:
    """The bound of the default bias draw of ``nn.Linear`` / ``nn.ConvNd`` (``1/sqrt(fan_in)``) and the
    recurrent layers (``1/sqrt(hidden_size)``); None for other modules."""
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else None
    if isinstance(module, nn.Linear):
        fan_in = module.in_features
    elif isinstance(module, nn.modules.conv._ConvNd):
        fan_in = module.weight.shape[1] * math.prod(module.kernel_size)
    else:
        return None
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else None


def set_bias(module: nn.Module, param: torch.Tensor, own: bool) -> str | None:
    """Why ``param``, a bias of ``module`` (``own``: one the module holds itself, not a layer type's),
    looks set on purpose, or None if it does not."""
    values = _values(param)
    if values is None or not bool(values.any()):
        return None
    low, high = float(values.min()), float(values.max())
    if values.numel() > 1 and low == high:
        return f"bias set by the model to the constant {low:.4g}"
    if own:
        return f"bias held by {type(module).__name__} itself and set by the model (values {low:.3g} to {high:.3g})"
    bound = default_bias_bound(module)
    if bound is not None and max(-low, high) > bound * (1 + 1e-6):
        return (f"bias set by the model (values {low:.3g} to {high:.3g}, outside the default draw's "
                f"±{bound:.3g})")
    return None


def small_scale(params: Mapping[str, torch.Tensor]) -> str | None:
    """A description of the small learned scales ``params`` if they all are small, else None."""
    if not params:
        return None
    largest = {}
    for name, param in params.items():
        values = _values(param)
        if values is None:
            return None
        largest[name] = float(values.abs().max())
    if max(largest.values()) > SMALL_SCALE:
        return None
    return ", ".join(f"{n} (max |value| {v:.3g})" for n, v in sorted(largest.items()))
