"""Which layer is the stem, the one layer IDInit gives gain sqrt(2) in a ReLU network (paper appendix B).

Two rules (idinit.positions): an embedding lookup is kept, so the first layer after it is the first
layer IDI initialises; and the gain makes up for a ReLU-like activation after the layer, so a first
layer that no such activation follows (a ViT's patch projection) stays ``identity``, gain 1. Each rule
on two models, planned from the torch.fx graph and from the autograd graph of one forward pass.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import idinit
from plan_zoo import roles


def _both(model, example_inputs):
    """Roles from torch.fx (no inputs) and from the autograd graph (registry off): they must agree."""
    fx = roles(idinit.plan(model))
    graph = roles(idinit.plan(model, example_inputs=example_inputs, use_registry=False))
    assert fx == graph
    return fx


class AveragedEmbeddingMLP(nn.Module):
    """A deep-averaging text classifier: bag of embeddings, a ReLU layer, a classifier."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.EmbeddingBag(50, 8, mode="mean")
        self.hidden = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.out = nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(self.act(self.hidden(self.embedding(ids))))


class ConvMixerish(nn.Module):
    """A patch embedding followed by GELU and BN (ConvMixer), then one residual depthwise block."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.norm(nn.functional.gelu(self.patch(x)))
        h = h + self.depthwise(h)
        return self.head(h.mean((2, 3)))


def test_textcnn_convolutions_after_the_embedding_are_stems():
    from idinit.lab.models.text import TextCNN, example_inputs

    # TextCNN pads short texts (Python control flow on the length): fx cannot trace it, autograd only
    got = roles(idinit.plan(TextCNN(60, 3, embedding_dim=8), example_inputs=example_inputs(60), use_registry=False))
    assert [got[f"convs.{i}.weight"] for i in range(3)] == ["stem"] * 3
    assert got["embedding.weight"] == "embedding" and got["fc.weight"] == "head"
    model = TextCNN(60, 3, embedding_dim=8)
    idinit.init_(model, loose=0.0, example_inputs=example_inputs(60))
    expected = idinit.identity_(torch.empty(100, 8, 3), gain=math.sqrt(2.0), loose=0.0)
    assert torch.equal(model.convs[0].weight, expected)


def test_embedding_bag_then_relu_layer_is_the_stem():
    got = _both(AveragedEmbeddingMLP(), (torch.randint(0, 50, (2, 6)),))
    assert got["hidden.weight"] == "stem" and got["out.weight"] == "head"
    model = AveragedEmbeddingMLP()
    idinit.init_(model, loose=0.0)
    assert torch.equal(model.hidden.weight, math.sqrt(2.0) * torch.eye(8))


def test_torchvision_vit_patch_projection_has_no_stem_gain():
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=3)
    got = _both(model, (torch.randn(1, 3, 16, 16),))
    assert got["conv_proj.weight"] == "identity"
    assert "stem" not in got.values()
    plan = idinit.plan(model)
    assert plan["conv_proj.weight"].args["gain"] == 1.0 and "no ReLU-like activation" in plan["conv_proj.weight"].note


def test_text_transformer_input_projection_has_no_stem_gain():
    from idinit.lab.models.text import TextTransformer, example_inputs

    model = TextTransformer(60, 3, embedding_dim=8, d_model=16, heads=2, ff=32, layers=1, max_len=16)
    plan = idinit.plan(model, example_inputs=example_inputs(60))
    assert plan["proj.weight"].role == "identity" and plan["proj.weight"].args["gain"] == 1.0
    assert "stem" not in {e.role for e in plan}


def test_patch_embedding_followed_by_gelu_keeps_the_stem_gain():
    got = _both(ConvMixerish(), (torch.randn(2, 3, 8, 8),))
    assert got["patch.weight"] == "stem" and got["depthwise.weight"] == "branch_end"


@pytest.mark.parametrize("activation, role", [(nn.ReLU, "stem"), (nn.LeakyReLU, "stem"), (nn.Tanh, "identity"),
                                              (nn.Identity, "identity")])
def test_first_layer_role_follows_the_activation_module(activation, role):
    """In an nn.Sequential the activation's call site is named "1": the module's class decides."""
    model = nn.Sequential(nn.Linear(6, 6), activation(), nn.Linear(6, 2))
    assert _both(model, (torch.randn(2, 6),))["0.weight"] == role


class FormulaActivation(nn.Module):
    """A ReLU-like activation written as a formula, as HF and nanoGPT-style code do: torch.fx traces
    into it, and autograd sees only its multiplications, so no module or function name says GELU."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "tanh-gelu":  # GPT-2's gelu_new
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        if self.form == "quick-gelu":  # CLIP's x * sigmoid(1.702 x)
            return x * torch.sigmoid(1.702 * x)
        if self.form == "erf-gelu":
            return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        if self.form == "tanh":  # saturating on both sides: no half-line removed
            return 2.0 * torch.tanh(x)
        raise ValueError(self.form)


class GatedByInput(nn.Module):
    """The first layer's output times a sigmoid of the *input* (a gate from elsewhere): not x * s(x)."""

    def __init__(self):
        super().__init__()
        self.proj, self.out = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.proj(x) * torch.sigmoid(x))


@pytest.mark.parametrize("form, role", [("tanh-gelu", "stem"), ("quick-gelu", "stem"), ("erf-gelu", "stem"),
                                        ("tanh", "identity")])
def test_activation_written_as_a_formula_is_recognised_by_its_shape(form, role):
    """x * s(x) with s a tanh, erf or sigmoid of x is ReLU-like whatever its name; a bare tanh is not."""
    model = nn.Sequential(nn.Linear(6, 6), FormulaActivation(form), nn.Linear(6, 2))
    assert _both(model, (torch.randn(2, 6),))["0.weight"] == role


def test_a_gate_computed_from_another_value_is_no_rectifier():
    assert _both(GatedByInput(), (torch.randn(2, 6),))["proj.weight"] == "identity"


@pytest.mark.parametrize("name", ["NewGELUActivation", "GELUTanh", "FastGELUActivation", "QuickGELUActivation"])
def test_hf_formula_activations_give_the_stem_gain(name):
    from transformers import activations

    model = nn.Sequential(nn.Linear(6, 6), getattr(activations, name)(), nn.Linear(6, 2))
    assert _both(model, (torch.randn(2, 6),))["0.weight"] == "stem"
