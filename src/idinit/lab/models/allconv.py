"""AllConv (paper appendix C.2, Table 9): All-CNN-C of Springenberg et al. (2015), "Striving for
simplicity: the all convolutional net", section 3.1.

Nine convolutions, pooling replaced by stride-2 convolutions, no normalisation, no fully connected
layer: 3x3 convs 96-96-96 (the third with stride 2), 192-192-192 (the third with stride 2), a 3x3
"valid" conv 192 (8x8 -> 6x6 on CIFAR), 1x1 convs 192 and ``num_classes``, ReLU after each (also
after the last, as in All-CNN-C), global average pooling to the logits.

[decision] The dropout of the original (20% on the input, 50% after each stride-2 conv) is left
out: the paper's Table 9 lists only the convolutions and says nothing of dropout.
"""
from __future__ import annotations

import torch
from torch import nn

# (in, out, kernel, stride, padding) of Table 9's nine convolutions; ``None`` = input / classes.
LAYERS = ((None, 96, 3, 1, 1), (96, 96, 3, 1, 1), (96, 96, 3, 2, 1),
          (96, 192, 3, 1, 1), (192, 192, 3, 1, 1), (192, 192, 3, 2, 1),
          (192, 192, 3, 1, 0), (192, 192, 1, 1, 0), (192, None, 1, 1, 0))


class AllConv(nn.Module):
    """All-CNN-C: ``conv1`` .. ``conv9`` (see the module docstring), each followed by ReLU, then a
    global average pool; input ``(B, in_channels, H, W)``, output ``(B, num_classes)``. The weights
    are left at PyTorch's default init (initialise with ``idinit.init_`` or ``build_model``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"AllConv needs num_classes >= 1 and in_channels >= 1, got {num_classes}, {in_channels}")
        self.convs = nn.ModuleList()
        for c_in, c_out, kernel, stride, padding in LAYERS:
            self.convs.append(nn.Conv2d(in_channels if c_in is None else c_in, num_classes if c_out is None else c_out,
                                        kernel, stride=stride, padding=padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.mean((2, 3))


def all_conv(num_classes: int = 10, in_channels: int = 3) -> AllConv:
    """An :class:`AllConv` at PyTorch's default init."""
    return AllConv(num_classes, in_channels)


__all__ = ["LAYERS", "AllConv", "all_conv"]
