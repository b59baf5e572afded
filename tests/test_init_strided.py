"""The strided writer (idinit.patterns): any box of rows and columns of a pattern, and any view, gets exactly
the entries of the whole pattern; the loose noise is a function of (seed, tensor name, row) only."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import idinit
from idinit.noise import draw_seed, standard_normal, tensor_key
from idinit.patterns import Job, _identity_values, _write
from idinit.sharded import Region

FNS = {"identity_": dict(gain=1.5, loose=1e-3), "channel_identity_": dict(gain=1.0, loose=1e-3),
       "zero_preserving_": dict(eps=1e-3), "hadamard_": {}}

shapes = st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple)


def _cuts(draw, n):
    points = sorted(set(draw(st.lists(st.integers(0, n), max_size=3))) | {0, n})
    return list(zip(points, points[1:]))


@settings(max_examples=80, deadline=None)
@given(shape=shapes, fn=st.sampled_from(sorted(FNS)), data=st.data())
def test_every_box_of_rows_and_input_channels_is_written_as_the_whole(shape, fn, data):
    """What each rank of a row- and column-sharded tensor writes, tiled back: the unsharded tensor."""
    args = FNS[fn]
    whole = getattr(idinit, fn)(torch.full(shape, math.nan, dtype=torch.float64), **args,
                                **({"generator": torch.Generator().manual_seed(3)} if "loose" in args else {}))
    tiled = torch.full(shape, math.nan, dtype=torch.float64)
    job = Job(fn, tiled, fn, args)
    values = None
    if "loose" in args:
        values = _identity_values([job], draw_seed(torch.Generator().manual_seed(3)))[(fn, 0)]
    k = math.prod(shape[2:])
    for r0, r1 in _cuts(data.draw, shape[0]):
        for c0, c1 in _cuts(data.draw, shape[1]):
            local = tiled[r0:r1, c0:c1]
            local.zero_()
            _write(job, Region(local, shape[0], shape[1:], r0, c0 * k), values)
    assert torch.equal(tiled, whole)


@pytest.mark.parametrize("fn", sorted(FNS))
@pytest.mark.parametrize("make", [
    lambda: torch.full((6, 4, 5, 5), 7.0)[:, :, ::2, 1:4],           # spatial dims that do not merge
    lambda: torch.full((6, 3, 3, 4), 7.0).permute(0, 3, 1, 2),        # channels-last-like kernel
    lambda: torch.full((4, 6, 3, 3), 7.0).transpose(0, 1),            # a ConvTranspose kernel as (out, in)
])
def test_views_whose_trailing_dims_do_not_merge_are_filled_in_place(fn, make):
    view = make()
    base = view._base
    untouched = base.clone()
    kwargs = {"generator": torch.Generator().manual_seed(1)} if "loose" in FNS[fn] else {}
    getattr(idinit, fn)(view, **FNS[fn], **kwargs)
    want = getattr(idinit, fn)(torch.empty(view.shape), **FNS[fn],
                               **({"generator": torch.Generator().manual_seed(1)} if kwargs else {}))
    assert torch.equal(view, want)
    mask = torch.ones_like(base, dtype=torch.bool)
    mask_view = mask.as_strided(view.shape, view.stride(), view.storage_offset())
    mask_view.fill_(False)
    assert torch.equal(base[mask], untouched[mask])


def test_noise_is_uncorrelated_across_rows_and_tensors():
    n = 20000
    a = standard_normal([(tensor_key(0, "a#0"), 0, n)], "cpu").double()
    b = standard_normal([(tensor_key(0, "b#0"), 0, n)], "cpu").double()
    bound = 5 / math.sqrt(n)
    assert abs(torch.corrcoef(torch.stack([a[1:], a[:-1]]))[0, 1]) < bound
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < bound
    assert abs(a.mean()) < bound and abs(a.std() - 1) < 0.03


def test_noise_of_a_batch_is_the_noise_of_its_parts_and_independent_of_threads():
    segments = [(tensor_key(5, f"t{i}#0"), 0, n) for i, n in enumerate([3, 70000, 17, 1])]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = standard_normal(segments, "cpu")
        torch.set_num_threads(2)
        two = standard_normal(segments, "cpu")
    finally:
        torch.set_num_threads(threads)
    parts = torch.cat([standard_normal([s], "cpu") for s in segments])
    assert torch.equal(one, two) and torch.equal(one, parts)
    # a segment's rows [s, s + n) are rows s.. of the whole: a shard sees the unsharded noise
    assert torch.equal(standard_normal([(7, 10, 5)], "cpu"), standard_normal([(7, 0, 15)], "cpu")[10:])


def test_a_parameters_noise_depends_on_its_name_not_on_the_rest_of_the_plan():
    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))

    full, part = model(), model()
    plan = idinit.plan(full)
    plan.apply(full, generator=torch.Generator().manual_seed(2))
    plan["0.weight"].init = "keep"  # one parameter fewer in the noise batch
    plan.apply(part, generator=torch.Generator().manual_seed(2))
    assert torch.equal(part[2].weight, full[2].weight)
    assert not torch.equal(full[2].weight, idinit.identity_(torch.empty(6, 6), loose=0.0))
