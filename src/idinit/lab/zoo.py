"""Model specs the command line accepts: build a model anyone has, with no download, and example inputs.

==========================  ===========================================================================
spec                        model
==========================  ===========================================================================
``torchvision:resnet50``    ``torchvision.models.get_model(name, weights=None)`` (classification,
                            segmentation and video models; ``vit_*`` get ``image_size``)
``timm:convnext_tiny``      ``timm.create_model(name, pretrained=False)`` (``img_size`` where the model
                            takes one)
``hf:gpt2``                 HF transformers ``AutoModel`` built from ``AutoConfig.for_model(name)``,
                            the configuration's defaults (no download; shrink it with model arguments,
                            e.g. ``n_layer=2``)
``lab:resnet56``            the lab's CIFAR ResNets (``-B``: option-B shortcuts, ``-Ac``: option A with
                            centred zero channels), ``allconv``,
                            ``res112``, ``linear5-relu`` / ``linear5-tanh``; a bare ``resnet56`` is
                            the lab's too
==========================  ===========================================================================

Model arguments (``--model-arg key=value`` on the command line) go to the builder: the keyword
arguments of ``get_model`` / ``create_model``, or the HF configuration's fields. The models come
as their constructors leave them; the caller initialises them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .models import ARCHS, OTHER_ARCHS, AllConv, CifarResNet, Linear5, Res112, parse_arch

__all__ = ["Built", "build", "SPEC_FORMS"]

SPEC_FORMS = ("torchvision:NAME (e.g. torchvision:resnet50)", "timm:NAME (e.g. timm:convnext_tiny)",
              "hf:MODEL_TYPE (e.g. hf:gpt2, from its default config)",
              f"lab:NAME or a bare lab name ({', '.join(ARCHS[:3])}, ..., -B / -Ac for option B / centred A, "
              f"{', '.join(OTHER_ARCHS)})")


# lab CIFAR ResNet name suffixes -> shortcut (idinit.lab.models.cifar_resnet)
_SUFFIXES = {"-B": "B", "-Ac": "A-centred"}


@dataclass
class Built:
    """A model built from a spec, the example inputs of one forward pass, and a one-line description."""

    model: nn.Module
    example_inputs: Any
    description: str


def _unknown(spec: str, why: str = "") -> ValueError:
    return ValueError(f"unknown model spec {spec!r}{': ' + why if why else ''}; accepted forms: " + "; ".join(SPEC_FORMS))


def build(spec: str, *, batch: int = 8, image_size: int | None = None, model_args: dict | None = None) -> Built:
    """The model ``spec`` names (module docstring) and a batch of ``batch`` random example inputs.

    Raises ``ValueError`` with the accepted forms for a spec it does not know."""
    if not isinstance(spec, str) or not spec.strip():
        raise _unknown(str(spec))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ValueError(f"image size must be an integer >= 8, got {image_size!r}")
    source, _, name = spec.partition(":")
    if not name:
        source, name = "lab", spec
        base = re.sub(r"-(B|Ac)$", "", spec)
        if base not in ARCHS and _torchvision_has(base):
            raise ValueError(f"model spec {spec!r} is ambiguous: say lab:{spec} for the lab's CIFAR ResNet or "
                             f"torchvision:{spec} for ImageNet's")
    args = dict(model_args or {})
    generator = torch.Generator().manual_seed(0)
    if source == "lab":
        return _lab(spec, name, batch, image_size, args, generator)
    if source == "torchvision":
        return _torchvision(spec, name, batch, image_size, args, generator)
    if source == "timm":
        return _timm(spec, name, batch, image_size, args, generator)
    if source == "hf":
        return _hf(spec, name, batch, args, generator)
    raise _unknown(spec, f"no source {source!r}")


def _torchvision_has(name: str) -> bool:
    try:
        import torchvision
    except ImportError:
        return False
    return name in torchvision.models.list_models()


def _images(batch: int, channels: int, size: int, generator, frames: int | None = None) -> tuple:
    shape = (batch, channels, size, size) if frames is None else (batch, channels, frames, size, size)
    return (torch.randn(shape, generator=generator),)


def _lab(spec, name, batch, image_size, args, generator) -> Built:
    size = image_size or 32
    in_channels = args.pop("in_channels", 3)
    num_classes = args.pop("num_classes", 10)
    if args:
        raise ValueError(f"lab models take the model arguments in_channels and num_classes, got {sorted(args)}")
    if name in OTHER_ARCHS:
        if name == "allconv":
            model = AllConv(num_classes, in_channels)
        elif name == "res112":
            model = Res112(num_classes, in_channels)
        else:
            model = Linear5(in_channels * size * size, num_classes, name.split("-", 1)[1])
        return Built(model, _images(batch, in_channels, size, generator), f"lab {name}")
    arch, shortcut = name, "A"
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            arch, shortcut = name.removesuffix(suffix), kind
    try:
        depth = parse_arch(arch)
    except ValueError:
        raise _unknown(spec, f"{name!r} is not a lab model") from None
    if (depth - 2) % 6 or depth < 8:
        raise _unknown(spec, f"a lab CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110), not {depth}")
    model = CifarResNet(depth, num_classes, shortcut, in_channels=in_channels)
    return Built(model, _images(batch, in_channels, size, generator), f"lab CIFAR {arch} (option {shortcut})")


def _torchvision(spec, name, batch, image_size, args, generator) -> Built:
    import torchvision

    models = torchvision.models
    families = {"classification": models.list_models(module=models),
                "segmentation": models.list_models(module=models.segmentation),
                "video": models.list_models(module=models.video),
                "detection": models.list_models(module=models.detection)}
    family = next((f for f, names in families.items() if name in names), None)
    if family is None:
        raise _unknown(spec, "torchvision has no model of that name (torchvision.models.list_models() lists them)")
    if family == "detection":
        raise ValueError(f"{spec}: detection models take targets in training mode; check their backbone instead "
                         "(e.g. torchvision:resnet50) or call idinit.check on the model in Python with your inputs")
    size = image_size or (112 if family == "video" else 64)
    if name.startswith("vit_"):
        args.setdefault("image_size", size)
    model = models.get_model(name, weights=None, **args)
    frames = 4 if family == "video" else None
    return Built(model, _images(batch, 3, size, generator, frames), f"torchvision {name} ({family})")


def _timm(spec, name, batch, image_size, args, generator) -> Built:
    import timm

    if not timm.is_model(name):
        raise _unknown(spec, "timm has no model of that name (timm.list_models() lists them)")
    size = image_size or 64
    try:
        model = timm.create_model(name, pretrained=False, **{"img_size": size, **args})
    except TypeError:  # a model without a fixed input size takes no img_size
        model = timm.create_model(name, pretrained=False, **args)
    channels = model.pretrained_cfg.get("input_size", (3,))[0] if getattr(model, "pretrained_cfg", None) else 3
    return Built(model, _images(batch, args.get("in_chans", channels), size, generator), f"timm {name}")


def _hf(spec, name, batch, args, generator) -> Built:
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.for_model(name, **args)
    except ValueError:
        raise _unknown(spec, "transformers has no model type of that name (its CONFIG_MAPPING lists them)") from None
    model = AutoModel.from_config(config)
    inputs = model.dummy_inputs
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError(f"{spec}: the model gives no dummy_inputs to build example inputs from; "
                         "call idinit.check on it in Python with your inputs")
    vocab = getattr(config, "vocab_size", None)
    example = {}
    for key, value in inputs.items():  # a bigger random batch of token ids in place of the 3x5 dummy
        if key in ("input_ids", "decoder_input_ids") and vocab:
            example[key] = torch.randint(vocab, (batch, 16), generator=generator)
        elif key.endswith("attention_mask") or key == "token_type_ids":
            continue
        else:
            example[key] = value
    return Built(model, example, f"transformers {type(model).__name__} from AutoConfig.for_model({name!r})")
