r"""The loose condition's noise (paper Sec. 3.1.2) as a function of (seed, tensor key, row), not of a stream.

Each identity entry of row ``m`` becomes :math:`\tau + \epsilon z_m`. Here :math:`z_m` is computed from
``(seed, key, m)`` alone: a 32-bit integer hash of those three numbers gives two uniforms, and the
Box-Muller transform (in float64) turns them into one standard normal, rounded to float32. So
a tensor's noise does not depend on how it is split across ranks (a sharded tensor gets, entry for
entry, the noise of the unsharded one) nor on the order in which tensors are initialised.

The uniforms lie in ``[2^-33, 1 - 2^-33]``, so :math:`|z_m| \le` :data:`Z_MAX`; the tail beyond
6.76 sigma (probability 1.4e-11) is not drawn. The hash uses only exact int64 arithmetic (every
product stays below 2^63), identical on every device; rows up to 2^33 are distinct. The float64
``log``/``cos`` of the transform are not correctly rounded on every device, so two devices (or CPU
thread counts) can differ in the last float64 bit; the float32 result then differs with probability
about 2^-29 per entry. Every rank of a sharded model computes the same full batch of rows, so sharded
and unsharded results are bitwise equal.
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["Z_MAX", "draw_seed", "tensor_key", "standard_normal", "vanishes"]

Z_MAX = 6.77  # sqrt(-2 ln 2^-33) = 6.764..., the largest |z| the transform can give
_M32 = 0xFFFFFFFF
_MIX = 0x045D9F3B  # < 2^31, so a 32-bit value times it stays below 2^63: exact in int64


def draw_seed(generator: Optional[torch.Generator]) -> int:
    """One 62-bit seed from ``generator`` (or the global CPU generator when None).

    A CUDA generator is advanced through its Philox offset, so no value crosses from the device
    (no synchronisation); any other generator gives one ``randint`` draw on its device.
    """
    if generator is not None and generator.device.type == "cuda":
        offset = generator.get_offset()
        generator.set_offset(offset + 4)  # Philox offsets advance in steps of 4
        return tensor_key(generator.initial_seed(), str(offset)) >> 2
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def tensor_key(seed: int, name: str) -> int:
    """A 64-bit key for the tensor called ``name`` under ``seed`` (stable across processes)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(h):
    """A 32-bit integer bijection with good avalanche (xor-shift-multiply, two rounds)."""
    h = h ^ (h >> 16)
    h = (h * _MIX) & _M32
    h = h ^ (h >> 16)
    h = (h * _MIX) & _M32
    return h ^ (h >> 16)


def standard_normal(segments: Sequence[tuple[int, int, int]], device: torch.device | str) -> Tensor:
    """``z`` (float32) for the rows ``[start, start + n)`` of each ``(key, start, n)``, concatenated.

    All segments are computed in one batch of about 40 element-wise operations, whatever their number.
    Row ``m`` of key ``k`` hashes the counters ``2m`` and ``2m + 1`` (its two uniforms) with ``k``.
    """
    total = sum(n for _, _, n in segments)
    if len(segments) == 1:
        key, start, _ = segments[0]
        counter = torch.arange(2 * start, 2 * (start + total), device=device, dtype=torch.int64)
        lo, hi = key & _M32, key >> 32
    else:
        # per-segment (first position, key halves, counter shift): one small host table, copied to the
        # device without a synchronisation; each position finds its segment by a binary search
        starts, table, at = [], [], 0
        for key, start, n in segments:
            starts.append(2 * at)
            table += [key & _M32, key >> 32, 2 * (start - at)]
            at += n
        flat = torch.tensor(starts + table, dtype=torch.int64).to(device, non_blocking=True)
        position = torch.arange(2 * total, device=device, dtype=torch.int64)
        per = flat[len(segments):].view(-1, 3)[torch.searchsorted(flat[:len(segments)], position, right=True) - 1]
        lo, hi, counter = per[:, 0], per[:, 1], position + per[:, 2]
    u = (_mix(_mix(counter ^ lo) ^ hi).double() + 0.5) * 2.0**-32
    u1, u2 = u.view(-1, 2).unbind(1)
    return ((u1.log() * -2.0).sqrt() * (u2 * (2.0 * math.pi)).cos()).float()


@functools.lru_cache(maxsize=256)
def vanishes(gain: float, loose: float, dtype: torch.dtype) -> bool:
    """Whether ``gain + loose * z`` rounds to ``gain`` in ``dtype`` for every ``|z| <= Z_MAX``.

    Evaluated with the very operations of the write (float32 ``z``, work dtype float64 for float64
    tensors and float32 otherwise); the rounding is monotone in ``z``, so the two extremes decide.
    True for the default ``loose=1e-6`` in bfloat16 and float16, where the noise is below half the
    spacing near 1.0 and skipping it gives bitwise the same tensor.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    z = torch.tensor([-Z_MAX, Z_MAX], dtype=torch.float32)
    ends = (z.to(work) * loose + gain).to(dtype)
    return bool((ends == torch.tensor(gain, dtype=work).to(dtype)).all())
