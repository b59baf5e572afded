"""Res-112 without normalisation (paper appendix C.6, Table 10): a CIFAR ResNet whose residual stem
is 109 layers long, the paper's failure case for initialisations that do not keep a long stem stable.

Table 10 reached us damaged; this is our reading of it, chosen so that both of the paper's counts
hold ("Res-112", "109 layers in the residual stem"):

=========  =====================================================  ==========
part       layers                                                  weighted
=========  =====================================================  ==========
conv1      3x3, 3 -> 16, ReLU                                        1
stem       3 stages of 18 basic blocks (16, 32, 64 channels; the      108
           first block of stages 2 and 3 halves the resolution,
           option-A shortcut), then one 3x3 conv 64 -> 64, ReLU        1
conv2      3x3, 64 -> 64, ReLU                                       1
head       global average pool, Linear 64 -> 10                       1
=========  =====================================================  ==========

112 weighted layers, 109 of them in the residual stem. No BN anywhere ("Batch normalization is not
applied for fairly validating the stability of initialization methods"); every conv then carries a
bias. [decisions] conv2's output width (lost from the table) is 64, and a ReLU follows it; the table may not
have that ReLU, and with it IDInit's training at lr 0.2 dies there in its second step (results/res112):
``conv2_relu=False`` (the lab's ``res112-linear-conv2``) is the other reading, conv2 feeding the pool linearly. The down-sampling shortcut is
a constructor argument; the lab's Res-112 grids use option B (1x1 projection, no BN) for every
initialisation, because with option A this layout starts IDInit with a dead stem: option A's
zero-filled channels sit at channels 0-15 of the last stage, and ``stem_end``'s patch-maintain
kernel (IDIC) reads only input channels 0-7 (output ``m`` reads channel ``m // 9``), so the stem's
output is ~1e-13 at init (measured; ``tests/test_lab_beyond_residual.py``). The paper does not say
which shortcut it used; ``res112-optionA`` runs that layout too.

:class:`Res112` is the plain network (Kaiming, IDInit, ...). :class:`FixupRes112` is the same
network built from Fixup blocks (scalar biases and multiplier, ``idinit.lab.models.fixup_init_``):
its two extra plain convs keep PyTorch's default init, as Fixup's reference code does for its stem.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .cifar_resnet import CifarResNet
from .fixup_resnet import FixupResNet

STEM_BLOCKS_DEPTH = 110  # 3 x 18 basic blocks: the blocks of He et al.'s ResNet-110
WIDTH = 64


class Res112(CifarResNet):
    """Res-112 without BN (module docstring): ResNet-110's blocks without BN, plus ``stem_end`` and
    ``conv2`` (3x3, 64 -> 64, each with ReLU; ``conv2_relu=False``: conv2 without) between the last block
    and the pooled head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", conv2_relu: bool = True):
        super().__init__(STEM_BLOCKS_DEPTH, num_classes, shortcut, norm=False, gate=False, in_channels=in_channels)
        self.stem_end = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.conv2_relu = conv2_relu

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stem's output (after ``stem_end``), before ``conv2`` and the head."""
        x = F.relu(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.stem_end(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.features(x))
        x = F.relu(x) if self.conv2_relu else x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class FixupRes112(FixupResNet):
    """Res-112 with Fixup blocks: FixupResNet-110's blocks plus ``stem_end`` and ``conv2`` (3x3,
    64 -> 64, ReLU, default init); initialise with :func:`~idinit.lab.models.fixup_init_`."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", conv2_relu: bool = True):
        super().__init__(STEM_BLOCKS_DEPTH, num_classes, shortcut, in_channels=in_channels)
        self.stem_end = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.conv2_relu = conv2_relu

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x) + self.bias1)
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.stem_end(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.features(x))
        x = F.relu(x) if self.conv2_relu else x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) + self.bias2)


def weighted_layers(model: nn.Module) -> int:
    """Number of convolutions and linear layers (the depth as the paper counts it)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


__all__ = ["FixupRes112", "Res112", "weighted_layers"]
