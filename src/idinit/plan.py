"""Plan and apply: ``idinit.plan(model)`` decides what every parameter gets without touching any
weight; ``idinit.init_(model)`` builds the plan, applies it and returns it.

A :class:`Plan` is a list of :class:`PlanEntry` rows (one per parameter, tied parameters once) that
prints as a table and can be edited before :meth:`Plan.apply`. Applying works on any device,
on a model built on the meta device after ``to_empty()`` (same seed, bitwise the same weights as
an eager model) and writes only parameters (plus the running statistics of the norm layers it
initialises, which belong to the old weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

import idinit.init as tensor_init
from idinit.detect import detect, warn_caller
from idinit.noise import draw_seed
from idinit.patterns import PATTERNS, Job, fill
from idinit.sharded import local_of
from idinit.roles import MATRIX_ROLES, is_bias_name
from idinit.schemes import assign, blocks_of, check_options, needs_positions

__all__ = ["Plan", "PlanEntry", "plan", "init_"]

_INITIALISERS = {
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
}
_RANDOM = {"identity_", "channel_identity_", "kaiming_normal_", "kaiming_uniform_", "xavier_uniform_",
           "xavier_normal_", "orthogonal_", "normal_", "uniform_"}
INITIALISERS = tuple(_INITIALISERS) + ("ones_", "zeros_", "reset_parameters", "keep")


@dataclass
class PlanEntry:
    """One parameter: what it is (``role``) and what it gets (``init(view, **args)``).

    ``layout`` is how the stored tensor is read as ``(out, in, ...)``: ``rows`` (as stored),
    ``t`` (HF ``Conv1D``, stored ``(in, out)``), ``transpose01`` (``ConvTranspose``, groups 1) or
    ``stored`` (grouped ``ConvTranspose``: filled as stored). ``blocks > 1`` fills that many row
    blocks separately (fused q/k/v projections, recurrent gate stacks).
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

    @property
    def reason(self) -> str:
        """Why an unclassified parameter could not be placed (its note)."""
        return self.note


class Plan:
    """What :func:`init_` does to each parameter; iterate it, index it by name, print it, edit it."""

    def __init__(self, model_name: str, scheme: str, options: dict, entries: list[PlanEntry],
                 source: str, residual: bool, notes: list[str]):
        self.model_name, self.scheme, self.options = model_name, scheme, options
        self.entries, self.source, self.residual, self.notes = entries, source, residual, notes

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
        """Parameters no rule placed (left untouched); each entry's ``reason`` says why."""
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
            layout = {"t": "as .t()", "transpose01": "as .transpose(0, 1)", "stored": "as stored"}.get(e.layout, "")
            extra = ", ".join(x for x in (f"{e.blocks} blocks" if e.blocks > 1 else "", layout) if x)
            args = f"{args} [{extra}]" if extra and args else f"[{extra}]" if extra else args
            rows.append((e.name, "x".join(map(str, e.shape)) or "()", e.role, e.init, args,
                         "; ".join(x for x in (e.source, e.note) if x)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
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
            if e.init in PATTERNS or e.init in ("zeros_", "ones_"):
                job = Job(e.name, param, e.init, e.args, e.layout, e.blocks)
                if tensor_init.check(job, e.name):
                    jobs.append(job)
                    noisy = noisy or (e.init in _RANDOM and e.args.get("loose", 0.0) > 0)
                    devices.add(job.local.device)
            else:
                tensor_init.writable(param, e.name)
                calls.append((e, param))
                if param.device.type != "meta":
                    devices.add(local_of(param).device)
        tensor_init.check_generator(generator, devices, "init_")
        resets = {e.name.rpartition(".")[0] for e in self.entries if e.init == "reset_parameters"}
        if resets and generator is not None:
            raise ValueError("this plan calls modules' reset_parameters() (the 'default' scheme, reset_kept=True), "
                             "which draw from the global RNG and take no generator: seed with torch.manual_seed()")
        with torch.no_grad():
            _reset_modules(model, resets, {e.name for e in self.entries if e.init == "keep"})
            fill(jobs, draw_seed(generator) if noisy else None)
            for e, param in calls:
                if param.device.type != "meta":
                    view = _view(param, e.layout)
                    for block in _blocks(view, e.blocks):
                        _fill(block, e.init, e.args, generator)
            norms = {e.name.rpartition(".")[0] for e in self.entries if e.role in ("norm", "branch_end_norm")
                     and e.init != "keep"}
            for name in norms:
                module = model.get_submodule(name)
                if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
                    module.reset_running_stats()
        return self


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _view(param: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "t":
        return param.t()
    if layout == "transpose01":
        return param.transpose(0, 1)
    return param


def _blocks(view: torch.Tensor, blocks: int) -> tuple[torch.Tensor, ...]:
    if blocks > 1 and view.shape[0] % blocks == 0:
        return view.chunk(blocks, 0)
    return (view,)


def _fill(view: torch.Tensor, init: str, args: Mapping[str, Any], generator) -> None:
    """One ``torch.nn.init`` initialiser on one (block of a) parameter."""
    # torch.nn.init's fills go through a contiguous buffer: orthogonal_ needs view_as(), which
    # a transposed view cannot give. The random draws are the same either way.
    target = view if view.is_contiguous() else torch.empty(view.shape, dtype=view.dtype, device=view.device)
    kwargs = dict(args, generator=generator) if generator is not None else dict(args)
    _INITIALISERS[init](target, **kwargs)
    if target is not view:
        view.copy_(target)


def _post_order(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for name, child in model.named_children():
        yield from _post_order(child, f"{prefix}{name}.")
    yield prefix.rstrip("."), model


def _reset_method(module: nn.Module):
    return getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)


def _reset_modules(model: nn.Module, names: set[str], kept: set[str]) -> None:
    """Call ``reset_parameters()`` of the named modules, children before parents (the order in which
    a constructor runs them, so that e.g. MultiheadAttention's zero ``out_proj.bias`` wins), then put
    back the kept parameters (frozen, unclassified) under those modules that a reset touched. Only those
    are copied (every other parameter is written after the resets), so the peak memory stays the
    model's size plus the kept parameters of the reset modules."""
    if not names:
        return
    prefixes = tuple(f"{n}." for n in names if n) if "" not in names else ("",)
    saved = {n: p.detach().clone() for n, p in model.named_parameters()
             if n in kept and n.startswith(prefixes) and p.device.type != "meta"}
    for name, module in _post_order(model):
        if name in names:
            _reset_method(module)()
    params = dict(model.named_parameters())
    for n, value in saved.items():
        params[n].copy_(value)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


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
    return PlanEntry(info.name, shape, r.role, init, args, r.source, note, layout,
                     blocks_of(r.role, info.gates) if matrix else 1, info.kind)


def plan(model: nn.Module, scheme: str = "idinit", example_inputs: Any = None, *,
         overrides: Mapping[str, str] | None = None, include_frozen: bool = False, reset_kept: bool = False,
         use_registry: bool = True, keep_model_values: bool = True, **options: Any) -> Plan:
    """Decide, without touching any weight, what every parameter of ``model`` gets under ``scheme``.

    Args:
        model: any ``nn.Module`` (on any device, meta included).
        scheme: ``"idinit"``, ``"kaiming"``, ``"xavier"``, ``"orthogonal"``, ``"default"``,
            ``"zero_gamma"`` or ``"zero"`` (see :mod:`idinit.schemes`).
        example_inputs: one forward pass's arguments (a tuple of positional arguments, a dict of
            keyword arguments, or one tensor). Without them the roles come from torch.fx (or,
            for HF transformers models, from a forward pass on ``model.dummy_inputs``); with them,
            from the autograd graph of that pass, which sees through any Python control flow.
        overrides: ``{name pattern: role}``; wins over everything detected (see :mod:`idinit.roles`).
        include_frozen: also initialise parameters with ``requires_grad=False`` (left alone by default).
        reset_kept: parameters the scheme keeps (embeddings, scales, unclassified) get their
            module's ``reset_parameters()`` instead; needed after ``to_empty()``, where "kept" means
            uninitialised memory.
        use_registry: use the registry of known blocks (switch off to see the graph's own answer).
        keep_model_values: keep what the model set on purpose (a prior bias, a small layer scale
            closing a branch: see :mod:`idinit.values`); False plans by position alone. Off under
            ``reset_kept=True``, which says the model's values are uninitialised memory.
        **options: the scheme's options, e.g. for ``"idinit"``: ``loose=1e-6``, ``conv="patch"``,
            ``branch_end="zero_preserving"``, ``activation="relu"``, ``eps=1e-6``.

    Returns:
        the :class:`Plan`. Parameters no rule fits are listed in ``plan.unclassified`` (with a
        warning) and left untouched; an unknown scheme or option raises.
    """
    options = check_options(scheme, options)
    found = detect(model, example_inputs, overrides, use_registry, needs_positions(scheme),
                   keep_model_values and not reset_kept)  # reset_kept: the values are to_empty() garbage
    entries = []
    for name, info in found.params.items():
        entry = _entry(scheme, options, found, info)
        has_reset = _reset_method(model.get_submodule(info.module)) is not None
        if entry.init == "reset_parameters" and not has_reset:
            entry.init = "keep"
            entry.note = _join(entry.note, "its module has no reset_parameters()")
        if not info.param.requires_grad and not include_frozen:
            entry.init, entry.args = "keep", {}
            entry.note = _join(entry.note, "frozen (requires_grad=False): include_frozen=True initialises it")
        elif entry.init == "keep" and reset_kept and has_reset:
            entry.init, entry.args = "reset_parameters", {}
        elif info.param.numel() == 0:
            entry.init, entry.args = "keep", {}
        entries.append(entry)
    p = Plan(type(model).__name__, scheme, options, entries, found.source, found.residual, found.notes)
    if p.unclassified:
        listing = "; ".join(f"{e.name}: {e.reason}" for e in p.unclassified)
        warn_caller(f"idinit.plan: {len(p.unclassified)} parameter(s) left untouched, no rule fits: {listing}. "
                    f"State their roles to initialise them, e.g. overrides={{'{p.unclassified[0].name}': 'keep'}} "
                    "(or 'bias', 'scale', ...), or idinit.tag()")
    if scheme == "zero_gamma" and found.residual and not p.by_role("branch_end_norm"):
        warn_caller("zero_gamma: no norm layer closes a residual branch in this model, so it equals 'kaiming' here")
    return p


def init_(model: nn.Module, scheme: str = "idinit", example_inputs: Any = None, *,
          generator: torch.Generator | None = None, **kwargs: Any) -> Plan:
    """Initialise ``model`` in place with ``scheme`` and return the :class:`Plan` that was applied.

    Same arguments as :func:`plan`, plus ``generator`` for the random draws (the loose perturbation,
    Kaiming, ...); the same seed gives bitwise the same weights, eager or built on the meta device
    and materialised with ``to_empty()``.
    """
    return plan(model, scheme, example_inputs, **kwargs).apply(model, generator=generator)
