"""The initialisers a plan entry can name, and how one is drawn into (a block of) a parameter.

Used by :meth:`idinit.plan.Plan.apply`: the jobs of the batched pattern writer
(:mod:`idinit.patterns`), and the ``torch.nn.init`` draws on views of weights stored transposed, on
the row blocks of fused projections and on each matrix of a stack of experts.

A stack of experts (layout ``stacked``: ``(experts, out, in)``; ``stacked_t``: ``(experts, in, out)``,
:mod:`idinit.kinds`) gets, matrix by matrix, what one linear layer in its place gets: the pattern of
its own ``(out, in)`` (IDI / IDIZ, paper Eq. 3 and 12) and its own loose noise (keyed by
``name[e]``), and a random draw with that matrix's fans, not the 3-D tensor's (``torch.nn.init``
would read a 3-D tensor as a kernel: fan_in ``out * in``). A stack held as a DTensor sharded along its
experts (FSDP2's ``Shard(0)``) is written expert by expert in place, each keyed by its global index.
A stack stored flat (``stacked_flat`` / ``stacked_t_flat``: a 2-D ``(experts * rows, cols)`` parameter,
DBRX) is filled through its ``(experts, rows, cols)`` view, so each expert gets exactly what the same
matrix of a 3-D stack gets.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

import idinit.init as tensor_init
from idinit.contraction import matrix_shape
from idinit.patterns import Job
from idinit.sharded import is_dtensor, local_flat_stack, local_of, local_stack

__all__ = ["FUNCTIONS", "INITIALISERS", "RANDOM", "LAYOUT_WORDS", "layout_words", "entry_view", "matrices",
           "matrix_rows", "pattern_jobs", "row_blocks", "draw_into", "stack_view", "flat_stack_shape", "FLAT_LAYOUTS"]

FUNCTIONS = {
    "identity_": tensor_init.identity_,
    "channel_identity_": tensor_init.channel_identity_,
    "zero_preserving_": tensor_init.zero_preserving_,
    "hadamard_": tensor_init.hadamard_,
    "kaiming_normal_": nn.init.kaiming_normal_,
    "kaiming_uniform_": nn.init.kaiming_uniform_,
    "xavier_uniform_": nn.init.xavier_uniform_,
    "xavier_normal_": nn.init.xavier_normal_,
    "orthogonal_": nn.init.orthogonal_,
    "normal_": nn.init.normal_,
    "uniform_": nn.init.uniform_,
    "constant_": nn.init.constant_,  # args {"val": v}: the closing weight of an offset norm (kinds.closing_weight)
}
# initialisers that draw random numbers (the two identities only for their loose noise)
RANDOM = {"identity_", "channel_identity_", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_",
          "xavier_normal_", "orthogonal_", "normal_", "uniform_"}
# every name a plan entry may hold: the functions above and what Plan.apply writes itself
INITIALISERS = tuple(FUNCTIONS) + ("ones_", "zeros_", "reset_parameters", "keep", "weight_norm_g")
# draws independent of each other, whose distribution depends on the shape through the fans only
_ELEMENTWISE = {"kaiming_normal_", "kaiming_uniform_", "xavier_uniform_", "xavier_normal_", "normal_", "uniform_"}


# how a plan's table shows a layout other than "rows" ({stack}: a flat stack's number of matrices)
LAYOUT_WORDS = {"t": "as .t()", "transpose01": "as .transpose(0, 1)", "stored": "as stored",
                "stacked": "per expert", "stacked_t": "per expert, as .t()",
                "stacked_flat": "per expert: {stack} row blocks", "stacked_t_flat": "per expert: {stack} row blocks, as .t()"}
_STACKED = {"stacked": "rows", "stacked_t": "t"}  # the layout of each matrix of a stack
_FLAT = FLAT_LAYOUTS = {"stacked_flat": "stacked", "stacked_t_flat": "stacked_t"}  # a flat stack's 3-D layout


def _is_matrix(layout: str) -> bool:
    return layout.startswith("matrix")


def layout_words(layout: str, shape: tuple, stack: int = 0) -> str:
    """How a plan's table shows a layout other than "rows"."""
    if _is_matrix(layout):
        transposed = layout.endswith("_t")
        first, second = matrix_shape(shape, layout)[::-1 if transposed else 1]
        return f"as .view({first}, {second})" + (".t()" if transposed else "")
    return LAYOUT_WORDS.get(layout, "").format(stack=stack)


def _matrix_view(param: torch.Tensor, layout: str, name: str = "") -> torch.Tensor:
    """The ``(out, in)`` 2-D view of a ``matrix<k>`` / ``matrix<k>_t`` entry (a view: writes reach ``param``).
    A DTensor may be sharded along the first axis of either run (``Shard(0)``, FSDP2's, or ``Shard(k)``):
    its view is then sharded along the matrix's rows or columns, its local data a view of the shard's."""
    k = int(layout[6:].removesuffix("_t"))
    first, second = matrix_shape(tuple(param.shape), layout)[::-1 if layout.endswith("_t") else 1]
    if is_dtensor(param):
        cut = [p for p in param.placements if not p.is_replicate() and not (p.is_shard() and p.dim in (0, k))]
        if cut:
            raise ValueError(f"{name}: a parameter read as one matrix of shape {tuple(param.shape)} (layout {layout}: "
                             f"the view ({first}, {second})) held as a DTensor with placement {cut[0]}: only "
                             f"Replicate, Shard(0) and Shard({k}) keep the view's shards whole; redistribute it, "
                             "or initialise it before sharding it")
    try:
        view = param.view(first, second)
    except RuntimeError as err:
        raise ValueError(f"{name}: a parameter of shape {tuple(param.shape)} with strides {param.stride()} cannot be "
                         f"viewed as the ({first}, {second}) matrix its layout {layout} reads: {err}") from None
    if is_dtensor(param) and \
            local_of(view).untyped_storage().data_ptr() != local_of(param).untyped_storage().data_ptr():
        raise ValueError(f"{name}: the ({first}, {second}) view of this DTensor is not its own shard's data "
                         "(redistributed): writing it would not reach the parameter")
    return view.t() if layout.endswith("_t") else view


def flat_stack_shape(shape: tuple, layout: str, stack: int) -> tuple:
    """The 3-D shape ``(stack, rows // stack, cols)`` of a flat stack of ``shape``; a ``ValueError`` where
    the rows do not split so (a plan edited by hand)."""
    if len(shape) != 2 or stack < 1 or shape[0] % stack:
        raise ValueError(f"layout {layout!r} needs a 2-D parameter whose rows split into stack={stack} equal "
                         f"blocks, one matrix each; got shape {tuple(shape)}")
    return stack, shape[0] // stack, shape[1]


def stack_view(param: torch.Tensor, layout: str, stack: int) -> tuple[torch.Tensor, str]:
    """A flat stack as the 3-D stack it is, ``(stack, rows // stack, cols)``, with the 3-D layout; any
    other entry as it is."""
    if layout not in _FLAT:
        return param, layout
    return param.view(flat_stack_shape(tuple(param.shape), layout, stack)), _FLAT[layout]


def matrices(param: torch.Tensor, layout: str, stack: int = 0) -> list[torch.Tensor]:
    """The ``(out, in, ...)`` views the entry fills one by one: each expert's of a stack, else one."""
    param, layout = stack_view(param, layout, stack)
    if layout in _STACKED:
        return [entry_view(matrix, _STACKED[layout]) for matrix in param.unbind(0)]
    if _is_matrix(layout):
        return [_matrix_view(param, layout)]
    return [entry_view(param, layout)]


def matrix_rows(shape: tuple, layout: str, stack: int = 0) -> int:
    """The number of output rows of each matrix an entry of ``shape`` and ``layout`` fills."""
    if not shape:
        return 0
    if _is_matrix(layout):
        return matrix_shape(shape, layout)[0]
    if layout in _FLAT:
        shape, layout = flat_stack_shape(tuple(shape), layout, stack), _FLAT[layout]
    out_dim = {"t": 1, "transpose01": 1, "stacked": 1, "stacked_t": 2}.get(layout, 0)
    return shape[out_dim] if len(shape) > out_dim else 0


def pattern_jobs(name: str, param: torch.Tensor, init: str, args: dict, layout: str, blocks: int,
                 stack: int = 0) -> list[Job]:
    """The checked :class:`~idinit.patterns.Job` s of a pattern or constant entry, one per expert of a
    stack (named ``name[e]``: its loose noise is its own); those with nothing to write are left out."""
    if _is_matrix(layout):  # a 2-D view of the parameter (a DTensor: of its shard)
        jobs = [Job(name, _matrix_view(param, layout, name), init, args, "rows", blocks)]
    elif layout not in _STACKED and layout not in _FLAT:
        jobs = [Job(name, param, init, args, layout, blocks)]
    else:  # a DTensor sharded along its experts (FSDP2) holds whole matrices: each is written as it is
        try:
            if layout in _FLAT:
                flat_stack_shape(tuple(param.shape), layout, stack)  # the shape checked before the shards are
                local, first = local_flat_stack(param, stack)
                layout = _FLAT[layout]
            else:
                local, first = local_stack(param)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        jobs = [Job(f"{name}[{first + e}]", matrix, init, args, _STACKED[layout], blocks)
                for e, matrix in enumerate(local.unbind(0))]
    return [job for job in jobs if tensor_init.check(job, name)]


def entry_view(param: torch.Tensor, layout: str) -> torch.Tensor:
    """The parameter as its entry sees it: ``"t"`` / ``"transpose01"`` for weights stored (in, out, ...)."""
    if layout == "t":
        return param.t()
    if layout == "transpose01":
        return param.transpose(0, 1)
    return param


def row_blocks(view: torch.Tensor, blocks: int) -> tuple[torch.Tensor, ...]:
    """The row blocks filled separately (fused q/k/v projections, recurrent gate stacks)."""
    if blocks > 1 and view.shape[0] % blocks == 0:
        return view.chunk(blocks, 0)
    return (view,)


def draw_into(view: torch.Tensor, init: str, args: Mapping[str, Any], generator) -> None:
    """One ``torch.nn.init`` initialiser on one (block of a) parameter."""
    kwargs = dict(args, generator=generator) if generator is not None and init in RANDOM else dict(args)
    if not view.is_contiguous() and init in _ELEMENTWISE and view.dim() >= 2 and view.transpose(0, 1).is_contiguous():
        # a (out, in, ...) view of a tensor stored (in, out, ...) (HF Conv1D, ConvTranspose): the draws are
        # independent, so they go straight into the storage, whose fan_in is the view's fan_out (Xavier
        # uses both, symmetrically): no full-size buffer and no transposed copy (3x the draw on the CPU)
        if "mode" in kwargs:
            kwargs["mode"] = {"fan_in": "fan_out", "fan_out": "fan_in"}[kwargs["mode"]]
        elif init.startswith("kaiming"):  # torch's default mode is fan_in
            kwargs["mode"] = "fan_out"
        FUNCTIONS[init](view.transpose(0, 1), **kwargs)
        return
    # other fills go through a contiguous buffer: orthogonal_ needs view_as(), which a transposed
    # view cannot give
    target = view if view.is_contiguous() else torch.empty(view.shape, dtype=view.dtype, device=view.device)
    FUNCTIONS[init](target, **kwargs)
    if target is not view:
        view.copy_(target)
