"""The ImageNet backbones of paper Sec. 4.4 / appendix B.5 at CIFAR size, from torchvision (their
weights are then set by ``idinit.init_`` in :func:`idinit.lab.models.build_model`):

- :func:`vit_small_cifar`: ViT-S (12 layers, width 384, 6 heads, MLP 1536) on 4x4 patches of a
  32x32 image (64 patches + the class token), dropout 0.1 (B.5's rate for the embedding and the
  network); ~21 M parameters. The paper's ViT-B/32 on 224x224 images has 49 patches; 4x4 patches
  keep a CIFAR image's sequence as long.
- :func:`resnet50_cifar`: torchvision's ResNet-50 with the CIFAR stem (a 3x3 stride-1 convolution
  and no max-pool, as CIFAR ResNets have), so a 32x32 image keeps 32x32 maps in the first stage.
"""
from __future__ import annotations

from torch import nn


def vit_small_cifar(num_classes: int = 10, image_size: int = 32, patch_size: int = 4) -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=12, num_heads=6,
                             hidden_dim=384, mlp_dim=1536, dropout=0.1, num_classes=num_classes)


def resnet50_cifar(num_classes: int = 10) -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


__all__ = ["resnet50_cifar", "vit_small_cifar"]
