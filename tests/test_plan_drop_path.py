"""Stochastic depth does not hide a residual branch (zoo audit, results/zoo-audit): timm's DropPath
multiplies the branch by ``x.new_empty(shape).bernoulli_(keep)``, a tensor made from x's shape only. The
fx graph took it for a second computed path, so with ``drop_path_rate > 0`` only the first block (drop
probability 0) kept its branch end: 1 of 8 in a timm ResNet-18, silently. And ``check`` measures those
branches with stochastic depth off: a branch dropped for every sample of its batch read as exactly
closed, so its numbers and flags depended on the seed (torchvision's EfficientNet-V2-S, 1 seed in 3)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import idinit
from plan_zoo import roles


class DropPath(nn.Module):
    def __init__(self, p: float, like: bool):
        super().__init__()
        self.p, self.like = p, like

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty_like(x) if self.like else x.new_empty(shape)  # timm's DropPath: new_empty
        return x * mask.bernoulli_(1 - self.p) / (1 - self.p)


class Net(nn.Module):
    def __init__(self, p: float, like: bool = False, blocks: int = 3):
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.fc1 = nn.ModuleList(nn.Linear(16, 32) for _ in range(blocks))
        self.fc2 = nn.ModuleList(nn.Linear(32, 16) for _ in range(blocks))
        self.drop = nn.ModuleList(DropPath(p * i / max(blocks - 1, 1), like) for i in range(blocks))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.stem(x)
        for fc1, fc2, drop in zip(self.fc1, self.fc2, self.drop):
            x = x + drop(fc2(torch.relu(fc1(x))))
        return self.head(x)


@pytest.mark.parametrize("like", [False, True], ids=["new_empty", "empty_like"])
def test_drop_path_keeps_every_branch_end(like):
    plain = idinit.plan(Net(0.0))
    assert [e.name for e in plain.by_role("branch_end")] == [f"fc2.{i}.weight" for i in range(3)]
    dropped = idinit.plan(Net(0.2, like))
    assert dropped.source == "torch.fx graph" and roles(dropped) == roles(plain)


def test_timm_resnet18_and_vit_with_stochastic_depth_plan_as_without():
    import timm
    for name, kwargs in (("resnet18", {}), ("vit_tiny_patch16_224", {"img_size": 32, "depth": 3})):
        plans = [idinit.plan(timm.create_model(name, pretrained=False, num_classes=5, drop_path_rate=rate, **kwargs))
                 for rate in (0.0, 0.1)]
        assert roles(plans[1]) == roles(plans[0])
        assert len(plans[1].by_role("branch_end")) == (8 if name == "resnet18" else 3)


class TorchvisionNet(Net):
    """The same network with torchvision's StochasticDepth ("row": one draw per sample)."""
    def __init__(self, p: float, blocks: int = 3):
        from torchvision.ops import StochasticDepth
        super().__init__(0.0, blocks=blocks)
        self.drop = nn.ModuleList(StochasticDepth(p * i / max(blocks - 1, 1), "row") for i in range(blocks))


@pytest.mark.parametrize("make", [lambda: Net(0.9), lambda: TorchvisionNet(0.9)], ids=["DropPath", "StochasticDepth"])
def test_check_measures_every_branch_whatever_the_seed(make):
    torch.manual_seed(0)
    model = make()
    idinit.init_(model)
    x = torch.randn(2, 8)  # the last block drops each sample with p = 0.9: both, for most seeds, if left on
    reports = [idinit.check(model, (x,), seed=seed) for seed in range(6)]
    for report in reports:
        assert [b.branch_end for b in report.blocks] == [f"fc2.{i}" for i in range(3)]
        assert all(b.branch_rms > 0 for b in report.blocks) and report.flags == []
        assert [b.distance for b in report.blocks] == [b.distance for b in reports[0].blocks]
        assert any("stochastic depth off" in note for note in report.notes)
    assert all(m.training for m in model.drop)  # the training flags come back
