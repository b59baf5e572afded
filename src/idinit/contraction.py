"""Raw N-D parameters that a matmul contracts as one matrix, read off the autograd graph (or an einsum's equation).

Used by :mod:`idinit.graph` while it walks a forward pass's weight chains (the backward nodes between a
parameter and the operation that consumes it), and by :func:`idinit.kinds.contracted_kinds`.

Some models keep a projection as a raw parameter of three or more axes and multiply it with
``torch.einsum``: HF XLNet's relative attention stores q / k / v / r as ``(d_model, n_head, d_head)``
and reads them ``ibh,hnd->ibnd`` (``d_model`` in, ``n_head * d_head`` out), and its output projection o,
of the same shape, ``ibnd,hnd->ibh`` (``n_head * d_head`` in, ``d_model`` out). No layer type says what
such a parameter is, but the autograd graph does: einsum becomes unsqueezes, permutes and views (or a
clone and an unsafe view) that bring the parameter to a ``(rows, cols)`` factor of one ``mm`` / ``bmm``
(batch 1). Following each parameter axis through those nodes gives which axes end up as the factor's
rows and which as its columns; with the factor's position (the left factor of ``A @ B`` is
``(out, in)``, the right one ``(in, out)``), that says which axes the map reads (in) and which it
writes (out). Nothing here depends on a name, a shape or on einsum itself: any chain of those nodes
ending in a matmul is read the same way.

The parameter is then one linear map when its in-axes and its out-axes are two runs of its stored axes,
one before the other: the matrix is the stored tensor viewed ``(prod(shape[:k]), prod(shape[k:]))``,
as rows (out first: layout ``matrix<k>``) or transposed (in first: ``matrix<k>_t``). Which order the
matmul flattens the axes in does not matter: it reorders the terms of the same sum, and the layer
before or after reads the same stored order. The plan then gives it what a linear layer in its place
gets (IDI, paper Sec. 3.1 Eq. 3; IDIZ where it closes a residual branch, Sec. 3.2 and A.5).

A 3-D parameter whose first axis alone is in the batch of the matmul, broadcast over the data's batch,
is a stack of matrices, one per index of that axis (Zamba's per-head ``x_proj_weight[:, None] @ h``):
layout ``stacked`` / ``stacked_t``, as :func:`idinit.kinds.stacked_kinds` reads fused experts. Not one
matrix (left to the other rules): any other parameter axis in the batch (XLNet's ``seg_embed``, read
per head: ``ibnd,snd->ibns``), in- and out-axes interleaved, an axis summed away, or a chain through any
other node (indexing, slicing, arithmetic). Axes of size 1 belong to either side. On a torch.fx graph,
where einsum is one call, its equation says the same (:func:`einsum_reading`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["start", "step", "reading", "record", "einsum_reading", "fx_readings", "matrix_shape"]

# A chain state: (parameter name, the parameter's shape, the axes of the parameter each dimension of the
# current tensor holds, the current tensor's shape). Axes of size 1 are not tracked (either side takes them).
State = tuple

_BROADCAST = -1  # marks a dimension that holds a broadcast (expanded) size, not only parameter axes
_PASS = {"CloneBackward0", "AliasBackward0", "ToCopyBackward0"}
_VIEWS = {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"}
_MATMULS = {"MmBackward0", "BmmBackward0", "AddmmBackward0", "BaddbmmBackward0"}


def start(name: str, shape: tuple) -> State:
    """The state of parameter ``name`` of ``shape`` itself."""
    shape = tuple(shape)
    return name, shape, tuple((axis,) if size > 1 else () for axis, size in enumerate(shape)), shape


def _dim(value: int, rank: int) -> int:
    value = value - 2 ** 64 if value >= 2 ** 63 else value  # negative dims are saved as unsigned
    return value % rank


def _output_shape(fn) -> Optional[tuple]:
    meta = getattr(fn, "_input_metadata", None)  # the gradient it takes: the forward output's shape
    return tuple(meta[0].shape) if meta else None


def step(fn, state: State) -> Optional[State]:
    """The state after weight-chain node ``fn`` (None: the chain no longer holds the parameter's axes whole)."""
    name, shape, axes, sizes = state
    node = type(fn).__name__
    if node in _PASS:
        return state
    out = _output_shape(fn)
    if out is None:
        return None
    if node == "UnsqueezeBackward0":
        d = _dim(fn._saved_dim, len(axes) + 1)
        return name, shape, axes[:d] + ((),) + axes[d:], out
    if node == "SqueezeBackward0" or node == "SqueezeBackward1" or node == "SqueezeBackward2":
        kept = tuple(held for held, size in zip(axes, sizes) if held or size != 1)
        return (name, shape, kept, out) if len(kept) == len(out) else None
    if node == "PermuteBackward0":
        return name, shape, tuple(axes[_dim(d, len(axes))] for d in fn._saved_dims), out
    if node in ("TBackward0", "TransposeBackward0"):
        if node == "TBackward0":
            a, b = 0, len(axes) - 1
        else:
            a, b = _dim(fn._saved_dim0, len(axes)), _dim(fn._saved_dim1, len(axes))
        swapped = list(axes)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        return name, shape, tuple(swapped), out
    if node == "ExpandBackward0":  # only dimensions of size 1 grow (no axis in them), and new ones lead
        return name, shape, ((),) * (len(out) - len(axes)) + axes, out
    if node in _VIEWS:  # regroup the axes, in the current order, into the new dimensions
        flat = []  # (axes, size): each parameter axis alone; a dimension holding a broadcast size as one piece
        for held, size in zip(axes, sizes):
            if _BROADCAST in held or (not held and size > 1):
                flat.append((held or (_BROADCAST,), size))
            else:
                flat.extend(((a,), shape[a]) for a in held)
        held, i = [], 0
        for size in out:
            run, product = [], 1
            while i < len(flat) and product < size:
                run.extend(flat[i][0])
                product *= flat[i][1]
                i += 1
            if product != size:
                return None
            held.append(tuple(dict.fromkeys(run)))
        return (name, shape, tuple(held), out) if i == len(flat) else None
    return None


def _layout(name: str, shape: tuple, out_axes: tuple, in_axes: tuple) -> Optional[tuple]:
    """``(name, layout)`` for a parameter of ``shape`` whose ``out_axes`` the map writes and ``in_axes`` it
    reads (axes of size 1 left out), or None when the two are not runs one before the other."""
    if not out_axes or not in_axes:
        return None
    if max(out_axes) < min(in_axes):
        k, transposed = min(in_axes), False
    elif max(in_axes) < min(out_axes):
        k, transposed = min(out_axes), True
    else:
        return None
    if len(shape) == 2:
        return name, "t" if transposed else "rows"
    return name, f"matrix{k}_t" if transposed else f"matrix{k}"


def reading(fn, position: int, factors: int, state: State) -> Optional[tuple]:
    """``(name, layout)`` when matmul node ``fn`` multiplies the chain ``state`` as one matrix, the chain
    being its factor number ``position`` (0: left) of ``factors``; a 3-D parameter whose first axis is the
    batch, as a stack of matrices (``stacked`` / ``stacked_t``, the layouts of :func:`idinit.kinds.stacked_kinds`:
    Zamba's per-head ``x_proj_weight[:, None] @ h``); None otherwise (module docstring)."""
    if type(fn).__name__ not in _MATMULS:
        return None
    name, shape, axes, _ = state
    if len(axes) < 2 or _BROADCAST in axes[-2] + axes[-1]:
        return None
    batch = {a for held in axes[:-2] for a in held} - {_BROADCAST}
    rows, cols = axes[-2], axes[-1]
    left = position == 0 and factors > 1
    out_axes, in_axes = (rows, cols) if left else (cols, rows)
    if batch == {0} and len(shape) == 3 and {out_axes, in_axes} == {(1,), (2,)}:
        return name, "stacked" if out_axes == (1,) else "stacked_t"
    return None if batch else _layout(name, shape, out_axes, in_axes)


def record(readings: dict, fn, kids: list, chains: dict) -> None:
    """Add to ``readings`` (``{parameter: layouts}``) how matmul node ``fn`` reads each tracked chain among
    its two factors, the last two of ``kids`` (``addmm``'s first is the bias); None: not as one matrix."""
    for position, kid in enumerate(kids[-2:]):
        if kid in chains:
            found = reading(fn, position, len(kids), chains[kid])
            readings.setdefault(chains[kid][0], set()).add(found and found[1])


def einsum_reading(equation: str, operand: int, name: str, shape: tuple) -> Optional[tuple]:
    """``(name, layout)`` when ``torch.einsum(equation, ...)`` reads its operand number ``operand``, a parameter
    of ``shape``, as one matrix (torch.fx, where no autograd graph shows the matmul): an axis whose letter is
    in the output only is an out-axis, one that only another operand shares an in-axis; one in the output
    and another operand (a batch) or in neither (summed) makes it no single matrix."""
    spec = equation.replace(" ", "")
    if "->" not in spec or "." in spec:
        return None
    inputs, output = spec.split("->")
    terms = inputs.split(",")
    if operand >= len(terms) or len(terms[operand]) != len(shape):
        return None
    others = "".join(t for i, t in enumerate(terms) if i != operand)
    out_axes, in_axes = [], []
    for axis, (letter, size) in enumerate(zip(terms[operand], shape)):
        if size == 1:
            continue
        if (letter in output) == (letter in others):
            return None
        (out_axes if letter in output else in_axes).append(axis)
    return _layout(name, tuple(shape), tuple(out_axes), tuple(in_axes))


def fx_readings(node, name: str, shape: tuple) -> set:
    """How each user of torch.fx ``get_attr`` node ``node`` (parameter ``name`` of ``shape``) reads it: the
    einsums as :func:`einsum_reading` says, any other use None (not one matrix to that user)."""
    found = set()
    for user in node.users:
        args = list(user.args[1:])
        if len(args) == 1 and isinstance(args[0], (list, tuple)):  # einsum(equation, [a, b])
            args = list(args[0])
        einsum = user.op == "call_function" and user.target is torch.einsum and user.args and \
            isinstance(user.args[0], str) and args.count(node) == 1 and not user.kwargs
        read = einsum_reading(user.args[0], args.index(node), name, shape) if einsum else None
        found.add(read[1] if read else None)
    return found


def matrix_shape(shape: tuple, layout: str) -> tuple:
    """The ``(out, in)`` shape of a ``matrix<k>`` / ``matrix<k>_t`` reading of a tensor of ``shape``."""
    k = int(layout[6:].removesuffix("_t"))
    first, second = math.prod(shape[:k]), math.prod(shape[k:])
    return (second, first) if layout.endswith("_t") else (first, second)
