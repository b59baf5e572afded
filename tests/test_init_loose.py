"""The loose condition (Sec. 3.1.2): N(0, loose^2) noise on the identity entries, exact zeros elsewhere."""
import pytest
import torch
from scipy import stats

import idinit


@pytest.mark.parametrize("fn", [idinit.identity_, idinit.channel_identity_])
@pytest.mark.parametrize("shape", [(1500, 1500), (3000, 500), (1500, 4, 3, 3)])
def test_perturbation_is_standard_normal_times_loose(fn, shape):
    loose = 1e-6
    t = fn(torch.empty(shape, dtype=torch.float64), gain=1.0, loose=loose, generator=torch.Generator().manual_seed(0))
    exact = fn(torch.empty(shape, dtype=torch.float64), gain=1.0, loose=0.0)
    on = exact != 0
    z = ((t[on] - 1.0) / loose).numpy()
    assert len(z) == shape[0]
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.std() - 1.0) < 0.1 and abs(z.mean()) < 0.15
    assert torch.count_nonzero(t[~on]) == 0  # every other entry is exactly zero


def test_float32_perturbation_has_std_loose():
    t = idinit.identity_(torch.empty(4000, 4000), loose=1e-6, generator=torch.Generator().manual_seed(1))
    d = t.diagonal().double() - 1.0
    assert abs(d.std().item() / 1e-6 - 1.0) < 0.1  # float32 spacing near 1 (6e-8 .. 1.2e-7) is well below 1e-6
    assert torch.count_nonzero(t) == 4000


def test_loose_scales_the_noise_and_zero_turns_it_off():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = idinit.identity_(torch.empty(300, 300, dtype=torch.float64), loose=1e-6, generator=g())
    b = idinit.identity_(torch.empty(300, 300, dtype=torch.float64), loose=1e-3, generator=g())
    torch.testing.assert_close((b - torch.eye(300).double()), (a - torch.eye(300).double()) * 1e3, rtol=1e-6, atol=0)
    assert torch.equal(idinit.identity_(torch.empty(300, 300), loose=0.0), torch.eye(300))
