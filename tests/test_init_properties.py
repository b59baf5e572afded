"""Property tests over random shapes (2-D to 5-D), dtypes, devices and views."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import idinit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

shapes = st.lists(st.integers(1, 7), min_size=2, max_size=5).map(tuple)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, gain=st.floats(0.1, 3.0))
def test_identity_one_entry_per_row_at_m_mod_columns(shape, gain):
    t = idinit.identity_(torch.empty(shape, dtype=torch.float64), gain=gain, loose=0.0)
    assert t.shape == shape and t.dtype == torch.float64
    w = as_matrix(t)
    assert torch.count_nonzero(w) == shape[0]
    cols = w.nonzero()[:, 1]
    assert torch.equal(cols, torch.arange(shape[0]) % w.shape[1])
    assert torch.all(w[w != 0] == gain)


@settings(max_examples=150, deadline=None)
@given(shape=shapes)
def test_channel_identity_only_touches_the_centre_tap(shape):
    t = idinit.channel_identity_(torch.empty(shape, dtype=torch.float64), loose=0.0)
    assert torch.count_nonzero(t) == shape[0]
    if len(shape) > 2:
        centre = tuple(k // 2 for k in shape[2:])
        tap = t[(slice(None), slice(None), *centre)]
        assert torch.count_nonzero(tap) == shape[0]
        assert torch.equal(tap.nonzero()[:, 1], torch.arange(shape[0]) % shape[1])


@settings(max_examples=150, deadline=None)
@given(shape=shapes, eps=st.floats(1e-6, 1.0))
def test_zero_preserving_rows_are_differences(shape, eps):
    t = idinit.zero_preserving_(torch.empty(shape, dtype=torch.float64), eps=eps)
    w = as_matrix(t)
    per_row = torch.count_nonzero(w, dim=1)
    if w.shape[1] == 1:
        assert torch.all(per_row == 1) and torch.all(w.abs() == eps)
        return
    assert torch.all(per_row == 2)
    assert torch.all((w == eps).sum(1) == 1) and torch.all((w == -eps).sum(1) == 1)
    assert torch.all(w.sum(1) == 0)  # zero-mean output for inputs of equal mean (Eq. 12)


@settings(max_examples=100, deadline=None)
@given(shape=shapes)
def test_hadamard_rows_have_unit_norm_or_partial_identity(shape):
    t = idinit.hadamard_(torch.empty(shape, dtype=torch.float64))
    m, n = shape[0], shape[1]
    w = t if len(shape) == 2 else t[(slice(None), slice(None), *(k // 2 for k in shape[2:]))]
    assert torch.count_nonzero(t) == torch.count_nonzero(w)  # nothing off the centre tap
    if m <= n:
        assert torch.equal(w, torch.eye(m, n, dtype=torch.float64))
    else:
        p = 2 ** math.ceil(math.log2(m))
        assert torch.all(w.abs() == 1 / math.sqrt(p))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_every_initialiser_is_idempotent(shape, seed):
    calls = [
        lambda t: idinit.identity_(t, generator=torch.Generator().manual_seed(seed)),
        lambda t: idinit.channel_identity_(t, generator=torch.Generator().manual_seed(seed)),
        idinit.zero_preserving_,
        idinit.hadamard_,
    ]
    for fn in calls:
        once = fn(torch.randn(shape))
        assert torch.equal(fn(once.clone()), once)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (8, 3, 3, 3), (5, 2, 3), (4, 2, 1, 3, 3)])
def test_dtypes_and_devices_give_the_float64_pattern(device, dtype, shape):
    for fn in [
        lambda t: idinit.identity_(t, gain=math.sqrt(2), loose=0.0),
        lambda t: idinit.channel_identity_(t, loose=0.0),
        lambda t: idinit.zero_preserving_(t, eps=2**-10),
        idinit.hadamard_,
    ]:
        ref = fn(torch.empty(shape, dtype=torch.float64))
        got = fn(torch.empty(shape, dtype=dtype, device=device))
        assert got.dtype == dtype and got.device.type == device
        assert torch.equal(got.cpu().double(), ref.to(dtype).double())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_loose_perturbation_vanishes_in_half_precision(dtype):
    t = idinit.identity_(torch.empty(64, 64, dtype=dtype), loose=1e-6)
    assert torch.equal(t, torch.eye(64, dtype=dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_views_are_filled_in_place(device):
    fns = [
        lambda t: idinit.identity_(t, generator=torch.Generator().manual_seed(3)),
        lambda t: idinit.channel_identity_(t, generator=torch.Generator().manual_seed(3)),
        idinit.zero_preserving_,
        idinit.hadamard_,
    ]
    for fn in fns:
        base = torch.full((6, 10), 7.0, device=device)
        view = base.t()  # (10, 6), non-contiguous
        assert fn(view) is view
        assert torch.equal(base.t(), fn(torch.empty(10, 6, device=device)))
        # a strided slice of a kernel: only the selected entries change
        kernel = torch.full((8, 6, 3, 3), 7.0, device=device)
        part = kernel[::2, 1:5]
        fn(part)
        assert torch.equal(part, fn(torch.empty(4, 4, 3, 3, device=device)))
        untouched = torch.ones_like(kernel, dtype=torch.bool)
        untouched[::2, 1:5] = False
        assert torch.all(kernel[untouched] == 7.0)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_bitwise_same_different_seed_different(device):
    def make(seed, dtype=torch.float32):
        g = torch.Generator(device=device).manual_seed(seed)
        return idinit.identity_(torch.empty(64, 32, 3, 3, device=device, dtype=dtype), generator=g)

    assert torch.equal(make(1), make(1))
    assert not torch.equal(make(1), make(2))
    # one draw of z in float32 for every dtype: float64 differs from float32 only by rounding
    torch.testing.assert_close(make(1, torch.float64).float(), make(1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_a_cpu_generator_gives_the_same_tensor_on_every_device(device):
    a = idinit.identity_(torch.empty(16, 16, device=device), generator=torch.Generator().manual_seed(5))
    b = idinit.identity_(torch.empty(16, 16), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.cpu(), b)
    assert not torch.equal(b, torch.eye(16))


def test_meta_tensors_are_a_silent_no_op(recwarn):
    for fn in [idinit.identity_, idinit.channel_identity_, idinit.zero_preserving_, idinit.hadamard_]:
        t = torch.empty(8, 4, 3, 3, device="meta")
        assert fn(t) is t
    assert len(recwarn) == 0
