"""Sec. 4.4 scaled down: ViT-S/4 and ResNet-50 (3x3 stem) for CIFAR-10 as lab models, initialised by
``idinit.init_`` (built once each: ~21 M parameters) and trained a few steps; their grids."""
import pytest
import torch
import torch.nn.functional as F

from idinit.lab.experiments import get_experiment
from idinit.lab.models import build_model


def _few_sgd_steps(model, steps=2):
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_idinit_vit_small_starts_near_identity_and_trains():
    torch.manual_seed(0)
    model = build_model("vit-small", "idinit").eval()
    x = torch.randn(2, 3, 32, 32)
    ratios = []
    hooks = [layer.register_forward_hook(lambda m, a, out: ratios.append(float((out - a[0]).norm() / a[0].norm())))
             for layer in model.encoder.layers]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    assert len(ratios) == 12 and max(ratios) < 1e-3  # IDIZ branch ends (A.5)
    assert logits.abs().max() < 1e-3                 # zero-preserving head of a residual network
    losses = _few_sgd_steps(model)
    assert all(torch.isfinite(torch.tensor(losses))) and model.heads.head.weight.abs().max() > 1e-4


def test_resnet50_cifar_stem_and_a_few_steps():
    torch.manual_seed(0)
    model = build_model("tv-resnet50", "kaiming")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    losses = _few_sgd_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_vision_grids_and_bad_input():
    vit, rn50 = get_experiment("vit-cifar"), get_experiment("resnet50-cifar")
    assert [c.init for c in vit.configs] == ["idinit", "default"] and vit.configs[0].warmup_epochs == 10
    assert [c.init for c in rn50.configs] == ["idinit", "kaiming", "zero_gamma"] and rn50.configs[0].weight_decay == 1e-4
    with pytest.raises(ValueError, match="32x32 RGB"):
        build_model("tv-resnet50", "idinit", in_channels=1, image_size=28)


def test_vit_recipe_uses_adamw_with_decoupled_decay_sparing_vectors():
    """B.5's AdamW: one step with a zero gradient shrinks every matrix by exactly (1 - lr * wd) and
    leaves biases and LayerNorm weights as they were (an L2 penalty, or decay on vectors, would not)."""
    from idinit.lab.train import make_optimizer

    config = get_experiment("vit-cifar").configs[0]
    assert (config.optimizer, config.lr, config.weight_decay) == ("adamw", 1e-3, 5e-2)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, config.replace(lr=0.1, weight_decay=0.5), torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    (0.0 * sum(p.sum() for p in model.parameters())).backward()
    optimizer.step()
    for (name, p), old in zip(model.named_parameters(), before):
        expected = old * (1 - 0.1 * 0.5) if p.ndim >= 2 else old
        assert torch.equal(p.detach(), expected), name


def test_vision_reports_stand_beside_table3():
    """The report section of each recipe: our CIFAR-10 result beside the paper's ImageNet Table 3 row
    of the same initialisation, "not run" where no seed finished."""
    rows = [{"config": {"init": "idinit"}, "acc": (0.8123, None), "epochs": (17.0, None), "reached": 1,
             "seeds_done": 1, "target": 0.7},
            {"config": {"init": "default"}, "acc": (None, None), "epochs": (None, None), "reached": 0,
             "seeds_done": 0, "target": 0.7}]
    lines = get_experiment("vit-cifar").report_sections(rows)
    assert "| idinit | 81.23 | 17 (to 70%) | 71.60 | 42 |" in lines
    assert "| default | not run | not run | 71.05 | 44 |" in lines
    rn50 = get_experiment("resnet50-cifar").report_sections([{**rows[1], "config": {"init": "kaiming"}}])
    assert "| kaiming | not run | not run | 75.70 | 38 |" in rn50
