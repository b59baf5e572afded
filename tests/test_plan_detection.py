"""Role detection on models the library knows and models it has never seen (CPU, tiny configurations).

Every model is planned three ways where it can be: torch.fx + registry (no inputs), the autograd
graph of one forward pass with the registry switched off, and (for HF) the model's dummy inputs. The
graph's own answer must equal the registry's, and both must equal the roles written out by hand.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import idinit
from plan_zoo import LSTMClassifier, TextTransformer, cnn, mlp, roles, tiny_bert, tiny_gpt2


def _three_ways(model, example_inputs):
    fx = roles(idinit.plan(model))
    graph = roles(idinit.plan(model, example_inputs=example_inputs, use_registry=False))
    return fx, graph


@pytest.mark.parametrize("arch, blocks, per_block", [("resnet18", [2, 2, 2, 2], 2), ("resnet50", [3, 4, 6, 3], 3)])
def test_torchvision_resnets(arch, blocks, per_block):
    model = getattr(torchvision.models, arch)(num_classes=10)
    fx, graph = _three_ways(model, (torch.randn(1, 3, 32, 32),))
    assert fx == graph
    expected = {"conv1.weight": "stem", "fc.weight": "head", "fc.bias": "bias"}
    last = f"conv{per_block}"
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            prefix = f"layer{stage}.{b}"
            for i in range(1, per_block):
                expected[f"{prefix}.conv{i}.weight"] = "identity"
            expected[f"{prefix}.{last}.weight"] = "branch_end"
            expected[f"{prefix}.bn{per_block}.weight"] = "branch_end_norm"
            expected[f"{prefix}.bn1.weight"] = "norm"
            if b == 0 and (stage > 1 or arch == "resnet50"):
                expected[f"{prefix}.downsample.0.weight"] = "identity"  # projection shortcut
                expected[f"{prefix}.downsample.1.weight"] = "norm"
    assert {k: fx[k] for k in expected} == expected
    assert list(fx.values()).count("branch_end") == sum(blocks)
    assert "unclassified" not in fx.values()


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder(norm_first):
    model = TextTransformer(norm_first)
    fx, graph = _three_ways(model, (torch.randint(0, 50, (2, 5)),))
    assert fx == graph
    for i in range(2):
        layer = f"encoder.layers.{i}"
        assert fx[f"{layer}.self_attn.in_proj_weight"] == "attention_qkv"
        assert fx[f"{layer}.self_attn.out_proj.weight"] == "attention_out"
        assert fx[f"{layer}.linear1.weight"] == "identity"
        assert fx[f"{layer}.linear2.weight"] == "branch_end"
        assert fx[f"{layer}.norm1.weight"] == fx[f"{layer}.norm2.weight"] == "norm"
    assert fx["emb.weight"] == "embedding" and fx["head.weight"] == "head"
    entry = idinit.plan(model)["encoder.layers.0.self_attn.in_proj_weight"]
    assert entry.blocks == 3 and entry.init == "identity_"


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, 5)

    def forward(self, src, tgt):
        return self.out(self.transformer(src, tgt))


def test_encoder_decoder_cross_attention():
    """Cross-attention splits in_proj_weight into a q op and a kv op: still one fused q/k/v weight."""
    model = Seq2Seq()
    fx, graph = _three_ways(model, (torch.randn(2, 5, 16), torch.randn(2, 4, 16)))
    assert fx == graph
    dec = "transformer.decoder.layers.0"
    assert graph[f"{dec}.multihead_attn.in_proj_weight"] == graph[f"{dec}.self_attn.in_proj_weight"] == "attention_qkv"
    assert graph[f"{dec}.multihead_attn.out_proj.weight"] == "attention_out"
    assert graph[f"{dec}.linear2.weight"] == "branch_end" and graph["out.weight"] == "head"


def test_gpt2_fused_transposed_and_tied():
    model = tiny_gpt2()
    plan = idinit.plan(model)  # HF model: roles from a forward pass on model.dummy_inputs
    assert "dummy_inputs" in plan.source
    graph = roles(idinit.plan(model, example_inputs={"input_ids": torch.randint(0, 100, (2, 6))}))
    assert roles(plan) == graph
    for i in range(2):
        block = f"transformer.h.{i}"
        c_attn = plan[f"{block}.attn.c_attn.weight"]
        assert (c_attn.role, c_attn.layout, c_attn.blocks) == ("attention_qkv", "t", 3)
        assert plan[f"{block}.attn.c_proj.weight"].role == "attention_out"
        assert plan[f"{block}.mlp.c_fc.weight"].role == "identity"
        assert plan[f"{block}.mlp.c_proj.weight"].role == "branch_end"
        assert plan[f"{block}.mlp.c_fc.bias"].role == "bias"
    # lm_head.weight is transformer.wte.weight: one entry, the embedding wins, and the plan says so
    names = [e.name for e in plan]
    assert "lm_head.weight" not in names
    wte = plan["transformer.wte.weight"]
    assert (wte.role, wte.init) == ("embedding", "reset_parameters")  # the model's own init (reset_kept)
    assert "GPT2Model._init_weights" in wte.note
    assert idinit.plan(model, reset_kept=False)["transformer.wte.weight"].init == "keep"
    assert "lm_head.weight" in wte.note and "head" in wte.note
    assert "lm_head.weight" in str(plan)


def test_bert_sequence_classification():
    model = tiny_bert()
    got = roles(idinit.plan(model))
    for i in range(2):
        layer = f"bert.encoder.layer.{i}"
        for letter, name in (("q", "query"), ("k", "key"), ("v", "value")):
            assert got[f"{layer}.attention.self.{name}.weight"] == f"attention_{letter}"
        assert got[f"{layer}.attention.output.dense.weight"] == "attention_out"
        assert got[f"{layer}.intermediate.dense.weight"] == "identity"
        assert got[f"{layer}.output.dense.weight"] == "branch_end"
        assert got[f"{layer}.output.LayerNorm.weight"] == "norm"
    assert got["bert.pooler.dense.weight"] == "identity"
    assert got["classifier.weight"] == "head"
    assert got["bert.embeddings.word_embeddings.weight"] == "embedding"


@pytest.mark.parametrize("build, inputs, stem", [
    (LSTMClassifier, (torch.randint(0, 50, (2, 5)),), None),
    (mlp, (torch.randn(2, 10),), "0.weight"),
    (cnn, (torch.randn(2, 3, 8, 8),), "0.weight"),
])
def test_non_residual_models(build, inputs, stem):
    model = build()
    fx, graph = _three_ways(model, inputs)
    assert fx == graph
    assert "branch_end" not in fx.values() and "branch_end_norm" not in fx.values()
    plan = idinit.plan(model)
    assert not plan.residual
    assert not any(e.init in ("zero_preserving_", "zeros_") and e.role in idinit.roles.MATRIX_ROLES for e in plan)
    assert [n for n, r in fx.items() if r == "stem"] == ([stem] if stem else [])
    assert [n for n, r in fx.items() if r == "head"] == ["head.weight" if build is LSTMClassifier else
                                                           f"{len(model) - 1}.weight"]


def test_lstm_gates_are_filled_block_by_block():
    plan = idinit.plan(LSTMClassifier())
    assert plan["rnn.weight_hh_l0"].role == "recurrent" and plan["rnn.weight_hh_l0"].blocks == 4
    assert plan["rnn.weight_ih_l1"].role == "identity" and plan["rnn.weight_ih_l1"].blocks == 4
    model = LSTMClassifier()
    idinit.init_(model, loose=0.0)
    for gate in model.rnn.weight_hh_l0.detach().chunk(4, 0):
        assert torch.equal(gate, torch.eye(12))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_lab_cifar_resnet_from_the_graph(shortcut):
    """The lab's ResNets are in no registry: fx and autograd must both find every branch end."""
    from idinit.lab.models.cifar_resnet import CifarResNet

    model = CifarResNet(20, shortcut=shortcut)
    fx, graph = _three_ways(model, (torch.randn(2, 3, 16, 16),))
    assert fx == graph
    ends = sorted(n for n, r in fx.items() if r == "branch_end")
    assert ends == sorted(f"layer{s}.{b}.conv2.weight" for s in (1, 2, 3) for b in range(3))
    assert sorted(n for n, r in fx.items() if r == "branch_end_norm") == [e.replace("conv2", "bn2") for e in ends]
    shortcuts = [n for n in fx if "shortcut" in n and n.endswith("0.weight")]
    assert len(shortcuts) == (2 if shortcut == "B" else 0) and all(fx[n] == "identity" for n in shortcuts)
    assert fx["conv1.weight"] == "stem" and fx["fc.weight"] == "head"


def test_gated_branch_and_layer_scale():
    """ReZero-style gates are 'scale' and kept; the walk from the add passes through them. A gate the
    model set to 0 already closes the branch, so its last conv gets IDI (no second zero on top); an
    open gate (0.25) leaves the conv a branch end."""
    from idinit.lab.models.cifar_resnet import CifarResNet

    model = CifarResNet(8, gate=True)
    plan = idinit.plan(model)
    assert plan["layer1.0.alpha"].role == "scale" and plan["layer1.0.alpha"].init == "keep"
    closed = plan["layer1.0.conv2.weight"]
    assert (closed.role, closed.init, closed.source) == ("identity", "identity_", "values")
    assert "layer1.0.alpha" in closed.note
    assert idinit.plan(model, keep_model_values=False)["layer1.0.conv2.weight"].role == "branch_end"
    with torch.no_grad():
        for block in model.modules():
            if getattr(block, "alpha", None) is not None:
                block.alpha.fill_(0.25)
    assert idinit.plan(model)["layer1.0.conv2.weight"].role == "branch_end"
    idinit.init_(model, "kaiming")  # a scheme leaves scales as the model made them
    assert model.layer1[0].alpha.item() == 0.25


class SqueezeExciteBlock(nn.Module):
    """A residual block whose branch ends in a sigmoid-gated product (squeeze-excitation)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return x + h * gate


def test_squeeze_excite_gate_is_not_a_branch_end():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SqueezeExciteBlock(), SqueezeExciteBlock())
    fx, graph = _three_ways(model, (torch.randn(1, 3, 8, 8),))
    assert fx == graph
    assert fx["1.conv2.weight"] == fx["2.conv2.weight"] == "branch_end"
    assert fx["1.fc2.weight"] == fx["1.fc1.weight"] == "identity"


class ScoreBias(nn.Module):
    """Attention written out with a learned position bias added to the scores: that add is no residual."""

    def __init__(self, d: int = 8, n: int = 5):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.bias_table = nn.Parameter(torch.zeros(n, n))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-2, -1) / 8 ** 0.5 + self.bias_table
        x = x + self.proj(torch.softmax(scores, dim=-1) @ v)
        return x + self.mlp(x)


def test_attention_written_out_with_position_bias():
    model = ScoreBias()
    fx, graph = _three_ways(model, (torch.randn(2, 5, 8),))
    assert fx == graph
    assert fx == {"qkv.weight": "attention_qkv", "qkv.bias": "bias", "proj.weight": "attention_out",
                  "proj.bias": "bias", "bias_table": "embedding", "mlp.0.weight": "identity", "mlp.0.bias": "bias",
                  "mlp.2.weight": "branch_end", "mlp.2.bias": "bias"}


class ZeroPaddedResidualMLP(nn.Module):
    """Residual MLP whose first skip comes straight from the input (the fork is the input itself)."""

    def __init__(self):
        super().__init__()
        self.a1, self.a2 = nn.Linear(6, 6), nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(x + self.a2(torch.relu(self.a1(x))))


def test_skip_from_the_input_itself():
    fx, graph = _three_ways(ZeroPaddedResidualMLP(), (torch.randn(3, 6),))
    assert fx == graph == {"a1.weight": "stem", "a1.bias": "bias", "a2.weight": "branch_end", "a2.bias": "bias",
                           "out.weight": "head", "out.bias": "bias"}


def test_conv_transpose_layouts():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ConvTranspose2d(4, 6, 3), nn.ConvTranspose2d(6, 6, 3, groups=2))
    plan = idinit.plan(model, loose=0.0)
    assert plan["1.weight"].layout == "transpose01"
    assert plan["2.weight"].layout == "stored" and "grouped ConvTranspose" in plan["2.weight"].note
    idinit.init_(model, loose=0.0)
    expected = idinit.identity_(torch.empty(6, 4, 3, 3), loose=0.0)  # (out, in, k, k)
    assert torch.equal(model[1].weight.transpose(0, 1), expected)


def test_untraceable_model_needs_example_inputs():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:  # Python control flow on data: torch.fx cannot trace this
                return x + self.b(self.a(x))
            return x + self.b(torch.relu(self.a(x)))

    model = DataDependent()
    with pytest.raises(ValueError, match="example_inputs"):
        idinit.plan(model)
    plan = idinit.plan(model, example_inputs=(torch.ones(2, 4),))
    assert plan["b.weight"].role == "branch_end" and "autograd" in plan.source
    with pytest.warns(UserWarning, match="example_inputs"):
        kaiming = idinit.plan(model, "kaiming")  # kaiming places every layer alike: a warning is enough
    assert {e.init for e in kaiming if e.name.endswith("weight")} == {"kaiming_normal_"}


def test_hf_vit_gets_its_pixel_values_from_the_config():
    from transformers import ViTConfig, ViTForImageClassification

    model = ViTForImageClassification(ViTConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                intermediate_size=32, image_size=16, patch_size=8, num_labels=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = roles(idinit.plan(model, example_inputs={"pixel_values": torch.randn(1, 3, 16, 16)}))
        assert roles(idinit.plan(model)) == got  # pixel_values built from image_size / num_channels
    # module names differ between transformers 4.x and 5.x: count roles instead of naming them
    # the patch projection feeds the residual stream, no ReLU-like activation: no stem gain (idinit.positions)
    assert got["vit.embeddings.patch_embeddings.projection.weight"] == "identity"
    counts = {r: list(got.values()).count(r) for r in set(got.values())}
    assert {r: counts.get(r, 0) for r in ("attention_q", "attention_k", "attention_v", "attention_out", "branch_end",
                                         "identity", "head", "embedding", "stem")} == {
        "attention_q": 1, "attention_k": 1, "attention_v": 1, "attention_out": 1, "branch_end": 1,
        "identity": 2, "head": 1, "embedding": 2, "stem": 0}
    assert got["vit.embeddings.cls_token"] == got["vit.embeddings.position_embeddings"] == "embedding"
    assert got["classifier.weight"] == "head"
