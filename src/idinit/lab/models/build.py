"""Build a lab model by name and initialise it: the one place that maps an initialisation name to
the architecture variant it needs (the baselines as their own papers build them).

CIFAR ResNets (``arch="resnet<6n+2>"``):

=============  ====================================  =========================================
init           architecture                           initialisation
=============  ====================================  =========================================
idinit         CifarResNet (BN)                       ``idinit.init_(model, "idinit", **opts)``
kaiming        CifarResNet (BN)                       ``idinit.init_(model, "kaiming")``
zero_gamma     CifarResNet (BN)                       ``idinit.init_(model, "zero_gamma")``
zero (ZerO)    CifarResNet (BN)                       ``idinit.init_(model, "zero")``
xavier, orthogonal, default   CifarResNet (BN)        ``idinit.init_(model, init)``
fixup          FixupResNet (no BN, scalar biases)     :func:`fixup_init_`
rezero         CifarResNet (BN) + gate alpha = 0      Kaiming, then alpha = 0
skipinit       CifarResNet (no BN) + gate alpha = 0   Kaiming, then alpha = 0
=============  ====================================  =========================================

ReZero keeps BN (the ReZero paper's ResNet experiments add the gate to a normalised ResNet;
we only add the gate); SkipInit removes it (De & Smith 2020 replace BN by the gate).

The paper's networks beyond residual ones (appendix C), every library scheme, plus Fixup for Res-112:

================  ==========================================  ===================================
arch              model                                       inits
================  ==========================================  ===================================
``allconv``       :class:`AllConv` (All-CNN-C, C.2)            library schemes
``res112``        :class:`Res112` (no BN, C.6)                 library schemes; ``fixup`` builds
                                                              :class:`FixupRes112`
``res112-linear-  the same, conv2 without its ReLU (the other   as ``res112``
conv2``           reading of Table 10)
``linear5-tanh``  :class:`Linear5` (C.1), tanh / ReLU          library schemes; IDInit's stem gain
``linear5-relu``                                              follows the activation (appendix B)
``vit-small``     torchvision ViT-S/4 for CIFAR (Sec. 4.4)     library schemes
``tv-resnet50``   torchvision ResNet-50, 3x3 stem (Sec. 4.4)   library schemes
================  ==========================================  ===================================
"""
from __future__ import annotations

import torch
from torch import nn

import idinit

from .allconv import AllConv
from .cifar_resnet import DEPTHS, BasicBlock, CifarResNet
from .fixup_resnet import FixupResNet, fixup_init_, fixup_parameter_groups
from .linear5 import ACTIVATIONS, Linear5
from .res112 import FixupRes112, Res112
from .vision import resnet50_cifar, vit_small_cifar

LIBRARY_SCHEMES = idinit.SCHEMES  # every scheme of the library (idinit.schemes.TABLE)
INITS = LIBRARY_SCHEMES + ("fixup", "rezero", "skipinit")
ARCHS = tuple(f"resnet{d}" for d in DEPTHS)
OTHER_ARCHS = ("allconv", "res112", "res112-linear-conv2") + tuple(f"linear5-{a}" for a in ACTIVATIONS) + ("vit-small", "tv-resnet50")
# inits each non-ResNet architecture accepts
_OTHER_INITS = {"allconv": LIBRARY_SCHEMES, "res112": LIBRARY_SCHEMES + ("fixup",),
                "res112-linear-conv2": LIBRARY_SCHEMES + ("fixup",),
                **{f"linear5-{a}": LIBRARY_SCHEMES for a in ACTIVATIONS},
                "vit-small": LIBRARY_SCHEMES, "tv-resnet50": LIBRARY_SCHEMES}


def parse_arch(arch: str) -> int:
    """``"resnet56"`` -> 56 (any 6n+2 depth is accepted)."""
    if not arch.startswith("resnet") or not arch[6:].isdigit():
        raise ValueError(f"unknown architecture {arch!r}; expected 'resnet<depth>', e.g. one of {ARCHS}, "
                         f"or one of {OTHER_ARCHS}")
    return int(arch[6:])


def _build_other(arch: str, init: str, shortcut: str, num_classes: int, in_channels: int, image_size: int,
                 init_options: dict, example_inputs) -> nn.Module:
    if init not in _OTHER_INITS[arch]:
        raise ValueError(f"architecture {arch!r} takes the inits {_OTHER_INITS[arch]}, got {init!r}")
    if init == "fixup":
        if init_options:
            raise ValueError(f"init 'fixup' takes no options, got {sorted(init_options)}")
        return fixup_init_(FixupRes112(num_classes, in_channels, shortcut, conv2_relu=arch == "res112"))
    if arch in ("vit-small", "tv-resnet50"):
        if in_channels != 3 or image_size != 32:
            raise ValueError(f"{arch} is built for 32x32 RGB images (CIFAR-10), got {in_channels}x{image_size}x{image_size}")
        model = vit_small_cifar(num_classes) if arch == "vit-small" else resnet50_cifar(num_classes)
    elif arch == "allconv":
        model = AllConv(num_classes, in_channels)
    elif arch in ("res112", "res112-linear-conv2"):
        model = Res112(num_classes, in_channels, shortcut, conv2_relu=arch == "res112")
    else:
        activation = arch.split("-", 1)[1]
        model = Linear5(in_channels * image_size * image_size, num_classes, activation)
        if init == "idinit":
            # IDInit's stem gain is sqrt(2) under ReLU and 1 under tanh (paper appendix B).
            init_options = {"activation": activation, **init_options}
    idinit.init_(model, scheme=init, example_inputs=example_inputs, **init_options)
    return model


def build_model(arch: str = "resnet56", init: str = "idinit", shortcut: str = "A", num_classes: int = 10,
                in_channels: int = 3, init_options: dict | None = None, example_inputs=None,
                image_size: int = 32) -> nn.Module:
    """Build ``arch`` in the variant ``init`` needs and initialise it (tables in the module docstring).

    ``init_options`` go to ``idinit.init_`` (e.g. ``loose``, ``conv``, ``branch_end`` for the
    ablation); they are an error for the lab-only inits. ``in_channels`` and ``image_size`` describe
    the input images (MNIST: 1 and 28). ``shortcut`` applies to the CIFAR ResNets and Res-112.
    Seed with ``torch.manual_seed`` first.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    init_options = dict(init_options or {})
    if init_options and init not in LIBRARY_SCHEMES:
        raise ValueError(f"init {init!r} takes no options, got {sorted(init_options)}")
    if example_inputs is None:
        example_inputs = (torch.zeros(2, in_channels, image_size, image_size),)
    if arch in OTHER_ARCHS:
        return _build_other(arch, init, shortcut, num_classes, in_channels, image_size, init_options, example_inputs)
    depth = parse_arch(arch)
    if init == "fixup":
        model = FixupResNet(depth, num_classes, shortcut, in_channels=in_channels)
        return fixup_init_(model)
    gate = init in ("rezero", "skipinit")
    model = CifarResNet(depth, num_classes, shortcut, norm=init != "skipinit", gate=gate, in_channels=in_channels)
    scheme = "kaiming" if gate else init
    idinit.init_(model, scheme=scheme, example_inputs=example_inputs, **init_options)
    if gate:
        with torch.no_grad():
            for block in model.modules():
                if isinstance(block, BasicBlock):
                    block.alpha.zero_()
    return model


def parameter_groups(model: nn.Module, init: str, lr: float) -> list[dict]:
    """Optimiser parameter groups: Fixup's scalars at lr/10 (Fixup reference code), else one group."""
    if init == "fixup":
        return fixup_parameter_groups(model, lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
