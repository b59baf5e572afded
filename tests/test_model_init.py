"""The model's own init for what the scheme keeps, and buffers, on plain PyTorch and timm models built
on the meta device: planted NaN / -7 in every tensor before init_, none left after, and what no
method can rebuild is named."""
import warnings

import pytest
import torch
from torch import nn

import idinit

PLANTED_INT = -7


def _plant(model):
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.fill_(float("nan")) if t.is_floating_point() else t.fill_(PLANTED_INT)


def _uninitialised(model):
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers())
    return [n for n, t in tensors
            if (not torch.isfinite(t).all() if t.is_floating_point() else (t == PLANTED_INT).any())]


class Tagger(nn.Module):
    """An embedding, a BN without affine parameters (buffers only), a PReLU, a residual block."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.BatchNorm1d(8, affine=False)
        self.fc1, self.act, self.fc2 = nn.Linear(8, 8), nn.PReLU(), nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.norm(self.embed(ids))
        return self.head(h + self.fc2(self.act(self.fc1(h))))


def test_plain_model_built_on_meta_has_nothing_uninitialised():
    with torch.device("meta"):
        model = Tagger()
    model.to_empty(device="cpu")
    _plant(model)
    ids = torch.randint(0, 20, (4,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        plan = idinit.init_(model, example_inputs=(ids,))
    assert _uninitialised(model) == []
    assert not any("no method of the model" in note for note in plan.notes)
    embed = plan["embed.weight"]
    assert embed.init == "reset_parameters" and "Embedding.reset_parameters()" in embed.note
    assert torch.allclose(model.act.weight, torch.tensor([0.25]))  # PReLU's own init
    for name in ("norm.running_mean", "norm.running_var", "norm.num_batches_tracked"):
        assert plan.states[name].startswith("rebuilt by BatchNorm1d"), plan.states[name]
    assert torch.all(model.norm.running_var == 1) and model.norm.num_batches_tracked.item() == 0


class WithTable(nn.Module):
    """A buffer the constructor computes and no method recomputes, and a scale set by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.full((4,), 0.5))
        self.register_buffer("table", torch.arange(4.0), persistent=False)

    def forward(self, x):
        return self.fc(x) * self.gain + self.table


def test_what_no_method_rebuilds_is_named_and_kept_as_it_was():
    model = WithTable()
    plan = idinit.init_(model, example_inputs=(torch.randn(2, 4),))
    notes = " ".join(plan.notes)
    assert "parameter(s) kept as they are, no method of the model initialises them: gain" in notes
    assert "buffer(s) no method of the model rebuilds: table" in notes and "to_empty()" in notes
    assert "no method of the model initialises them: gain" in str(plan)
    assert plan.states["table"].startswith("left as it is")
    assert torch.equal(model.table, torch.arange(4.0))  # the marker used to detect a rebuild is gone
    assert torch.equal(model.gain, torch.full((4,), 0.5))
    assert "no method of the model draws it again" in plan["gain"].note


def test_frozen_modules_keep_their_buffers_and_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model[1].requires_grad_(False)
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[1].running_mean.fill_(2.0)
    plan = idinit.init_(model)
    assert torch.all(model[1].weight == 3.0) and torch.all(model[1].running_mean == 2.0)
    assert not any(n.startswith("1.") for n in plan.states)


@pytest.mark.parametrize("name, kwargs, buffers", [
    ("swin_tiny_patch4_window7_224", dict(img_size=56, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1)),
     ["layers.0.blocks.0.attn.relative_position_index"]),
    ("eva02_tiny_patch14_224", dict(img_size=28, depth=1), ["rope.pos_embed"]),
])
def test_timm_model_built_on_meta(name, kwargs, buffers):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    eager = timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs)
    model.to_empty(device="cpu")
    _plant(model)
    plan = idinit.init_(model)
    assert _uninitialised(model) == []
    for buffer in buffers:
        assert plan.states[buffer].startswith("rebuilt by"), plan.states[buffer]
        assert torch.equal(model.get_buffer(buffer), eager.get_buffer(buffer))
    if name.startswith("eva"):  # cls_token / pos_embed belong to the root: timm's init_weights() draws them
        assert "Eva.init_weights()" in plan["pos_embed"].note
        assert 0.01 < model.pos_embed.std().item() < 0.03


def test_timm_layer_scale_without_a_method_is_named():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model("convnext_atto", pretrained=False, num_classes=5)
    model.to_empty(device="cpu")
    plan = idinit.init_(model)
    assert any("no method of the model initialises them: stages.0.blocks.0.gamma" in n for n in plan.notes)


class NanoStyle(nn.Module):
    """nanoGPT's convention: the constructor applies a per-module ``_init_weights`` that knows Linear and
    Embedding only; the LayerNorm keeps PyTorch's defaults."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(16, 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, ids):
        return self.fc(self.ln(self.wte(ids)))


def test_root_per_module_init_runs_over_the_layer_defaults():
    with torch.device("meta"):
        model = NanoStyle()
    model.to_empty(device="cpu")
    _plant(model)
    plan = idinit.init_(model, "default")
    assert _uninitialised(model) == []
    assert torch.all(model.ln.weight == 1) and torch.all(model.ln.bias == 0)  # defaults, not left as garbage
    assert 0.01 < model.wte.weight.std().item() < 0.03 and torch.all(model.fc.bias == 0)  # the model's own
    assert "NanoStyle._init_weights" in plan["wte.weight"].note
