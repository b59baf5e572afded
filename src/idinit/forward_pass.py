"""One forward pass of a model with gradients on, leaving the model as it was: what
:func:`idinit.graph.autograd_graph` walks back from (moved out of :mod:`idinit.graph`, unchanged).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["GraphUnavailable", "run_forward"]


class GraphUnavailable(RuntimeError):
    """The graph could not be built (fx failed to trace, or the forward pass failed)."""


def _tensors(value: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) output: tuples, lists, dicts, dataclasses and HF ``ModelOutput`` objects."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    return []


def _prepare(value: Any) -> Any:
    """Floating-point example inputs become leaves that require grad, so that a skip connection
    straight from the input is visible in the autograd graph; other values pass unchanged."""
    if isinstance(value, torch.Tensor):
        if value.is_inference():  # made under torch.inference_mode(): autograd cannot save it
            value = value.clone()
        return value.detach().requires_grad_(True) if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _prepare(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_prepare(v) for v in value) if isinstance(value, tuple) else [_prepare(v) for v in value]
    return value


def run_forward(model: nn.Module, example_inputs: Any) -> list[torch.Tensor]:
    """One forward pass for the graph, leaving the model as it was: eval mode (no dropout, no
    batch-norm statistics update), every floating parameter requiring grad for the duration, and
    every buffer restored afterwards. Returns the output tensors that carry a ``grad_fn``."""
    training = {m: m.training for m in model.modules()}
    requires = {p: p.requires_grad for p in model.parameters()}
    buffers = [(b, b.detach().clone(), b._version) for b in model.buffers()]
    try:
        model.eval()
        for p in requires:
            if p.is_floating_point():
                p.requires_grad_(True)
        with torch.inference_mode(False), torch.enable_grad():
            inputs = _prepare(example_inputs)
            out = model(**inputs) if isinstance(inputs, Mapping) else model(*inputs)
    except Exception as err:
        raise GraphUnavailable(f"the forward pass of {type(model).__name__} on example_inputs failed: "
                               f"{type(err).__name__}: {err}") from err
    finally:
        for m, mode in training.items():
            m.training = mode
        for p, flag in requires.items():
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved, version in buffers:
                # only what the pass wrote: a copy is a write too, and autograd refuses to read a tensor it saved
                # (a relative-position index that a gather kept, read by idinit.contraction) once it was written
                if b._version != version:
                    b.copy_(saved)
    roots = [t for t in _tensors(out) if t.grad_fn is not None]
    if not roots:
        raise GraphUnavailable(f"the output of {type(model).__name__} on example_inputs carries no autograd "
                               "graph (no floating-point output depends on a parameter)")
    return roots
