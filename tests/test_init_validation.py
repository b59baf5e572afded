"""Validate first, then write: every refusal leaves the tensor (or the model) exactly as it was, and no
argument the dtype cannot hold is written as inf or 0 (issue 13, sections 3 and 4)."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import idinit

ALL = [idinit.identity_, idinit.channel_identity_, idinit.zero_preserving_, idinit.hadamard_]


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("make", [lambda: torch.full((4, 1), 7.0).expand(4, 4),
                                  lambda: torch.full((10,), 7.0).as_strided((4, 4), (1, 1)),
                                  lambda: torch.full((6,), 7.0).as_strided((3, 2, 2, 2), (1, 1, 0, 1))])
def test_overlapping_memory_is_refused_and_left_alone(fn, make):
    view = make()
    with pytest.raises(ValueError, match="share one memory location"):
        fn(view)
    assert torch.all(view == 7.0)


def test_a_non_overlapping_view_torch_cannot_decide_is_still_filled():
    base = torch.full((40,), 7.0)
    view = base.as_strided((3, 4), (12, 2))  # gaps between rows and elements: nothing shared
    idinit.identity_(view, loose=0.0)
    assert torch.equal(view, torch.eye(3, 4))


@pytest.mark.parametrize("fn, kwargs, dtype, what", [
    (idinit.identity_, dict(gain=7e4, loose=0.0), torch.float16, "overflows"),
    (idinit.channel_identity_, dict(gain=7e4, loose=0.0), torch.float16, "overflows"),
    (idinit.identity_, dict(loose=1e39), torch.float32, "overflows"),
    (idinit.identity_, dict(gain=3e38, loose=1e38), torch.float32, "overflows"),
    (idinit.zero_preserving_, dict(eps=7e4), torch.float16, "overflows"),
    (idinit.zero_preserving_, dict(eps=1e-50), torch.float32, "rounds to 0"),
    (idinit.identity_, dict(gain=1e-50), torch.float32, "rounds to 0"),
    (idinit.zero_preserving_, dict(eps=1e-6), torch.float8_e4m3fn, "rounds to 0"),
])
def test_values_the_dtype_cannot_hold_are_refused_before_writing(fn, kwargs, dtype, what):
    t = torch.full((4, 4, 3), 7.0).to(dtype)
    with pytest.raises(ValueError, match=what):
        fn(t, **kwargs)
    assert torch.all(t.float() == 7.0)


def test_the_largest_values_the_dtype_holds_are_written():
    t = idinit.identity_(torch.empty(3, 3, dtype=torch.float16), gain=6e4, loose=0.0)
    assert torch.equal(t, torch.eye(3, dtype=torch.float16) * 6e4) and torch.isfinite(t).all()
    assert idinit.zero_preserving_(torch.empty(2, 3, dtype=torch.float8_e4m3fn), eps=0.25).float().abs().max() == 0.25


def _inference_tensor():
    with torch.inference_mode():
        return torch.full((4, 4), 7.0)


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("make, message", [
    (lambda: torch.full((4, 4), 7.0).to_sparse(), "dense"),
    (lambda: torch.full((4, 4), 7.0).to_sparse_csr(), "dense"),
    (_inference_tensor, "inference"),
])
def test_unsupported_tensors_are_refused_before_the_first_write(fn, make, message):
    t = make()
    with pytest.raises(ValueError, match=message):
        fn(t)
    dense = t.to_dense() if t.layout != torch.strided else t
    assert torch.all(dense == 7.0)


@pytest.mark.parametrize("fn", ALL)
def test_nested_and_packed_tensors_are_refused(fn):
    nested = torch.nested.nested_tensor([torch.full((2, 3), 7.0), torch.full((4, 3), 7.0)])
    with pytest.raises(ValueError, match="nested"):
        fn(nested)
    assert all(torch.all(t == 7.0) for t in nested.unbind())
    packed = torch.full((4, 4), 7, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    with pytest.raises(ValueError, match="packs two values"):
        fn(packed)
    assert torch.all(packed.view(torch.uint8) == 7)


def test_inference_tensors_are_filled_inside_inference_mode():
    with torch.inference_mode():
        t = idinit.identity_(torch.empty(3, 3), loose=0.0)
    assert torch.equal(t, torch.eye(3))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_gets_the_pattern(dtype):
    assert torch.equal(idinit.identity_(torch.empty(5, 3, dtype=dtype)).float(), torch.eye(5, 3) + torch.eye(5, 3).roll(3, 0) * (torch.arange(5)[:, None] >= 3))
    assert torch.equal(idinit.hadamard_(torch.empty(2, 4, dtype=dtype)).float(), torch.eye(2, 4))


def test_a_tall_hadamard_in_float8_is_the_rounded_scaled_block():
    t = torch.full((6, 3), 7.0).to(torch.float8_e4m3fn)
    idinit.hadamard_(t)  # float8 has no multiplication: scaled in float32, rounded once
    h = torch.tensor([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1], [1, -1, 1]]) / math.sqrt(8)
    assert torch.equal(t.float(), h.to(torch.float8_e4m3fn).float())


@pytest.mark.parametrize("fn", ALL)
def test_a_dtype_without_zero_or_negatives_is_refused(fn):
    t = torch.full((4, 4), 2.0).to(torch.float8_e8m0fnu)
    with pytest.raises(ValueError, match="cannot hold 0 and negative"):
        fn(t)
    assert torch.all(t.float() == 2.0)


@pytest.mark.parametrize("value", [np.float32(2.0), np.float64(2.0), np.int64(2), torch.tensor(2.0),
                                   torch.tensor(2, dtype=torch.int32), torch.tensor(2.0, dtype=torch.float64)])
def test_numpy_scalars_and_0d_tensors_are_accepted_like_python_numbers(value):
    want = idinit.identity_(torch.empty(4, 3), gain=2.0, loose=0.0)
    assert torch.equal(idinit.identity_(torch.empty(4, 3), gain=value, loose=0.0), want)
    assert torch.equal(idinit.zero_preserving_(torch.empty(4, 3), eps=value), idinit.zero_preserving_(torch.empty(4, 3), eps=2.0))
    g = torch.Generator().manual_seed(0)
    got = idinit.identity_(torch.empty(4, 3), loose=value / 4, generator=g)
    assert torch.equal(got, idinit.identity_(torch.empty(4, 3), loose=0.5, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("fn", [idinit.identity_, idinit.channel_identity_])
@pytest.mark.parametrize("loose", [1e-6, 0.0])
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("bad", [42, "cpu", np.random.default_rng(0)])
def test_a_generator_of_the_wrong_type_is_refused_even_when_unused(fn, loose, device, bad):
    t = torch.full((4, 4), 7.0, device=device)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        fn(t, loose=loose, generator=bad)
    if device == "cpu":
        assert torch.all(t == 7.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type")
def test_a_generator_on_another_device_is_refused():
    with pytest.raises(ValueError, match="generator is on cuda"):
        idinit.identity_(torch.empty(3, 3), loose=0.0, generator=torch.Generator(device="cuda"))


@pytest.mark.parametrize("wrap", [parametrizations.weight_norm, parametrizations.spectral_norm,
                                  parametrizations.orthogonal])
def test_writing_a_parametrized_weight_warns_that_it_will_be_recomputed(wrap, recwarn):
    layer = wrap(nn.Linear(4, 4))
    with pytest.warns(UserWarning, match="parametrizations.weight.original"):
        idinit.identity_(layer.weight)
    plain = nn.Linear(4, 4)
    idinit.identity_(plain.weight)           # a parameter itself: no warning
    idinit.identity_(plain.weight.t())       # a view of one (grad_fn TBackward): no warning
    assert not [w for w in recwarn if "computed from others" in str(w.message)]


# --- the model level: all or nothing -----------------------------------------------------------

def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _unchanged(model, before):
    return all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_bad_generator_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    nn.init.constant_(model[0].weight, 3.0)
    before = _snapshot(model)
    with pytest.raises(TypeError, match="generator"):
        idinit.init_(model, generator="seed 0")
    assert _unchanged(model, before)


def test_a_parameter_with_overlapping_memory_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    model[2].weight = nn.Parameter(torch.full((4, 1), 7.0).expand(4, 4))
    before = _snapshot(model)
    with pytest.raises(ValueError, match="2.weight: several elements"):
        idinit.init_(model)
    assert _unchanged(model, before)


def test_a_loose_the_dtype_cannot_hold_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).half()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="overflows torch.float16"):
        idinit.init_(model, loose=1e4)
    assert _unchanged(model, before)
    assert math.isfinite(idinit.init_(model, loose=1e-3).options["loose"])  # a value it holds is fine
