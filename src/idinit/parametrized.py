"""Plan rows for the original tensors of parametrized weights (``torch.nn.utils.parametrize``: weight_norm,
spectral_norm, orthogonal, a user's), which the roles' detection does not place (issue 13 §3)."""
from __future__ import annotations

import dataclasses

from torch import nn
from torch.nn.utils import parametrize

from idinit.kinds import MATRIX_KINDS, kind_of
from idinit.schemes import assign

__all__ = ["parametrized_rows"]


def parametrized_rows(model: nn.Module, entries: list, scheme: str, options: dict, residual: bool) -> list:
    """Rows for the original tensors of parametrized weights (``torch.nn.utils.parametrize``), which no
    detection rule places (the weight a layer uses is recomputed from them on every access; writing it is
    lost). ``weight_norm`` (``weight = g v / |v|``): ``v`` gets the pattern the layer's type gives and
    ``g = |v|`` (row norms), so the recomputed weight is the planned one. Any other parametrization
    (``spectral_norm``, ``orthogonal``, a user's) has no inverse that keeps a pattern as it is: its
    originals are kept, and the row says so. Rows the user placed (``overrides=``, tags) stay as they are."""
    originals: dict[str, tuple[str, str, nn.Module]] = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor, chain in module.parametrizations.items():
                prefix = f"{name}.parametrizations.{tensor}." if name else f"parametrizations.{tensor}."
                for local, _ in chain.named_parameters(recurse=False):
                    originals[prefix + local] = (name, tensor, chain)
    if not originals:
        return entries
    out = []
    for e in entries:
        if e.name not in originals or e.role != "unclassified":
            out.append(e)
            continue
        name, tensor, chain = originals[e.name]
        module = model.get_submodule(name)
        what = " + ".join(type(f).__name__.lstrip("_") for f in chain)
        kind = kind_of(module, tensor, getattr(module, tensor))
        weight = f"{name}.{tensor}" if name else tensor
        local = e.name.rpartition(".")[2]
        if what == "WeightNorm" and kind in MATRIX_KINDS and kind != "fused_qkv":
            if local == "original1":
                init, args = assign(scheme, "identity", kind, options, residual)
                if init in ("reset_parameters", "keep"):
                    init, args = "keep", {}
                layout = {"linear_t": "t", "conv_transpose": "transpose01" if getattr(module, "groups", 1) == 1
                          else "stored"}.get(kind, "rows")
                out.append(dataclasses.replace(
                    e, role="identity", init=init, args=args, source="type", layout=layout, kind=kind,
                    note=f"v of weight_norm({weight}): the weight recomputed as g v / |v| with g = |v| is this pattern; "
                         "role from the layer type alone (the graph is not read through a parametrization): "
                         f"overrides={{'{e.name}': role}} places it as a stem, branch end or head"))
            else:
                dim = chain[0].dim
                out.append(dataclasses.replace(
                    e, role="scale", init="weight_norm_g" if scheme != "default" else "keep",
                    args={"direction": e.name.removesuffix("original0") + "original1", "dim": dim}
                    if scheme != "default" else {}, source="type",
                    note=f"g of weight_norm({weight}): the norms of v once v is written"))
            continue
        out.append(dataclasses.replace(
            e, role="keep", init="keep", args={}, source="parametrization",
            note=f"original of the {what} parametrization of {weight}: kept as the parametrization made it; the "
                 f"weight is recomputed from it on every access, and only weight_norm has an inverse that keeps "
                 "a planned pattern unchanged"))
    return out
