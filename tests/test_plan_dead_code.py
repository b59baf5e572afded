"""Code a forward pass computes and never uses does not hide a residual branch (zoo audit,
results/zoo-audit). fx keeps dead nodes: timm's Res2Net reads ``spx[0]`` once for nothing, and that
unused read of the branch's split made the branch look shared with another path, so no residual was
found in the whole network (0 of 16 branch ends, no warning)."""
from __future__ import annotations

import torch
from torch import nn

import idinit
from plan_zoo import roles


class Block(nn.Module):
    def __init__(self, dim: int, unused_read: bool):
        super().__init__()
        self.unused_read = unused_read
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(dim, dim)
        self.fc3 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        parts = torch.split(torch.relu(self.fc1(x)), x.shape[-1], -1)
        if self.unused_read:
            first = parts[0]  # noqa: F841 - computed and dropped, as in timm's Res2Net (a dead fx node)
        mixed = torch.cat([torch.relu(self.fc2(parts[0])), parts[1]], -1)
        return x + self.fc3(mixed)


def _net(unused_read: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), Block(8, unused_read), Block(8, unused_read), nn.Linear(8, 2))


def test_a_dead_read_inside_a_branch_does_not_hide_the_residual():
    clean, dead = idinit.plan(_net(False)), idinit.plan(_net(True))
    assert [e.name for e in clean.by_role("branch_end")] == ["1.fc3.weight", "2.fc3.weight"]
    assert dead.residual and roles(dead) == roles(clean)


def test_timm_res2net_finds_its_branches():
    import timm
    p = idinit.plan(timm.create_model("res2net50_14w_8s", pretrained=False, num_classes=5))
    assert p.residual and len(p.by_role("branch_end")) == 16  # 3 + 4 + 6 + 3 bottlenecks
