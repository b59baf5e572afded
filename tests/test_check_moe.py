"""idinit.check on two near-zero branches summed before the residual add (routed + shared experts):
one block, read against the real skip, not one branch taken for the skip of the other."""
import warnings

import pytest
import torch
from torch import nn

import idinit


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


class TwoBranches(nn.Module):
    """``x + (a(x) + b(x))`` with zero-preserving ``a`` and ``b``: one residual block with two ends."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return x + (self.a(x) + self.b(x))


class InnerResidual(nn.Module):
    """``x + (h + b(h))``, ``h = a(x)``: a residual add inside a branch, then the outer one (two blocks)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)

    def forward(self, x):
        h = self.a(x)
        return x + (h + self.b(h))


def _zero_preserving(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in (model.a, model.b):
            idinit.zero_preserving_(m.weight)
    return model.double()


def test_two_branches_summed_before_the_skip_are_one_block():
    # planted: pairing a with b at the inner sum gave two blocks, one of them b's output over a's (~1)
    model, x = _zero_preserving(TwoBranches()), torch.randn(6, 8, dtype=torch.float64)
    report = idinit.check(model, (x,))
    assert len(report.blocks) == 1
    block = report.blocks[0]
    assert block.branch_end in {"a", "b"}
    with torch.no_grad():  # the same float64 operations on the same input: equal to the last bit
        branch = model.a(x) + model.b(x)
    assert block.skip_rms == _rms(x) and block.branch_rms == _rms(branch)
    assert block.distance < 1e-5


def test_a_residual_add_inside_a_branch_is_still_its_own_block():
    # the merge needs two branches with no source in common: h + b(h) shares a's tag, so it is a residual add
    model, x = _zero_preserving(InnerResidual()), torch.randn(6, 8, dtype=torch.float64)
    report = idinit.check(model, (x,))
    assert sorted(b.branch_end for b in report.blocks) == ["a", "b"]
    inner = next(b for b in report.blocks if b.branch_end == "b")
    with torch.no_grad():
        h = model.a(x)
    assert inner.skip_rms == _rms(h) and inner.distance < 1e-5


def test_qwen2_moe_block_reads_at_identity():
    # Qwen2-MoE sums the routed experts and the gated shared expert, then adds the skip; the plan closes
    # both (tests/test_plan_moe.py). Planted: read as a skip of each other, one row measured ~1e7
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2MoeConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, moe_intermediate_size=24, intermediate_size=32,
                                      shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = transformers.Qwen2MoeForCausalLM(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idinit.init_(model, loose=0.0, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(64, (4, 12), generator=torch.Generator().manual_seed(0))
    report = idinit.check(model, {"input_ids": ids})
    mlp = [b for b in report.blocks if b.branch_end.startswith("model.layers.0.mlp.")]
    attention = [b for b in report.blocks if b.branch_end == "model.layers.0.self_attn.o_proj"]
    assert len(report.blocks) == 2 and len(mlp) == 1 and len(attention) == 1
    assert mlp[0].name == "model.layers.0" and mlp[0].distance < 1e-3
    assert attention[0].distance < 1e-3
