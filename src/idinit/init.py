r"""Tensor initialisers of IDInit (Pan et al., ICLR 2025) and of ZerO (Zhao et al., 2022).

Flat, in-place functions in the style of :mod:`torch.nn.init`: each fills ``tensor`` under
``torch.no_grad()`` and returns it. A tensor's dim 0 is its *output* dimension, as in
``nn.Linear.weight`` ``(D_out, D_in)`` and ``nn.Conv2d.weight`` ``(c_out, c_in/groups, *k)``.
Tensors of three or more dimensions are convolution kernels; they are read as the matrix
``K.reshape(c_out, -1)`` whose column ``j`` is ``(c_in_index, *tap)`` in row-major order
(our reading of paper Eq. 10, which does not fix the order), without ever materialising that reshape: the pattern is written through
strided views of the tensor itself (:mod:`idinit.patterns`), so transposed or sliced views, and the
local shards of a DTensor (:mod:`idinit.sharded`), are filled in place.

Every function writes a pattern with at most two non-zeros per output row, so its cost is one
``zero_()`` pass plus O(D_out) element writes; no dense ``eye`` of the full size is built, no index
tensor, nothing copied from the host. Every argument is checked before the first write: a refused
call leaves the tensor as it was.

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

import functools
import math
import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor

from idinit.noise import Z_MAX, draw_seed
from idinit.patterns import Job, fill
from idinit.sharded import check_placements, local_of

__all__ = ["identity_", "channel_identity_", "zero_preserving_", "hadamard_"]

# The paper's default values: loose-condition std and zero-preserving coefficient (Sec. 3.1.2, 3.2).
DEFAULT_LOOSE = 1e-6
DEFAULT_EPS = 1e-6

_PACKED = tuple(getattr(torch, n) for n in ("float4_e2m1fn_x2",) if hasattr(torch, n))


# ---------------------------------------------------------------------------------------------
# validation: everything is checked before the first write


def writable(tensor: Tensor, fn: str, layout: str = "rows", local: Optional[Tensor] = None) -> None:
    """Raise if ``tensor`` cannot be written in place with a defined result (any initialiser); ``local`` is
    its local data (:func:`idinit.sharded.local_of`) when the caller has it already."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_nested:
        raise ValueError(f"{fn}: nested tensors are not supported")
    if tensor.layout != torch.strided:
        raise ValueError(f"{fn}: needs a dense (strided) tensor, got layout {tensor.layout}")
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(f"{fn}: an inference tensor can only be written inside torch.inference_mode(); "
                         "clone() it outside inference mode first")
    if tensor.dtype in _PACKED:
        raise ValueError(f"{fn}: dtype {tensor.dtype} packs two values per element; initialise a wider "
                         "tensor and convert it")
    reason = check_placements(tensor, fn, layout, pattern=False)
    if reason:
        raise ValueError(reason)
    if tensor.device.type != "meta" and _overlaps(local if local is not None else local_of(tensor)):
        raise ValueError(f"{fn}: several elements of this tensor share one memory location (an expand()ed or "
                         "as_strided view); writing it would give them all the last value: clone() it first")


def _overlaps(tensor: Tensor) -> bool:
    """Whether two elements of ``tensor`` share memory (torch.nn.init refuses these as well)."""
    if tensor.is_contiguous():
        return False
    verdict = torch._debug_has_internal_overlap(tensor)  # 0: no, 1: yes, 2: too hard to tell
    if verdict != 2:
        return verdict == 1
    # sufficient condition: each stride exceeds the extent of all smaller ones
    reach = 0
    for size, stride in sorted(((s, abs(st)) for s, st in zip(tensor.shape, tensor.stride()) if s > 1),
                               key=lambda d: d[1]):
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def _check_tensor(tensor: Tensor, fn: str, local: Optional[Tensor] = None) -> bool:
    """Raise on tensors no pattern is defined for; return False when there is nothing to write."""
    writable(tensor, fn, local=local)
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
    if not _signed(tensor.dtype):
        raise ValueError(f"{fn}: dtype {tensor.dtype} cannot hold 0 and negative values, which the patterns need")
    if tensor.dim() >= 3 and any(s == 0 for s in tensor.shape[2:]):
        raise ValueError(f"{fn}: kernel of shape {tuple(tensor.shape)} has a zero-sized spatial dimension")
    if tensor.numel() == 0:
        warnings.warn(f"{fn}: initialising a zero-element tensor of shape {tuple(tensor.shape)}: nothing to do")
        return False
    return tensor.device.type != "meta"  # meta tensors carry no data: validated, then left alone


@functools.lru_cache(maxsize=None)
def _signed(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds 0 and -1 exactly (float8_e8m0fnu, a scale format, holds neither)."""
    try:
        return torch.tensor([0.0, -1.0]).to(dtype).float().tolist() == [0.0, -1.0]
    except RuntimeError:
        return False


def _check_scalar(value, name: str, fn: str) -> float:
    """A finite number >= 0; Python and NumPy numbers and 0-d real tensors are accepted (as torch.nn.init)."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: {name} must be finite and >= 0, got {value}")
    return value


def _check_value(value: float, dtype: torch.dtype, what: str, fn: str) -> None:
    """Refuse a value the tensor's dtype cannot hold: overflow to inf, or a non-zero that rounds to 0."""
    if value in _HELD.get(dtype, ()):
        return
    info = torch.finfo(dtype)
    if value > info.max:
        raise ValueError(f"{fn}: {what} = {value:.4g} overflows {dtype} (largest finite {info.max:.4g})")
    if value > 0 and float(torch.tensor(value, dtype=torch.float64).to(dtype)) == 0.0:
        raise ValueError(f"{fn}: {what} = {value:.4g} rounds to 0 in {dtype} (smallest positive "
                         f"{info.smallest_normal * info.eps:.4g}); pass 0 to mean zero")
    _HELD.setdefault(dtype, set()).add(value)


_HELD: dict = {}  # values already found representable, per dtype (a plan checks the same few again and again)


def check_generator(generator, devices, fn: str) -> None:
    """A ``torch.Generator`` on the CPU or on the tensors' device, or None."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{fn}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    kind = generator.device.type
    if kind != "cpu" and any(torch.device(d).type != kind for d in devices):
        raise ValueError(f"{fn}: generator is on {generator.device}, the tensor on "
                         f"{', '.join(sorted({str(d) for d in devices}))}; pass a CPU generator or one on the "
                         "tensor's device")


def check(job: Job, fn: str) -> bool:
    """Validate one job (tensor, arguments against its dtype) without writing; False: nothing to write."""
    if job.init not in ("identity_", "channel_identity_", "zero_preserving_", "hadamard_"):
        writable(job.tensor, fn, job.layout, job.local)
        return job.tensor.numel() > 0 and job.tensor.device.type != "meta"
    go = _check_tensor(job.tensor, fn, job.local)
    dtype, args = job.tensor.dtype, job.args
    if "gain" in args:
        _check_value(args["gain"] + args.get("loose", 0.0) * Z_MAX, dtype, "gain + loose * 6.77 (the largest z)", fn)
        _check_value(args["gain"], dtype, "gain", fn)
    if "eps" in args:
        _check_value(args["eps"], dtype, "eps", fn)
    reason = check_placements(job.tensor, fn, job.layout)
    if reason:
        raise ValueError(reason)
    return go


def _derived_from(tensor: Tensor) -> Optional[str]:
    """The autograd node ``tensor`` (or the tensor it is a view of) was computed by; None for a leaf."""
    base = tensor
    while base._is_view() and base._base is not None:
        base = base._base
    return type(base.grad_fn).__name__ if base.grad_fn is not None else None


def _run(fn: str, tensor: Tensor, init: str, args: dict, generator=None, random: bool = False) -> Tensor:
    """Validate, then write one tensor: the body of every public initialiser."""
    job = Job(fn, tensor, init, args)
    go = check(job, fn)
    if random:
        check_generator(generator, [job.local.device] if tensor.device.type != "meta" else [], fn)
    if not go:
        return tensor
    derived = _derived_from(tensor)
    if derived is not None:
        warnings.warn(f"{fn}: this tensor is computed from others ({derived}), e.g. the output of a "
                      "parametrization (weight_norm, spectral_norm, orthogonal): what is written here is lost when "
                      "it is recomputed; initialise the tensors it comes from (module.parametrizations.weight."
                      "original) instead", stacklevel=3)
    seed = draw_seed(generator) if random and args.get("loose", 0.0) > 0 else None
    fill([job], seed)
    return tensor


# ---------------------------------------------------------------------------------------------
# public initialisers


def identity_(
    tensor: Tensor,
    gain: float = 1.0,
    loose: float = DEFAULT_LOOSE,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Fill ``tensor`` with the padded identity IDI (2-D) or the patch-maintain IDIC (>= 3-D).

    For a matrix :math:`W \in \mathbb{R}^{D_{out} \times D_{in}}` (paper Eq. 3):

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
    stay exactly zero. ``loose=0`` turns it off. ``z`` is float32 (the sum is formed in float32, in
    float64 for float64 tensors) and vanishes when the tensor is float16 or bfloat16. ``z`` of row
    ``m`` is a function of ``(seed, m)`` (:mod:`idinit.noise`), where ``seed`` is one number drawn
    from ``generator``: so a CPU generator gives the same tensor on every device, and a DTensor
    (FSDP2, tensor parallel) gets on each rank exactly the entries of the unsharded tensor.

    A DTensor sharded along dim 0 or 1 (``Shard``) or replicated is written shard by shard in place,
    nothing gathered; every rank must pass a generator in the same state (as after the same
    ``torch.manual_seed``), as for any random DTensor operation.

    Args:
        tensor: a floating-point tensor with at least 2 dimensions (any device; meta is a no-op).
        gain: :math:`\tau`; ``sqrt(2)`` for the first layer of a ReLU network, 1 elsewhere
            (paper appendix B).
        loose: std of the perturbation of the identity entries (default 1e-6).
        generator: where the seed of the perturbation comes from (one draw per call
            when ``loose > 0``): a CPU generator, one on the tensor's device,
            or None for the global CPU generator (also for CUDA tensors); the same seed gives bitwise
            the same tensor.

    Returns:
        ``tensor``, filled in place.
    """
    fn = "identity_"
    args = {"gain": _check_scalar(gain, "gain", fn), "loose": _check_scalar(loose, "loose", fn)}
    return _run(fn, tensor, "identity_", args, generator, random=True)


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
    args = {"gain": _check_scalar(gain, "gain", fn), "loose": _check_scalar(loose, "loose", fn)}
    return _run(fn, tensor, "channel_identity_", args, generator, random=True)


def zero_preserving_(tensor: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    r"""Fill ``tensor`` with the zero-preserving IDIZ (2-D) or IDIZC (>= 3-D) pattern.

    Each output is :math:`\varepsilon (x_a - x_b)` for two distinct inputs, so for i.i.d. inputs of
    variance :math:`\sigma^2` it has mean 0 and variance :math:`2\varepsilon^2\sigma^2` (paper
    Eq. 12): the branch is (almost) zero, as identity control needs, yet the weight is non-zero and
    receives gradient, which cures the dead neurons of an exact zero (paper Sec. 3.2). For
    :math:`W \in \mathbb{R}^{D_{out} \times D_{in}}` (paper Eq. 12, Sec. 3.2):

    * :math:`D_{out} < D_{in}`: :math:`W_{m,m} = \varepsilon` and
      :math:`W_{m, D_{out} + (m \bmod (D_{in} - D_{out}))} = -\varepsilon` (the ``-eps`` IDI of the
      remaining block);
    * :math:`D_{out} \ge D_{in} > 1` (square included; a choice of this library):
      :math:`W_{m, m \bmod D_{in}} = \varepsilon`, :math:`W_{m, (m+1) \bmod D_{in}} = -\varepsilon`;
    * :math:`D_{in} = 1` (no difference exists; a choice of this library): :math:`W_{m,0} = (-1)^m \varepsilon`.

    A kernel gets the same pattern on its ``(c_out, -1)`` flattening (IDIZC).

    Args:
        tensor: a floating-point tensor with at least 2 dimensions.
        eps: the coefficient :math:`\varepsilon` (default 1e-6); 0 gives an exact zero.
    """
    fn = "zero_preserving_"
    return _run(fn, tensor, "zero_preserving_", {"eps": _check_scalar(eps, "eps", fn)})


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
    return _run(fn, tensor, "hadamard_", {})
