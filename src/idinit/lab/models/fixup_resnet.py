"""Fixup CIFAR ResNet (Zhang et al. 2019, "Fixup initialization: residual learning without
normalization"), as in its reference code (hongyi-zhang/Fixup, cifar/models/fixup_resnet_cifar.py).

No normalisation. Each branch: ``conv1(x + b1a)``, ``relu(. + b1b)``, ``conv2(. + b2a)``,
``. * scale + b2b``, added to ``x`` (an identity shortcut) or to ``shortcut(x + b1a)`` (a
down-sampling one); scalar biases start at 0 and the scalar multiplier at 1. :func:`fixup_init_`:
branch-first conv ~ He normal (fan-out) times ``L^(-1/(2m-2))`` (L branches, m = 2 layers per
branch, so ``L^(-1/2)``), branch-last conv = 0, classifier weight and bias = 0. The scalars train at
a tenth of the learning rate (:func:`fixup_parameter_groups`). The reference trainer
(``cifar/cifar_train.py``) differs in two details we do not copy: its tenth is of the unscaled base lr
(0.01 for any batch size), and its name filter also puts the classifier's bias in that group.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .cifar_resnet import WIDTHS, make_shortcut


class FixupBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + self.bias1a
        out = F.relu(self.conv1(shifted) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        # As the reference code: an identity shortcut carries x itself; a down-sampling one reads the
        # shifted input, as conv1 does. (Adding bias1a to every identity would stack 54 trained scalars
        # along ResNet-110's skip path.)
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(shifted)
        return F.relu(skip + out)


class FixupResNet(nn.Module):
    """ResNet-(6n+2) with :class:`FixupBlock`; call :func:`fixup_init_` (``build_model`` does)."""

    def __init__(self, depth: int = 56, num_classes: int = 10, shortcut: str = "A", in_channels: int = 3,
                 widths=WIDTHS):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth, self.shortcut_kind = depth, shortcut
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        stages, channels = [], widths[0]
        for stage, width in enumerate(widths):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(FixupBlock(channels, width, 2 if stage > 0 and i == 0 else 1, shortcut))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x) + self.bias1)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) + self.bias2)


@torch.no_grad()
def fixup_init_(model: FixupResNet, generator: torch.Generator | None = None) -> FixupResNet:
    """Fixup's initialisation (module docstring). The stem conv keeps PyTorch's default init, as in
    the reference code; a projection shortcut (option B) gets He normal (fan-out)."""
    if not isinstance(model, FixupResNet):
        raise TypeError(f"fixup_init_ expects a FixupResNet, got {type(model).__name__}")
    blocks = [m for m in model.modules() if isinstance(m, FixupBlock)]
    num_branches = len(blocks)
    for block in blocks:
        w = block.conv1.weight
        fan_out = w.shape[0] * math.prod(w.shape[2:])
        w.normal_(0.0, math.sqrt(2.0 / fan_out) * num_branches ** -0.5, generator=generator)
        block.conv2.weight.zero_()
        for name in ("bias1a", "bias1b", "bias2a", "bias2b"):
            getattr(block, name).zero_()
        block.scale.fill_(1.0)
        for m in block.shortcut.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
    model.fc.weight.zero_()
    model.fc.bias.zero_()
    model.bias1.zero_()
    model.bias2.zero_()
    return model


def fixup_parameter_groups(model: nn.Module, lr: float, scalar_lr_factor: float = 0.1) -> list[dict]:
    """Two optimiser groups: Fixup's scalar biases and multipliers (every 1-element parameter
    named ``bias*`` or ``scale``) at ``lr * scalar_lr_factor``, everything else at ``lr``, so that
    the schedule (warm-up, cosine) scales both alike."""
    scalars, others = [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_scalar = p.numel() == 1 and (leaf.startswith("bias") or leaf == "scale")
        (scalars if is_scalar else others).append(p)
    groups = [{"params": others, "lr": lr}]
    if scalars:
        groups.append({"params": scalars, "lr": lr * scalar_lr_factor})
    return groups
