"""The model's own initialisation, for what IDInit leaves to the model, and the wrappers around a model.

IDInit sets the matrices of a network (paper Sec. 3 and appendix A); embeddings, learned scales and the
parameters no rule places are left as the model made them, a choice of this library (the paper names no
rule for them). A model built on the meta device and materialised with ``to_empty()`` made nothing:
its memory is uninitialised. So :func:`idinit.init_` gives those parameters the model's own init
again, and rebuilds the model's buffers, which ``to_empty()`` leaves uninitialised as well. The
model's own init of a module is, first that applies:

1. Hugging Face transformers: ``_init_weights(module)`` of the nearest ``PreTrainedModel`` holding the
   module (the call transformers 5 makes for every module in ``initialize_weights()``; it also recomputes
   buffers such as BERT's ``position_ids`` and the rotary ``inv_freq``);
2. the module's own ``init_weights()`` (timm) or ``_init_weights()`` (torchvision MaxViT) taking no
   argument: it covers the module's subtree;
3. the module's ``reset_parameters()`` then the root model's ``_init_weights(module)`` (the per-module
   convention of timm and nanoGPT-style code, whose constructors run ``self.apply(self._init_weights)``
   over the layers' defaults);
4. the module's ``reset_parameters()`` (``_reset_parameters()`` for ``nn.MultiheadAttention``):
   PyTorch's layer defaults.

A model's constructor may do more than these (torchvision's ResNet draws its convolutions with
``kaiming_normal_`` in ``__init__``, which no method repeats); for such a model the module defaults are
what is left to run.

Buffers are rebuilt with, first that rebuilds every buffer of a module: HF ``_init_weights``, timm's
``init_non_persistent_buffers()``, ``reset_running_stats()`` (norm layers), ``reset_parameters()``.
Whether a recipe rebuilt a buffer is seen, not assumed: the buffer is filled with a marker (NaN, or
the smallest integer) before the recipe runs; a buffer the recipes leave marked gets its old value back
and is reported as left.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from idinit.sharded import gathered, is_dtensor

__all__ = ["unwrap", "checked_model", "state_restored", "describe", "run_model_init", "run_on_parameters",
           "modules_holding_only", "rebuild_buffers", "tie_hf_weights", "seeded_from"]

_HF_FLAG = "_is_hf_initialized"


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside ``torch.compile`` (``OptimizedModule._orig_mod``), ``nn.DataParallel`` and
    ``DistributedDataParallel`` (``.module``), however they are nested. The wrappers add a prefix to every
    parameter name (``_orig_mod.``, ``module.``) and hold no parameter of their own, so the plan is made
    and applied on the model inside and speaks the user's names."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = None
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            inner = model._orig_mod
        if inner is None:
            break
        model = inner
    return model


def checked_model(model: Any, overrides: Any, flags: Mapping[str, Any], example_inputs: Any) -> nn.Module:
    """:func:`idinit.plan`'s and :func:`idinit.init_`'s arguments: wrong types refused by name, before
    anything is read or written; returns the unwrapped model (a lazy parameter is refused too)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise TypeError("overrides must be a dict {name pattern: role}, e.g. {'layer*.conv2': 'branch_end'}, "
                            f"got {type(overrides).__name__} {overrides!r}"[:300])
        for key, role in overrides.items():
            if not isinstance(key, str) or not isinstance(role, str):
                raise TypeError(f"overrides must map name patterns (str) to roles (str), got {key!r}: {role!r}")
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {type(value).__name__} {value!r}")
    model = unwrap(model)
    lazy = [n for n, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        how = ("run model(*example_inputs) (or model(**example_inputs)) once" if example_inputs is not None
               else "run one forward pass")
        raise ValueError(f"model: parameter {lazy[0]!r} is uninitialised (a lazy module such as nn.LazyLinear, whose "
                         f"shape is known only after a forward pass): {how} to materialise it, then plan; idinit "
                         "does not run it for you (a forward pass may change the model's state)")
    return model


@contextlib.contextmanager
def state_restored(model: nn.Module, buffers_on_error_only: bool = False) -> Iterator[None]:
    """Role detection may run the model's forward pass (example_inputs, HF dummy_inputs): afterwards every
    buffer holds its old tensor and values (also one the forward replaced rather than wrote) and the
    global RNG (CPU and every initialised CUDA device) is where it was, as if planning never ran.
    ``buffers_on_error_only``: keep what the block wrote to the buffers unless it raises."""
    buffers = [(m, name, t, t.detach().clone()) for m in model.modules() for name, t in m._buffers.items()
               if t is not None and t.device.type != "meta"]
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if cuda else None

    def restore_buffers() -> None:
        with torch.no_grad():
            for module, name, tensor, value in buffers:
                module._buffers[name] = tensor
                if not torch.equal(tensor, value):
                    tensor.copy_(value)

    try:
        yield
    except BaseException:
        restore_buffers()
        raise
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
    if not buffers_on_error_only:
        restore_buffers()


# ---------------------------------------------------------------------------------------------
# which method is a module's own init

def _is_hf_pretrained(module: nn.Module) -> bool:
    """An HF ``PreTrainedModel``, found by its class hierarchy so that transformers is never imported."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.")
               for c in type(module).__mro__)


def _per_module_init(module: nn.Module) -> bool:
    """Whether ``module`` has an ``_init_weights(module)`` method (one required argument)."""
    method = getattr(module, "_init_weights", None)
    if not callable(method):
        return False
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return len([p for p in params if p.default is p.empty and p.kind in positional]) == 1


def _hf_owner(model: nn.Module, name: str) -> nn.Module | None:
    """The nearest HF ``PreTrainedModel`` holding module ``name`` (itself included), as transformers'
    ``smart_apply`` dispatches each module to its own sub-model's ``_init_weights``."""
    owner = model if _is_hf_pretrained(model) else None
    path = ""
    for part in name.split(".") if name else []:
        path = f"{path}.{part}" if path else part
        module = model.get_submodule(path)
        if _is_hf_pretrained(module):
            owner = module
    return owner


def _no_argument_method(module: nn.Module, attribute: str) -> Callable[[], object] | None:
    method = getattr(module, attribute, None)
    if not callable(method):
        return None
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return None
    required = [p for p in signature.parameters.values() if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return None if required else method


def _reset_method(module: nn.Module) -> Callable[[], object] | None:
    return _no_argument_method(module, "reset_parameters") or _no_argument_method(module, "_reset_parameters")


@contextlib.contextmanager
def _hf_flags_cleared(tensors) -> Iterator[None]:
    """transformers' init functions skip a tensor marked ``_is_hf_initialized`` (set when it was loaded):
    the marks are lifted while the model's own init runs, and put back."""
    marked = [t for t in tensors if getattr(t, _HF_FLAG, False)]
    for t in marked:
        delattr(t, _HF_FLAG)
    try:
        yield
    finally:
        for t in marked:
            setattr(t, _HF_FLAG, True)


def _own_init(model: nn.Module, name: str) -> tuple[str, Callable[[], object], bool] | None:
    """``(what it is, the call, whether it covers the module's whole subtree)`` for the own init of
    module ``name`` (the order of the module docstring), or None when it has none. HF's own
    ``init_weights()`` is not used: it skips modules already marked initialised."""
    module = model.get_submodule(name)
    owner = _hf_owner(model, name)
    if owner is not None:
        def call() -> None:
            with _hf_flags_cleared(list(module.parameters()) + list(module.buffers())):
                owner._init_weights(module)
        return f"{type(owner).__name__}._init_weights", call, False
    subtree = _no_argument_method(module, "init_weights") or _no_argument_method(module, "_init_weights")
    if subtree is not None:
        return f"{type(module).__name__}.{subtree.__name__}()", subtree, True
    reset = _reset_method(module)
    if name and _per_module_init(model):
        # as in the constructor of such a model: the layer defaults, then `self.apply(self._init_weights)`
        # overrides what it knows (an `_init_weights` that skips norms leaves them at their defaults)
        def defaults_then_override() -> None:
            if reset is not None:
                reset()
            model._init_weights(module)
        return f"{type(model).__name__}._init_weights", defaults_then_override, False
    if reset is not None:
        return f"{type(module).__name__}.{reset.__name__}()", reset, False
    return None


def describe(model: nn.Module, name: str) -> str | None:
    """What the model's own init of module ``name`` calls, for the plan (None: it has none)."""
    found = _own_init(model, name)
    return None if found is None else found[0]


def _post_order(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for child_name, child in model.named_children():
        yield from _post_order(child, f"{prefix}{child_name}.")
    yield prefix.rstrip("."), model


def run_model_init(model: nn.Module, names: set[str], protected: set[str]) -> set[str]:
    """The model's own init on modules ``names`` (in place, no grad), children before parents (the order
    of a constructor and of transformers' ``initialize_weights``, so that e.g. MultiheadAttention's zero
    ``out_proj.bias`` wins). A module every one of whose parameter-holding descendants is in ``names``
    gets its own init too (HF GPT-2 rescales ``c_proj`` from its attention block's ``_init_weights``); an
    ``init_weights()`` covers its subtree. Parameters named in ``protected`` are put back afterwards.
    Returns the modules that had no own init."""
    if not names:
        return set()
    # a tied parameter is initialised under each of its names, as transformers does (lm_head and wte)
    canonical = {id(p): n.rpartition(".")[0] for n, p in model.named_parameters()}
    tied = {n.rpartition(".")[0] for n, p in model.named_parameters(remove_duplicate=False)
            if canonical[id(p)] in names}
    names = set(names) | tied
    owners = set(canonical.values())
    run: list[str] = []
    covered: set[str] = set()
    for name, module in _post_order(model):
        holders = {n for n in owners if n == name or n.startswith(f"{name}.") or not name}
        if name in names or (holders and holders <= names):
            run.append(name)
    calls = {name: _own_init(model, name) for name in run}
    for name, found in calls.items():
        if found is not None and found[2]:
            covered.update(n for n in run if n != name and (not name or n.startswith(f"{name}.")))
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in protected if n in params}
    missing = set()
    with torch.no_grad():
        for name in run:
            if name in covered:
                continue
            if calls[name] is None:
                missing.update({name} & names)
            else:  # DTensor (FSDP2) parameters: run on their gathered values, each rank keeps its part
                with gathered([model.get_submodule(name)]):
                    calls[name][1]()
        for n, value in saved.items():
            params[n].copy_(value)
    return missing


def run_on_parameters(model: nn.Module, names: set[str], watched: set[str], protected: set[str]) -> set[str]:
    """The model's own init for parameters ``names`` (:func:`run_model_init` on their modules). Each
    floating parameter in ``watched`` is marked (NaN) first: those the init leaves marked get their old
    value back and are returned, so that nothing is reported as initialised that was not."""
    if not names:
        return set()
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in watched if params[n].is_floating_point()}
    with torch.no_grad():
        for n in saved:
            params[n].fill_(float("nan"))
        run_model_init(model, {n.rpartition(".")[0] for n in names}, protected)
        unwritten = {n for n in saved if _has_nan(params[n])}
        for n in unwritten:
            params[n].copy_(saved[n])
    return unwritten


def _has_nan(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds a NaN, read in slices of 4M elements: ``isnan`` of a whole embedding
    would hold a mask of its size (the peak memory of ``init_`` is the model plus its largest tensor:
    that tensor is the copy of the kept parameter). A DTensor is asked as a whole, so that every rank
    gets the same answer."""
    if is_dtensor(tensor) or tensor.numel() <= 1 << 22:
        return bool(torch.isnan(tensor).any())
    flat = tensor.detach().reshape(-1)  # a parameter is contiguous: a view
    return any(bool(torch.isnan(piece).any()) for piece in flat.split(1 << 22))


def modules_holding_only(model: nn.Module, untouched: set[str]) -> set[str]:
    """The modules all of whose own parameters are in ``untouched`` (frozen, stated ``keep``): their
    buffers are left as they are too."""
    found = set()
    for name, module in model.named_modules():
        own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
        if own and all(n in untouched for n in own):
            found.add(name)
    return found


# ---------------------------------------------------------------------------------------------
# buffers

def _buffer_recipes(model: nn.Module, name: str) -> list[tuple[str, Callable[[], object]]]:
    module = model.get_submodule(name)
    recipes = []
    owner = _hf_owner(model, name)
    if owner is not None:
        recipes.append((f"{type(owner).__name__}._init_weights", lambda: owner._init_weights(module)))
    elif name and _per_module_init(model):
        recipes.append((f"{type(model).__name__}._init_weights", lambda: model._init_weights(module)))
    for attribute in ("init_non_persistent_buffers", "reset_running_stats"):
        method = _no_argument_method(module, attribute)
        if method is not None:
            recipes.append((f"{type(module).__name__}.{attribute}()", method))
    reset = _reset_method(module)
    if reset is not None:
        recipes.append((f"{type(module).__name__}.{reset.__name__}()", reset))
    return recipes


def _mark(buffer: torch.Tensor) -> None:
    if buffer.is_floating_point() or buffer.is_complex():
        buffer.fill_(float("nan"))
    elif buffer.dtype == torch.bool:
        buffer.fill_(False)
    else:
        buffer.fill_(torch.iinfo(buffer.dtype).min)


def _rebuilt(buffer: torch.Tensor) -> bool:
    if buffer.is_floating_point() or buffer.is_complex():
        return not bool(torch.isnan(buffer).any())
    return not bool((buffer == torch.iinfo(buffer.dtype).min).any())


def _run_marked(recipe: Callable[[], object], left: dict[str, torch.Tensor]) -> list[str]:
    """Run ``recipe`` on marked buffers; the names of those it rebuilt. Boolean buffers run twice, from
    all-False and from all-True: rebuilt when both runs agree."""
    for t in left.values():
        _mark(t)
    recipe()
    flags = {b: t.clone() for b, t in left.items() if t.dtype == torch.bool}
    if flags:
        for t in left.values():
            t.fill_(True) if t.dtype == torch.bool else _mark(t)
        recipe()
    return [b for b, t in left.items() if (torch.equal(t, flags[b]) if b in flags else _rebuilt(t))]


def rebuild_buffers(model: nn.Module, skip: set[str]) -> dict[str, str]:
    """Rebuild the buffers of every module not in ``skip`` (modules whose parameters are all left as they
    are: frozen or stated ``keep``) with the first recipe (module docstring) that rebuilds each; the
    parameters a recipe touches (the module's and its children's own) are put back. Returns
    ``{buffer name: what rebuilt it, or that it was left}`` for every buffer of those modules."""
    report: dict[str, str] = {}
    for name, module in _post_order(model):
        if name in skip:
            continue
        buffers = {b: t for b, t in module.named_buffers(recurse=False)
                   if t is not None and t.numel() > 0 and t.device.type != "meta"}
        if not buffers:
            continue
        touched = [p for m in (module, *module.children()) for p in m.parameters(recurse=False)]
        saved_params = [(p, p.detach().clone()) for p in touched]
        saved = {b: t.detach().clone() for b, t in buffers.items()}
        left = dict(buffers)
        done: dict[str, str] = {}
        with torch.no_grad(), _hf_flags_cleared(list(buffers.values()) + touched):
            for label, recipe in _buffer_recipes(model, name):
                if not left:
                    break
                for b in _run_marked(recipe, left):
                    done[b] = f"rebuilt by {label}"
                    del left[b]
            for b, t in buffers.items():
                if b in left:
                    t.copy_(saved[b])
            for p, value in saved_params:
                p.copy_(value)
        for b in buffers:
            report[f"{name}.{b}" if name else b] = done.get(b, "left as it is: no method of the model rebuilds it")
    return report


# ---------------------------------------------------------------------------------------------
# HF tied weights, seeding

def tie_hf_weights(model: nn.Module) -> list[str]:
    """Re-tie the weights an HF model says are tied (``lm_head.weight`` to the input embedding) where
    they are not the same tensor any more: ``to_empty()`` gives each name its own new tensor. Returns
    ``["target -> source", ...]`` for what was re-tied (empty for other models)."""
    keys = getattr(model, "all_tied_weights_keys", None)
    if not _is_hf_pretrained(model) or not keys:
        return []
    untied = []
    for target, source in dict(keys).items():
        try:
            if model.get_parameter(target) is not model.get_parameter(source):
                untied.append(f"{target} -> {source}")
        except AttributeError:
            continue
    if untied:
        model.tie_weights()
    return untied


@contextlib.contextmanager
def seeded_from(generator: torch.Generator | None, model: nn.Module) -> Iterator[None]:
    """Run a block that draws from the global RNG (the model's own init takes no generator) from a seed
    drawn from ``generator``, leaving the global RNG as it was; a no-op without a generator."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = sorted({t.device.index or 0 for t in list(model.parameters()) + list(model.buffers())
                      if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
