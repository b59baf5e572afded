"""Check: what an initialisation did, measured on the user's own model.

``idinit.check(model, example_inputs)`` runs one forward and one backward pass and returns a
:class:`Report` (a table when printed, ``to_dict()`` for JSON, ``plot(path)`` for a PNG):

- per residual block: how far the add's output is from its skip input, ``|branch| / |skip|``. The
  blocks are the branches :func:`idinit.plan` finds (the library's own graph analysis: each
  ``branch_end`` layer), plus every layer whose measured gain is near zero;
- per layer: RMS of its input and output, the fraction of dead units (ReLU-family outputs never
  positive over the batch), the share of its input energy its weights read, and the norm of the
  gradient of its parameters;
- flags, each with the names involved and a remedy (:data:`FLAG_KINDS`).

How it measures. Module hooks give every layer's input and output; a ``TorchFunctionMode`` follows
the output of each near-zero layer and branch end through the following operations up to the add
where it meets a tensor that does not come from it: that add closes its branch. The backward pass
differentiates a fixed random projection of the outputs (N(0, 1) directions from a generator seeded
with ``seed``, averaged over the batch), so the gradient norms say how each layer moves the output,
not how it moves a task loss.

It reads the model and never changes it: parameters, buffers (batch-norm running statistics), the
``.grad`` fields (gradients come from ``torch.autograd.grad``), every module's training flag and
the global RNG state are as before. The pass runs in training mode by default (``train=True``:
batch statistics, dropout drawn from ``seed``), as the first step of training sees the model.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Any, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from idinit.detect import _as_inputs
from idinit.findings import (DEAD_OUTPUT, DEAD_SIBLING, EXPLODING, FLAG_KINDS, NEAR_ZERO_GAIN, STARVED_SHARE, VANISHING,
                             BlockStat, Flag, LayerStat, OutputStat, Report, format_value, reopened_branch_flag,
                             stacked_gains_flag)
from idinit.graph import _tensors
from idinit.inputs import example_inputs_for
from idinit.kinds import MATRIX_KINDS, parameter_infos
from idinit.plan import plan as make_plan
from idinit.priors import overwritten_priors, reference_state
from idinit.roles import BRANCH_END_ROLES

__all__ = ["check", "Report", "Flag", "FLAG_KINDS"]

_ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__"}
_PRODUCTS = {"einsum", "matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "linear"}
_ACTIVATION_FUNCTIONS = {"relu", "relu_", "relu6", "gelu", "silu", "silu_", "leaky_relu", "leaky_relu_", "elu",
                         "elu_", "mish", "hardswish", "celu", "selu"}
_ACTIVATION_MODULE = re.compile(r"relu|gelu|silu|swish|mish|elu", re.IGNORECASE)


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item() if t.numel() else 0.0


def _first_float(values) -> torch.Tensor | None:
    return next((t for t in _tensors(values) if t.is_floating_point()), None)


def _channel_energy(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.detach().double().movedim(dim, 0).reshape(x.shape[dim], -1).pow(2).sum(1)


def _dead_share(x: torch.Tensor) -> float:
    """Share of channels (dim 1 of a >= 4-d tensor, else the last dim) never positive over the batch."""
    dim = 1 if x.dim() >= 4 else -1
    if x.dim() == 0:
        return float(x.item() <= 0)
    alive = (x.detach().movedim(dim, 0).reshape(x.shape[dim], -1) > 0).any(1)
    return 1.0 - alive.double().mean().item()


def _read_share(module: nn.Module, weight: torch.Tensor, transposed: bool, x: torch.Tensor) -> float | None:
    """Share of ``x``'s energy on the input channels the layer's weights read (entries above 1e-3 of
    the largest): ~0 when every channel it reads is zero-filled (results/idic-reads-padding)."""
    w = weight.detach()
    if transposed:
        w = w.t()
    conv = w.dim() > 2
    dim = 1 if conv else -1
    if x.dim() < 2 and not (x.dim() == 1 and not conv):
        return None
    energy = _channel_energy(x, dim if x.dim() > 1 else 0)
    total = energy.sum().item()
    big = w.abs().amax().item()
    if total == 0 or big == 0 or not math.isfinite(total):
        return None
    mask = (w.abs() > 1e-3 * big).reshape(w.shape[0], w.shape[1], -1).any(2)  # (out, in per group)
    groups = getattr(module, "groups", 1) if conv else 1
    if mask.shape[1] * groups != energy.shape[0]:
        return None
    per_group = mask.reshape(groups, -1, mask.shape[1]).any(1)  # (groups, in per group)
    return energy[per_group.reshape(-1)].sum().item() / total


class _Recorder(TorchFunctionMode):
    """Module hooks and a torch-function mode for one forward pass (module docstring)."""

    def __init__(self, model: nn.Module, roles: Mapping[str, str], contracted: set[str] = frozenset()):
        super().__init__()
        infos, _ = parameter_infos(model)
        self.param_names = {id(i.param): i.name for i in infos.values()}
        self.kinds = {n: set(i.kinds) for n, i in infos.items()}
        self.roles, self.contracted = roles, contracted
        self.layers: list[LayerStat] = []
        self.blocks: list[BlockStat] = []
        self.sources: dict[str, LayerStat] = {}
        self.scales: set[str] = set()  # sources with no matrix weight (layer scales, gates)
        self.after: dict[str, set] = {}
        self.tags: dict[int, tuple[torch.Tensor, frozenset]] = {}
        self.derived: dict[int, tuple[torch.Tensor, frozenset]] = {}
        # buffers, and what is computed from buffers and parameters alone: a shift made of them (a frozen batch
        # norm's ``bias - running_mean * scale``, Swin2SR's ``+ mean``) is no skip (zoo audit, fourth round)
        self.constants: dict[int, torch.Tensor] = {id(b): b for b in model.buffers()}
        self.stack: list[tuple[str, nn.Module, Any, bool]] = []  # name, module, first float input, any tensor in
        self.calls: dict[str, int] = {}
        self.busy = False
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post(name), always_call=True))

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def tags_of(self, t) -> frozenset:
        entry = self.tags.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else frozenset()

    def weights_of(self, t) -> frozenset:
        """The parameters ``t`` is (a parameter itself, or a view / reshape of parameters)."""
        if id(t) in self.param_names:
            return frozenset([self.param_names[id(t)]])
        entry = self.derived.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else frozenset()

    def constant(self, t) -> bool:
        """Whether ``t`` is a buffer or computed from buffers and parameters alone (no data)."""
        return self.constants.get(id(t)) is t or bool(self.weights_of(t))

    def _bias_add(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        """Whether one side of ``a + b`` is a parameter or a buffer (or computed from them alone) broadcast
        onto the other."""
        try:
            full = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            return False
        return any(self.constant(t) and t.shape != full for t in (a, b))

    @staticmethod
    def _merges(ta: frozenset, tb: frozenset) -> bool:
        """Whether ``a + b`` sums two branches into one (routed + shared experts before the residual add):
        both sides carry sources and none in common (a side holding the other's sources is a residual add
        inside that branch, or a block's branch read from a trunk an earlier near-zero layer tagged).
        The sum is one branch carrying both tags, closed where it meets a tensor not derived from it."""
        return bool(ta and tb) and not ta & tb

    def small(self, tags) -> bool:
        """Whether a tensor lies inside a branch opened by a near-zero or starved layer."""
        return any(self.sources[s].near_zero for s in tags)

    def _pre(self, name: str):
        def hook(module, args, kwargs):
            fed = any(isinstance(t, torch.Tensor) for t in tree_flatten((args, kwargs))[0])
            self.stack.append((name, module, _first_float(args), fed))
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            _, _, x, fed = self.stack.pop()
            own = [self.param_names[id(p)] for p in module.parameters(recurse=False) if id(p) in self.param_names]
            activation = not own and not any(True for _ in module.children()) and \
                bool(_ACTIVATION_MODULE.search(type(module).__name__))
            y = _first_float(output)
            if (not own and not activation) or y is None:
                return
            self.busy = True
            try:
                stat = self._stat(name, type(module).__name__, x, y, activation)
                stat.params = own
                stat.table = not fed  # no tensor in: its output is made from its parameters alone
                weight = next((p for p in own if p.rpartition(".")[2] == "weight" and self.kinds[p] & MATRIX_KINDS), None)
                if weight is not None:
                    stat.role = self.roles.get(weight, "")
                    if x is not None:
                        stat.reads = _read_share(module, module.weight, "linear_t" in self.kinds[weight], x)
                elif own:
                    stat.role = self.roles.get(own[0], "")
                # what opens a branch: a near-zero or branch-end layer, or a learned scale (layer scale, ReZero
                # gate, zero norm weight) that holds its branch at ~0 as IDIZ does (zoo audit: deit3's ls1)
                if own and (stat.near_zero or (weight is not None and stat.role == "branch_end")):
                    if weight is None:
                        self.scales.add(stat.name)
                    self.sources[stat.name] = stat
                    self.after.setdefault(stat.name, set())
                    for t in _tensors(output):
                        self.tags[id(t)] = (t, self.tags_of(t) | {stat.name})
                stat.small = self.small(self.tags_of(y))
            finally:
                self.busy = False
        return hook

    def _contracted_source(self, name: str, inputs: list, out) -> frozenset:
        """A raw parameter the plan reads as one matrix (kind ``contracted``: XLNet's ``o`` in an einsum,
        idinit.contraction), taken whole by a product, is measured as a layer of its own, named after it; when
        near zero or closing a branch it opens one as a near-zero module does (its name, as a tag of ``out``)."""
        data = next((t for t in inputs if t.is_floating_point() and not self.weights_of(t)), None)
        held = [self.param_names[id(t)] for t in inputs if self.param_names.get(id(t)) in self.contracted]
        y = _first_float(out)
        if data is None or len(held) != 1 or y is None:
            return frozenset()
        self.busy = True
        try:
            stat = self._stat(held[0], name, data, y, False)
        finally:
            self.busy = False
        stat.params, stat.role = held, self.roles.get(held[0], "")
        stat.small = stat.near_zero or self.small(frozenset().union(*(self.tags_of(t) for t in inputs)))
        if not (stat.near_zero or stat.role in BRANCH_END_ROLES):
            return frozenset()
        self.sources[stat.name] = stat
        self.after.setdefault(stat.name, set())
        return frozenset([stat.name])

    def _stat(self, name: str, type_name: str, x, y, activation: bool) -> LayerStat:
        count = self.calls[name] = self.calls.get(name, 0) + 1
        stat = LayerStat(name if count == 1 else f"{name}#{count}", type_name, "activation" if activation else "",
                         None if x is None else _rms(x), _rms(y), _dead_share(y) if activation else None)
        self.layers.append(stat)
        return stat

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.busy:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        closing, sides = frozenset(), None
        # a sum of two activations; a parameter broadcast onto one (a bias, timm's LearnableAffineBlock)
        # closes no branch, a parameter expanded to the batch (CaiT's class token) may
        if name in _ADDS and len(args) >= 2 and all(isinstance(a, torch.Tensor) and a.is_floating_point()
                                                     for a in args[:2]) and not self._bias_add(args[0], args[1]):
            ta, tb = self.tags_of(args[0]), self.tags_of(args[1])
            closing = frozenset() if self._merges(ta, tb) else ta ^ tb
            if closing:
                sides = (ta, _rms(args[0]), _rms(args[1]))
        out = func(*args, **kwargs)
        carried = frozenset().union(*(self.tags_of(t) for t in inputs)) - closing if inputs else frozenset()
        if name in _PRODUCTS and self.contracted:  # most models hold no contracted parameter
            carried |= self._contracted_source(name, inputs, out)
        if sides is not None:
            ta, ra, rb = sides
            owner = self.stack[-1][0] if self.stack else ""
            order = list(self.sources)
            for side in (closing & ta, closing - ta):  # one block per side: its latest source is the branch's end
                if side:
                    # the latest near-zero source ends the branch; a layer before a near-zero scale that
                    # closes the same branch, if near zero itself, is its end (the scale is what follows it)
                    source = max(side, key=lambda s: (self.sources[s].near_zero, s not in self.scales, order.index(s)))
                    branch, skip = (ra, rb) if source in ta else (rb, ra)
                    self.blocks.append(BlockStat(owner, source, skip, branch, branch / skip if skip else math.inf,
                                                 sorted(self.after.get(source, ()))))
        used = [self.weights_of(t) for t in inputs]
        if inputs and all(used):  # a weight chain (gamma.reshape(...), w.t()): its result stands for the weights
            for t in _tensors(out):
                self.derived[id(t)] = (t, frozenset().union(*used))
        elif inputs and all(self.constant(t) for t in inputs):
            self.constants.update((id(t), t) for t in _tensors(out))
        for source in carried if name not in _ADDS else ():  # a parameter added (a shift) scales nothing
            self.after[source].update(*used)
        for t in _tensors(out):
            if carried:
                self.tags[id(t)] = (t, carried)
            elif self.tags_of(t):
                del self.tags[id(t)]
        if name in _ACTIVATION_FUNCTIONS and isinstance(out, torch.Tensor) and out.is_floating_point():
            top = self.stack[-1] if self.stack else ("", None, None, True)
            in_module = top[1] is not None and not any(True for _ in top[1].children()) and \
                not any(True for _ in top[1].parameters(recurse=False)) and _ACTIVATION_MODULE.search(type(top[1]).__name__)
            if not in_module:
                stat = self._stat(f"{top[0]}.{name}" if top[0] else name, name, None, out, True)
                stat.small = self.small(carried)
        return out


def check(model: nn.Module, example_inputs: Any = None, *, reference: Mapping[str, torch.Tensor] | nn.Module | None = None,
          train: bool = True, seed: int = 0) -> Report:
    """Measure, with one forward and one backward pass, what the initialisation did to ``model``.

    Args:
        model: any ``nn.Module``, initialised as it will be trained. It is read, never changed.
        example_inputs: one forward pass's arguments, as for :func:`idinit.plan` (a tuple, a dict of
            keyword arguments, or one tensor); HF transformers models default to ``model.dummy_inputs``.
            Use a batch of several samples: dead units and batch statistics are measured over it.
        reference: the model's state before initialisation (``model.state_dict()`` copied, or a module
            built the same way and not initialised). Biases, norm parameters and scales the model had
            set on purpose (a constant other than PyTorch's default, a value outside the default
            range, any learned scale) and that now differ are flagged ``overwritten_prior``. Without
            it that flag is not checked (the report says so).
        train: run the pass in training mode (batch statistics, dropout), as training will.
        seed: seeds dropout and the random output projection the backward pass differentiates.

    Returns:
        a :class:`Report`. Raises ``ValueError`` for inputs it cannot use, before running anything.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check expects an nn.Module, got {type(model).__name__}")
    if example_inputs is None:
        built = example_inputs_for(model)
        example_inputs = None if built is None else built[0]
        if example_inputs is None:
            raise ValueError(f"check needs example_inputs= for {type(model).__name__}: one forward pass's arguments, "
                             "e.g. (torch.randn(8, 3, 64, 64),) for an image model")
    example_inputs = _as_inputs(example_inputs)
    ref = reference_state(reference)
    if ref is not None and not set(ref) & {n for n, _ in model.named_parameters()}:
        raise ValueError("reference shares no parameter name with the model: pass the model's own state_dict() from "
                         "before initialisation")
    notes: list[str] = []
    roles, contracted = _roles(model, example_inputs, notes)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    devices = sorted({p.device.index or 0 for _, p in params if p.device.type == "cuda"})
    training = {m: m.training for m in model.modules()}
    buffers = [(m, k, b, b.detach().clone()) for m in model.modules() for k, b in m._buffers.items() if b is not None]
    recorder = _Recorder(model, roles, contracted)
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
            torch.random.default_generator.manual_seed(seed)
            for d in devices:
                torch.cuda.default_generators[d].manual_seed(seed)
            model.train(train)
            dropped = _stochastic_depth_off(model) if train else 0
            if dropped:
                notes.append(f"stochastic depth off for the pass ({dropped} module(s)): a branch dropped for the whole "
                             "batch would read as closed")
            try:
                with recorder:
                    out = model(**example_inputs) if isinstance(example_inputs, Mapping) else model(*example_inputs)
            except Exception as err:  # the model's own error on these inputs: name it first
                raise ValueError(f"the forward pass of {type(model).__name__} on example_inputs failed: "
                                 f"{type(err).__name__}: {err}") from err
            recorder.close()
            outputs = _outputs(out, recorder)
            grads = _gradients(outputs, params, seed, notes)
    finally:
        recorder.close()
        for m, mode in training.items():
            m.training = mode
        with torch.no_grad():
            for m, k, b, saved in buffers:
                m._buffers[k] = b
                b.copy_(saved)
    for stat in recorder.layers:
        if stat.params:
            found = [grads[p] for p in stat.params if p in grads]
            stat.grad_norm = math.sqrt(sum(g * g for g in found)) if found else None
    stats = [OutputStat(name, list(t.shape), _rms(t), sorted(s for s in recorder.tags_of(t) if recorder.sources[s].near_zero))
             for name, t in outputs]
    flags = _flags(model, recorder, stats, grads, ref, notes)
    return Report(type(model).__name__, train, recorder.layers, recorder.blocks, stats, flags, notes)


def _stochastic_depth_off(model: nn.Module) -> int:
    """Put stochastic-depth modules (timm's ``DropPath``, HF's ``*DropPath``, torchvision's
    ``StochasticDepth``) in eval mode. Unlike dropout, they drop a whole branch per sample, and a
    branch dropped for every sample of the batch measures as exactly closed: the per-block numbers and
    flags would depend on ``seed``. The caller restores every module's training flag."""
    found = [m for m in model.modules()
             if type(m).__name__.endswith("DropPath") or type(m).__name__ == "StochasticDepth"]
    for m in found:
        m.training = False
    return len(found)


def _roles(model: nn.Module, example_inputs, notes: list[str]) -> tuple[dict[str, str], set[str]]:
    """Each parameter's role from the library's own analysis (:func:`idinit.plan`), read from the
    graph alone (``keep_model_values=False``): a branch end behind a small layer scale is still the
    end of a residual block here, whatever the idinit scheme would put in it; and the parameters the
    plan reads as one matrix (kind ``contracted``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = make_plan(model, "idinit", example_inputs, include_frozen=True, keep_model_values=False)
        except (ValueError, TypeError) as err:
            notes.append(f"roles unknown ({err}); blocks are found from near-zero layers only")
            return {}, set()
    notes.extend(f"idinit.plan: {w.message}" for w in caught if issubclass(w.category, UserWarning))
    return {e.name: e.role for e in found}, {e.name for e in found if e.kind == "contracted"}


def _outputs(out, recorder) -> list[tuple[str, torch.Tensor]]:
    """Named floating-point output tensors (``out``, ``out[0]``, ``out['logits']``)."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(value, name):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                found.append((name, value))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{name}[{k!r}]")
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")
        elif hasattr(value, "__dataclass_fields__"):
            for k in value.__dataclass_fields__:
                walk(getattr(value, k), f"{name}.{k}")

    walk(out, "out")
    return found


def _gradients(outputs, params, seed: int, notes: list[str]) -> dict[str, float]:
    roots = [t for _, t in outputs if t.requires_grad]
    if not roots or not params:
        notes.append("no output depends on a trainable parameter: gradient norms not measured")
        return {}
    loss = 0.0
    for i, t in enumerate(roots):
        generator = torch.Generator(device=t.device).manual_seed(seed + i)
        direction = torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)
        loss = loss + (t * direction).sum() / (t.shape[0] if t.dim() else 1)
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    return {n: g.detach().double().norm().item() for (n, _), g in zip(params, grads) if g is not None}


def _flags(model: nn.Module, rec: _Recorder, outputs: list[OutputStat], grads: Mapping[str, float],
           ref: Mapping[str, torch.Tensor] | None, notes: list[str]) -> list[Flag]:
    flags: list[Flag] = []
    params = dict(model.named_parameters())
    first = next((s for s in rec.layers if s.rms_in), None)
    scale = first.rms_in if first is not None else None
    bad = next((s for s in rec.layers if s.rms_out is not None and not math.isfinite(s.rms_out)), None)
    if bad is not None:
        flags.append(Flag("non_finite", [bad.name], f"{bad.name} ({bad.type}) outputs inf or NaN at init",
                          "lower the init's gains or add normalisation; every layer after it is meaningless"))
    for o in outputs:
        siblings = [x.rms for x in outputs if x is not o and len(x.shape) == len(o.shape) and math.isfinite(x.rms)]
        largest = max(siblings, default=0.0)
        if o.rms == 0 or (scale and o.rms < DEAD_OUTPUT * scale) or (largest and o.rms < DEAD_SIBLING * largest):
            behind = [f"{s}.weight" if f"{s}.weight" in params else s for s in o.behind]
            starved = [s for s in o.behind if (rec.sources[s].reads or 1.0) < STARVED_SHARE]
            planned = [f"{s} (planned as {rec.sources[s].role})" if rec.sources[s].role else s for s in o.behind]
            why = (f"it lies behind {', '.join(planned)} (near-zero gain, and no residual add after them)"
                   if o.behind else "no near-zero layer was seen before it: look for a zero weight, gate or mask")
            if starved:
                remedy = f"{', '.join(starved)} read(s) only zero-filled channels: see the starved_branch flag"
            elif o.behind:
                wanted = ", ".join(f"{b!r}: 'identity'" for b in behind)
                remedy = ("these layers feed an output, not a residual branch: initialise them as 'identity' "
                          f"(overrides={{{wanted}}})")
            else:
                remedy = "find the zero factor on the path to this output and give it a non-zero init"
            flags.append(Flag("dead_output", behind or [o.name], f"output {o.name} has RMS {o.rms:.3g} (input scale "
                              f"{format_value(scale)}, largest other output {format_value(largest or None)}): {why}", remedy))
    for s in rec.layers:
        if s.reads is not None and s.reads < STARVED_SHARE:
            weight = next((p for p in s.params if p.endswith("weight")), s.name)
            flags.append(Flag("starved_branch", [weight], f"{s.name}: the input channels its weights read hold "
                              f"{s.reads:.2g} of its input's energy; it outputs ~0 ({format_value(s.rms_out)}), so what "
                              "follows it starts from nothing", "its nonzero weights touch only channels that are ~0 here (zero "
                              "padding channels, e.g. IDIC behind a centred option-A shortcut, or dead ReLU channels): "
                              "use a projection (option-B) shortcut, conv='channel', or a dense init for this layer"))
    flags.extend(f for f in (stacked_gains_flag(b, rec.sources[b.branch_end], params, grads) for b in rec.blocks) if f)
    flags.extend(f for f in (reopened_branch_flag(b, rec.sources[b.branch_end], params) for b in rec.blocks) if f)
    trunk = [s for s in rec.layers if s.rms_out is not None and math.isfinite(s.rms_out) and not s.small and not s.table]
    if scale:
        high = next((s for s in trunk if s.rms_out > EXPLODING * scale), None)
        if high is not None:
            top = max(trunk, key=lambda s: s.rms_out)
            flags.append(Flag("exploding", [high.name, top.name], f"activation RMS grows from {scale:.3g} (input of "
                              f"{first.name}) past {EXPLODING:g}x at {high.name} to {top.rms_out:.3g} at {top.name}",
                              "each residual branch adds unit-scale signal: close branches with a zero-preserving end "
                              "(scheme 'idinit'), Fixup scaling or normalisation layers, or lower the gains"))
        low = next((s for s in trunk if s.rms_out < VANISHING * scale), None)
        if low is not None:
            flags.append(Flag("vanishing", [low.name], f"activation RMS falls from {scale:.3g} (input of {first.name}) "
                              f"to {low.rms_out:.3g} at {low.name}, outside any branch closed by a near-zero layer",
                              "use a variance-preserving init for these layers (IDInit's identity, or Kaiming with "
                              "the right nonlinearity) or add normalisation"))
    if ref is None:
        notes.append("overwritten priors not checked: pass reference= (the state dict from before initialisation)")
    else:
        flags.extend(overwritten_priors(model, rec.kinds, ref))
    return flags
