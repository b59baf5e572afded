"""Where a tensor's data lies in its pattern: plain tensors, row blocks and DTensor shards.

The initialisers of :mod:`idinit.init` write a pattern defined on a whole ``(rows, *trailing)``
matrix. A :class:`Region` is the part of that matrix one process holds: a local tensor plus the
pattern row of its first row and the flattened pattern column of its first column. A plain tensor
is one region holding everything; a fused projection filled block by block gives one region per block;
a DTensor (FSDP2's ``fully_shard``, tensor parallelism) gives the box of the global tensor its local
shard covers, so each rank writes its own entries in place and nothing is gathered.

Supported placements: ``Replicate`` and ``Shard(d)`` along the output dimension (d = 0) or the input
dimension (d = 1) of the pattern, on any number of mesh dimensions; a stack of experts
``(experts, ...)``, along its experts (:func:`local_stack`), and the same stored flat, ``(experts * rows, cols)``,
where no shard boundary falls inside an expert (:func:`local_flat_stack`). A shard cutting a kernel's spatial
dimensions, ``Partial`` and strided sharding are refused before anything is written.

A model sharded by FSDP2 (``fully_shard``) before it is initialised is planned through
:func:`unsharded_view` (its forward pass on global-shape meta parameters, FSDP's hooks set aside, so
that planning communicates nothing and allocates no weight), and what draws from a random stream (the
model's own init, ``torch.nn.init`` entries) draws on a full-size tensor of one parameter (or module) at
a time and keeps its rank's part (:func:`full_size`, :func:`gathered`), so that every rank holds its
part of the unsharded result.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import torch
from torch import Tensor, nn

__all__ = ["Region", "is_dtensor", "local_of", "local_and_offset", "local_flat_stack", "regions", "check_placements",
           "unsharded_view", "gathered", "full_size"]

try:  # torch.distributed is optional (some builds ship without it)
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # pragma: no cover - builds without distributed support
    DTensor = None
try:
    from torch.distributed.fsdp import FSDPModule
except ImportError:  # pragma: no cover
    FSDPModule = None


@dataclass
class Region:
    """``local`` holds pattern rows ``[row0, row0 + local.shape[0])`` of a ``(rows, *trailing)`` pattern
    and, on its ``(rows, -1)`` flattening, the columns ``[col0, col0 + width)``."""

    local: Tensor
    rows: int
    trailing: tuple
    row0: int = 0
    col0: int = 0
    block: int = 0  # which row block of the tensor (fused projections are filled block by block)

    @property
    def n_cols(self) -> int:
        """Columns of the whole pattern (``c_in * prod(k)``)."""
        return math.prod(self.trailing)

    @property
    def width(self) -> int:
        return math.prod(self.local.shape[1:])


def is_dtensor(tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def local_and_offset(tensor: Tensor) -> tuple[Tensor, tuple]:
    """This process's data of ``tensor`` and the global index of its first element."""
    if not is_dtensor(tensor):
        return tensor, (0,) * tensor.dim()
    local_shape, offset = _box(tuple(tensor.shape), tensor.device_mesh, tuple(tensor.placements))
    # the attribute FSDP2 itself reads; to_local() costs an autograd Function call per parameter
    local = getattr(tensor, "_local_tensor", None)
    local = tensor.to_local() if local is None else local
    if tuple(local.shape) != local_shape:  # padded shards keep the padding at the end
        local = local[tuple(slice(0, n) for n in local_shape)]
    return local, offset


@functools.lru_cache(maxsize=4096)
def _box(shape: tuple, mesh, placements: tuple) -> tuple[tuple, tuple]:
    """Local shape and global offset of this rank's shard (a model has a few distinct shapes: cached)."""
    local_shape, offset = compute_local_shape_and_global_offset(shape, mesh, placements)
    return tuple(local_shape), tuple(offset)


def local_stack(tensor: Tensor) -> tuple[Tensor, int]:
    """A stack of matrices ``(n, ...)`` sharded only along its first dimension (FSDP2's ``fully_shard``
    shards dim 0): this process's whole matrices and the index of its first one. Any other placement
    cuts matrices apart (or holds partial sums) and is refused with a ``ValueError``."""
    if not is_dtensor(tensor):
        return tensor, 0
    for placement in tensor.placements:
        if not (isinstance(placement, Replicate) or (type(placement) is Shard and placement.dim % tensor.dim() == 0)):
            raise ValueError(f"a stack of shape {tuple(tensor.shape)} held as a DTensor with placement {placement}: "
                             "only Shard(0) (whole matrices per process) and Replicate are supported; redistribute it, "
                             "or initialise it before sharding it")
    local, offset = local_and_offset(tensor)
    return local, offset[0]


def local_flat_stack(tensor: Tensor, stack: int) -> tuple[Tensor, int]:
    """A 2-D tensor whose rows are ``stack`` equal blocks, one matrix each (a flat stack of experts, DBRX),
    as :func:`local_stack` gives a 3-D one: this process's whole matrices, viewed ``(n, rows, cols)``, and the
    index of its first. Sharded along dim 0, it is supported where every shard boundary, on every process,
    falls between two blocks (e.g. a number of processes that divides ``stack``); any other placement, or
    a boundary inside a block, is refused with a ``ValueError`` on every process alike."""
    rows, cols = tensor.shape
    per = rows // stack
    if not is_dtensor(tensor):
        return tensor.view(stack, per, cols), 0
    pieces = [(0, rows)]
    for size, placement in zip(tensor.device_mesh.shape, tensor.placements):
        if isinstance(placement, Replicate):
            continue
        if type(placement) is not Shard or placement.dim % 2 != 0:
            raise ValueError(f"a stack of {stack} matrices stored flat as shape {(rows, cols)}, held as a DTensor with "
                             f"placement {placement}: only Shard(0) and Replicate are supported; redistribute it, or "
                             "initialise it before sharding it")
        # torch's chunking of each piece along dim 0: ceil(n / size) rows each, the last ones shorter or empty
        pieces = [(start + i * -(-(stop - start) // size), min(stop, start + (i + 1) * -(-(stop - start) // size)))
                  for start, stop in pieces for i in range(size)]
    cut = next((start for start, stop in pieces if start < stop and (start % per or stop % per)), None)
    if cut is not None:
        raise ValueError(f"a stack of {stack} matrices of {per} rows stored flat as shape {(rows, cols)}, held as a "
                         f"DTensor with placements {tuple(tensor.placements)}: a shard cuts a matrix apart (rows from "
                         f"{cut}); shard it over a number of processes that divides {stack}, or initialise it before "
                         "sharding it")
    local, offset = local_and_offset(tensor)
    return local.view(-1, per, cols), offset[0] // per


def local_of(tensor: Tensor) -> Tensor:
    """The data of ``tensor`` this process holds (the tensor itself unless it is a DTensor)."""
    return local_and_offset(tensor)[0]


def _layout_dims(layout: str, ndim: int) -> list[int]:
    """Stored dimension of each pattern dimension."""
    dims = list(range(ndim))
    if layout in ("t", "transpose01"):
        dims[0], dims[1] = 1, 0
    return dims


def check_placements(tensor, fn: str, layout: str = "rows", pattern: bool = True) -> Optional[str]:
    """Why ``tensor``'s placements cannot be written shard by shard (None when they can). A constant fill
    (``pattern=False``) takes any placement but ``Partial`` (whose value is the sum over ranks)."""
    if not is_dtensor(tensor):
        return None
    dims = _layout_dims(layout, tensor.dim())
    for placement in tensor.placements:
        if isinstance(placement, Replicate) or (not pattern and not placement.is_partial()):
            continue
        if type(placement) is not Shard:
            return (f"{fn}: DTensor placement {type(placement).__name__} ({placement}) is not supported (Replicate "
                    "and Shard are); "
                    "redistribute to Shard or Replicate first")
        dim = placement.dim % tensor.dim()
        if dims.index(dim) > 1:
            return (f"{fn}: DTensor sharded along dimension {dim} of a kernel of shape {tuple(tensor.shape)} "
                    "(a spatial dimension); only the output and input dimensions can be sharded")
    return None


def regions(tensor: Tensor, layout: str = "rows", blocks: int = 1, box: Optional[tuple] = None) -> list[Region]:
    """The regions of ``tensor`` this process holds, one per row block (blocks that hold no row of the
    local shard are left out). ``layout`` is how the stored tensor reads as ``(out, in, ...)``: ``rows``,
    ``t`` or ``transpose01`` (see :class:`idinit.plan.PlanEntry`); ``box`` is
    :func:`local_and_offset` of ``tensor`` when the caller has it already."""
    shape = tuple(tensor.shape)
    if blocks == 1 and layout == "rows" and box is not None and box[0] is tensor:  # a plain tensor: all of it
        return [Region(tensor, shape[0], shape[1:])]
    local, offset = box or local_and_offset(tensor)
    dims = _layout_dims(layout, tensor.dim())
    if layout in ("t", "transpose01"):
        local = local.transpose(0, 1)
    shape = tuple(shape[d] for d in dims)
    offset = tuple(offset[d] for d in dims)
    trailing, k = shape[1:], math.prod(shape[2:])
    per_block = shape[0] // blocks if blocks > 1 and shape[0] % blocks == 0 else shape[0]
    first, n = offset[0], local.shape[0]
    found = []
    for start in range(0, shape[0], per_block):
        lo, hi = max(first, start), min(first + n, start + per_block)
        if hi > lo:
            found.append(Region(local[lo - first:hi - first], per_block, trailing, lo - start, offset[1] * k,
                                start // per_block))
    return found


def _local_box(tensor: Tensor) -> tuple:
    """Index of this rank's shard of DTensor ``tensor`` in the global tensor."""
    local, offset = local_and_offset(tensor)
    return tuple(slice(o, o + n) for o, n in zip(offset, local.shape))


def _is_fsdp_hook(hook) -> bool:
    function = getattr(hook, "__func__", None) or getattr(hook, "func", None) or hook
    # FSDP2's hooks live in torch.distributed.fsdp (torch.distributed._composable.fsdp before torch 2.6)
    return (getattr(function, "__module__", None) or "").startswith("torch.distributed.")


@contextlib.contextmanager
def unsharded_view(model: nn.Module, example_inputs=None) -> Iterator:
    """For the duration, ``model`` looks unsharded: every DTensor parameter and every buffer is a meta
    tensor of its global shape, FSDP2's forward hooks are set aside and each
    FSDP2 module has its own class again (``FSDPLlamaForCausalLM`` is ``LlamaForCausalLM``). Role
    detection runs the forward pass on it without communicating or allocating. Yields
    ``example_inputs`` as that pass takes them: every tensor in them on the meta device too (a CPU
    batch times a meta weight is a device error). A no-op on a model with no DTensor parameter."""
    modules = list(model.modules())
    if not any(is_dtensor(p) for m in modules for p in m._parameters.values()):
        yield example_inputs
        return
    from torch.utils._pytree import tree_map

    example_inputs = tree_map(lambda t: t.to("meta") if isinstance(t, Tensor) else t, example_inputs)
    meta: dict = {}

    def meta_of(t: Tensor) -> Tensor:
        if id(t) not in meta:  # tied parameters stay tied
            empty = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
            meta[id(t)] = nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
        return meta[id(t)]

    saved = []
    hook_dicts = ("_forward_pre_hooks", "_forward_hooks")
    try:
        for m in modules:
            fsdp = FSDPModule is not None and isinstance(m, FSDPModule)
            saved.append((m, type(m), dict(m._parameters), dict(m._buffers),
                          {d: getattr(m, d).copy() for d in hook_dicts}))
            for n, p in m._parameters.items():
                if p is not None and is_dtensor(p):
                    m._parameters[n] = meta_of(p)
            for n, b in m._buffers.items():  # the forward pass runs on meta: no buffer on another device
                if b is not None:
                    m._buffers[n] = meta_of(b)
            if not fsdp:
                continue
            for d in hook_dicts:
                for key in [k for k, hook in getattr(m, d).items() if _is_fsdp_hook(hook)]:
                    del getattr(m, d)[key]
            m.__class__ = next(c for c in type(m).__mro__ if not issubclass(c, FSDPModule))
        yield example_inputs
    finally:
        for m, cls, params, buffers, hooks in saved:
            m.__class__ = cls
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)
            for d, found in hooks.items():
                getattr(m, d).clear()
                getattr(m, d).update(found)


@contextlib.contextmanager
def gathered(modules: Iterable[nn.Module]) -> Iterator[None]:
    """For the duration, the DTensor parameters of ``modules`` and their submodules are plain tensors
    holding their full values (gathered on every rank: a collective); afterwards each rank copies its
    part of what they hold then into its shard. The model's own init runs on them as on an unsharded
    model, drawing the same values from the same RNG state. A no-op without DTensor parameters."""
    full: dict = {}
    swapped = []
    for module in modules:
        for m in module.modules():
            for n, p in m._parameters.items():
                if p is None or not is_dtensor(p):
                    continue
                if id(p) not in full:
                    value = p.full_tensor()
                    value = value.wait() if hasattr(value, "wait") else value  # an AsyncCollectiveTensor
                    full[id(p)] = (p, nn.Parameter(value.detach().clone(), p.requires_grad))
                swapped.append((m, n, p))
                m._parameters[n] = full[id(p)][1]
    try:
        yield
    finally:
        for m, n, p in swapped:
            m._parameters[n] = p
        with torch.no_grad():
            for p, value in full.values():
                local_of(p).copy_(value[_local_box(p)])


def full_size(tensor: Tensor) -> tuple[Tensor, Optional[tuple]]:
    """``(tensor, None)``, or for a DTensor a new plain tensor of its global shape on its local device and
    the index of this rank's part in it: a ``torch.nn.init`` draw on that tensor (as many random numbers,
    in the same order, as on the unsharded parameter) gives each rank its part of the unsharded draw."""
    if not is_dtensor(tensor):
        return tensor, None
    local = local_of(tensor)
    return torch.empty(tuple(tensor.shape), dtype=tensor.dtype, device=local.device), _local_box(tensor)
