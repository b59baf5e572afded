"""One reader of weight chains (idinit.contraction): a 3-D parameter multiplied as a stack of matrices reads as
``experts`` / ``stacked`` whichever way the forward takes its matrices (picked one by one, batched, indexed,
broadcast over the data's batch), also when the stack holds one matrix or each matrix one row (axes of size 1
belong to either side). Each matrix must then get what one linear layer in its place gets (paper Sec. 3.1,
Eq. 3: IDI); the reference is SPEC.md's formula written out in tests/spec_patterns.py. Before the two chain
readers became one, the broadcast path read a one-matrix stack as ``contracted`` and a one-row stack not at all.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import idinit
from spec_patterns import idi, quiet


class Stack(nn.Module):
    """``w`` ``(experts, out, in)``, each ``w[e]`` read as ``(out, in)`` in the way ``mode`` says; the outputs
    summed over the experts."""

    def __init__(self, mode: str, experts: int, out: int, d: int = 4):
        super().__init__()
        self.mode = mode
        self.inp = nn.Linear(d, d, dtype=torch.float64)
        self.w = nn.Parameter(torch.randn(experts, out, d, dtype=torch.float64))
        self.head = nn.Linear(out, 2, dtype=torch.float64)

    def forward(self, x):
        h, w = self.inp(x), self.w
        if self.mode == "select":  # F.linear(h, w[e]) per expert (Mixtral's eager loop)
            y = sum(nn.functional.linear(h, w[e]) for e in range(w.shape[0]))
        elif self.mode == "bmm":  # every expert at once
            y = torch.bmm(h.expand(w.shape[0], *h.shape), w.transpose(1, 2)).sum(0)
        elif self.mode == "index":  # w[index]: the experts a router picked, as a batch
            y = torch.bmm(h.expand(2, *h.shape), w[torch.tensor([0, 0])].transpose(1, 2)).sum(0)
        else:  # broadcast over a batch of 2 (Zamba's per-head ``x_proj_weight[:, None] @ h``)
            y = (w[:, None] @ h.t()[None, None].expand(w.shape[0], 2, -1, -1)).sum((0, 1)).t()
        return self.head(y)


@pytest.mark.parametrize("mode", ["select", "bmm", "index", "broadcast"])
@pytest.mark.parametrize("experts, out", [(3, 4), (1, 4), (3, 1)])
def test_a_stack_reads_as_a_stack_however_the_matmul_takes_its_matrices(mode, experts, out):
    torch.manual_seed(0)
    model = Stack(mode, experts, out)
    p = quiet(idinit.init_, model, loose=0.0, example_inputs=(torch.randn(5, 4, dtype=torch.float64),))
    assert (p["w"].kind, p["w"].layout, p["w"].role) == ("experts", "stacked", "identity")
    for w in model.w.detach():
        assert torch.equal(w, idi(out, 4))
