"""Linear-5 (paper appendix C.1, Table 8): five fully connected layers, hidden width 512, one
activation (tanh or ReLU) after each of the first four; the input image is flattened.

MNIST: ``784 -> 512 -> 512 -> 512 -> 512 -> 10``. [decision] "five linear layers whose hidden
layers are all of dimension 512" is read as five weight matrices (four hidden layers of 512), and
no activation follows the last layer (it gives the logits).
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class Linear5(nn.Module):
    """``layers`` linear layers (``in_features -> width -> ... -> width -> num_classes``) with
    ``activation`` between them. Weights are left at PyTorch's default init."""

    def __init__(self, in_features: int = 784, num_classes: int = 10, activation: str = "tanh",
                 width: int = 512, layers: int = 5):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Linear5: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if layers < 2 or min(in_features, num_classes, width) < 1:
            raise ValueError(f"Linear5: need layers >= 2 and positive sizes, got layers={layers}, "
                             f"in_features={in_features}, width={width}, num_classes={num_classes}")
        self.activation = activation
        sizes = [in_features] + [width] * (layers - 1) + [num_classes]
        body: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            body.append(nn.Linear(d_in, d_out))
            if i < layers - 1:
                body.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


__all__ = ["ACTIVATIONS", "Linear5"]
