"""CIFAR ResNets: option A / B shortcuts, depths, variants, Fixup init and parameter groups."""
import copy
import pickle

import pytest
import torch

from idinit.lab.models import (BasicBlock, CifarResNet, FixupResNet, ProjectionShortcut, ZeroPadShortcut,
                               fixup_init_, fixup_parameter_groups, parse_arch)



def test_centred_option_a_is_parameter_free_subsamples_and_zero_fills():
    shortcut = ZeroPadShortcut(16, 32, stride=2, placement="centred", norm=False)
    assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    x = torch.randn(3, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (3, 32, 4, 4)
    # Input channels land in the middle (8 zero channels before, 8 after), subsampled at even pixels.
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    # Odd channel growth: the extra zero channel goes after.
    odd = ZeroPadShortcut(3, 6, stride=1, placement="centred", norm=False)(torch.ones(1, 3, 2, 2))
    assert odd[0, :, 0, 0].tolist() == [0, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="cannot reduce"):
        ZeroPadShortcut(32, 16)


def test_option_b_is_projection_with_bn():
    shortcut = ProjectionShortcut(16, 32, stride=2)
    assert isinstance(shortcut[0], torch.nn.Conv2d) and shortcut[0].kernel_size == (1, 1)
    assert isinstance(shortcut[1], torch.nn.BatchNorm2d)
    assert shortcut(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("shortcut", ["A", "A-centred", "B"])
def test_resnet_layout(shortcut):
    model = CifarResNet(20, shortcut=shortcut)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # 20 weighted layers = 19 convs + fc
    downsampling = [b for b in blocks if not isinstance(b.shortcut, torch.nn.Identity)]
    assert len(downsampling) == 2
    kind = ProjectionShortcut if shortcut == "B" else ZeroPadShortcut
    assert all(isinstance(b.shortcut, kind) for b in downsampling)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # The centred option A adds no parameter, option A a BN on the subsampled input (Fixup code base),
    # option B a 1x1 projection and its BN.
    a, centred, b = (sum(p.numel() for p in CifarResNet(20, shortcut=s).parameters()) for s in ("A", "A-centred", "B"))
    assert b - centred == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert a - centred == 2 * 16 + 2 * 32


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (32, 0.46e6), (44, 0.66e6), (56, 0.85e6), (110, 1.7e6)])
def test_depths_match_he_et_al_parameter_counts(depth, params):
    model = CifarResNet(depth)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.03  # He et al. 2016, Table 6


def test_bad_depth_and_arch_names():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="resnet<depth>"):
        parse_arch("vgg16")
    with pytest.raises(ValueError, match="'A'"):
        CifarResNet(20, shortcut="C")


def test_models_pickle_and_deepcopy():
    for model in (CifarResNet(20), CifarResNet(20, shortcut="B", gate=True), FixupResNet(20)):
        clone = pickle.loads(pickle.dumps(model))
        x = torch.randn(2, 3, 32, 32)
        model.eval(), clone.eval()
        torch.testing.assert_close(clone(x), model(x))
        copy.deepcopy(model)


def test_fixup_block_shifts_the_branch_input_not_the_identity():
    """Fixup's reference code adds ``bias1a`` to conv1's input and to a down-sampling shortcut's, never to an
    identity shortcut: with the branch closed (conv2 = 0), an identity block is relu(x) whatever bias1a is."""
    from idinit.lab.models.fixup_resnet import FixupBlock

    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    same = FixupBlock(16, 16).double()
    down = FixupBlock(16, 32, stride=2, shortcut="B").double()
    with torch.no_grad():
        for block in (same, down):
            block.conv2.weight.zero_()
            block.bias1a.fill_(0.5)
    assert torch.equal(same(x), torch.relu(x))
    assert torch.equal(down(x), torch.relu(down.shortcut(x + 0.5)))


def test_skipinit_layout_has_no_norm_and_gates():
    model = CifarResNet(20, norm=False, gate=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(b.alpha is not None and b.conv1.bias is not None for b in blocks)


def test_fixup_init_and_groups():
    torch.manual_seed(0)
    model = fixup_init_(FixupResNet(56))
    blocks = [m for m in model.modules() if m.__class__.__name__ == "FixupBlock"]
    assert len(blocks) == 27
    for block in blocks:
        assert torch.count_nonzero(block.conv2.weight) == 0
        assert block.scale.item() == 1.0
        w = block.conv1.weight
        expected = (2.0 / (w.shape[0] * 9)) ** 0.5 * 27 ** -0.5
        assert abs(w.std().item() / expected - 1) < 0.1
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    # At init every block is the identity after ReLU: the output is zero (zero classifier).
    assert torch.count_nonzero(model(torch.randn(2, 3, 32, 32))) == 0
    groups = fixup_parameter_groups(model, lr=0.2)
    assert [g["lr"] for g in groups] == [0.2, pytest.approx(0.02)]
    assert len(groups[1]["params"]) == 27 * 5 + 2
    assert all(p.numel() == 1 for p in groups[1]["params"])
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    with pytest.raises(TypeError, match="FixupResNet"):
        fixup_init_(CifarResNet(20))
