"""Schemes change what they should and nothing else; the paper's Table 2 ablation is four calls."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import idinit
from plan_zoo import TextTransformer, tiny_gpt2


def _resnet8(shortcut: str = "B") -> nn.Module:
    from idinit.lab.models.cifar_resnet import CifarResNet

    return CifarResNet(8, num_classes=10, shortcut=shortcut, widths=(16, 32, 64))


def _scramble(model: nn.Module) -> None:
    """Values no initialiser here writes, and none that looks set on purpose (a constant or an
    out-of-range bias is kept: idinit.values), so every scheme must overwrite them."""
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2e-3 - 1e-3)


def _std(t: torch.Tensor) -> float:
    return t.detach().float().std().item()


@pytest.mark.parametrize("scheme", ["kaiming", "zero_gamma"])
def test_kaiming_and_zero_gamma(scheme):
    torch.manual_seed(0)
    model = _resnet8()
    _scramble(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    plan = idinit.init_(model, scheme)
    for e in plan:
        w = model.get_parameter(e.name).detach()
        if e.role == "branch_end_norm":
            assert torch.all(w == (0.0 if scheme == "zero_gamma" else 1.0))
        elif e.role == "norm":
            assert torch.all(w == (0.0 if e.name.endswith("bias") else 1.0))
        elif e.role == "bias":
            assert torch.all(w == 0)
        elif w.dim() == 4:  # torchvision's convention: fan_out, ReLU gain
            fan_out = w.shape[0] * w[0, 0].numel()
            assert _std(w) == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.25), e.name
        else:  # linear: He et al.'s fan_in form
            assert _std(w) == pytest.approx(math.sqrt(2.0 / w.shape[1]), rel=0.25), e.name
    assert len(plan.by_role("branch_end_norm")) == 3
    for n, b in model.named_buffers():  # fresh running statistics stay what they were
        assert torch.equal(b, buffers[n]), n


@pytest.mark.parametrize("scheme, fill", [("xavier", "xavier_uniform_"), ("orthogonal", "orthogonal_")])
def test_xavier_and_orthogonal(scheme, fill):
    torch.manual_seed(0)
    model = _resnet8()
    _scramble(model)
    idinit.init_(model, scheme)
    conv = model.layer2[0].conv1.weight.detach()  # 32 x 16 x 3 x 3
    if scheme == "xavier":
        fan_in, fan_out = conv[0].numel(), conv.shape[0] * conv[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.abs().max() <= bound and _std(conv) == pytest.approx(bound / math.sqrt(3), rel=0.2)
    else:
        rows = conv.reshape(32, -1)
        assert torch.allclose(rows @ rows.T, torch.eye(32), atol=1e-5)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.fc.bias == 0)


def test_default_is_each_modules_own_reset_parameters():
    """Same seed, same draws as the constructor: 'default' re-creates a freshly built model bitwise,
    MultiheadAttention's zero out_proj.bias included (children are reset before their parents)."""

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 6 * 6, 8)
            self.attn = nn.MultiheadAttention(8, 2)

        def forward(self, x):
            h = self.fc(self.bn(self.conv(x)).flatten(1))[:, None]
            return self.attn(h, h, h)[0]

    torch.manual_seed(5)
    fresh = Wrap()
    torch.manual_seed(5)
    model = Wrap()
    _scramble(model)
    torch.manual_seed(5)
    plan = idinit.init_(model, "default")
    assert {e.init for e in plan} == {"reset_parameters"}
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    assert torch.all(model.attn.out_proj.bias == 0)


def test_zero_scheme_is_zero_hadamard():
    torch.manual_seed(0)
    model = _resnet8()
    _scramble(model)
    plan = idinit.init_(model, "zero")
    for e in plan:
        w = model.get_parameter(e.name).detach()
        if e.role == "branch_end":
            assert torch.all(w == 0), e.name
        elif e.role in idinit.roles.MATRIX_ROLES:
            assert torch.equal(w, idinit.hadamard_(torch.empty_like(w))), e.name
    assert plan["layer1.0.conv2.weight"].init == "zeros_"


@pytest.mark.parametrize("setting, options", [
    ("i", {"conv": "channel", "branch_end": "zero"}),
    ("ii", {"conv": "channel"}),
    ("iii", {"branch_end": "zero"}),
    ("iv", {}),
])
def test_table2_ablation_settings_are_one_call_each(setting, options):
    """Paper Table 2: with/without patch-maintain conv x with/without zero-preserving branch ends."""
    torch.manual_seed(0)
    model = _resnet8(shortcut="A")
    idinit.init_(model, loose=0.0, **options)
    patch = options.get("conv", "patch") == "patch"
    zp = options.get("branch_end", "zero_preserving") == "zero_preserving"
    inner = model.layer1[0].conv1.weight.detach()
    fill = idinit.identity_ if patch else idinit.channel_identity_
    assert torch.equal(inner, fill(torch.empty_like(inner), loose=0.0))
    stem = model.conv1.weight.detach()
    assert torch.equal(stem, fill(torch.empty_like(stem), gain=math.sqrt(2.0), loose=0.0))
    for w in (model.layer1[0].conv2.weight.detach(), model.fc.weight.detach()):
        expected = idinit.zero_preserving_(torch.empty_like(w)) if zp else torch.zeros_like(w)
        assert torch.equal(w, expected)


def test_options_reach_the_initialisers():
    torch.manual_seed(0)
    model = _resnet8()
    idinit.init_(model, eps=1e-4, activation="tanh", loose=0.0)
    assert model.layer1[0].conv2.weight.abs().max().item() == pytest.approx(1e-4)
    assert model.conv1.weight.abs().max().item() == 1.0  # tanh networks: gain 1 on the stem too


def test_loose_noise_follows_the_generator():
    def init(seed):
        model = _resnet8()
        idinit.init_(model, generator=torch.Generator().manual_seed(seed))
        return model.layer2[0].conv1.weight.detach().clone()

    a, b, c = init(1), init(1), init(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - idinit.identity_(torch.empty_like(a), loose=0.0)).abs().max() < 1e-5


def test_frozen_parameters_are_left_alone_unless_asked():
    model = _resnet8()
    model.conv1.weight.requires_grad_(False)
    model.layer1[0].bn1.weight.requires_grad_(False)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for scheme in ("idinit", "default", "kaiming"):
        plan = idinit.init_(model, scheme)
        assert plan["conv1.weight"].init == "keep" and "frozen" in plan["conv1.weight"].note
        for n, p in model.named_parameters():
            if n in frozen:
                assert torch.equal(p, frozen[n]), (scheme, n)
    idinit.init_(model, include_frozen=True, loose=0.0)
    assert torch.equal(model.conv1.weight, idinit.identity_(torch.empty(16, 3, 3, 3), gain=math.sqrt(2.0), loose=0.0))


def test_fused_projections_are_filled_block_by_block():
    model = tiny_gpt2()
    wte = model.transformer.wte.weight.detach().clone()
    idinit.init_(model, "orthogonal", reset_kept=False)
    c_attn = model.transformer.h[0].attn.c_attn.weight.detach().t()  # (3 * 32, 32) as (out, in)
    for block in c_attn.chunk(3, 0):
        assert torch.allclose(block @ block.T, torch.eye(32), atol=1e-5)
    assert torch.equal(model.transformer.wte.weight, wte)  # the tied embedding is kept (reset_kept=False)
    mha = TextTransformer(norm_first=True).encoder.layers[0].self_attn
    idinit.init_(mha, loose=0.0)
    for block in mha.in_proj_weight.detach().chunk(3, 0):
        assert torch.equal(block, torch.eye(16))


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
def test_transposed_weights_draw_with_the_fans_of_their_layer(scheme):
    """HF Conv1D (stored (in, out)) and ConvTranspose (stored (in, out, k)) are drawn in place, straight
    into their storage, with the fans of the (out, in) layer they are (8 and 512 here, which the stored
    shape swaps): the spread is torch.nn.init's on a tensor of the layer's shape."""
    from transformers.pytorch_utils import Conv1D

    for layer, inputs, layout in ((Conv1D(512, 8), torch.randn(1, 3, 8), "t"),
                                  (nn.ConvTranspose1d(8, 512, 1), torch.randn(1, 8, 5), "transpose01")):
        model = nn.Sequential(layer)
        entry = idinit.plan(model, scheme, example_inputs=(inputs,))["0.weight"]
        assert entry.layout == layout and entry.init.startswith(scheme)
        shape = (512, 8) if layout == "t" else (512, 8, 1)
        want = _std(getattr(nn.init, entry.init)(torch.empty(shape), **entry.args))
        with torch.no_grad():
            layer.weight.fill_(float("nan"))
        idinit.plan(model, scheme, example_inputs=(inputs,)).apply(model, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(layer.weight).all()
        assert abs(_std(layer.weight) / want - 1) < 0.1, (layout, _std(layer.weight), want)
