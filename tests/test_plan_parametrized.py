"""Parametrized weights at the model level (issue 13 §3): the weight a layer uses is recomputed from the
parametrization's original tensors on every access, so writing it is lost. ``init_`` initialises the
originals of ``weight_norm`` so that the recomputed weight is the planned pattern, and keeps those of
``spectral_norm`` / ``orthogonal``, saying so in the plan."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import idinit


def _model(layer, wrap):
    torch.manual_seed(0)
    conv = layer == "conv"
    middle = nn.Conv2d(4, 4, 3, padding=1) if conv else nn.Linear(8, 8)
    first = nn.Conv2d(3, 4, 3, padding=1) if conv else nn.Linear(6, 8)
    last = nn.Sequential(nn.Flatten(), nn.Linear(4 * 25, 2)) if conv else nn.Linear(8, 2)
    return nn.Sequential(first, nn.ReLU(), wrap(middle), nn.ReLU(), last).double()


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_weight_norm_originals_are_set_so_the_recomputed_weight_is_the_planned_one(layer):
    model = _model(layer, parametrizations.weight_norm)
    shape = tuple(model[2].weight.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left unclassified
        plan = idinit.init_(model, loose=1e-3, generator=torch.Generator().manual_seed(5))
    v = plan["2.parametrizations.weight.original1"]
    assert (v.role, v.init) == ("identity", "identity_") and "weight_norm(2.weight)" in v.note
    assert plan["2.parametrizations.weight.original0"].init == "weight_norm_g"
    # the pattern identity_ gives a plain tensor with the same arguments: one non-zero per row, so
    # g v / |v| reproduces it bitwise
    planned = torch.empty(shape, dtype=torch.float64)
    idinit.identity_(planned, gain=1.0, loose=1e-3, generator=torch.Generator().manual_seed(5))
    weight = model[2].weight.detach()
    assert torch.count_nonzero(weight) == shape[0]
    nonzero = weight != 0
    assert torch.equal(nonzero, planned != 0)
    # loose noise is a function of the seed drawn for the plan and the name; compare the pattern and gain
    assert torch.allclose(weight[nonzero], torch.ones(shape[0], dtype=torch.float64), rtol=0, atol=1e-2)
    g = model[2].parametrizations.weight.original0.detach().flatten()
    assert torch.equal(g, weight.flatten(1).abs().sum(1))  # g = |v| row by row, exactly


def test_weight_norm_with_a_stated_role_and_no_noise_is_bitwise_the_pattern():
    model = _model("linear", parametrizations.weight_norm)
    idinit.init_(model, loose=0.0, overrides={"2.parametrizations.weight.original1": "identity"})
    assert torch.equal(model[2].weight.detach(), torch.eye(8, dtype=torch.float64))


@pytest.mark.parametrize("wrap, what", [(parametrizations.spectral_norm, "SpectralNorm"),
                                        (parametrizations.orthogonal, "Orthogonal")])
def test_other_parametrizations_keep_their_originals_and_the_plan_says_so(wrap, what):
    model = _model("linear", wrap)
    original = model[2].parametrizations.weight.original.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = idinit.init_(model)
    entry = plan["2.parametrizations.weight.original"]
    assert entry.init == "keep" and f"the {what} parametrization of 2.weight" in entry.note
    assert f"the {what} parametrization" in str(plan)
    assert torch.equal(model[2].parametrizations.weight.original.detach(), original)
