"""The three down-sampling shortcuts of the lab's CIFAR ResNets, and what IDIC reads behind them."""
import copy

import pytest
import torch

import idinit
from idinit.lab.models import CifarResNet, ZeroPadShortcut, make_shortcut
from idinit.lab.models.packed_resnet import PackedCifarResNet


def test_option_a_is_subsample_bn_then_zeros_after():
    torch.manual_seed(0)
    shortcut = make_shortcut("A", 4, 10, stride=2).double().train()
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    out = shortcut(x)
    sub = x[:, :, ::2, ::2]
    mean, var = sub.mean((0, 2, 3), keepdim=True), sub.var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(out[:, :4], (sub - mean) / torch.sqrt(var + 1e-5), rtol=1e-12, atol=1e-12)
    assert out.shape == (3, 10, 3, 3) and torch.all(out[:, 4:] == 0)


def test_centred_option_a_pads_both_sides_without_bn_and_no_norm_networks_get_no_bn():
    x = torch.randn(2, 4, 6, 6)
    out = make_shortcut("A-centred", 4, 10, stride=2)(x)
    assert torch.all(out[:, :3] == 0) and torch.all(out[:, 7:] == 0)
    assert torch.equal(out[:, 3:7], x[:, :, ::2, ::2])
    plain = make_shortcut("A", 4, 10, stride=2, norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert torch.equal(plain(x)[:, :4], x[:, :, ::2, ::2]) and torch.all(plain(x)[:, 4:] == 0)
    with pytest.raises(ValueError, match="A-centred"):
        make_shortcut("C", 4, 10, stride=2)
    with pytest.raises(ValueError, match="placement"):
        ZeroPadShortcut(4, 10, placement="before")


@pytest.mark.parametrize("shortcut", ["A", "A-centred"])
def test_packed_option_a_equals_each_member(shortcut):
    torch.manual_seed(0)
    members = [CifarResNet(8, shortcut=shortcut).double() for _ in range(2)]
    for m in members:
        for p in m.parameters():
            p.data.normal_(0, 0.3)
    alone = [copy.deepcopy(m) for m in members]
    xs = [torch.randn(4, 3, 16, 16, dtype=torch.float64) for _ in members]
    out = PackedCifarResNet(members)(torch.cat(xs, 1))
    for i, m in enumerate(alone):
        torch.testing.assert_close(out[:, i], m(xs[i]), rtol=1e-12, atol=1e-12)


def _starved_branches(shortcut: str, depth: int = 20) -> int:
    """Branches whose first conv, under IDInit, reads input channels that carry < 1e-6 of the
    input's energy (the centred padding's zero channels sit where IDIC's patch pattern reads)."""
    torch.manual_seed(0)
    model = CifarResNet(depth, shortcut=shortcut)
    idinit.init_(model, example_inputs=(torch.zeros(2, 3, 32, 32),))
    fractions = []

    def hook(module, inputs, output):
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        read = sorted({int(c) // 9 for c in (w.abs() > 0.5).nonzero()[:, 1]})
        fractions.append((inputs[0][:, read].pow(2).mean() / inputs[0].pow(2).mean()).item())

    for name, module in model.named_modules():
        if name.startswith("layer") and name.endswith("conv1"):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.randn(8, 3, 32, 32))
    return sum(f < 1e-6 for f in fractions)


def test_idic_reads_real_channels_behind_option_a_but_zeros_behind_the_centred_variant():
    assert _starved_branches("A") == 0 and _starved_branches("B") == 0
    # ResNet-20, centred: stage 2's blocks 1-2 (channels 0-3 read, 0-7 zero) and all 3 of stage 3
    # (its first block reads the stage-2 output's zero channels too): 5 of 9
    assert _starved_branches("A-centred") == 5
