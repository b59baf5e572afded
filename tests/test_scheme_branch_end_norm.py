"""idinit's ``branch_end_norm`` option: the norm closing each residual branch at 1 (paper) or 0."""
import pytest
import torch
import torchvision

import idinit


def _bn_closing_branches(model):
    return [m.bn2.weight for m in model.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]


def test_zero_branch_end_norm_zeroes_exactly_the_norms_that_close_branches():
    model = torchvision.models.resnet18(num_classes=10)
    plan = idinit.init_(model, branch_end_norm="zero")
    closing = _bn_closing_branches(model)
    assert len(closing) == 8 and all(torch.all(w == 0) for w in closing)
    assert torch.all(model.bn1.weight == 1) and all(torch.all(b.bn1.weight == 1) for b in model.modules()
                                                    if isinstance(b, torchvision.models.resnet.BasicBlock))
    assert "branch_end_norm=zero" in str(plan).splitlines()[0]
    # the weights' pattern is the paper's: branch ends stay zero-preserving (IDIZ), not zero
    assert torch.count_nonzero(model.layer1[0].conv2.weight) > 0


def test_default_keeps_the_paper_norms_at_one_and_bad_values_are_named():
    model = torchvision.models.resnet18(num_classes=10)
    idinit.init_(model)
    assert all(torch.all(w == 1) for w in _bn_closing_branches(model))
    with pytest.raises(ValueError, match="branch_end_norm"):
        idinit.plan(model, branch_end_norm="half")
