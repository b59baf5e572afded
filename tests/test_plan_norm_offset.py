"""Norm layers whose unit scale is weight 0 (zoo audit, results/zoo-audit): Gemma's RMSNorm computes
``x_hat * (1 + weight)`` and ConvNeXt-V2's GlobalResponseNorm ``x + gamma * (x * N(x)) + beta``. The
paper's norm rule (weight 1, bias 0) would double every Gemma norm and open GRN's closed path; the plan
gives them 0, found by running the layer, and keeps 1 for every norm that multiplies by its weight."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import idinit


class RMSNorm(nn.Module):
    def __init__(self, dim: int, offset: bool):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x):
        x_hat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x_hat * (1 + self.weight) if self.offset else x_hat * self.weight


class Net(nn.Module):
    def __init__(self, offset: bool):
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.norm = RMSNorm(8, offset)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.fc2(torch.relu(self.fc1(self.norm(h))))
        return self.head(h)


def test_an_offset_norm_gets_its_unit_scale_and_a_multiplying_one_keeps_ones():
    torch.manual_seed(0)
    offset, plain = Net(offset=True).double(), Net(offset=False).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    with torch.no_grad():
        offset.norm.weight.fill_(0.3)  # anything: the plan decides from the layer, not from the value
    p = idinit.init_(offset, example_inputs=(x,), generator=torch.Generator().manual_seed(0))
    idinit.init_(plain, example_inputs=(x,), generator=torch.Generator().manual_seed(0))
    assert p["norm.weight"].init == "zeros_" and "unit scale" in p["norm.weight"].note
    assert torch.equal(offset.norm.weight, torch.zeros(8, dtype=torch.float64))
    assert torch.equal(plain.norm.weight, torch.ones(8, dtype=torch.float64))
    # both norms now pass x_hat unchanged, so the two initialised models are the same function
    h = offset.inp(x)
    assert torch.equal(offset.norm(h), plain.norm(h)) and torch.equal(offset(x), plain(x))


def test_gemma2_norms_and_convnextv2_grn_stay_at_their_unit_scale():
    import timm
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(Gemma2Config(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                           vocab_size=100, max_position_embeddings=64))
    p = idinit.init_(gemma)
    norms = [n for n, _ in gemma.named_parameters() if n.endswith("norm.weight")]
    assert len(norms) == 9  # 4 per layer (pre / post attention and MLP) and the final one
    assert all(p[n].init == "zeros_" for n in norms)
    assert all(not gemma.get_parameter(n).any() for n in norms)
    model = timm.create_model("convnextv2_atto", pretrained=False, num_classes=5)
    p = idinit.init_(model)
    grn = [e for e in p if ".grn." in e.name]
    assert len(grn) == 2 * 12 and all(e.init == "zeros_" for e in grn)
    assert all(not model.get_parameter(e.name).any() for e in grn)
    assert p["stages.0.blocks.0.norm.weight"].init == "ones_"  # its LayerNorm multiplies


def test_gemma2_and_olmo2_post_norm_branches_are_closed():
    # zoo audit: an inline RMSNorm after the branch's last layer (x * rsqrt(mean(x^2) + eps), the post-norms of
    # Gemma2 and OLMo2) was read as a product of two computed paths, so the MLP's down_proj stayed IDI
    from transformers import Gemma2Config, Gemma2ForCausalLM, Olmo2Config, Olmo2ForCausalLM

    small = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=100, max_position_embeddings=64)
    for model in (Gemma2ForCausalLM(Gemma2Config(**small, head_dim=16)), Olmo2ForCausalLM(Olmo2Config(**small))):
        p = idinit.plan(model)
        assert [e.name for e in p.by_role("branch_end")] == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]
        assert {e.name.rpartition(".")[0].rpartition(".")[2] for e in p.by_role("branch_end_norm")} == \
            {"post_attention_layernorm", "post_feedforward_layernorm"}


class PostNormNet(nn.Module):
    """``h + norm(fc2(relu(fc1(h))))``: a branch closed by a norm after its last layer (Gemma2's post-norms)."""

    def __init__(self, offset: bool):
        super().__init__()
        self.inp, self.head = nn.Linear(8, 8), nn.Linear(8, 3)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.norm = RMSNorm(8, offset)

    def forward(self, x):
        h = self.inp(x)
        return self.head(h + self.norm(self.fc2(torch.relu(self.fc1(h)))))


@pytest.mark.parametrize("how", [("zero_gamma", {}), ("idinit", {"branch_end_norm": "zero"})])
def test_a_norm_that_closes_a_branch_is_set_to_its_zero_scale(how):
    # planted: the scale-0 value was written as weight 0, which is the unit scale of x_hat * (1 + w), so Zero-γ
    # and branch_end_norm="zero" left every Gemma-style post-norm branch open
    scheme, options = how
    x = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for offset in (True, False):
        torch.manual_seed(0)
        model = PostNormNet(offset).double()
        plan = idinit.init_(model, scheme, example_inputs=(x,), **options)
        assert plan["norm.weight"].role == "branch_end_norm"
        with torch.no_grad():
            assert torch.equal(model(x), model.head(model.inp(x))), offset  # the branch adds exact zeros
            assert model.norm(model.fc2(torch.relu(model.fc1(model.inp(x))))).abs().amax() == 0
        assert torch.all(model.norm.weight == (-1.0 if offset else 0.0))
    assert plan["norm.weight"].init == "zeros_"  # the multiplying norm: plain zeros, as before


def test_gemma2_zero_gamma_closes_its_post_norm_branches():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                           vocab_size=100, max_position_embeddings=64))
    plan = idinit.init_(model, "zero_gamma")
    post = [e for e in plan if ".post_" in e.name]
    assert len(post) == 4 and all(e.init == "constant_" and e.args == {"val": -1.0} for e in post)
    report = idinit.check(model)
    assert len(report.blocks) == 4 and all(b.distance == 0 for b in report.blocks)
    assert plan["model.layers.0.input_layernorm.weight"].init == "zeros_"  # a pre-norm keeps its unit scale


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: adds its input back, so no weight zeroes its output."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        n = x.norm(dim=-1, keepdim=True) / (x.norm(dim=-1, keepdim=True).mean(0, keepdim=True) + 1e-6)
        return x + self.weight * (x * n) + self.bias


def test_a_norm_no_weight_can_close_says_its_branch_stays_open():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
            self.grn = GlobalResponseNorm(8)

        def forward(self, x):
            h = self.inp(x)
            return self.head(h + self.grn(self.fc(h)))

    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    plan = idinit.plan(Net(), "zero_gamma", example_inputs=(x,))
    entry = plan["grn.weight"]
    assert entry.role == "branch_end_norm" and entry.init == "zeros_" and "stays open" in entry.note


class LayerNorm1P(nn.LayerNorm):
    """A torch LayerNorm subclass normalising with ``weight + 1`` (Nemotron's LayerNorm1P)."""

    def forward(self, x):
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


class Subclassed(nn.LayerNorm):
    """A subclass that keeps torch's forward: still a norm that multiplies."""


def test_a_torch_norm_subclass_with_its_own_forward_is_probed():
    # zoo audit: Nemotron's norms were taken for torch LayerNorms (isinstance) and got weight 1, i.e. scale 2
    one_p, plain = LayerNorm1P(8), Subclassed(8)
    model = nn.Sequential(nn.Linear(8, 8), one_p, nn.Linear(8, 8), plain, nn.Linear(8, 3))
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    idinit.init_(model, example_inputs=(x,))
    assert torch.all(one_p.weight == 0) and torch.all(plain.weight == 1)
    h = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # both now scale the normalised input by exactly 1
        reference = nn.functional.layer_norm(h, (8,), eps=one_p.eps)
        assert torch.equal(one_p(h), reference) and torch.equal(plain(h), reference)


def test_nemotron_norms_get_their_unit_scale():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.NemotronForCausalLM(transformers.NemotronConfig(
        num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=100, max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    plan = idinit.init_(model)
    norms = [n for n, m in model.named_modules() if type(m).__name__ == "NemotronLayerNorm1P"]
    assert len(norms) == 3
    for n in norms:
        assert plan[f"{n}.weight"].init == "zeros_" and torch.all(model.get_parameter(f"{n}.weight") == 0), n
