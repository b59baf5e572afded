"""The cases of ``scripts/audit_bad_inputs.py``, one module per layer, and what they share."""
from __future__ import annotations

import hashlib
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

ERRORS = (ValueError, TypeError, RuntimeError)
ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass
class Case:
    """One input. ``run()`` does it; ``expect`` is ``error`` (a correct library refuses it), ``ok`` (it
    accepts it and ``check(result, warnings)`` returns True, else a string saying what is wrong) or
    ``either``. ``words``: a refusal's message must contain one of them (case-insensitive); ``kinds``:
    the exception types a refusal may have; ``snapshot()``: everything the input could change."""

    group: str
    name: str
    run: Callable[[], Any]
    expect: str = "error"
    words: tuple = ()
    kinds: tuple = ERRORS
    check: Callable[[Any, list], Any] = field(default=lambda result, seen: True)
    snapshot: Callable[[], Any] = field(default=lambda: None)


def tensor_bytes(t) -> str:
    """A digest of every byte ``t`` (or the tensor it is a view of) holds; its repr for a non-tensor."""
    if not isinstance(t, torch.Tensor):
        return repr(t)
    h = hashlib.sha256()
    if t.device.type == "meta":
        return "meta"
    if hasattr(t, "to_local"):  # DTensor
        t = t.to_local()
    if t.is_nested:
        parts = [x.detach().clone() for x in t.unbind()]
    elif t.layout == torch.sparse_coo:
        parts = [t._indices().clone(), t._values().clone()]
    elif t.layout != torch.strided:
        parts = [t.crow_indices().clone(), t.col_indices().clone(), t.values().clone()]
    else:
        base = t
        while base._base is not None:
            base = base._base
        parts = [base.detach()]
    for p in parts:
        with torch.inference_mode(p.is_inference()):
            raw = p.detach().contiguous().reshape(-1)
            raw = raw.view(torch.uint8) if raw.numel() else raw
            h.update(raw.cpu().numpy().tobytes() if raw.dtype == torch.uint8 else repr(raw.tolist()).encode())
        h.update(repr((p.dtype, tuple(p.shape))).encode())
    return h.hexdigest()


def model_state(model) -> str:
    """A digest of every parameter and buffer of ``model`` (bitwise) and of the global RNG state."""
    h = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            h.update(name.encode())
            h.update(tensor_bytes(t).encode() if not isinstance(t, torch.nn.parameter.UninitializedParameter)
                     else b"lazy")
    h.update(bytes(torch.get_rng_state().tolist()))
    return h.hexdigest()


def folder_state(*folders) -> dict:
    """``{path: sha256}`` of every file under ``folders`` (the lock file aside: it is empty and the OS
    lock, not its content, is what matters)."""
    out = {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
