"""``torch.addcmul(input, tensor1, tensor2)`` is read as the product and the sum it is (zoo audit,
results/zoo-audit). timm ResMLP's ``Affine`` computes ``torch.addcmul(beta, alpha, x)``: with no rule for
addcmul its alpha / beta were unclassified and kept, right on an eager model (1 and 0 from the
constructor), uninitialised memory after ``to_empty()``. An affine (input and factor both parameters) is
a norm's weight and bias without the normalisation: weight 1, bias 0."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import idinit


class Affine(nn.Module):
    def __init__(self, width: int, method: bool):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))
        self.method = method

    def forward(self, x):
        return self.beta.addcmul(self.alpha, x) if self.method else torch.addcmul(self.beta, self.alpha, x)


class AffineNet(nn.Module):
    def __init__(self, method: bool):
        super().__init__()
        self.fc1, self.affine, self.fc2 = nn.Linear(8, 8), Affine(8, method), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.affine(self.fc1(x))))


class AddcmulResidual(nn.Module):
    """``x + gamma * fc2(relu(fc1(x)))`` written as ``torch.addcmul(x, gamma, branch)``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 3)
        self.gamma = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.head(torch.addcmul(x, self.gamma, self.fc2(torch.relu(self.fc1(x)))))


def _on_meta_with_garbage(build):
    """``build()`` on the meta device, ``to_empty()``, and NaN in every parameter, written through ``.data``
    (no write recorded, as in uninitialised memory, which need not be NaN but may be anything)."""
    with torch.device("meta"):
        model = build()
    model.to_empty(device="cpu")
    for p in model.parameters():
        p.data.fill_(float("nan"))
    return model


@pytest.mark.parametrize("method", [False, True], ids=["torch.addcmul", "Tensor.addcmul"])
@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_an_addcmul_affine_gets_weight_one_and_bias_zero_after_to_empty(method, graph):
    model = _on_meta_with_garbage(lambda: AffineNet(method))
    plan = idinit.init_(model, example_inputs=(torch.randn(2, 8),) if graph == "autograd" else None)
    assert plan.source.startswith("torch.fx" if graph == "fx" else "autograd")
    assert not plan.unclassified
    assert [(plan[n].role, plan[n].init) for n in ("affine.alpha", "affine.beta")] == [("norm", "ones_"), ("bias", "zeros_")]
    assert torch.equal(model.affine.alpha, torch.ones(8)) and torch.equal(model.affine.beta, torch.zeros(8))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_a_residual_written_with_addcmul_is_found(graph):
    torch.manual_seed(0)
    plan = idinit.plan(AddcmulResidual(), example_inputs=(torch.randn(2, 8),) if graph == "autograd" else None)
    assert plan.residual and [e.name for e in plan.by_role("branch_end")] == ["fc2.weight"]
    assert plan["gamma"].role == "scale"  # a factor beside a computed input is a layer scale, not an affine's weight


def test_timm_resmlp_on_meta_gets_its_affines_and_a_clean_check():
    from timm.models.mlp_mixer import Affine as TimmAffine, MlpMixer, ResBlock

    def build():  # resmlp_12_224's layers, 2 blocks of width 64
        return MlpMixer(num_classes=5, img_size=32, patch_size=16, num_blocks=2, embed_dim=64, mlp_ratio=4,
                        block_layer=ResBlock, norm_layer=TimmAffine)

    model = _on_meta_with_garbage(build)
    # ResBlock's layer scales are the only parameters no method of the model draws again: the plan says so,
    # and the user sets them (a recorded write) before init_
    layer_scales = [f"blocks.{i}.ls{j}" for i in (0, 1) for j in (1, 2)]
    plan = idinit.plan(model)
    assert sorted(e.name for e in plan if "uninitialised memory" in e.note and e.init == "keep") == layer_scales
    with torch.no_grad():
        for name in layer_scales:
            model.get_parameter(name).fill_(1e-4)  # ResBlock's init_values
    torch.manual_seed(0)
    plan = idinit.init_(model)
    affines = [n for n, m in model.named_modules() if isinstance(m, TimmAffine)]
    assert len(affines) == 5 and not plan.unclassified
    for name in affines:
        affine = model.get_submodule(name)
        assert torch.equal(affine.alpha, torch.ones_like(affine.alpha)), name
        assert torch.equal(affine.beta, torch.zeros_like(affine.beta)), name
    assert all(torch.isfinite(p).all() for p in model.parameters())
    report = idinit.check(model, (torch.randn(2, 3, 32, 32),))
    assert not report.flags, [str(f) for f in report.flags]
