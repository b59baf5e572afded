"""Plan and apply: ``idinit.plan(model)`` decides what every parameter gets without touching any
weight; ``idinit.init_(model)`` builds the plan, applies it and returns it.

Seventh link of the model level's chain (kinds -> graph -> positions -> roles -> detect -> schemes ->
**plan**): each parameter's role (detect) and its initialiser (schemes) as a table, then written.

A :class:`Plan` is a list of :class:`PlanEntry` rows (one per parameter, tied parameters once) that
prints as a table and can be edited before :meth:`Plan.apply`. Applying works on any device,
on a model built on the meta device after ``to_empty()`` (same seed, bitwise the same weights as
an eager model) and writes only parameters (plus the running statistics of the norm layers it
initialises, which belong to the old weights: the plan lists them).

:func:`init_` does the whole job on a model as it comes: it unwraps ``torch.compile`` /
``DataParallel`` / ``DistributedDataParallel``, re-ties an HF model's tied weights that ``to_empty()``
untied, rebuilds the buffers with the model's own methods, plans, gives what the scheme keeps the
model's own init (:mod:`idinit.model_init`) and applies the rest: nothing is left uninitialised.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping

import torch
from torch import nn

import idinit.init as tensor_init
from idinit import model_init
from idinit.detect import detect, warn_caller
from idinit.initialisers import (FLAT_LAYOUTS, INITIALISERS, RANDOM, draw_into, flat_stack_shape, layout_words,
                                 matrices, matrix_rows, pattern_jobs, row_blocks)
from idinit.kinds import closing_weight, unit_scale_at_zero
from idinit.parametrized import parametrized_rows
from idinit.noise import draw_seed
from idinit.patterns import PATTERNS, fill
from idinit.roles import KEPT_ROLES, MATRIX_ROLES, is_bias_name, user_roles
from idinit.sharded import full_size, local_of, unsharded_view
from idinit.schemes import SchemeName, assign, blocks_of, check_options, lookup
Activation = Literal["relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "sigmoid", "linear", "identity"]

__all__ = ["Plan", "PlanEntry", "plan", "init_"]

@dataclass
class PlanEntry:
    """One parameter: what it is (``role``) and what it gets (``init(view, **args)``).

    ``layout`` is how the stored tensor is read as ``(out, in, ...)``: ``rows`` (as stored),
    ``t`` (HF ``Conv1D``, stored ``(in, out)``), ``transpose01`` (``ConvTranspose``, groups 1) or
    ``stored`` (grouped ``ConvTranspose``: filled as stored); a stack of experts: ``stacked``
    ``(experts, out, in)``, ``stacked_t`` ``(experts, in, out)``, and the same stored flat as 2-D,
    ``stacked_flat`` / ``stacked_t_flat``, whose rows are ``stack`` blocks, one expert each
    (:mod:`idinit.kinds`). ``blocks > 1`` fills that many row blocks separately (fused q/k/v projections,
    recurrent gate stacks).
    """

    name: str
    shape: tuple
    role: str
    init: str
    args: dict = field(default_factory=dict)
    source: str = ""
    note: str = ""
    layout: str = "rows"
    blocks: int = 1
    kind: str = ""
    stack: int = 0

    @property
    def reason(self) -> str:
        """Why an unclassified parameter could not be placed (its note)."""
        return self.note


class Plan:
    """What :func:`init_` does to each parameter; iterate it, index it by name, print it, edit it."""

    def __init__(self, model_name: str, scheme: str, options: dict, entries: list[PlanEntry],
                 source: str, residual: bool, notes: list[str], states: dict[str, str] | None = None):
        self.model_name, self.scheme, self.options = model_name, scheme, options
        self.entries, self.source, self.residual, self.notes = entries, source, residual, notes
        # {buffer name: what happens to it}: the running statistics apply() resets, and (filled by
        # init_) the buffers rebuilt with the model's own methods or left as they were
        self.states: dict[str, str] = dict(states or {})

    def __iter__(self) -> Iterator[PlanEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PlanEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(f"no parameter {name!r} in this plan")

    @property
    def unclassified(self) -> list[PlanEntry]:
        """Parameters no rule placed (the model's own init, or kept); each entry's ``reason`` says why."""
        return [e for e in self.entries if e.role == "unclassified"]

    def by_role(self, role: str) -> list[PlanEntry]:
        return [e for e in self.entries if e.role == role]

    def __repr__(self) -> str:
        return f"<Plan {self.scheme!r} for {self.model_name}: {len(self.entries)} parameters>"

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={_fmt(v)}" for k, v in self.options.items())
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.role] = counts.get(e.role, 0) + 1
        lines = [f"{self.model_name}: scheme {self.scheme!r}" + (f" ({opts})" if opts else ""),
                 f"roles from: {self.source}; residual network: {'yes' if self.residual else 'no'}",
                 "roles: " + ", ".join(f"{role} {n}" for role, n in counts.items())]
        rows = [("name", "shape", "role", "init", "args", "note")]
        for e in self.entries:
            args = ", ".join(f"{k}={_fmt(v)}" for k, v in e.args.items())
            layout = layout_words(e.layout, e.shape, e.stack)
            extra = ", ".join(x for x in (f"{e.blocks} blocks" if e.blocks > 1 else "", layout) if x)
            args = f"{args} [{extra}]" if extra and args else f"[{extra}]" if extra else args
            rows.append((e.name, "x".join(map(str, e.shape)) or "()", e.role, e.init, args,
                         "; ".join(x for x in (e.source, e.note) if x)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
        by_action: dict[str, list[str]] = {}
        for name, action in self.states.items():
            by_action.setdefault(action, []).append(name)
        for action, names in by_action.items():
            more = f", ... ({len(names) - 12} more: plan.states lists all)" if len(names) > 12 else ""
            shown = ", ".join(names[:12]) + more
            lines.append(f"{len(names)} buffer(s) {action}: {shown}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(line.rstrip() for line in lines)

    def apply(self, model: nn.Module, generator: torch.Generator | None = None) -> "Plan":
        """Initialise ``model``'s parameters as planned (in place, under ``torch.no_grad()``).

        Everything is checked first (the plan against the model, every tensor and argument against its
        dtype, the generator); a refusal leaves the model unchanged. Then ``reset_parameters`` entries
        run, module by module, children before parents; then all pattern and constant fills at once (one
        ``_foreach_zero_`` over them and strided writes, :mod:`idinit.patterns`); then the
        ``torch.nn.init`` entries in order, drawing from ``generator`` (or the global RNG). The loose
        noise of parameter ``name`` depends only on one seed drawn from ``generator`` and on ``name``,
        so it is the same whatever else the plan holds, and a sharded (DTensor / FSDP2) parameter gets
        on each rank its part of the unsharded result. Norm layers whose parameters are initialised
        also get their running statistics reset. Returns the plan.
        """
        model = model_init.unwrap(model)
        jobs, calls, noisy, resets = self._check(model, generator)
        params = dict(model.named_parameters())
        with torch.no_grad():
            _reset_modules(model, resets, {e.name for e in self.entries if e.init == "keep"})
            fill(jobs, draw_seed(generator) if noisy else None)
            for e, param in calls:
                if param.device.type == "meta":
                    continue
                if e.init == "weight_norm_g":  # after its direction v is written: g = |v|, so g v / |v| = v
                    param.copy_(torch.norm_except_dim(params[e.args["direction"]], 2, e.args["dim"]))
                    continue
                # a DTensor: drawn on a full-size tensor, the rank's part kept (the unsharded draw)
                target, box = full_size(param)
                for block in (b for view in matrices(target, e.layout, e.stack) for b in row_blocks(view, e.blocks)):
                    draw_into(block, e.init, e.args, generator)
                if box is not None:
                    local_of(param).copy_(target[box])
            norms = {e.name.rpartition(".")[0] for e in self.entries if e.role in ("norm", "branch_end_norm")
                     and e.init != "keep"}
            modules = dict(model.named_modules()) if norms else {}
            for name in norms:
                module = modules[name]
                if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
                    module.reset_running_stats()
        return self

    def _check(self, model: nn.Module, generator: torch.Generator | None):
        """Everything :meth:`apply` checks before its first write; returns what it writes: the pattern
        jobs, the ``torch.nn.init`` calls, whether noise is drawn, the modules it resets."""
        params = dict(model.named_parameters())
        jobs, calls, devices, noisy = [], [], set(), False
        for e in self.entries:
            if e.name not in params:
                raise ValueError(f"plan does not match the model: it has no parameter {e.name!r}")
            param = params[e.name]
            if tuple(param.shape) != tuple(e.shape):
                raise ValueError(f"plan does not match the model: {e.name!r} has shape "
                                 f"{tuple(param.shape)}, the plan says {tuple(e.shape)}")
            if e.init not in INITIALISERS:
                raise ValueError(f"{e.name}: unknown initialiser {e.init!r}; known: {', '.join(INITIALISERS)}")
            if e.init in ("keep", "reset_parameters"):
                continue
            if e.layout in FLAT_LAYOUTS:
                try:
                    flat_stack_shape(tuple(param.shape), e.layout, e.stack)
                except ValueError as err:
                    raise ValueError(f"{e.name}: {err}") from None
            if e.init in PATTERNS or e.init in ("zeros_", "ones_"):
                for job in pattern_jobs(e.name, param, e.init, e.args, e.layout, e.blocks, e.stack):
                    jobs.append(job)
                    noisy = noisy or (e.init in RANDOM and e.args.get("loose", 0.0) > 0)
                    devices.add(job.local.device)
            else:
                tensor_init.writable(param, e.name)
                if e.init == "weight_norm_g" and e.args.get("direction") not in params:
                    raise ValueError(f"{e.name}: weight_norm_g needs args direction= (the parameter v), got {e.args}")
                calls.append((e, param))
                if param.device.type != "meta":
                    devices.add(local_of(param).device)
        tensor_init.check_generator(generator, devices, "init_")
        resets = {e.name.rpartition(".")[0] for e in self.entries if e.init == "reset_parameters"}
        if resets and generator is not None:
            raise ValueError("this plan calls modules' reset_parameters() (the 'default' scheme, reset_kept=True), "
                             "which draw from the global RNG and take no generator: seed with torch.manual_seed()")
        return jobs, calls, noisy, resets


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _reset_modules(model: nn.Module, names: set[str], protected: set[str]) -> None:
    """The model's own init (:func:`idinit.model_init.run_model_init`) on the named modules, then put
    back the parameters in ``protected`` that it touched. Only the protected parameters under those
    modules are saved (every other parameter is written after the resets), so the peak memory stays
    the model's size plus those."""
    if not names:
        return
    prefixes = tuple(f"{n}." for n in names if n) if "" not in names else ("",)
    model_init.run_model_init(model, names, {n for n in protected if n.startswith(prefixes)})


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _offset_norm(entry: PlanEntry, module: nn.Module) -> None:
    """An entry (``ones_``, or ``zeros_`` closing a branch) of a norm whose unit scale is weight 0
    (:func:`idinit.kinds.unit_scale_at_zero`): the unit scale is its 0; the zero scale that closes a branch
    (Zero-γ, ``branch_end_norm="zero"``) is the weight at which it outputs zeros (-1 for ``x_hat * (1 + w)``)."""
    if entry.init == "ones_":
        entry.init = "zeros_"
        entry.note = _join(entry.note, "its norm leaves the normalised input as it is at weight 0 (x_hat * (1 + w) "
                                       "or an added path): 0 is its unit scale")
        return
    value = closing_weight(module)
    if value is None:
        entry.note = _join(entry.note, "its weight at 0 leaves the normalised input as it is (an added path) and no "
                                       "weight zeroes it: the branch stays open")
    else:
        entry.init, entry.args = "constant_", {"val": value}
        entry.note = _join(entry.note, f"its norm scales by 1 + w: weight {value:g} closes the branch (0 is its "
                                       "unit scale)")


def _entry(scheme: str, options: dict, found, info) -> PlanEntry:
    """The row of one parameter: its role from the detection, its initialiser from the scheme."""
    shape = tuple(info.param.shape)
    if info.name in found.unclassified:
        return PlanEntry(info.name, shape, "unclassified", "keep", {}, "", found.unclassified[info.name], kind=info.kind)
    r = found.roles[info.name]
    matrix = r.role in MATRIX_ROLES
    if matrix and info.param.dim() < 2:
        raise ValueError(f"{info.name}: role {r.role!r} ({r.source}) needs a matrix or a kernel, but the parameter "
                         f"has shape {shape}")
    kind = info.kind
    if r.role in ("norm", "branch_end_norm"):
        kind = "norm_bias" if is_bias_name(info.name.rpartition(".")[2]) else "norm_weight"
    init, args = assign(scheme, r.role, kind, options, found.residual)
    layout = info.layout if matrix else "rows"
    note = r.note
    if layout == "stored":
        note = _join(note, "grouped ConvTranspose: pattern on the stored (c_in, c_out/g, ...) layout")
    blocks = blocks_of(r.role, info.gates) if matrix else 1
    stack = info.stack if matrix else 0
    rows = matrix_rows(shape, layout, stack)
    if blocks > 1 and rows % blocks:
        # apply() fills a fused projection block by block only when its rows split evenly; say what it does
        note = _join(note, f"{rows} rows do not split into {blocks} equal blocks: filled as one matrix")
        blocks = 1
    return PlanEntry(info.name, shape, r.role, init, args, r.source, note, layout, blocks, info.kind, stack)


_KEPT_ROLES = KEPT_ROLES + ("unclassified",)
_NO_OWN_INIT = "kept as it is: no method of the model draws it again (after to_empty() it is uninitialised memory)"


def _norm_states(model: nn.Module, entries: list[PlanEntry]) -> dict[str, str]:
    """The running statistics apply() resets: those of every norm layer whose parameters it initialises."""
    states: dict[str, str] = {}
    modules = {e.name.rpartition(".")[0] for e in entries if e.role in ("norm", "branch_end_norm") and e.init != "keep"}
    for name in sorted(modules):
        module = model.get_submodule(name)
        if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
            for buffer, value in module.named_buffers(recurse=False):
                if value is not None:
                    full = f"{name}.{buffer}" if name else buffer
                    states[full] = "reset with their norm layer (reset_running_stats())"
    return states


def plan(model: nn.Module, scheme: SchemeName = "idinit", example_inputs: Any = None, *,
         overrides: Mapping[str, str] | None = None, include_frozen: bool = False, reset_kept: bool = True,
         use_registry: bool = True, keep_model_values: bool = True, loose: float | None = None,
         conv: Literal["patch", "channel"] | None = None,
         branch_end: Literal["zero_preserving", "zero"] | None = None, activation: Activation | None = None,
         eps: float | None = None, branch_end_norm: Literal["one", "zero"] | None = None, **options: Any) -> Plan:
    """Decide, without touching any weight, buffer or the global RNG, what every parameter of ``model`` gets.

    Args:
        model: any ``nn.Module`` (on any device, meta included); a ``torch.compile``d model,
            ``nn.DataParallel`` or ``DistributedDataParallel`` is planned as the model inside, under
            its own parameter names.
        scheme: a name in ``idinit.SCHEMES``: ``"idinit"``, ``"kaiming"``, ``"xavier"``, ``"orthogonal"``,
            ``"default"`` (the model's own init: HF ``_init_weights``, timm ``init_weights()``, else each
            module's ``reset_parameters()``), ``"zero_gamma"`` or ``"zero"`` (see :mod:`idinit.schemes`).
        example_inputs: one forward pass's arguments (a tuple of positional arguments, a dict of
            keyword arguments, or one tensor). Without them the roles come from torch.fx (or,
            for HF transformers models, from a forward pass on ``model.dummy_inputs``); with them,
            from the autograd graph of that pass, which sees through any Python control flow. The
            buffers the pass changes and the global RNG are restored.
        overrides: ``{name pattern: role}``; wins over everything detected (see :mod:`idinit.roles`).
        include_frozen: also initialise parameters with ``requires_grad=False`` (left alone by default).
        reset_kept: parameters the scheme keeps (embeddings, learned scales, MoE routers, unclassified ones) get
            the model's own init (:mod:`idinit.model_init`; what the model made them, drawn again), so
            that a model materialised with ``to_empty()`` has no uninitialised memory left. ``False``
            leaves them as they are (weights you loaded yourself). A role stated as ``"keep"`` and a
            frozen parameter are never touched.
        use_registry: use the registry of known blocks (switch off to see the graph's own answer).
        keep_model_values: keep what the model set on purpose (a prior bias, a small layer scale
            closing a branch: see :mod:`idinit.values`), read from the values; False plans by position
            alone. Memory nothing wrote since it was allocated (after ``to_empty()``) is never kept: a
            bias there gets its zeros, a layer scale is judged on what the model's own init writes.
        loose: ``"idinit"``: std of the loose-condition noise on IDI / IDIC (paper Sec. 3.1; default 1e-6, 0: none).
        conv: ``"idinit"``: ``"patch"`` (IDIC, patch-maintain; default) or ``"channel"`` (the centre-tap
            channel-maintain of the paper's Table 2 ablation).
        branch_end: ``"idinit"``: ``"zero_preserving"`` (IDIZ; default) or ``"zero"`` (exact zeros) on the
            last layer of each residual branch.
        activation: ``"idinit"``: the network's activation, which sets the stem's gain (sqrt(2) for
            ReLU-like ones, 1 for tanh / sigmoid / linear; default ``"relu"``).
        eps: ``"idinit"``: the +-eps of IDIZ (default 1e-6).
        branch_end_norm: ``"idinit"``: ``"one"`` (the paper; default) or ``"zero"`` (the norm closing each
            residual branch set to scale 0 as Zero-gamma does; not in the paper, see :mod:`idinit.schemes`).
        **options: the options of a scheme that the named keywords above do not cover (each scheme
            declares its own: :data:`idinit.schemes.TABLE`).

    Returns:
        the :class:`Plan`. Parameters no rule fits are listed in ``plan.unclassified`` (with a
        warning); an unknown scheme, an option of another scheme or an argument of the wrong type raises.
    """
    model = model_init.checked_model(model, overrides, {"include_frozen": include_frozen, "reset_kept": reset_kept,
                                                "use_registry": use_registry,
                                                "keep_model_values": keep_model_values}, example_inputs)
    named = {"loose": loose, "conv": conv, "branch_end": branch_end, "activation": activation, "eps": eps,
             "branch_end_norm": branch_end_norm}
    options = check_options(scheme, {**{k: v for k, v in named.items() if v is not None}, **options})
    declared = lookup(scheme)
    # an FSDP2 model: planned as unsharded, on meta
    with model_init.state_restored(model), unsharded_view(model, example_inputs) as view_inputs:
        found = detect(model, view_inputs, overrides, use_registry, declared.needs_positions, keep_model_values)
    entries = []
    for name, info in found.params.items():
        entry = _entry(scheme, options, found, info)
        # the probe runs only where the entry can change: a unit scale, or a zero scale closing a branch
        if entry.kind == "norm_weight" and (entry.init == "ones_" or entry.init == "zeros_" and
                                            entry.role == "branch_end_norm"):
            module = model.get_submodule(info.module)
            if unit_scale_at_zero(module):
                _offset_norm(entry, module)
        own = model_init.describe(model, info.module)
        # a role stated "keep", and a value the model set on purpose (idinit.values), stay as they are;
        # under "default" the model's own init sets the latter itself
        source = found.roles[name].source if name in found.roles else "type"
        stated_keep = entry.role == "keep" and source != "type" and not (scheme == "default" and source == "values")
        if entry.init == "reset_parameters" and own is None:
            entry.init = "keep"
            entry.note = _join(entry.note, "its module has no init of its own (no reset_parameters())")
        if not info.param.requires_grad and not include_frozen:
            entry.init, entry.args = "keep", {}
            entry.note = _join(entry.note, "frozen (requires_grad=False): include_frozen=True initialises it")
        elif entry.init == "keep" and reset_kept and not stated_keep and info.param.numel():
            if own is None:
                entry.note = _join(entry.note, _NO_OWN_INIT)
            else:
                entry.init, entry.args = "reset_parameters", {}
        elif info.param.numel() == 0:
            entry.init, entry.args = "keep", {}
        if entry.init == "reset_parameters":
            entry.note = _join(entry.note, f"the model's own init: {own}")
        entries.append(entry)
    entries = parametrized_rows(model, entries, scheme, options, found.residual)
    p = Plan(type(model).__name__, scheme, options, entries, found.source, found.residual, found.notes,
             _norm_states(model, entries))
    if p.unclassified:
        listing = "; ".join(f"{e.name}: {e.reason}" for e in p.unclassified)
        # "left untouched" was wrong where the module has an init of its own: the entry redraws them with it
        # (zoo audit: wav2vec2's masked_spec_embed, then flagged overwritten_prior by check)
        warn_caller(f"idinit.plan: {len(p.unclassified)} parameter(s) no rule fits, left to the model's own init "
                    f"(kept as they are where it has none): {listing}. "
                    f"State their roles to initialise them, e.g. overrides={{'{p.unclassified[0].name}': 'keep'}} "
                    "(or 'bias', 'scale', ...), or idinit.tag()")
    if declared.equals_without and found.residual and not p.by_role(declared.equals_without[0]):
        role, other = declared.equals_without
        warn_caller(f"{scheme}: no parameter of this model has the role {role!r}, so it equals {other!r} here")
    return p


def _own_init(model: nn.Module, p: Plan, generator: torch.Generator | None) -> None:
    """The model's own init on the plan's ``reset_parameters`` entries; a kept parameter (embedding,
    scale) that it does not write is put back and its entry says so."""
    resets = [e for e in p if e.init == "reset_parameters"]
    watched = {e.name for e in resets if e.role in _KEPT_ROLES}
    with model_init.seeded_from(generator, model):
        unwritten = model_init.run_on_parameters(model, {e.name for e in resets}, watched,
                                                 {e.name for e in p if e.init == "keep"})
    for entry in p:
        if entry.name in unwritten:
            entry.init = "keep"
            entry.note = _join(entry.note, "left as it was: the model's own init does not write it")


def init_(model: nn.Module, scheme: SchemeName = "idinit", example_inputs: Any = None, *,
          generator: torch.Generator | None = None, overrides: Mapping[str, str] | None = None,
          include_frozen: bool = False, reset_kept: bool = True, use_registry: bool = True,
          keep_model_values: bool = True, loose: float | None = None, conv: Literal["patch", "channel"] | None = None,
          branch_end: Literal["zero_preserving", "zero"] | None = None, activation: Activation | None = None,
          eps: float | None = None, branch_end_norm: Literal["one", "zero"] | None = None, **options: Any) -> Plan:
    """Initialise ``model`` in place with ``scheme`` and return the :class:`Plan` that was applied.

    The arguments are those of :func:`plan`, plus ``generator`` for every random draw (the loose noise,
    Kaiming, and the model's own init, which runs from a seed drawn from it without moving the global
    RNG). The same seed gives bitwise the same weights, eager or built on the meta device and
    materialised with ``to_empty()``. In order, on the model inside any ``torch.compile`` /
    ``DataParallel`` / ``DistributedDataParallel`` wrapper:

    1. an HF model's tied weights that ``to_empty()`` untied are tied again (``tie_weights()``);
    2. buffers are rebuilt with the model's own methods (HF ``_init_weights``, timm
       ``init_non_persistent_buffers()``, ``reset_running_stats()``, ``reset_parameters()``), except
       those of modules left as they are (frozen, ``keep``); ``plan.states`` lists each buffer's fate;
    3. the plan is made (:func:`plan`);
    4. the parameters it gives the model's own init get it (embeddings, scales: ``reset_kept``);
    5. the plan is applied (:meth:`Plan.apply`).
    """
    model = model_init.checked_model(model, overrides, {"include_frozen": include_frozen, "reset_kept": reset_kept,
                                                "use_registry": use_registry,
                                                "keep_model_values": keep_model_values}, example_inputs)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    retied = model_init.tie_hf_weights(model)
    params = dict(model.named_parameters())
    stated = {n for n, (role, _) in user_roles(model, overrides, {n: n for n in params}).items() if role == "keep"}
    untouched = stated | {n for n, t in params.items() if not t.requires_grad and not include_frozen}
    # buffers first, so that the planning forward pass reads real ones; if planning raises they are put
    # back, and the recipes' own random draws (their parameters are restored) do not move the global RNG
    with model_init.state_restored(model, buffers_on_error_only=True):
        rebuilt = model_init.rebuild_buffers(model, model_init.modules_holding_only(model, untouched))
        p = plan(model, scheme, example_inputs, overrides=overrides, include_frozen=include_frozen,
                 reset_kept=reset_kept, use_registry=use_registry, keep_model_values=keep_model_values, loose=loose,
                 conv=conv, branch_end=branch_end, activation=activation, eps=eps, branch_end_norm=branch_end_norm,
                 **options)
        # what apply() will write is checked before anything is (the own init included): a value the dtype
        # cannot hold refuses the call with the buffers put back (issue 13 §4)
        _written(p)._check(model, generator)
    if retied:
        p.notes.append("tied again (to_empty() had untied them; HF tie_weights()): " + ", ".join(retied))
    p.states = {**rebuilt, **p.states}
    _own_init(model, p, generator)
    stuck = [e.name for e in p if e.init == "keep" and (_NO_OWN_INIT in e.note or "own init does not write" in e.note)]
    # a note, not a warning: for a model built eagerly these hold what its constructor made (ReZero's 0,
    # a layer scale); only after to_empty() are they uninitialised memory, which no test can see
    if stuck:
        p.notes.append(f"{len(stuck)} parameter(s) kept as they are, no method of the model initialises them: "
                       f"{', '.join(stuck)}; after to_empty() they hold uninitialised memory: set them yourself "
                       "or state their roles with overrides=")
    left = [n for n, action in p.states.items() if action.startswith("left")]
    if left:
        p.notes.append(f"{len(left)} buffer(s) no method of the model rebuilds: {', '.join(left)}; after to_empty() "
                       "they hold uninitialised memory: set them yourself")
    # the own init is done: apply() writes the rest (it would run reset_parameters entries again)
    _written(p).apply(model, generator)
    return p


def _written(p: Plan) -> Plan:
    """What :func:`init_` applies after the model's own init: ``p`` with its own-init entries kept."""
    written = [dataclasses.replace(e, init="keep") if e.init == "reset_parameters" else e for e in p.entries]
    return Plan(p.model_name, p.scheme, p.options, written, p.source, p.residual, p.notes, p.states)
