"""How a matmul reads a parameter: as one matrix, or as a stack of matrices, read off the weight chain
(the autograd nodes between the parameter and the matmul) or off an einsum's equation.

The one reader of weight chains: :mod:`idinit.graph` follows every parameter of 2+ axes through the
backward nodes of its chain with :func:`step` and asks :func:`record` at each matmul; :func:`idinit.kinds.read_kinds`
turns what every matmul said into a kind (``experts`` / ``contracted``) and a layout.

The state of a chain says which axes of the parameter each dimension of the current tensor holds.
Views, clones, unsqueezes, expands, permutes and transposes move the axes; at a ``mm`` / ``bmm`` (or a
grouped mm) the last two dimensions are the factor's ``(rows, cols)``, the leading ones its batch.
With the factor's position (the left factor of ``A @ B`` is ``(out, in)``, the right one ``(in, out)``),
that says which axes the map reads (in) and which it writes (out). Nothing depends on a name or on the
operation that built the chain: ``F.linear``, ``x @ w``, ``torch.einsum`` are read alike.

One matrix. Some models keep a projection as a raw parameter of three or more axes and multiply it with
``torch.einsum``: HF XLNet's relative attention stores q / k / v / r as ``(d_model, n_head, d_head)`` and
reads them ``ibh,hnd->ibnd`` (``d_model`` in, ``n_head * d_head`` out), its output projection o ``ibnd,hnd->ibh``
(``n_head * d_head`` in, ``d_model`` out). Such a parameter is one linear map when its in-axes and its
out-axes are two runs of its stored axes, one before the other, and none is in the batch: the matrix is
the stored tensor viewed ``(prod(shape[:k]), prod(shape[k:]))``, as rows (out first: layout ``matrix<k>``)
or transposed (in first: ``matrix<k>_t``). Which order the matmul flattens the axes in does not matter:
it reorders the terms of the same sum, and the layer before or after reads the same stored order. The
plan then gives it what a linear layer in its place gets (IDI, paper Sec. 3.1 Eq. 3; IDIZ where it closes
a residual branch, Sec. 3.2 and A.5).

A stack of matrices. A 3-D parameter whose first axis is the stack and whose last two are each matrix's
rows and columns (fused experts: ``(experts, out, in)`` in transformers 5's Mixtral, OLMoE, DeepSeek-V3,
``(experts, in, out)`` in GPT-OSS, Llama 4): the stack axis is either in the batch of the matmul (``bmm`` over
``w`` or ``w[index]``, a grouped mm, Zamba's per-head ``x_proj_weight[:, None] @ h`` broadcast over the data's
batch) or picked away (``w[e]``, a select on it), and the two others are the factor's rows and columns:
layout ``stacked`` when axis 1 is the out-axis, ``stacked_t`` when axis 2 is. A 2-D parameter viewed along
its dim 0 as such a stack, ``w.view(count, -1, w.shape[1])`` (DBRX stores its experts ``(experts * ffn,
hidden)``), is read from then on as the 3-D stack ``(count, rows, cols)``: layout ``stacked_flat`` /
``stacked_t_flat``, with ``count`` matrices. A 2-D parameter not viewed so is read by its layer type, not
here; a 3-D one of a single matrix, ``(1, out, in)``, reads as a stack of one. Only a stack read matrix by
matrix, not broadcast through an unsqueeze or an expand, has a fused bias looked for (GPT-OSS's ``x @ w[e] +
b[e]``, :func:`idinit.kinds.read_kinds`): Zamba's per-head time-step bias is Mamba's ``dt_proj.bias``, which
:mod:`idinit.values` keeps as the model set it.

Not one matrix nor a stack (None, left to the other rules): any other parameter axis in the batch (XLNet's
``seg_embed``, read per head: ``ibnd,snd->ibns``), in- and out-axes interleaved, or a chain through any
other node (slicing, arithmetic). Axes of size 1 are not tracked: they belong to either side. On a
torch.fx graph, where einsum is one call, its equation says the same for one matrix (:func:`einsum_reading`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

__all__ = ["State", "start", "step", "reading", "record", "einsum_reading", "fx_readings", "matrix_shape"]


class State(NamedTuple):
    """Where a weight chain holds its parameter's axes. Axes of size 1 are not tracked (either side takes them)."""

    name: str
    shape: tuple  # the parameter's shape as the chain reads it (a 2-D one viewed as a stack: the 3-D view's)
    axes: tuple  # per dimension of the current tensor, the axes of ``shape`` it holds
    sizes: tuple  # the current tensor's shape
    stack: int = 0  # the number of matrices a 2-D parameter was viewed as (0: none)
    # the chain passed an unsqueeze or an expand: broadcast against the data (Zamba's per-head
    # ``x_proj_weight[:, None] @ h``), not matrix by matrix as fused experts are read
    broadcast: bool = False


_BROADCAST = -1  # marks a dimension that holds a broadcast (expanded) size, not only parameter axes
_PASS = {"CloneBackward0", "AliasBackward0", "ToCopyBackward0"}
_VIEWS = {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"}


def start(name: str, shape: tuple, stack: int = 0) -> State:
    """The state of parameter ``name`` of ``shape`` itself."""
    shape = tuple(shape)
    return State(name, shape, tuple((axis,) if size > 1 else () for axis, size in enumerate(shape)), shape, stack)


def _dim(value: int, rank: int) -> int:
    value = value - 2 ** 64 if value >= 2 ** 63 else value  # negative dims are saved as unsigned
    return value % rank


def _output_shape(fn) -> Optional[tuple]:
    meta = getattr(fn, "_input_metadata", None)  # the gradient it takes: the forward output's shape
    return tuple(meta[0].shape) if meta else None


def step(fn, state: State) -> Optional[State]:
    """The state after weight-chain node ``fn`` (None: the chain no longer holds the parameter's axes whole)."""
    node, axes, shape = type(fn).__name__, state.axes, state.shape
    if node in _PASS:
        return state
    out = _output_shape(fn)
    if out is None:
        return None
    if node == "UnsqueezeBackward0":
        d = _dim(fn._saved_dim, len(axes) + 1)
        return state._replace(axes=axes[:d] + ((),) + axes[d:], sizes=out, broadcast=True)
    if node == "SqueezeBackward0" or node == "SqueezeBackward1" or node == "SqueezeBackward2":
        kept = tuple(held for held, size in zip(axes, state.sizes) if held or size != 1)
        return state._replace(axes=kept, sizes=out) if len(kept) == len(out) else None
    if node == "SelectBackward0":  # w[e]: one matrix of a stack; or one slice of a dimension holding no axis
        d = _dim(fn._saved_dim, len(axes))
        if axes[d] == (0,) and len(shape) == 3 or not set(axes[d]) - {_BROADCAST}:
            return state._replace(axes=axes[:d] + axes[d + 1:], sizes=out)
        return None
    if node == "IndexBackward0":  # w[index], one 1-D index: a batch of whole matrices of a stack
        index = fn._saved_indices
        if len(shape) == 3 and axes[0] in ((0,), ()) and len(index) == 1 and isinstance(index[0], torch.Tensor) \
                and index[0].dim() == 1:
            return state._replace(sizes=out)
        return None
    if node == "PermuteBackward0":
        return state._replace(axes=tuple(axes[_dim(d, len(axes))] for d in fn._saved_dims), sizes=out)
    if node in ("TBackward0", "TransposeBackward0"):
        if node == "TBackward0":
            a, b = 0, len(axes) - 1
        else:
            a, b = _dim(fn._saved_dim0, len(axes)), _dim(fn._saved_dim1, len(axes))
        swapped = list(axes)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        return state._replace(axes=tuple(swapped), sizes=out)
    if node == "ExpandBackward0":  # only dimensions of size 1 grow (no axis in them), and new ones lead
        return state._replace(axes=((),) * (len(out) - len(axes)) + axes, sizes=out, broadcast=True)
    if node in _VIEWS:
        if len(shape) == 2 and state == start(state.name, shape) and len(out) == 3 and out[2] == shape[1] and \
                out[0] * out[1] == shape[0]:  # dim 0 split into a stack of matrices (DBRX)
            return start(state.name, out, out[0])
        return _regroup(state, out)
    return None


def _regroup(state: State, out: tuple) -> Optional[State]:
    """The state after a view to ``out``: the axes, in the current order, regrouped into the new dimensions."""
    flat = []  # (axes, size): each parameter axis alone; a dimension holding a broadcast size as one piece
    for held, size in zip(state.axes, state.sizes):
        if _BROADCAST in held or (not held and size > 1):
            flat.append((held or (_BROADCAST,), size))
        else:  # an axis alone has the dimension's size (w[index] may have changed a stack's)
            flat.extend(((a,), state.shape[a] if len(held) > 1 else size) for a in held)
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
    return state._replace(axes=tuple(held), sizes=out) if i == len(flat) else None


def _layout(shape: tuple, out_axes: tuple, in_axes: tuple) -> Optional[str]:
    """The ``matrix<k>`` layout of a parameter of ``shape`` whose ``out_axes`` the map writes and ``in_axes``
    it reads (axes of size 1 left out), or None when the two are not runs one before the other."""
    if not out_axes or not in_axes:
        return None
    if max(out_axes) < min(in_axes):
        return f"matrix{min(in_axes)}"
    if max(in_axes) < min(out_axes):
        return f"matrix{min(out_axes)}_t"
    return None


def reading(position: int, factors: int, state: State) -> Optional[tuple]:
    """``(layout, stack)`` when a matmul multiplies the chain ``state`` of a parameter of 3+ axes (or one viewed
    as a stack) as one matrix or a stack of matrices, the chain being its factor number ``position`` (0: left)
    of ``factors``; None otherwise (module docstring)."""
    shape, axes, stack = state.shape, state.axes, state.stack
    if len(axes) < 2 or _BROADCAST in axes[-2] + axes[-1]:
        return None
    batch = {a for held in axes[:-2] for a in held} - {_BROADCAST}
    rows, cols = axes[-2], axes[-1]
    out_axes, in_axes = (rows, cols) if position == 0 and factors > 1 else (cols, rows)
    if len(shape) == 3 and batch <= {0}:  # axis 0 in the batch or picked away: a stack
        for layout, out_axis, in_axis in (("stacked", 1, 2), ("stacked_t", 2, 1)):
            if set(out_axes) <= {out_axis} and set(in_axes) <= {in_axis}:
                return layout + ("_flat" if stack else ""), stack
    layout = None if batch or stack else _layout(shape, out_axes, in_axes)
    return layout and (layout, 0)


def record(readings: dict, kids: list, chains: dict) -> tuple:
    """Add to ``readings`` (``{parameter: readings}``) how a matmul reads each chain of ``chains`` among its two
    factors, the last two of ``kids`` (``addmm``'s first is the bias): ``(layout, stack)``, or None where not as
    one matrix nor a stack (a 2-D parameter not viewed as a stack is left out). Returns the parameters it reads
    as stacks matrix by matrix, not broadcast: fused experts, whose output a fused bias may join
    (:func:`idinit.kinds.read_kinds`)."""
    stacks = []
    for position, kid in enumerate(kids[-2:]):
        state = chains.get(kid)
        if state is not None and len(state.shape) >= 3:
            found = reading(position, len(kids), state)
            readings.setdefault(state.name, set()).add(found)
            if found and found[0].startswith("stacked") and not state.broadcast:
                stacks.append(state.name)
    return tuple(stacks)


def einsum_reading(equation: str, operand: int, shape: tuple) -> Optional[str]:
    """The ``matrix<k>`` layout when ``torch.einsum(equation, ...)`` reads its operand number ``operand``, a
    parameter of ``shape``, as one matrix (torch.fx, where no autograd graph shows the matmul): an axis whose
    letter is in the output only is an out-axis, one that only another operand shares an in-axis; one in the
    output and another operand (a batch) or in neither (summed) makes it no single matrix."""
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
    return _layout(tuple(shape), tuple(out_axes), tuple(in_axes))


def fx_readings(node, shape: tuple) -> set:
    """How each user of torch.fx ``get_attr`` node ``node`` (a parameter of ``shape``) reads it: the einsums
    as :func:`einsum_reading` says (``(layout, 0)``), any other use None (not one matrix to that user)."""
    found = set()
    for user in node.users:
        args = list(user.args[1:])
        if len(args) == 1 and isinstance(args[0], (list, tuple)):  # einsum(equation, [a, b])
            args = list(args[0])
        einsum = user.op == "call_function" and user.target is torch.einsum and user.args and \
            isinstance(user.args[0], str) and args.count(node) == 1 and not user.kwargs
        layout = einsum_reading(user.args[0], args.index(node), shape) if einsum else None
        found.add(layout and (layout, 0))
    return found


def matrix_shape(shape: tuple, layout: str) -> tuple:
    """The ``(out, in)`` shape of a ``matrix<k>`` / ``matrix<k>_t`` reading of a tensor of ``shape``."""
    k = int(layout[6:].removesuffix("_t"))
    first, second = math.prod(shape[:k]), math.prod(shape[k:])
    return (second, first) if layout.endswith("_t") else (first, second)
