r"""Tensor initialisers of IDInit (Pan et al., ICLR 2025) and of ZerO (Zhao et al., 2022).

Flat, in-place functions in the style of :mod:`torch.nn.init`: each fills ``tensor`` under
``torch.no_grad()`` and returns it. A tensor's dim 0 is its *output* dimension, as in
``nn.Linear.weight`` ``(D_out, D_in)`` and ``nn.Conv2d.weight`` ``(c_out, c_in/groups, *k)``.
Tensors of three or more dimensions are convolution kernels; they are read as the matrix
``K.reshape(c_out, -1)`` whose column ``j`` is ``(c_in_index, *tap)`` in row-major order
(SPEC §2 [decision]), without ever materialising that reshape: the pattern is written by index
arithmetic on the tensor's own device, so transposed or sliced views are filled in place.

Every function writes a pattern with at most two non-zeros per output row, so its cost is one
``zero_()`` pass plus O(D_out) index writes; no dense ``eye`` of the full size is built.

=========================  ==================================================  ============
function                   pattern                                             paper
=========================  ==================================================  ============
:func:`identity_`          ``W[m, m mod D_in] = gain`` on the flattened kernel  IDI / IDIC
:func:`channel_identity_`  the same on the centre tap only                     ablation (i)
:func:`zero_preserving_`   ``+eps``/``-eps`` pairs: outputs are eps*(x_a - x_b) IDIZ / IDIZC
:func:`hadamard_`          ZerO's partial identity or scaled Hadamard          ZerO Alg. 1
=========================  ==================================================  ============

Grouped and depthwise kernels. The stored kernel ``(c_out, c_in/groups, *k)`` already holds only the
input channels of each output's own group, so the flattened-matrix pattern is applied to it as it
is: every output channel reads one input channel *of its own group*. The row index ``m`` runs over
all output channels (it does not restart in every group), so different groups use different taps.
A depthwise kernel ``(C, 1, k, k)`` under :func:`identity_` makes channel ``m`` a copy of its own
input shifted by tap ``m mod k²`` (a spatial shift per channel, the patch-maintain idea applied to
one channel); under :func:`channel_identity_` it is the exact identity (centre tap 1).

Transposed convolutions store ``(c_in, c_out/groups, *k)``: pass ``weight.transpose(0, 1)`` (a view;
it is filled in place) when ``groups == 1`` so that dim 0 is the output.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["identity_", "channel_identity_", "zero_preserving_", "hadamard_"]

# The paper's default values: loose-condition std and zero-preserving coefficient (Sec. 3.1.2, 3.2).
DEFAULT_LOOSE = 1e-6
DEFAULT_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# validation


def _check_tensor(tensor: Tensor, fn: str) -> bool:
    """Raise on tensors no pattern is defined for; return False when there is nothing to write."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(
            f"{fn}: needs a tensor with at least 2 dimensions (a Linear weight or a conv kernel), "
            f"got shape {tuple(tensor.shape)} ({tensor.dim()}-D)"
        )
    if not tensor.dtype.is_floating_point:
        raise ValueError(
            f"{fn}: needs a real floating-point tensor, got dtype {tensor.dtype} "
            "(integer, bool and complex tensors are refused)"
        )
    if tensor.dim() >= 3 and any(s == 0 for s in tensor.shape[2:]):
        raise ValueError(f"{fn}: kernel of shape {tuple(tensor.shape)} has a zero-sized spatial dimension")
    if tensor.numel() == 0:
        warnings.warn(f"{fn}: initialising a zero-element tensor of shape {tuple(tensor.shape)}: nothing to do")
        return False
    return tensor.device.type != "meta"  # meta tensors carry no data: validated, then left alone


def _check_scalar(value: float, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: {name} must be finite and >= 0, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# index arithmetic


def _unravel(flat: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Row-major multi-index of ``flat`` into ``sizes`` (the inverse of ``reshape(-1)``)."""
    idx = []
    for size in reversed(sizes):
        idx.append(flat % size)
        flat = flat // size
    return idx[::-1]


def _flat_index(tensor: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, ...]:
    """Index tuple into ``tensor`` of entries ``(rows, cols)`` of its ``(shape[0], -1)`` matrix."""
    return (rows, *_unravel(cols, tensor.shape[1:]))


def _centre(tensor: Tensor) -> tuple[int, ...]:
    """Centre tap of a kernel; ``k // 2`` for even sizes, as ``torch.nn.init.dirac_``."""
    return tuple(k // 2 for k in tensor.shape[2:])


def _diagonal_values(
    n: int, gain: float, loose: float, generator: Optional[torch.Generator], like: Tensor
) -> Tensor:
    """``gain + loose * z`` for the ``n`` identity entries, ``z ~ N(0, 1)`` drawn in float32.

    The noise is drawn on the generator's device (so a CPU generator works for a CUDA tensor) in
    float32, whatever the tensor's dtype, so a seed gives the same ``z`` for every dtype. The sum is
    formed in float64 for float64 tensors and in float32 otherwise, then cast: near 1.0, a std of
    1e-6 is below half the resolution of bfloat16 (2^-8) and float16 (2^-11), so the perturbation
    vanishes there (SPEC §1).
    """
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    values = torch.full((n,), gain, dtype=work, device=like.device)
    if loose > 0:
        device = generator.device if generator is not None else like.device
        z = torch.randn(n, generator=generator, dtype=torch.float32, device=device)
        values += loose * z.to(device=like.device, dtype=work)
    return values.to(like.dtype)


def _idi_columns(rows: Tensor, n_cols: int) -> Tensor:
    """IDI (paper Eq. 3): output ``m`` copies input ``m mod D_in``."""
    return rows % n_cols


# ---------------------------------------------------------------------------------------------
# public initialisers


def identity_(
    tensor: Tensor,
    gain: float = 1.0,
    loose: float = DEFAULT_LOOSE,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Fill ``tensor`` with the padded identity IDI (2-D) or the patch-maintain IDIC (>= 3-D).

    For a matrix :math:`W \in \mathbb{R}^{D_{out} \times D_{in}}` (paper Eq. 3, SPEC §1):

    .. math::
        W_{m,j} = \begin{cases} \tau & j = m \bmod D_{in} \\ 0 & \text{otherwise}\end{cases}

    so a square matrix is :math:`\tau I`, a tall one (:math:`D_{out} > D_{in}`) stacks identity
    blocks (output ``m`` copies input ``m mod D_in``; the last block is cut short), which is what
    lifts the rank constraint of zero padding (paper Thm 3.1), and a wide one is
    :math:`[\tau I \mid 0]`.

    A kernel of shape ``(c_out, c_in/groups, *k)`` (IDIC, paper Eq. 10) gets the same pattern on its
    ``(c_out, c_in/groups * prod(k))`` flattening: output channel ``m`` reads input channel
    ``(m mod (c_in k)) // prod(k)`` at tap ``m mod prod(k)``, i.e. shifted copies of the input.

    Loose condition (paper Sec. 3.1.2): every :math:`\tau` entry becomes :math:`\tau + \epsilon z`,
    :math:`z \sim \mathcal{N}(0, 1)`, ``loose`` being the std :math:`\epsilon`; all other entries
    stay exactly zero. ``loose=0`` turns it off. The noise is drawn in float32 and vanishes when the
    tensor is float16 or bfloat16.

    Args:
        tensor: a floating-point tensor with at least 2 dimensions (any device; meta is a no-op).
        gain: :math:`\tau`; ``sqrt(2)`` for the first layer of a ReLU network, 1 elsewhere
            (paper appendix B).
        loose: std of the perturbation of the identity entries (default 1e-6).
        generator: the random generator for the perturbation (its device may differ from the
            tensor's); the same seed gives bitwise the same tensor.

    Returns:
        ``tensor``, filled in place.
    """
    fn = "identity_"
    gain = _check_scalar(gain, "gain", fn)
    loose = _check_scalar(loose, "loose", fn)
    if not _check_tensor(tensor, fn):
        return tensor
    with torch.no_grad():
        n_rows, n_cols = tensor.shape[0], math.prod(tensor.shape[1:])
        rows = torch.arange(n_rows, device=tensor.device)
        values = _diagonal_values(n_rows, gain, loose, generator, tensor)
        tensor.zero_()
        tensor[_flat_index(tensor, rows, _idi_columns(rows, n_cols))] = values
    return tensor


def channel_identity_(
    tensor: Tensor,
    gain: float = 1.0,
    loose: float = DEFAULT_LOOSE,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Channel-maintain convolution: IDI on the centre tap, zeros on every other tap.

    ``K[m, m mod c_in, centre] = gain`` (+ the loose perturbation), the ZerO / Dirac-style layout
    the paper contrasts patch-maintain with (paper Sec. 3.1.3, Table 2 setting (i)). With
    ``c_out == c_in``, stride 1 and "same" padding, the convolution is the identity map. The
    centre of an even kernel size ``k`` is tap ``k // 2``. For a 2-D tensor this is
    :func:`identity_`. Arguments as in :func:`identity_`.
    """
    fn = "channel_identity_"
    gain = _check_scalar(gain, "gain", fn)
    loose = _check_scalar(loose, "loose", fn)
    if not _check_tensor(tensor, fn):
        return tensor
    if tensor.dim() == 2:
        return identity_(tensor, gain=gain, loose=loose, generator=generator)
    with torch.no_grad():
        n_rows = tensor.shape[0]
        rows = torch.arange(n_rows, device=tensor.device)
        values = _diagonal_values(n_rows, gain, loose, generator, tensor)
        tensor.zero_()
        tensor[(rows, rows % tensor.shape[1], *_centre(tensor))] = values
    return tensor


def zero_preserving_(tensor: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    r"""Fill ``tensor`` with the zero-preserving IDIZ (2-D) or IDIZC (>= 3-D) pattern.

    Each output is :math:`\varepsilon (x_a - x_b)` for two distinct inputs, so for i.i.d. inputs of
    variance :math:`\sigma^2` it has mean 0 and variance :math:`2\varepsilon^2\sigma^2` (paper
    Eq. 12): the branch is (almost) zero, as identity control needs, yet the weight is non-zero and
    receives gradient, which cures the dead neurons of an exact zero (paper Sec. 3.2). For
    :math:`W \in \mathbb{R}^{D_{out} \times D_{in}}` (SPEC §3):

    * :math:`D_{out} < D_{in}`: :math:`W_{m,m} = \varepsilon` and
      :math:`W_{m, D_{out} + (m \bmod (D_{in} - D_{out}))} = -\varepsilon` (the ``-eps`` IDI of the
      remaining block);
    * :math:`D_{out} \ge D_{in} > 1` (square included, SPEC [decision]):
      :math:`W_{m, m \bmod D_{in}} = \varepsilon`, :math:`W_{m, (m+1) \bmod D_{in}} = -\varepsilon`;
    * :math:`D_{in} = 1` (no difference exists, SPEC [decision]): :math:`W_{m,0} = (-1)^m \varepsilon`.

    A kernel gets the same pattern on its ``(c_out, -1)`` flattening (IDIZC).

    Args:
        tensor: a floating-point tensor with at least 2 dimensions.
        eps: the coefficient :math:`\varepsilon` (default 1e-6); 0 gives an exact zero.
    """
    fn = "zero_preserving_"
    eps = _check_scalar(eps, "eps", fn)
    if not _check_tensor(tensor, fn):
        return tensor
    with torch.no_grad():
        n_rows, n_cols = tensor.shape[0], math.prod(tensor.shape[1:])
        rows = torch.arange(n_rows, device=tensor.device)
        tensor.zero_()
        if n_cols == 1:
            sign = 1.0 - 2.0 * (rows % 2).to(tensor.dtype)
            tensor[_flat_index(tensor, rows, torch.zeros_like(rows))] = eps * sign
            return tensor
        if n_rows < n_cols:
            plus = rows
            minus = n_rows + rows % (n_cols - n_rows)
        else:
            plus = rows % n_cols
            minus = (rows + 1) % n_cols
        tensor[_flat_index(tensor, rows, plus)] = eps
        tensor[_flat_index(tensor, rows, minus)] = -eps
    return tensor


def _sylvester_hadamard_block(n_rows: int, n_cols: int, device: torch.device) -> Tensor:
    """``H_p[:n_rows, :n_cols]`` of the Sylvester Hadamard matrix, entries ``(-1)^popcount(i & j)``.

    ``popcount(i & j) = sum_b bit_b(i) * bit_b(j)`` is the product of the ``(n_rows, B)`` and
    ``(B, n_cols)`` bit matrices (B = bits of the largest index, exact in float32), so only the
    requested block is built, never the full ``p x p`` matrix.
    """
    n_bits = max(1, (max(n_rows, n_cols) - 1).bit_length())
    shifts = torch.arange(n_bits, device=device)
    row_bits = ((torch.arange(n_rows, device=device)[:, None] >> shifts) & 1).to(torch.float32)
    col_bits = ((torch.arange(n_cols, device=device)[:, None] >> shifts) & 1).to(torch.float32)
    popcount = row_bits @ col_bits.T
    return 1.0 - 2.0 * torch.remainder(popcount, 2.0)


def hadamard_(tensor: Tensor) -> Tensor:
    r"""ZerO initialisation (Zhao et al., 2022, Algorithm 1): partial identity or scaled Hadamard.

    For :math:`W \in \mathbb{R}^{m \times n}`:

    * :math:`m \le n`: :math:`W = I_{m \times n}` (partial identity; dimension kept or reduced);
    * :math:`m > n`: with :math:`p = 2^{\lceil \log_2 m \rceil}`,
      :math:`W = I_{m \times p} \, (H_p / \sqrt{p}) \, I_{p \times n} = H_p[{:}m, {:}n] / \sqrt{p}`,
      :math:`H_p` the Sylvester Hadamard matrix; unlike zero padding, every output row differs,
      which lifts the rank constraint of a dimension-increasing layer.

    A kernel ``(c_out, c_in/groups, *k)`` gets zeros everywhere except its centre tap (``k // 2``
    for even sizes), which holds that ``c_out x c_in/groups`` matrix (ZerO's convolution rule).
    """
    fn = "hadamard_"
    if not _check_tensor(tensor, fn):
        return tensor
    with torch.no_grad():
        m, n = tensor.shape[0], tensor.shape[1]
        target = tensor if tensor.dim() == 2 else tensor[(slice(None), slice(None), *_centre(tensor))]
        tensor.zero_()
        if m <= n:
            rows = torch.arange(m, device=tensor.device)
            target[rows, rows] = 1.0
        else:
            p = 1 << (m - 1).bit_length()
            # +-1 is exact in every dtype, so scaling after the cast rounds 1/sqrt(p) once
            block = _sylvester_hadamard_block(m, n, tensor.device).to(tensor.dtype)
            target.copy_(block.mul_(1.0 / math.sqrt(p)))
    return tensor
