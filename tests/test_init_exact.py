"""Element-by-element checks of every branch of every tensor initialiser (SPEC §1-3, §5).

The expected matrices are written out by hand from the formulas, not computed by the code under test.
"""
import math

import pytest
import torch

import idinit

T = torch.tensor


def filled(fn, shape, **kwargs):
    return fn(torch.full(shape, float("nan"), dtype=torch.float64), **kwargs)


# --- IDI (Eq. 3) -----------------------------------------------------------------------------

def test_identity_square_is_gain_times_eye():
    expected = T([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    assert torch.equal(filled(idinit.identity_, (3, 3), gain=2.0, loose=0.0), expected.double())


def test_identity_tall_6x4_stacks_identity_blocks():
    expected = T([
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [1, 0, 0, 0],  # output 4 copies input 0: the second block is cut short
        [0, 1, 0, 0],
    ]).double()
    assert torch.equal(filled(idinit.identity_, (6, 4), loose=0.0), expected)


def test_identity_wide_4x6_is_identity_then_zeros():
    expected = T([
        [1, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
    ]).double()
    assert torch.equal(filled(idinit.identity_, (4, 6), loose=0.0), expected)


def test_identity_single_column_and_single_row():
    assert torch.equal(filled(idinit.identity_, (3, 1), loose=0.0), T([[1.0], [1.0], [1.0]]).double())
    assert torch.equal(filled(idinit.identity_, (1, 3), loose=0.0), T([[1.0, 0, 0]]).double())


# --- IDIC (Eq. 10): patch-maintain ------------------------------------------------------------

def test_identity_conv1d_reads_successive_taps():
    k = filled(idinit.identity_, (4, 2, 3), loose=0.0)
    expected = torch.zeros(4, 2, 3, dtype=torch.float64)
    expected[0, 0, 0] = 1  # flattened column 0: channel 0, tap 0
    expected[1, 0, 1] = 1  # column 1: channel 0, tap 1
    expected[2, 0, 2] = 1  # column 2: channel 0, tap 2
    expected[3, 1, 0] = 1  # column 3: channel 1, tap 0
    assert torch.equal(k, expected)


def test_identity_conv2d_tall_repeats_after_cin_times_k2():
    k = filled(idinit.identity_, (20, 2, 3, 3), loose=0.0)  # 2 * 9 = 18 columns, 20 rows
    expected = torch.zeros(20, 2, 3, 3, dtype=torch.float64)
    for m, (c, kh, kw) in enumerate(
        [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 2, 0), (0, 2, 1), (0, 2, 2),
         (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 2, 0), (1, 2, 1), (1, 2, 2),
         (0, 0, 0), (0, 0, 1)]
    ):
        expected[m, c, kh, kw] = 1
    assert torch.equal(k, expected)


def test_identity_conv3d_and_even_kernel():
    k = filled(idinit.identity_, (3, 1, 2, 2, 2), loose=0.0)
    expected = torch.zeros(3, 1, 2, 2, 2, dtype=torch.float64)
    expected[0, 0, 0, 0, 0] = 1
    expected[1, 0, 0, 0, 1] = 1
    expected[2, 0, 0, 1, 0] = 1
    assert torch.equal(k, expected)


def test_identity_1x1_conv_is_the_matrix_case():
    k = filled(idinit.identity_, (6, 4, 1, 1), loose=0.0)
    assert torch.equal(k[:, :, 0, 0], filled(idinit.identity_, (6, 4), loose=0.0))


def test_identity_depthwise_gives_each_channel_its_own_tap():
    k = filled(idinit.identity_, (4, 1, 3, 3), loose=0.0)
    expected = torch.zeros(4, 1, 3, 3, dtype=torch.float64)
    expected[0, 0, 0, 0] = expected[1, 0, 0, 1] = expected[2, 0, 0, 2] = expected[3, 0, 1, 0] = 1
    assert torch.equal(k, expected)


# --- channel-maintain ---------------------------------------------------------------------------

def test_channel_identity_puts_idi_on_centre_tap():
    k = filled(idinit.channel_identity_, (3, 2, 3, 3), loose=0.0)
    expected = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    expected[0, 0, 1, 1] = expected[1, 1, 1, 1] = expected[2, 0, 1, 1] = 1
    assert torch.equal(k, expected)


def test_channel_identity_even_kernel_centre_is_k_over_2():
    k = filled(idinit.channel_identity_, (2, 2, 4, 2), gain=3.0, loose=0.0)
    expected = torch.zeros(2, 2, 4, 2, dtype=torch.float64)
    expected[0, 0, 2, 1] = expected[1, 1, 2, 1] = 3
    assert torch.equal(k, expected)


def test_channel_identity_2d_equals_identity():
    assert torch.equal(filled(idinit.channel_identity_, (5, 3), loose=0.0), filled(idinit.identity_, (5, 3), loose=0.0))


# --- IDIZ (Eq. 12) ------------------------------------------------------------------------------

E = 1e-3


def test_zero_preserving_wide_3x8_case_i():
    expected = E * T([
        [1, 0, 0, -1, 0, 0, 0, 0],
        [0, 1, 0, 0, -1, 0, 0, 0],
        [0, 0, 1, 0, 0, -1, 0, 0],
    ]).double()
    assert torch.equal(filled(idinit.zero_preserving_, (3, 8), eps=E), expected)


def test_zero_preserving_wide_2x3_wraps_minus_block():
    # remaining block is 2 x 1: both rows take their -eps from column 2
    expected = E * T([[1, 0, -1], [0, 1, -1]]).double()
    assert torch.equal(filled(idinit.zero_preserving_, (2, 3), eps=E), expected)


def test_zero_preserving_square_4x4_is_cyclic_difference():
    expected = E * T([
        [1, -1, 0, 0],
        [0, 1, -1, 0],
        [0, 0, 1, -1],
        [-1, 0, 0, 1],
    ]).double()
    assert torch.equal(filled(idinit.zero_preserving_, (4, 4), eps=E), expected)


def test_zero_preserving_tall_5x2_case_ii():
    expected = E * T([[1, -1], [-1, 1], [1, -1], [-1, 1], [1, -1]]).double()
    assert torch.equal(filled(idinit.zero_preserving_, (5, 2), eps=E), expected)


def test_zero_preserving_single_input_alternates_sign():
    expected = E * T([[1], [-1], [1], [-1]]).double()
    assert torch.equal(filled(idinit.zero_preserving_, (4, 1), eps=E), expected)


def test_zero_preserving_conv_uses_the_flattened_matrix():
    k = filled(idinit.zero_preserving_, (2, 1, 3), eps=E)  # matrix 2 x 3: case (i)
    expected = E * T([[[1, 0, -1]], [[0, 1, -1]]]).double()
    assert torch.equal(k, expected)
    k = filled(idinit.zero_preserving_, (3, 2, 1, 1), eps=E)  # matrix 3 x 2: case (ii)
    assert torch.equal(k[:, :, 0, 0], E * T([[1, -1], [-1, 1], [1, -1]]).double())


def test_zero_preserving_eps_zero_is_exact_zero():
    assert torch.count_nonzero(filled(idinit.zero_preserving_, (4, 6), eps=0.0)) == 0


# --- ZerO (Hadamard) ----------------------------------------------------------------------------

def test_hadamard_wide_and_square_are_partial_identity():
    assert torch.equal(filled(idinit.hadamard_, (3, 5)), T([[1.0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]).double())
    assert torch.equal(filled(idinit.hadamard_, (4, 4)), torch.eye(4, dtype=torch.float64))


def test_hadamard_tall_6x3_is_scaled_sylvester_block():
    # p = 8; H_8 rows 0..5, columns 0..2, entries (-1)^popcount(i & j)
    h = T([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1], [1, -1, 1]]).double()
    torch.testing.assert_close(filled(idinit.hadamard_, (6, 3)), h / math.sqrt(8), rtol=0, atol=1e-15)


def test_hadamard_tall_power_of_two_is_orthogonal_columns():
    w = filled(idinit.hadamard_, (8, 8 // 2))
    torch.testing.assert_close(w.T @ w, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_hadamard_conv_centre_tap_only():
    k = filled(idinit.hadamard_, (4, 2, 3, 3))
    expected = torch.zeros(4, 2, 3, 3, dtype=torch.float64)
    expected[:, :, 1, 1] = T([[1, 1], [1, -1], [1, 1], [1, -1]]).double() / 2
    assert torch.equal(k, expected)


@pytest.mark.parametrize("fn", [idinit.identity_, idinit.channel_identity_])
def test_gain_scales_the_pattern(fn):
    a = filled(fn, (5, 3, 3), gain=1.0, loose=0.0)
    b = filled(fn, (5, 3, 3), gain=math.sqrt(2), loose=0.0)
    assert torch.equal(b, a * math.sqrt(2))
