"""CIFAR ResNets of He et al. (2016), section 4.2: depth 6n+2, three stages of 16/32/64 channels.

Three down-sampling shortcuts (``shortcut=``; He et al. 2016, section 4.2, options A and B):

- ``"A"`` (the default), :class:`ZeroPadShortcut` with ``placement="after"``: the shortcut of the
  Fixup code base (hongyi-zhang/Fixup, ``cifar/models/resnet_cifar.py``), which the paper's CIFAR
  baselines (Fixup, Zero-gamma, mixup training) come from: stride-2 subsampling (their
  ``AvgPool2d(1, stride)``), a BatchNorm on the subsampled input, and the zero channels concatenated
  **after** the input's channels. Without BN (SkipInit, Fixup, Res-112) there is no shortcut BN, as
  in Fixup's own ``fixup_resnet_cifar.py``.
- ``"A-centred"``: zero channels half before and half after the input's, no BN (akamaster's
  ``pytorch_resnet_cifar10``; this lab's option A until 2026-11-29). With IDIC's flatten order a
  square 3x3 branch conv reads only its first ``ceil(C/9)`` input channels at init, which this
  placement fills with zeros: most branches then read nothing at init (``results/idic-reads-padding``).
- ``"B"``, :class:`ProjectionShortcut`: 1x1 convolution with stride 2, then BN.

Every block is plain on purpose (``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``): the
library's graph-based role detection finds ``conv2`` as the branch end and ``bn2`` as the norm
closing the branch (the one the "zero_gamma" scheme zeroes).

The same block carries the ReZero and SkipInit variants (Bachlechner et al. 2021; De & Smith 2020): ``gate=True`` multiplies
the branch by a learnable scalar ``alpha`` (0 at init); ``norm=False`` removes BN (SkipInit; the
convolutions then carry biases, as a convolution without a following norm normally does).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = (20, 32, 44, 56, 110)
WIDTHS = (16, 32, 64)


SHORTCUTS = ("A", "A-centred", "B")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: ``x[:, :, ::stride, ::stride]``, then BN (``norm=True``), then
    ``out_channels - in_channels`` zero channels, all after the input's (``placement="after"``,
    the Fixup code base) or half before and half after (``"centred"``, without BN)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, placement: str = "after",
                 norm: bool = True):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        if placement not in ("after", "centred"):
            raise ValueError(f"placement must be 'after' or 'centred', got {placement!r}")
        self.in_channels, self.out_channels, self.stride, self.placement = in_channels, out_channels, stride, placement
        self.pad_front = (out_channels - in_channels) // 2 if placement == "centred" else 0
        self.pad_back = out_channels - in_channels - self.pad_front
        self.norm = nn.BatchNorm2d(in_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(self.norm(x), (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, placement={self.placement!r}"


class ProjectionShortcut(nn.Sequential):
    """Option B shortcut: 1x1 convolution (stride ``stride``) and BN (BN left out when ``norm=False``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, norm: bool = True):
        layers = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        super().__init__(*layers)


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, norm: bool = True) -> nn.Module:
    """The identity when shapes match, otherwise option ``"A"``, ``"A-centred"`` or ``"B"``
    (module docstring). ``norm=False`` (networks without BN) leaves the BN out of A and B."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} ('A': zeros after, Fixup code base; "
                         f"'A-centred': zeros on both sides; 'B': 1x1 conv), got {kind!r}")
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride, placement="after", norm=norm)
    if kind == "A-centred":
        return ZeroPadShortcut(in_channels, out_channels, stride, placement="centred", norm=False)
    return ProjectionShortcut(in_channels, out_channels, stride, norm=norm)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip: ``relu(shortcut(x) + [alpha *] branch(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A",
                 norm: bool = True, gate: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm=norm)
        # ReZero / SkipInit gate (Bachlechner et al. 2021; De & Smith 2020): 0 at init.
        self.alpha = nn.Parameter(torch.zeros(1)) if gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.alpha is not None:
            branch = self.alpha * branch
        return F.relu(self.shortcut(x) + branch)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: stem conv, 3 stages of ``n`` :class:`BasicBlock`, global
    average pool, linear classifier. ``norm`` / ``gate`` select the plain (BN), ReZero (BN + gate)
    and SkipInit (gate, no BN) variants; the weights are left at PyTorch's default init (initialise
    with ``idinit.init_`` or :func:`idinit.lab.models.build_model`)."""

    def __init__(self, depth: int = 56, num_classes: int = 10, shortcut: str = "A", norm: bool = True,
                 gate: bool = False, in_channels: int = 3, widths=WIDTHS):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth, self.shortcut_kind = depth, shortcut
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(widths[0]) if norm else nn.Identity()
        stages, channels = [], widths[0]
        for stage, width in enumerate(widths):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, shortcut, norm=norm, gate=gate))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
