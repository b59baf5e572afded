"""Mixture-of-Experts layers whose experts are fused into one 3-D parameter per projection.

transformers 5 stores Mixtral's / Qwen-MoE's experts as ``(experts, out, in)`` (``F.linear(x, w[e])``)
and GPT-OSS's as ``(experts, in, out)`` (``x @ w[e] + b[e]``). Each expert must get what one linear
layer in its place gets (paper Sec. 3.2 and A.5: IDI on the up / gate projection, IDIZ on the down
projection that closes the residual branch; a baseline's draw with that expert's own fans). The
references (tests/spec_patterns.py) are built in float64 from SPEC.md's formulas, independently of the library.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import idinit
from spec_patterns import idi, idiz, quiet

transformers = pytest.importorskip("transformers")

# |branch| / |skip| below which a residual block counts as closed: the attention branch (IDIZ on
# o_proj) of the same small Mixtral measures 6.6e-5
CLOSED = 1e-4


def mixtral(implementation: str = "grouped_mm", layers: int = 2) -> nn.Module:
    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                                     num_attention_heads=2, num_key_value_heads=1, num_local_experts=4,
                                     num_experts_per_tok=2)
    cfg._experts_implementation = implementation
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(cfg)


def gpt_oss(implementation: str = "grouped_mm") -> nn.Module:
    cfg = transformers.GptOssConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, num_local_experts=4,
                                    num_experts_per_tok=2, head_dim=8, layer_types=["full_attention"])
    cfg._experts_implementation = implementation
    torch.manual_seed(0)
    return transformers.GptOssForCausalLM(cfg)


def expert_matrices(param: torch.Tensor, stored_in_out: bool) -> list[torch.Tensor]:
    """Each expert's (out, in) matrix."""
    return [w.t() if stored_in_out else w for w in param.detach().unbind(0)]


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm", "eager"])
def test_mixtral_each_expert_is_idi_then_idiz(implementation):
    model = mixtral(implementation)
    p = quiet(idinit.init_, model, loose=0.0, generator=torch.Generator().manual_seed(0))
    for layer in range(2):
        experts = model.model.layers[layer].mlp.experts
        name = f"model.layers.{layer}.mlp.experts"
        assert (p[f"{name}.gate_up_proj"].role, p[f"{name}.down_proj"].role) == ("identity", "branch_end")
        for w in expert_matrices(experts.gate_up_proj, False):  # (48, 16): identity blocks stacked
            assert torch.equal(w, idi(48, 16).float())
            assert not torch.equal(w, idi(16, 48).t().float())  # the other axis read as the input
        for w in expert_matrices(experts.down_proj, False):  # (16, 24): [eps I | -eps IDI]
            assert torch.equal(w, idiz(16, 24).float())
    # the router, a raw weight in F.linear feeding the top-k: the model's own init (tests/test_plan_moe_router.py)
    assert p["model.layers.0.mlp.gate.weight"].role == "router"


def test_gpt_oss_experts_stored_in_out_and_their_biases():
    model = gpt_oss()
    experts = model.model.layers[0].mlp.experts
    with torch.no_grad():  # biases with values a default draw could give: zeroed, as a Linear's bias
        experts.gate_up_proj_bias.copy_(0.01 * torch.randn(experts.gate_up_proj_bias.shape))
        experts.down_proj_bias.copy_(0.01 * torch.randn(experts.down_proj_bias.shape))
    p = quiet(idinit.init_, model, loose=0.0, generator=torch.Generator().manual_seed(0))
    name = "model.layers.0.mlp.experts"
    assert p[f"{name}.gate_up_proj"].layout == "stacked_t"
    for w in expert_matrices(experts.gate_up_proj, True):  # stored (16, 48): the expert is (48, 16)
        assert torch.equal(w, idi(48, 16).float())
    for w in expert_matrices(experts.down_proj, True):  # stored (24, 16): the expert is (16, 24)
        assert torch.equal(w, idiz(16, 24).float())
    planted = idiz(24, 16).float()  # what reading the stored axes as (out, in) would write
    assert not torch.equal(expert_matrices(experts.down_proj, True)[0].t(), planted)
    for bias in ("gate_up_proj_bias", "down_proj_bias"):
        assert p[f"{name}.{bias}"].role == "bias"
        assert not getattr(experts, bias).detach().any()


def test_each_expert_draws_its_own_loose_noise():
    model = mixtral(layers=1)
    quiet(idinit.init_, model, generator=torch.Generator().manual_seed(0))
    slices = expert_matrices(model.model.layers[0].mlp.experts.gate_up_proj, False)
    pattern = idi(48, 16).float() != 0
    for w in slices:
        assert torch.equal(w != 0, pattern)  # noise only on the identity entries (SPEC §1)
        assert 0 < (w[pattern] - 1).abs().max() < 1e-5
    assert not torch.equal(slices[0], slices[1])  # four layers, four draws


def _distances(report) -> dict[str, float]:
    return {b.branch_end: b.distance for b in report.blocks}


def test_check_sees_the_moe_branch_closed_as_the_attention_branch():
    model = mixtral()
    quiet(idinit.init_, model, generator=torch.Generator().manual_seed(0))
    found = _distances(quiet(idinit.check, model))
    for layer in range(2):
        assert found[f"model.layers.{layer}.self_attn.o_proj"] < CLOSED
        assert found[f"model.layers.{layer}.mlp.experts"] < CLOSED
    # planted: the experts left to the model's own init (what the plan did before) leave the branch open
    model = mixtral()
    quiet(idinit.init_, model, overrides={"*.experts.*": "keep"}, generator=torch.Generator().manual_seed(0))
    found = _distances(quiet(idinit.check, model))
    assert found["model.layers.0.self_attn.o_proj"] < CLOSED
    assert found["model.layers.0.mlp.experts"] > 10 * CLOSED


def _kaiming_std(fan_in: int) -> float:
    return math.sqrt(2.0 / fan_in)  # kaiming_normal_(mode="fan_in", nonlinearity="relu")


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_kaiming_uses_each_experts_own_fan_in(family):
    model = mixtral(layers=1) if family == "mixtral" else gpt_oss()
    experts = model.model.layers[0].mlp.experts
    stored_in_out = family == "gpt_oss"
    p = quiet(idinit.init_, model, "kaiming", generator=torch.Generator().manual_seed(0))
    assert p["model.layers.0.mlp.experts.down_proj"].init == "kaiming_normal_"

    def stds(param):
        return [float(w.double().std()) for w in expert_matrices(param, stored_in_out)]

    # each expert is (48, 16) and (16, 24): fan_in 16 and 24. 768 and 384 draws: the sample std is within
    # 8 % of the true one at 2 sigma; the readings a 3-D tensor invites are 2x-20x off
    for param, fan_in in ((experts.gate_up_proj, 16), (experts.down_proj, 24)):
        for std in stds(param):
            assert abs(std / _kaiming_std(fan_in) - 1) < 0.2
    # planted: torch.nn.init on the 3-D tensor (fan_in = size(1) * size(2)) is far outside that margin
    nn.init.kaiming_normal_(experts.down_proj.data, generator=torch.Generator().manual_seed(0))
    assert all(abs(std / _kaiming_std(24) - 1) > 0.5 for std in stds(experts.down_proj))


class TinyMoE(nn.Module):
    """Square experts (width == hidden): only how the forward takes w[e] says which axis is the input."""

    def __init__(self, experts: int = 3, width: int = 6, right: bool = True):
        super().__init__()
        self.up = nn.Parameter(torch.randn(experts, width, width))
        self.down = nn.Parameter(torch.randn(experts, width, width))
        self.shift = nn.Parameter(0.01 * torch.randn(experts, width))  # a fused bias not named "bias"
        self.inp = nn.Linear(width, width)
        self.right = right

    def forward(self, x):
        x = self.inp(x)
        out = torch.zeros_like(x)
        for e in range(self.up.shape[0]):
            h = torch.relu(F.linear(x, self.up[e]))
            y = h @ self.down[e] if self.right else (self.down[e] @ h.t()).t()
            out = out + (y + self.shift[e])
        return x + out


@pytest.mark.parametrize("right", [True, False])
def test_layout_comes_from_the_forward_not_the_shape(right):
    model = TinyMoE(right=right)
    x = torch.randn(5, 6)
    p = idinit.init_(model, example_inputs=(x,), loose=0.0)
    # x @ w[e] takes w[e] as (in, out); w[e] @ h.t() and F.linear as (out, in)
    assert p["down"].layout == ("stacked_t" if right else "stacked")
    assert p["up"].layout == "stacked"
    assert (p["up"].role, p["down"].role, p["shift"].role) == ("identity", "branch_end", "bias")
    for w in expert_matrices(model.down, right):
        assert torch.equal(w, idiz(6, 6).float())
    for w in expert_matrices(model.down, not right):  # the transposed reading differs for IDIZ
        assert not torch.equal(w, idiz(6, 6).float())
    assert not model.shift.detach().any()


class TwoWays(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 4, 4))

    def forward(self, x):
        return x + x @ self.w[0] + F.linear(x, self.w[1])


def test_a_stack_read_two_ways_stays_unclassified():
    with pytest.warns(UserWarning, match="no rule fits"):
        p = idinit.plan(TwoWays(), example_inputs=(torch.randn(3, 4),))
    assert p["w"].role == "unclassified"


def test_the_router_weights_are_a_gate_not_a_second_path():
    # the MoE output is experts(x) * softmax-routed weights: the walk back from the residual add follows
    # the experts, so the norm feeding the router (the block's input norm) does not close the branch;
    # planted: read as a second path, that norm was "branch_end_norm" and zero_gamma zeroed the MoE's input
    p = quiet(idinit.plan, mixtral(layers=1), "zero_gamma")
    assert p["model.layers.0.post_attention_layernorm.weight"].role == "norm"
    assert p["model.layers.0.post_attention_layernorm.weight"].init == "ones_"
    assert p["model.layers.0.mlp.experts.down_proj"].role == "branch_end"


def test_qwen2_moe_routed_and_shared_experts_both_close_the_branch():
    # Qwen2-MoE returns (experts(x) + sigmoid(g(x)) * shared(x)).reshape(...): the reshaped partial sum
    # joins the residual add, so the routed and the shared experts are two branches of one residual;
    # planted: read as a sum of its own, the routed experts (fewer layers) were a projection shortcut
    cfg = transformers.Qwen2MoeConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, moe_intermediate_size=24, intermediate_size=32,
                                      shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = transformers.Qwen2MoeForCausalLM(cfg)
    p = quiet(idinit.init_, model, loose=0.0, generator=torch.Generator().manual_seed(0))
    mlp = "model.layers.0.mlp"
    assert p[f"{mlp}.experts.down_proj"].role == "branch_end"
    assert p[f"{mlp}.shared_expert.down_proj.weight"].role == "branch_end"
    assert p[f"{mlp}.shared_expert_gate.weight"].role == "identity"
    for w in expert_matrices(model.model.layers[0].mlp.experts.down_proj, False):
        assert torch.equal(w, idiz(16, 24).float())
