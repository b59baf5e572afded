"""Bad input gets a clear exception that names the problem; zero-element tensors warn and return."""
import math

import pytest
import torch

import idinit

ALL = [idinit.identity_, idinit.channel_identity_, idinit.zero_preserving_, idinit.hadamard_]


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("shape", [(), (5,)])
def test_fewer_than_two_dims_is_refused(fn, shape):
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(%d-D\)" % len(shape)):
        fn(torch.empty(shape))


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.uint8, torch.bool, torch.complex64])
def test_non_real_float_dtypes_are_refused(fn, dtype):
    with pytest.raises(ValueError, match=str(dtype)):
        fn(torch.zeros(3, 3, dtype=dtype))


@pytest.mark.parametrize("fn", ALL)
def test_a_kernel_with_a_zero_sized_spatial_dim_is_refused(fn):
    with pytest.raises(ValueError, match=r"zero-sized spatial dimension"):
        fn(torch.empty(4, 4, 0, 3))


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 2, 3, 3)])
def test_zero_element_tensors_warn_and_return(fn, shape):
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="zero-element"):
        assert fn(t) is t


@pytest.mark.parametrize(
    "fn, arg", [(idinit.identity_, "gain"), (idinit.identity_, "loose"), (idinit.channel_identity_, "gain"),
                (idinit.channel_identity_, "loose"), (idinit.zero_preserving_, "eps")]
)
@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_negative_or_non_finite_scalars_are_refused(fn, arg, bad):
    t = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=rf"{arg} must be finite and >= 0"):
        fn(t, **{arg: bad})
    assert torch.count_nonzero(t) == 0  # nothing half-written


@pytest.mark.parametrize("bad", ["1.0", None, True, torch.tensor([1.0]), torch.tensor(1 + 0j)])
def test_non_number_scalars_are_refused(bad):
    with pytest.raises(TypeError, match="gain must be a real number"):
        idinit.identity_(torch.zeros(3, 3), gain=bad)


def test_non_tensor_is_refused():
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        idinit.identity_([[1.0, 0.0], [0.0, 1.0]])


def test_meta_tensors_are_still_validated():
    with pytest.raises(ValueError, match="floating-point"):
        idinit.identity_(torch.empty(3, 3, dtype=torch.int32, device="meta"))
