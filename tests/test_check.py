"""idinit.check: each flag on a planted fault (named module, absent on the same model without the fault),
a healthy control, real torchvision / timm / HF models, and that the model is left exactly as it was."""
import json

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import idinit
from plan_zoo import tiny_bert, tiny_gpt2


def kinds(report):
    return {f.kind for f in report.flags}


def names(report, kind):
    return [n for f in report.flagged(kind) for n in f.names]


# -- planted faults ----------------------------------------------------------------------------

class ZeroPadded(nn.Module):
    """An option-A style block: zero-filled channels first, then a residual branch on all 8 channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = torch.cat([torch.zeros_like(x), x], 1)
        x = x + self.conv2(F.relu(self.conv1(x)))
        return self.head(x.mean((2, 3)))


def test_starved_branch_is_flagged_with_its_conv():
    torch.manual_seed(0)
    model, x = ZeroPadded(), torch.randn(4, 3, 8, 8)
    assert "starved_branch" not in kinds(idinit.check(model, (x,)))  # reads every channel: healthy
    with torch.no_grad():
        model.conv1.weight[:, 4:] = 0  # the fault: nonzero weights only on the zero-filled channels 0-3
    report = idinit.check(model, (x,))
    assert names(report, "starved_branch") == ["conv1.weight"]
    assert report.layers[[s.name for s in report.layers].index("conv1")].reads == 0.0


def test_centred_option_a_idinit_resnet_starves_the_branches_the_probe_found():
    """results/idic-reads-padding: with zero channels first (centred option A), IDIC's conv1 reads zero-filled
    channels from the second block of stage 2 on; with zeros after (option A) or option B no branch is starved."""
    from idinit.lab.models import CifarResNet

    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    starved = {}
    for shortcut in ("A-centred", "A", "B"):
        model = CifarResNet(20, shortcut=shortcut)
        idinit.init_(model, example_inputs=(x[:2],))
        starved[shortcut] = names(idinit.check(model, (x,)), "starved_branch")
    assert "layer2.1.conv1.weight" in starved["A-centred"] and "layer3.1.conv1.weight" in starved["A-centred"]
    assert not any(n.startswith("layer1.") for n in starved["A-centred"])
    assert starved["A"] == starved["B"] == []


class Pyramid(nn.Module):
    """Three feature levels returned as a dict, as a detection backbone's FPN does."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.level = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))

    def forward(self, x):
        x = F.relu(self.stem(x))
        out = {}
        for i, conv in enumerate(self.level):
            out[f"p{i + 3}"] = conv(F.avg_pool2d(x, 2 ** i))
        return out


def test_dead_output_level_is_flagged_with_the_layer_behind_it():
    torch.manual_seed(0)
    model, x = Pyramid(), torch.randn(2, 3, 16, 16)
    assert "dead_output" not in kinds(idinit.check(model, (x,)))
    with torch.no_grad():
        idinit.zero_preserving_(model.level[2].weight)  # one near-zero factor ...
        model.level[2].weight.mul_(1e-6)                # ... and a second: the level sits at ~1e-12
        model.level[2].bias.zero_()
    report = idinit.check(model, (x,))
    assert names(report, "dead_output") == ["level.2.weight"]
    rms = {o.name: o.rms for o in report.outputs}
    assert rms["out['p5']"] < 1e-9 < 1e-2 < rms["out['p3']"]


class LayerScaleBlock(nn.Module):
    def __init__(self, dim, scale):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x):
        return x + self.gamma * self.fc2(F.gelu(self.fc1(self.norm(x))))


def layer_scale_model(scale):
    return nn.Sequential(nn.Linear(16, 32), LayerScaleBlock(32, scale), LayerScaleBlock(32, scale), nn.Linear(32, 4))


def test_layer_scale_plus_zero_preserving_end_is_flagged_once_per_stacked_branch():
    x = torch.randn(8, 16)
    torch.manual_seed(0)
    healthy = layer_scale_model(1e-6)  # layer scale alone: one near-zero factor
    assert "stacked_near_zero_gains" not in kinds(idinit.check(healthy, (x,)))
    single = layer_scale_model(1.0)
    with torch.no_grad():
        idinit.zero_preserving_(single[1].fc2.weight)  # IDIZ alone: one factor
    assert "stacked_near_zero_gains" not in kinds(idinit.check(single, (x,)))
    with torch.no_grad():
        idinit.zero_preserving_(healthy[2].fc2.weight)  # the fault: IDIZ behind a 1e-6 layer scale in block 2
        healthy[2].fc2.bias.zero_()
    report = idinit.check(healthy, (x,))
    flags = report.flagged("stacked_near_zero_gains")
    assert len(flags) == 1 and flags[0].names == ["2.fc2.weight", "2.gamma"]
    assert "identity" in flags[0].remedy


class ShiftedLayerScaleBlock(LayerScaleBlock):
    """A branch ending in ``gamma * fc2(...)``, then a batch norm (weight 1, bias 0) and a zero shift."""

    def __init__(self, dim, scale):
        super().__init__(dim, scale)
        self.bn = nn.BatchNorm1d(dim)
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + (self.bn(self.gamma * self.fc2(F.gelu(self.fc1(self.norm(x))))) + self.shift)


def test_stacked_gains_name_the_scales_not_the_zero_biases_after_the_end():
    # zoo audit (results/zoo-audit): on StarNet the flag listed the zero biases after the conv as "scales"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), ShiftedLayerScaleBlock(32, 1e-6), nn.Linear(32, 4))
    with torch.no_grad():
        idinit.zero_preserving_(model[1].fc2.weight)  # the fault: IDIZ behind the 1e-6 layer scale
        model[1].fc2.bias.zero_()
    flags = idinit.check(model, (torch.randn(8, 16),), train=False).flagged("stacked_near_zero_gains")
    assert [f.names for f in flags] == [["1.fc2.weight", "1.gamma"]]  # not 1.bn.bias, not 1.shift
    assert "1.fc2 has gain" in flags[0].message and "and 1.gamma another" in flags[0].message
    assert "keep 1.gamma and give 1.fc2.weight an identity init" in flags[0].remedy


class PostNormBlock(nn.Module):
    """``x + post_norm(fc2(gelu(fc1(x))))``: a normalising norm between the branch end and the add (GLM-4,
    Gemma2); a tiny ``eps`` (GLM-4's is 1.6e-7) lets it divide IDIZ's ~1e-6 output back to unit scale."""

    def __init__(self, dim, eps):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.post_norm = nn.RMSNorm(dim, eps=eps)

    def forward(self, x):
        return x + self.post_norm(self.fc2(F.gelu(self.fc1(x))))


def post_norm_model(eps, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), PostNormBlock(32, eps), PostNormBlock(32, eps), nn.Linear(32, 4))
    idinit.init_(model, example_inputs=(torch.randn(8, 16),), **options)
    return model


def test_a_post_norm_that_reopens_an_idiz_branch_is_flagged_and_its_remedy_closes_it():
    # zoo audit (results/zoo-audit): GLM-4's attention blocks added 0.17-0.22 of their skip after idinit, unflagged
    x = torch.randn(8, 16)
    report = idinit.check(post_norm_model(1e-12), (x,))
    assert [b.distance > 0.3 for b in report.blocks] == [True, True]  # the fault: both branches open
    flags = report.flagged("reopened_branch")
    assert [f.names for f in flags] == [["1.fc2.weight", "1.post_norm.weight"], ["2.fc2.weight", "2.post_norm.weight"]]
    assert "closed at 1.fc2" in flags[0].message and "overrides={'1.fc2.weight': 'identity'}" in flags[0].remedy
    # the remedy as written: one factor closes each branch, and nothing is flagged
    fixed = idinit.check(post_norm_model(1e-12, branch_end_norm="zero",
                                         overrides={"1.fc2.weight": "identity", "2.fc2.weight": "identity"}), (x,))
    assert [b.distance for b in fixed.blocks] == [0.0, 0.0] and not fixed.flags, [str(f) for f in fixed.flags]
    # a usual eps (1e-5) leaves the IDIZ branch at ~3e-4 of its skip, as a batch norm does in a ResNet: not flagged
    usual = idinit.check(post_norm_model(1e-5), (x,))
    assert max(b.distance for b in usual.blocks) < 1e-3 and not usual.flagged("reopened_branch")


def residual_mlp(depth, dim=32):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

        def forward(self, x):
            return x + self.fc2(F.relu(self.fc1(x)))

    return nn.Sequential(nn.Linear(16, dim), *[Block() for _ in range(depth)], nn.Linear(dim, 4))


def test_exploding_stack_is_flagged_and_idinit_keeps_it_flat():
    x = torch.randn(16, 16)
    torch.manual_seed(0)
    model = residual_mlp(40)
    idinit.init_(model, "kaiming", example_inputs=(x,))  # no norm: every block doubles the variance
    flags = idinit.check(model, (x,)).flagged("exploding")
    assert len(flags) == 1
    first = flags[0].names[0]
    assert first.split(".")[0].isdigit() and 10 <= int(first.split(".")[0]) <= 40  # deep in the stack, not the stem
    idinit.init_(model, "idinit", example_inputs=(x,))
    assert not {"exploding", "vanishing"} & kinds(idinit.check(model, (x,)))


def test_vanishing_plain_stack_is_flagged():
    torch.manual_seed(0)
    layers = [nn.Linear(32, 32) for _ in range(20)]
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.Tanh())])
    x = torch.randn(16, 32)
    for layer in layers:
        nn.init.orthogonal_(layer.weight, gain=0.5)  # each layer halves the signal: 0.5**20 ~ 1e-6
        nn.init.zeros_(layer.bias)
    flags = idinit.check(model, (x,)).flagged("vanishing")
    # 0.5**9 = 2.0e-3 and 0.5**10 = 9.8e-4: the 10th linear layer (module 18) is the first below 1e-3 of the
    # input's RMS (tanh's own shrinking, ~0.8 here, is far from the factor 2 that would move it a layer)
    assert len(flags) == 1 and flags[0].names == ["18"]
    for layer in layers:
        nn.init.orthogonal_(layer.weight, gain=1.0)
    assert "vanishing" not in kinds(idinit.check(model, (x,)))


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.cls = nn.Linear(16, 3)
        with torch.no_grad():
            self.cls.bias.fill_(-4.6)  # focal-loss prior: p = 0.01

    def forward(self, x):
        return self.cls(F.relu(self.norm(self.body(x))))


def test_overwritten_prior_is_flagged_and_ordinary_biases_are_not():
    torch.manual_seed(0)
    model, x = Detector(), torch.randn(4, 8)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    report = idinit.check(model, (x,))
    assert "overwritten_prior" not in kinds(report) and any("reference=" in n for n in report.notes)
    with torch.no_grad():
        model.body.bias.zero_()   # a default-range bias set to 0: what an init does, not a prior
        model.norm.weight.fill_(1.0)
        model.cls.bias.zero_()    # the fault: the prior is gone
    report = idinit.check(model, (x,), reference=reference)
    assert names(report, "overwritten_prior") == ["cls.bias"]
    assert "-4.6" in report.flagged("overwritten_prior")[0].message
    with pytest.raises(ValueError, match="shares no parameter name"):
        idinit.check(model, (x,), reference={"nothing": torch.zeros(1)})


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 48, batch_first=True)  # default biases drawn in +-1/sqrt(48) = +-0.144
        self.head = nn.Linear(48, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_recurrent_default_biases_are_not_priors_and_a_set_forget_bias_is():
    # zoo audit (results/zoo-audit): timm's sequencer2d_s had its 144 default LSTM biases flagged, since
    # an nn.LSTM has no `weight` attribute to take a fan-in from
    torch.manual_seed(0)
    model, x = Recurrent(), torch.randn(3, 5, 6)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    assert reference["rnn.bias_ih_l0"].abs().max() > 1 / 64  # wider than a 1/sqrt(4 * 48) fan-in bound
    idinit.init_(model, example_inputs=(x,))
    report = idinit.check(model, (x,), reference=reference)
    assert "overwritten_prior" not in kinds(report)
    with torch.no_grad():
        model.load_state_dict(reference)
        model.rnn.bias_hh_l0[48:96].fill_(1.0)  # forget-gate bias 1 (Jozefowicz et al. 2015): set on purpose
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    idinit.init_(model, example_inputs=(x,), overrides={"rnn.bias_hh_l0": "bias"})
    assert names(idinit.check(model, (x,), reference=reference), "overwritten_prior") == ["rnn.bias_hh_l0"]


class PositionBias(nn.Module):
    """A learned table the model reads with no input (HF Swin's relative position bias: zeros at init)."""

    def __init__(self, n: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(n))

    def forward(self):
        return self.table


class Biased(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bias, self.fc2 = nn.Linear(8, 8), PositionBias(8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x) + self.bias()))


def test_a_parameter_table_read_with_no_input_is_not_a_vanishing_activation():
    # zoo audit (results/zoo-audit): HF Swin's zero relative position bias was flagged `vanishing`
    torch.manual_seed(0)
    model, x = Biased(), torch.randn(6, 8)
    report = idinit.check(model, (x,))
    assert "vanishing" not in kinds(report)
    assert [s.name for s in report.layers if s.table] == ["bias"]
    with torch.no_grad():
        model.bias.table.fill_(1e4)  # the fault: what the table feeds into the activations is still measured
    flags = idinit.check(model, (x,)).flagged("exploding")
    assert len(flags) == 1 and flags[0].names[0] == "relu"


class Affine(nn.Module):
    """timm's LearnableAffineBlock (HGNetV2): scale * x + bias, with parameters of shape (1,)."""

    def __init__(self):
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.scale * x + self.bias


class BranchThenShift(nn.Module):
    """A residual block whose branch ends in ``fc2`` followed by ``after`` (a module that shifts its input)."""

    def __init__(self, after: nn.Module):
        super().__init__()
        self.fc1, self.fc2, self.after, self.head = nn.Linear(8, 16), nn.Linear(16, 8), after, nn.Linear(8, 2)

    def forward(self, x):
        return self.head(x + self.after(self.fc2(torch.relu(self.fc1(x)))))


def test_a_bias_added_after_the_branch_end_does_not_close_the_branch():
    # zoo audit (results/zoo-audit): in HGNetV2 the `+ bias` of the affine after the zero-preserving end was
    # taken for the residual add, so the branch's small output was flagged `vanishing`
    torch.manual_seed(0)
    model, x = BranchThenShift(Affine()), torch.randn(6, 8)
    idinit.init_(model, example_inputs=(x,))
    assert idinit.plan(model, example_inputs=(x,))["fc2.weight"].role == "branch_end"
    report = idinit.check(model, (x,))
    assert "vanishing" not in kinds(report)
    assert len(report.blocks) == 1 and report.blocks[0].branch_end == "fc2" and report.blocks[0].distance < 1e-5


class FrozenNorm(nn.Module):
    """DETR's frozen batch norm: affine statistics held in buffers, applied as ``x * scale + shift``."""

    def __init__(self, dim: int):
        super().__init__()
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((dim,), value))

    def forward(self, x):
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        return x * scale + (self.bias - self.running_mean * scale)


def test_a_shift_computed_from_buffers_after_the_branch_end_does_not_close_the_branch():
    # zoo audit, fourth round: in DETR's backbone the shift of the frozen norm after each branch's last conv was
    # taken for the residual add, a skip of rms 0 (distance inf), and the real residual add went unmeasured
    torch.manual_seed(0)
    model, x = BranchThenShift(FrozenNorm(8)), torch.randn(6, 8)
    idinit.init_(model, example_inputs=(x,))
    report = idinit.check(model, (x,))
    assert len(report.blocks) == 1 and report.blocks[0].branch_end == "fc2"
    assert report.blocks[0].skip_rms > 0.5 and report.blocks[0].distance < 1e-5


# -- a healthy control and real models ----------------------------------------------------------

def test_torchvision_resnet18_after_idinit_is_healthy_and_left_exactly_as_it_was():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    # 64x64 leaves layer4 2x2 maps; at 1x1 IDIC's off-centre taps read only padding, so most of layer4's
    # channels are dead and the check rightly flags a branch end reading them
    x = torch.randn(4, 3, 64, 64)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    idinit.init_(model, example_inputs=(x[:2],))
    model.layer1.eval()  # a mixed training state, and a stale gradient, must both survive
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    report = idinit.check(model, (x,), reference=reference)
    assert report.flags == []
    assert [b.name for b in report.blocks] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert all(b.distance < 1e-2 for b in report.blocks)  # IDIZ: blocks start near the identity
    assert {s.name: s.role for s in report.layers}["layer1.0.conv2"] == "branch_end"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 3.0)) and model.conv1.weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["flags"] == [] and len(data["blocks"]) == 8 and data["mode"] == "train"
    text = str(report)
    assert "layer4.1.conv2" in text and "nothing found" in text


def test_kaiming_resnet18_blocks_are_far_from_identity():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    idinit.init_(model, "kaiming", example_inputs=(x[:2],))
    report = idinit.check(model, (x,))
    assert len(report.blocks) == 8 and min(b.distance for b in report.blocks) > 0.1


def test_timm_convnext_layer_scale_with_planted_zero_preserving_ends():
    import timm
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    report = idinit.check(model, (x,))  # timm's own init: layer scale 1e-6, dense fc2
    assert "stacked_near_zero_gains" not in kinds(report) and len(report.blocks) == 12
    with torch.no_grad():
        for block in model.stages[2].blocks:
            idinit.zero_preserving_(block.mlp.fc2.weight)
            block.mlp.fc2.bias.zero_()
    flagged = names(idinit.check(model, (x,)), "stacked_near_zero_gains")
    assert {n for n in flagged if n.endswith("fc2.weight")} == {f"stages.2.blocks.{i}.mlp.fc2.weight" for i in range(6)}
    assert {n for n in flagged if n.endswith("gamma")} == {f"stages.2.blocks.{i}.gamma" for i in range(6)}


def test_timm_deit_tiny_after_idinit_starts_at_identity():
    import timm
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=3, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    idinit.init_(model, example_inputs=(x,))
    report = idinit.check(model, (x,))
    assert len(report.blocks) == 6 and all(b.distance < 1e-3 for b in report.blocks)
    assert not {"stacked_near_zero_gains", "exploding", "vanishing", "starved_branch"} & kinds(report)


def test_timm_deit3_layer_scale_modules_close_their_branches():
    # zoo audit (results/zoo-audit): a LayerScale module (gamma 1e-6, no matrix weight) was not taken for
    # what closes its branch, so every deit3 / poolformer / fastvit got a `vanishing` flag at blocks.0.ls1
    import timm
    torch.manual_seed(0)
    model = timm.create_model("deit3_small_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    idinit.init_(model)  # the values rule: IDI on attn.proj / mlp.fc2, the 1e-6 scales close the branches
    report = idinit.check(model, (x,))
    assert not kinds(report), [str(f) for f in report.flags]
    assert sorted(b.branch_end for b in report.blocks) == [f"blocks.{i}.ls{j}" for i in range(2) for j in (1, 2)]
    assert all(b.distance < 1e-5 for b in report.blocks)
    with torch.no_grad():
        idinit.zero_preserving_(model.blocks[1].mlp.fc2.weight)  # the fault: closed twice
    flags = idinit.check(model, (x,)).flagged("stacked_near_zero_gains")
    assert [f.names for f in flags] == [["blocks.1.mlp.fc2.weight", "blocks.1.ls2.gamma"]]


def test_a_class_token_stream_still_closes_a_branch():
    # CaiT's class attention: x_cls + gamma_1 * attn(cat(x_cls, x)), x_cls = cls_token.expand(B, -1, -1) in the
    # first block. The expanded parameter is the stream, not a bias: IDIZ under gamma_1 = 1e-5 is flagged
    import timm
    torch.manual_seed(0)
    model = timm.create_model("cait_xxs24_224", pretrained=False, img_size=32, depth=2, num_classes=5)
    idinit.init_(model)
    with torch.no_grad():
        for block in model.blocks_token_only:
            idinit.zero_preserving_(block.attn.proj.weight)  # the fault, planted in both class-attention blocks
    flagged = names(idinit.check(model, (torch.randn(2, 3, 32, 32),)), "stacked_near_zero_gains")
    assert {n for n in flagged if n.endswith("proj.weight")} == {f"blocks_token_only.{i}.attn.proj.weight" for i in (0, 1)}


@pytest.mark.parametrize("build, ends", [(tiny_gpt2, ("attn.c_proj", "mlp.c_proj")),
                                         (tiny_bert, ("attention.output.dense", "output.dense"))])
def test_hf_models_after_idinit(build, ends):
    torch.manual_seed(0)
    model = build()
    idinit.init_(model)
    ids = torch.randint(100, (4, 12), generator=torch.Generator().manual_seed(0))
    report = idinit.check(model, {"input_ids": ids})
    assert len(report.blocks) == 4  # two layers, attention and MLP branches
    assert all(b.branch_end.endswith(ends) and b.distance < 1e-3 for b in report.blocks)
    assert not {"stacked_near_zero_gains", "exploding", "starved_branch"} & kinds(report)


def test_bad_arguments_are_refused_before_running():
    with pytest.raises(ValueError, match="example_inputs"):
        idinit.check(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        idinit.check("model", (torch.zeros(1),))
    with pytest.raises(TypeError, match="reference must be a state dict"):
        idinit.check(nn.Linear(2, 2), (torch.zeros(2, 2),), reference=[1])
    with pytest.raises(ValueError, match="unknown flag kind"):
        idinit.check(nn.Linear(2, 2), (torch.zeros(2, 2),)).flagged("dead")


def test_plot_writes_a_png(tmp_path):
    torch.manual_seed(0)
    report = idinit.check(residual_mlp(3), (torch.randn(4, 16),))
    report.plot(tmp_path / "check.png")
    assert (tmp_path / "check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_forward_error_names_the_inputs_and_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="forward pass of Sequential on example_inputs failed"):
        idinit.check(model, (torch.randn(3, 5),))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and model.training
