"""What the initialised layers compute (SPEC §2-3), checked on real forward passes."""
import torch
import torch.nn.functional as F
from torch import nn

import idinit


def shifted(x: torch.Tensor, channel: int, dy: int, dx: int) -> torch.Tensor:
    """Input channel `channel` moved so that out[y, x] = in[y + dy, x + dx], zeros outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[:, channel, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def test_patch_maintain_conv_outputs_shifted_channel_copies():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 30, 3, padding=1, bias=False)  # 30 > 2 * 9: the 18 patterns repeat
    idinit.identity_(conv.weight, loose=0.0)
    x = torch.randn(4, 2, 7, 9)
    y = conv(x)
    for m in range(30):
        col = m % 18
        channel, tap = divmod(col, 9)
        kh, kw = divmod(tap, 3)
        torch.testing.assert_close(y[:, m], shifted(x, channel, kh - 1, kw - 1), rtol=0, atol=0)
    # outputs 0..17 are all distinct maps: the "feature diversity" of patch-maintain
    flat = y[:, :18].transpose(0, 1).reshape(18, -1)
    assert torch.linalg.matrix_rank(flat) == 18


def test_channel_maintain_square_conv_reproduces_the_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 5, 3, padding=1, bias=False)
    idinit.channel_identity_(conv.weight, loose=0.0)
    x = torch.randn(3, 5, 8, 8)
    assert torch.equal(conv(x), x)
    idinit.channel_identity_(conv.weight)  # with the loose perturbation: identity up to ~1e-6
    torch.testing.assert_close(conv(x), x, rtol=1e-5, atol=1e-5)


def test_channel_maintain_depthwise_is_identity():
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False)
    idinit.channel_identity_(conv.weight, loose=0.0)
    x = torch.randn(2, 6, 9, 9)
    assert torch.equal(conv(x), x)


def test_patch_maintain_grouped_conv_reads_only_its_own_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)
    idinit.identity_(conv.weight, loose=0.0)
    x = torch.randn(2, 4, 6, 6)
    y = conv(x)
    for m in range(8):
        group = m // 4
        col = m % (2 * 9)
        local, tap = divmod(col, 9)
        kh, kw = divmod(tap, 3)
        torch.testing.assert_close(y[:, m], shifted(x, 2 * group + local, kh - 1, kw - 1), rtol=0, atol=0)


def test_identity_linear_tall_copies_inputs_cyclically():
    lin = nn.Linear(3, 7, bias=False)
    idinit.identity_(lin.weight, loose=0.0)
    x = torch.randn(5, 3)
    assert torch.equal(lin(x), x[:, [0, 1, 2, 0, 1, 2, 0]])


def test_zero_preserving_linear_output_is_tiny_and_centred():
    torch.manual_seed(0)
    eps = 1e-3
    for d_in, d_out in [(16, 4), (8, 8), (4, 16), (1, 6)]:
        lin = nn.Linear(d_in, d_out, bias=False)
        idinit.zero_preserving_(lin.weight, eps=eps)
        x = torch.randn(200_000, d_in, dtype=torch.float64)
        y = F.linear(x, lin.weight.double())
        bound = 2 * eps * x.abs().max(dim=1, keepdim=True).values
        assert (y.abs() <= bound * (1 + 1e-12)).all(), (d_in, d_out)
        if d_in > 1:
            # each output is eps*(x_a - x_b): mean 0, std sqrt(2)*eps; the batch mean is within 5 sigma of 0
            sigma_mean = (2**0.5) * eps / len(x) ** 0.5
            assert (y.mean(0).abs() < 5 * sigma_mean).all(), (d_in, d_out)
            torch.testing.assert_close(y.std(0), torch.full((d_out,), 2**0.5 * eps, dtype=torch.float64), rtol=0.02, atol=0)


def test_zero_preserving_branch_end_passes_gradient_where_zero_does_not():
    """Sec. 3.2: with the branch end at exact zero, the branch's inner layer gets no gradient at all."""
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    for init, alive in [(torch.nn.init.zeros_, False), (idinit.zero_preserving_, True)]:
        first, last = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
        idinit.identity_(first.weight)
        init(last.weight)
        y = x + last(torch.relu(first(x)))  # residual block, `last` closes the branch
        (y * torch.randn_like(y)).sum().backward()
        assert bool(first.weight.grad.abs().sum() > 0) == alive
        assert last.weight.grad.abs().sum() > 0  # the branch end itself always learns
