"""Writing the sparse patterns of :mod:`idinit.init` with strided views, many tensors at once.

Every pattern of IDInit (IDI / IDIC, channel-maintain, IDIZ / IDIZC) and ZerO's partial identity is a
union of *cyclic diagonals* of the ``(rows, cols)`` matrix (a kernel's ``(c_out, -1)`` flattening):
the entries ``(m, base + (m + phase) mod period)`` for every row ``m``. Within one period these are a
run of consecutive rows and columns, i.e. one strided view with step ``row_stride + col_stride``; the
periods repeat every ``period`` rows. So a pattern restricted to any box of rows and columns (a row
block, a rank's shard) is at most three 2-D strided views (a partial first period, the full periods,
a partial last period), written with ``fill_`` or ``copy_``: no index tensor is built, nothing is
copied from the host, and the cost is one pass of ``zero_()`` plus O(rows) element writes.

:func:`fill` takes every tensor of a model at once: one ``_foreach_zero_`` over all of them, one batch
of loose-condition noise for all identity entries (:mod:`idinit.noise`), then the strided writes, collected
and issued as a few ``_foreach_add_`` / ``_foreach_copy_`` calls; the writes of one tensor geometry (a
transformer has a handful, each repeated per layer) are worked out once and replayed on the others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from idinit.noise import standard_normal, tensor_key, vanishes
from idinit.sharded import Region, local_and_offset, regions

__all__ = ["Job", "fill", "PATTERNS"]

PATTERNS = ("identity_", "channel_identity_", "zero_preserving_", "hadamard_")


@dataclass
class Job:
    """Fill ``tensor`` (read through ``layout``, in ``blocks`` row blocks) with ``init(**args)``;
    ``name`` keys its loose-condition noise."""

    name: str
    tensor: Tensor
    init: str
    args: dict = field(default_factory=dict)
    layout: str = "rows"
    blocks: int = 1
    box: tuple = field(init=False, repr=False)  # (local data, global offset): looked up once

    def __post_init__(self):  # a non-tensor is refused by the validation, which reads .local
        self.box = local_and_offset(self.tensor) if isinstance(self.tensor, Tensor) else (self.tensor, ())

    @property
    def local(self) -> Tensor:
        return self.box[0]


def _pieces(row0: int, n: int, period: int, phase: int, base: int, col0: int, width: int):
    """The entries ``(m, base + (m + phase) mod period)`` with ``m`` in ``[row0, row0 + n)`` and column in
    ``[col0, col0 + width)``, as ``(first row m, local column, periods, run length)`` pieces; piece
    entry ``(b, r)`` is row ``m + b * period + r``, local column ``column + r``."""
    k_lo, k_hi = max(col0 - base, 0), min(col0 + width - base, period)
    if k_lo >= k_hi or n <= 0:
        return []
    a, b = row0 + phase, row0 + n + phase  # shifted rows m + phase
    first, last = a // period, (b - 1) // period
    found = []
    # periods whose run lies whole inside [a, b) make one piece; a cut first or last period its own
    full_lo = first if a <= first * period + k_lo else first + 1
    full_hi = last if b >= last * period + k_hi else last - 1
    for block in sorted({first, last}):
        if full_lo <= block <= full_hi:
            continue
        lo, hi = max(block * period + k_lo, a), min(block * period + k_hi, b)
        if hi > lo:
            found.append((lo, 1, hi - lo))
    if full_hi >= full_lo:
        found.append((full_lo * period + k_lo, full_hi - full_lo + 1, k_hi - k_lo))
    return [(s - phase, base + s % period - col0, blocks, length) for s, blocks, length in found]


def _column_stride(local: Tensor) -> Optional[int]:
    """Stride of the ``(rows, -1)`` flattening's columns, or None when the trailing dims do not merge."""
    dims = [(size, stride) for size, stride in zip(local.shape[1:], local.stride()[1:]) if size != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return dims[-1][1] if dims else 1


class _Writes:
    """The strided writes of a :func:`fill`, collected and then issued as a few ``torch._foreach_*`` calls
    (one per device, dtype and value) instead of one Python-level call each: with hundreds of tensors the
    per-call cost, not the bytes, is what a model's init pays beyond one ``zero_()`` pass. The targets
    are zeroed and pairwise disjoint, so adding a value writes it exactly (``0 + v`` rounds as ``v``)."""

    def __init__(self):
        self.scalars: dict = {}
        self.copies: dict = {}
        self.recording: Optional[list] = None  # the current job's writes, as geometry (see fill())
        self.direct = False  # the current job wrote something itself (an index write, a Hadamard block)

    def fill(self, view: Tensor, value: float) -> None:
        self.scalars.setdefault((view.device, view.dtype, value), []).append(view)
        if self.recording is not None:
            self.recording.append((view.shape, view.stride(), view.storage_offset(), value, None))

    def copy(self, view: Tensor, values: Tensor) -> None:
        group = self.copies.setdefault((view.device, view.dtype, values.dtype), ([], []))
        group[0].append(view)
        group[1].append(values)
        if self.recording is not None:
            self.recording.append((view.shape, view.stride(), view.storage_offset(), values,
                                   (values.shape, values.stride(), values.storage_offset())))

    def flush(self) -> None:
        for (_, dtype, value), views in self.scalars.items():
            if dtype.itemsize == 1:  # the float8 formats have fill_ but no add_
                for view in views:
                    view.fill_(value)
            else:
                torch._foreach_add_(views, value)
        for views, values in self.copies.values():
            torch._foreach_copy_(views, values)
        self.scalars.clear()
        self.copies.clear()


def _write_cyclic(region: Region, base: int, period: int, phase: int, value: Union[float, Tensor],
                  writes: _Writes) -> None:
    """Write ``value`` (a number, or one value per pattern row) on a cyclic diagonal within ``region``
    (a zeroed one: the strided writes go through ``writes``)."""
    local = region.local
    s0, sc = local.stride(0), _column_stride(local)
    for m, j, blocks, length in _pieces(region.row0, local.shape[0], period, phase, base, region.col0, region.width):
        i = m - region.row0
        if sc is not None:
            view = local.as_strided((blocks, length), (period * s0, s0 + sc), local.storage_offset() + i * s0 + j * sc)
            target = None
        else:  # trailing dims that do not merge (e.g. kernel[:, :, ::2]): index the entries
            writes.direct = True
            steps = torch.arange(blocks, device=local.device)[:, None] * period
            within = torch.arange(length, device=local.device)[None, :]
            cols = _unravel((j + within).expand(blocks, length), local.shape[1:])
            target = (i + steps + within, *cols)
        if isinstance(value, Tensor):
            values = value.as_strided((blocks, length), (period, 1), value.storage_offset() + m)
            if target is None:
                writes.copy(view, values)
            else:
                local[target] = values
        elif target is None:
            writes.fill(view, value)
        else:
            local[target] = value


def _unravel(flat: Tensor, sizes) -> list[Tensor]:
    """Row-major multi-index of ``flat`` into ``sizes`` (the inverse of ``reshape(-1)``)."""
    idx = []
    for size in reversed(sizes):
        idx.append(flat % size)
        flat = flat // size
    return idx[::-1]


def _centre_region(region: Region) -> Region:
    """The centre tap (``k // 2`` per spatial dim, as ``torch.nn.init.dirac_``) of a kernel region."""
    centre = tuple(k // 2 for k in region.trailing[1:])
    local = region.local[(slice(None), slice(None), *centre)]
    return Region(local, region.rows, region.trailing[:1], region.row0, region.col0 // math.prod(region.trailing[1:]),
                  region.block)


def _zero_preserving(region: Region, eps: float, writes: _Writes) -> None:
    """IDIZ / IDIZC (paper Eq. 12): ``+eps`` / ``-eps`` pairs, see :func:`idinit.zero_preserving_`."""
    rows, cols = region.rows, region.n_cols
    if cols == 1:  # W[m, 0] = (-1)^m eps
        writes.direct = True
        column = region.local.flatten(1)[:, 0]  # the trailing dims are all of size 1: a view
        column.fill_(eps)
        column[(region.row0 + 1) % 2::2].fill_(-eps)
        return
    if rows < cols:
        _write_cyclic(region, 0, cols, 0, eps, writes)
        _write_cyclic(region, rows, cols - rows, 0, -eps, writes)
    else:
        _write_cyclic(region, 0, cols, 0, eps, writes)
        _write_cyclic(region, 0, cols, 1, -eps, writes)


def _sylvester_hadamard_block(rows: range, cols: range, device) -> Tensor:
    """``H_p[rows, cols]`` of the Sylvester Hadamard matrix, entries ``(-1)^popcount(i & j)``.

    ``popcount(i & j) = sum_b bit_b(i) * bit_b(j)`` is the product of the ``(rows, B)`` and ``(B, cols)``
    bit matrices (B = bits of the largest index, exact in float32), so only the requested block is
    built, never the full ``p x p`` matrix.
    """
    n_bits = max(1, (max(rows.stop, cols.stop) - 1).bit_length())
    shifts = torch.arange(n_bits, device=device)
    row_bits = ((torch.arange(rows.start, rows.stop, device=device)[:, None] >> shifts) & 1).to(torch.float32)
    col_bits = ((torch.arange(cols.start, cols.stop, device=device)[:, None] >> shifts) & 1).to(torch.float32)
    return 1.0 - 2.0 * torch.remainder(row_bits @ col_bits.T, 2.0)


def _hadamard(region: Region, writes: _Writes) -> None:
    """ZerO (Zhao et al. 2022, Alg. 1) on the matrix or the kernel's centre tap, see :func:`idinit.hadamard_`."""
    target = region if len(region.trailing) == 1 else _centre_region(region)
    m, n = target.rows, target.n_cols
    if m <= n:
        _write_cyclic(target, 0, n, 0, 1.0, writes)
        return
    p = 1 << (m - 1).bit_length()
    local = target.local
    writes.direct = True
    block = _sylvester_hadamard_block(range(target.row0, target.row0 + local.shape[0]),
                                      range(target.col0, target.col0 + local.shape[1]), local.device)
    # +-1 times 1/sqrt(p) in float32 (float64 for float64 tensors), then one rounding to the tensor's
    # dtype: what a multiplication in the dtype itself gives, also where it has no multiplication (float8)
    work = torch.float64 if local.dtype == torch.float64 else torch.float32
    local.copy_(block.to(work).mul_(1.0 / math.sqrt(p)))


def _noisy(job: Job) -> bool:
    loose = job.args.get("loose", 0.0)
    return job.init in ("identity_", "channel_identity_") and loose > 0 and \
        not vanishes(job.args.get("gain", 1.0), loose, job.tensor.dtype)


def fill(jobs: list[Job], seed: Optional[int]) -> None:
    """Write every job (in place, under ``torch.no_grad()``); the loose noise of job ``name``'s block ``b``
    comes from ``(seed, "name#b", row)`` only. Jobs are assumed validated (:func:`idinit.init.check`)."""
    with torch.no_grad():
        locals_ = [job.local for job in jobs]
        if locals_:
            torch._foreach_zero_(locals_)
        ones = [local for job, local in zip(jobs, locals_) if job.init == "ones_"]
        if ones:
            torch._foreach_add_(ones, 1.0)
        values = _identity_values([job for job in jobs if _noisy(job)], seed)
        writes = _Writes()
        # Tensors of one geometry (the layers of a transformer: a handful of shapes, each many times) get
        # the same strided writes at the same offsets: worked out once per fill() from the first such job
        # (its regions and pieces), then replayed on the others as bare as_strided views.
        geometry: dict = {}
        for job in jobs:
            if job.init not in PATTERNS:
                continue
            local = job.local
            key = (job.init, tuple(sorted(job.args.items())), job.layout, job.blocks, tuple(job.tensor.shape),
                   tuple(local.shape), local.stride(), job.box[1], (job.name, 0) in values, local.device)
            recorded = geometry.get(key)
            if recorded is not None:
                _replay(job, local, recorded, values, writes)
                continue
            writes.recording, writes.direct = [], False
            for region in regions(job.tensor, job.layout, job.blocks, job.box):
                _write(job, region, values.get((job.name, region.block)), writes)
            if not writes.direct:
                geometry[key] = _relative(job, local, writes.recording, values)
            writes.recording = None
        writes.flush()


def _relative(job: Job, local: Tensor, recording: list, values: dict) -> list:
    """A job's recorded writes with offsets relative to its local data (and to its noise blocks)."""
    base = local.storage_offset()
    found = []
    for shape, stride, offset, value, value_view in recording:
        if value_view is None:
            found.append((shape, stride, offset - base, value, None))
            continue
        # the block whose noise the values are a view of
        b = next(b for (name, b), v in values.items() if name == job.name and v.storage_offset() <= value_view[2]
                 < v.storage_offset() + v.numel() and v.untyped_storage().data_ptr() == value.untyped_storage().data_ptr())
        found.append((shape, stride, offset - base, b,
                      (value_view[0], value_view[1], value_view[2] - values[(job.name, b)].storage_offset())))
    return found


def _replay(job: Job, local: Tensor, recorded: list, values: dict, writes: _Writes) -> None:
    """The writes recorded on a job of the same geometry, on ``job``'s local data."""
    base = local.storage_offset()
    for shape, stride, offset, value, value_view in recorded:
        view = local.as_strided(shape, stride, base + offset)
        if value_view is None:
            writes.fill(view, value)
        else:
            block_values = values[(job.name, value)]
            size, vstride, voffset = value_view
            writes.copy(view, block_values.as_strided(size, vstride, block_values.storage_offset() + voffset))


def _identity_values(jobs: list[Job], seed: Optional[int]) -> dict:
    """``{(name, block): gain + loose * z}`` for every row of every block of the noisy jobs, computed in one
    batch per device and (dtype, gain, loose). Every block's full rows are computed, whichever rows this
    process holds, so every rank's batch equals the unsharded one."""
    groups: dict = {}
    for job in jobs:
        rows = job.tensor.shape[1 if job.layout in ("t", "transpose01") else 0]
        per_block = rows // job.blocks if job.blocks > 1 and rows % job.blocks == 0 else rows
        device = job.local.device
        key = (device, job.tensor.dtype, float(job.args.get("gain", 1.0)), float(job.args["loose"]))
        for b in range(rows // per_block):
            groups.setdefault(key, []).append((job.name, b, per_block))
    found = {}
    for (device, dtype, gain, loose), segments in groups.items():
        z = standard_normal([(tensor_key(seed, f"{name}#{b}"), 0, n) for name, b, n in segments], device)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        v = (z.to(acc) * loose + gain).to(dtype)  # formed in float32 (float64 tensors: float64), then cast
        start = 0
        for name, b, n in segments:
            found[(name, b)] = v[start:start + n]
            start += n
    return found


def _write(job: Job, region: Region, values: Optional[Tensor], writes: Optional[_Writes] = None) -> None:
    """One job's pattern on one region (already zeroed); the strided writes are collected in ``writes``
    (written at once when None)."""
    if writes is None:
        writes = _Writes()
        _write(job, region, values, writes)
        writes.flush()
        return
    init, args = job.init, job.args
    if region.local.numel() == 0:
        return
    if init in ("identity_", "channel_identity_"):
        target = region if init == "identity_" or len(region.trailing) == 1 else _centre_region(region)
        _write_cyclic(target, 0, target.n_cols, 0, values if values is not None else float(args.get("gain", 1.0)),
                      writes)
    elif init == "zero_preserving_":
        _zero_preserving(region, float(args.get("eps", 0.0)), writes)
    elif init == "hadamard_":
        _hadamard(region, writes)
    else:
        raise ValueError(f"{job.name}: {init!r} is not a pattern of idinit.init")
