"""A residual branch that ends in a product of two computed paths (timm's CSATv2: ``x + h * attn(h)`` with
``h = pwconv2(...)`` and no sigmoid on the attention map) has no layer that can close it: zeroing ``pwconv2``
would make the branch quadratic in a near-zero value and stall it. The plan leaves such a block open and now
says so (zoo audit, second round: it was silent, and the block started at 3-9% of its skip). The same sum
inside another residual's branch (Mamba's scan output + D * x, before ``out_proj`` closes the block) is the
layer's own arithmetic and stays quiet."""
from __future__ import annotations

import warnings

import torch
from torch import nn

import idinit


class ProductBlock(nn.Module):
    def __init__(self, dim: int, gate: bool):
        super().__init__()
        self.gate = gate
        self.fc1, self.fc2, self.mix = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        h = self.fc2(torch.relu(self.fc1(x)))
        a = self.mix(h)
        return x + h * (torch.sigmoid(a) if self.gate else a)


class ScanLike(nn.Module):
    """A layer whose inside holds ``y + d * u`` with y a product of two computed paths (Mamba's ``C @ state``, both
    behind layers), closed by ``out``."""
    def __init__(self, dim: int):
        super().__init__()
        self.inp, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.b, self.c = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.d = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        u = torch.relu(self.inp(x))
        return x + self.out(self.c(u) * self.b(u) + self.d * u)


def _plan(*blocks: nn.Module):
    model = nn.Sequential(nn.Linear(6, 8), *blocks, nn.Linear(8, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = idinit.plan(model)
    return plan, "\n".join(str(w.message) for w in caught)


def test_a_branch_ending_in_a_product_is_named_not_left_silently_open():
    plan, said = _plan(ProductBlock(8, gate=False), ProductBlock(8, gate=False))
    assert said.count("ends in a product of two computed paths") == 2, said
    assert "1.fc1, 1.fc2, 1.mix" in said and "2.fc1, 2.fc2, 2.mix" in said
    assert not plan.by_role("branch_end")  # nothing was zeroed: the note is what the user gets


def test_a_sigmoid_gate_or_a_product_inside_a_closed_branch_says_nothing():
    gated, said = _plan(ProductBlock(8, gate=True), ProductBlock(8, gate=True))
    assert [e.name for e in gated.by_role("branch_end")] == ["1.fc2.weight", "2.fc2.weight"]  # squeeze-excitation
    assert "product of two computed paths" not in said
    scan, said = _plan(ScanLike(8), ScanLike(8))
    assert [e.name for e in scan.by_role("branch_end")] == ["1.out.weight", "2.out.weight"]
    assert "product of two computed paths" not in said
