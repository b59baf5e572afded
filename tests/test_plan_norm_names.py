"""Norm layers named with a qualifier after "Norm" (zoo audit, second round, results/zoo-audit): timm's
``RmsNormAct2d`` (MobileNet-V5: RMSNorm with its activation fused in) and ``RmsNormFp32`` (DeepSeek's
vision tower: RMSNorm computed in float32). Read as no norm, their weights were left unclassified
(DeepSeek) or taken for learned scales on the branch (MobileNet-V5), where the layer-scale rule saw
"a scale of 1 and one of 1e-5", not "a scale of 1e-5", and stacked IDIZ under the layer scale."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import idinit
from idinit.kinds import kind_of


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class RMSNormFp32(RMSNorm):  # a precision after "Norm"
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class FusedAct(RMSNorm):  # a name that says nothing: its base class does
    def forward(self, x):
        return torch.relu(super().forward(x))


class NormalizedGain(nn.Module):  # "Norm" inside a longer word: no norm
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


@pytest.mark.parametrize("cls, kind", [(RMSNorm, "norm_weight"), (RMSNormFp32, "norm_weight"),
                                       (FusedAct, "norm_weight"), (NormalizedGain, "unknown")])
def test_a_norm_is_known_by_its_name_qualifiers_and_its_base_classes(cls, kind):
    module = cls(4)
    assert kind_of(module, "weight", module.weight) == kind


class Block(nn.Module):
    """x + gamma * norm(conv(x)), gamma = 1e-5: MobileNet-V5's universal inverted residual, cut down."""

    def __init__(self, norm: nn.Module, scale: nn.Module):
        super().__init__()
        self.conv, self.norm, self.scale = nn.Conv2d(8, 8, 1, bias=False), norm, scale

    def forward(self, x):
        return x + self.scale(self.norm(self.conv(x)))


def test_timm_rms_norm_act_under_a_layer_scale_is_a_norm_and_the_conv_is_not_stacked():
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(timm_layers.RmsNormAct2d(8), timm_layers.LayerScale2d(8, 1e-5)),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left unclassified
        plan = idinit.plan(model)
    assert plan["1.norm.weight"].role == "branch_end_norm"  # was "scale": no norm, a gain of 1 on the branch
    # the layer scale alone holds the branch at 1e-5: IDI on the conv, not IDIZ on top of it (issue 8)
    assert plan["1.conv.weight"].role == "identity" and plan["1.conv.weight"].source == "values"
    assert "1.scale.gamma" in plan["1.conv.weight"].note


def test_deepseek_rms_norm_fp32_is_planned_as_a_norm():
    pytest.importorskip("timm")
    import timm

    torch.manual_seed(0)
    model = timm.create_model("deepseek_vit_412m", pretrained=False, num_classes=3, img_size=42, embed_dim=32, depth=1,
                              num_heads=2)
    assert type(model.encoder.blocks[0].norm1).__name__ == "RmsNormFp32"
    plan = idinit.plan(model)
    assert plan.unclassified == []
    norms = [e for e in plan if e.name.endswith(("norm1.weight", "norm2.weight", "encoder.norm.weight"))]
    assert len(norms) == 3 and all(e.role == "norm" and e.init == "ones_" for e in norms)
