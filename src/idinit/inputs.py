"""Example inputs for the one forward pass role detection reads its graph from, built from the model.

:func:`example_inputs_for` knows two families; for any other model the caller passes
``example_inputs=`` itself (or torch.fx traces it without any):

- **HF transformers**: ``model.dummy_inputs`` (token ids), plus what the model's ``forward`` takes
  and its config describes: ``pixel_values`` (CLIP, ViT: ``num_channels`` x ``image_size``),
  ``input_features`` (Whisper: ``num_mel_bins`` x ``2 * max_source_positions``; Speech2Text: 32 frames of
  ``input_feat_per_channel * input_channels``), ``input_values`` (wav2vec2, HuBERT: a waveform its
  ``conv_kernel`` / ``conv_stride`` feature encoder turns into 8 frames) and, for
  encoder-decoder models, ``decoder_input_ids`` (``decoder_start_token_id``); ``use_cache=False`` where
  the forward takes it (no cache among the outputs).
- **torchvision detection models** (FCOS, RetinaNet, Faster / Mask R-CNN, SSD): a list of one image
  of the transform's ``min_size``; the detection forward runs in eval mode, which needs no targets.

:func:`buffers_rebuilt` makes the pass independent of non-persistent buffers, which are not in a
state dict and stay uninitialised memory after ``to_empty()`` (HF BERT's ``position_ids``): for the
length of the pass it refills them with the model's own rule (HF ``_init_weights`` on the modules
that own them), then puts back everything it touched, the random number generator included.

:func:`model_kept` puts back what the pass itself changes on the model: the values of parameters it
modifies in place (copied before the first in-place op on each) and the modules' plain attributes. HF's
RWKV divides its output weights by ``2 ** (block // rescale_every)`` in eval mode and records it in a
flag; left so, its next training pass multiplies the values the init wrote by that factor.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["example_inputs_for", "buffers_rebuilt", "model_kept"]


def _is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _hf_inputs(model: nn.Module) -> dict | None:
    try:
        accepted = set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    config = getattr(model, "config", None)
    inputs: dict[str, Any] = {}
    try:
        dummy = model.dummy_inputs
    except Exception:  # a model class whose dummy_inputs cannot be built
        dummy = None
    device = _device(model)
    if isinstance(dummy, dict):
        # transformers builds dummy_inputs on the CPU whatever the model's device (5.x): move them,
        # or the forward pass of a model on a GPU fails on mixed devices.
        inputs.update({k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                       for k, v in dummy.items() if k in accepted})
    batch = next((v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 1)
    if "pixel_values" in accepted and "pixel_values" not in inputs:
        vision = getattr(config, "vision_config", None) or config
        size = getattr(vision, "image_size", None)
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)[-2:]
            inputs["pixel_values"] = torch.rand(batch, getattr(vision, "num_channels", 3), h, w, device=device)
    if "input_features" in accepted and "input_features" not in inputs:
        mels, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
        per_frame = getattr(config, "input_feat_per_channel", 0) * getattr(config, "input_channels", 1)
        if mels and positions:  # Whisper's encoder takes exactly 2 * max_source_positions frames
            inputs["input_features"] = torch.randn(batch, mels, 2 * positions, device=device)
        elif per_frame:  # Speech2Text: (frames, features per frame), 32 frames before its conv subsampling
            inputs["input_features"] = torch.randn(batch, 32, per_frame, device=device)
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if "input_values" in accepted and "input_values" not in inputs and kernels and strides:
        length = 8  # a waveform (wav2vec2, HuBERT, WavLM) its feature encoder turns into 8 frames
        for k, s in zip(reversed(kernels), reversed(strides)):
            length = (length - 1) * s + k
        inputs["input_values"] = torch.randn(batch, length, device=device)
    if "decoder_input_ids" in accepted and "decoder_input_ids" not in inputs and getattr(config, "is_encoder_decoder", False):
        start = getattr(config, "decoder_start_token_id", None)
        start = start if isinstance(start, int) else (getattr(config, "pad_token_id", None) or 0)
        inputs["decoder_input_ids"] = torch.full((batch, 4), start, dtype=torch.long, device=device)
    if inputs and "use_cache" in accepted:
        # the graph is the computation of the outputs: a returned cache (RWKV's recurrent state, written from
        # inside every block) would make each branch look used outside its residual sum (zoo audit)
        inputs["use_cache"] = False
    return inputs or None


def _torchvision_detection_inputs(model: nn.Module) -> tuple | None:
    transform = getattr(model, "transform", None)
    sizes = getattr(transform, "min_size", None)
    if sizes is None:
        return None
    size = int(sizes[0] if isinstance(sizes, (tuple, list)) else sizes)
    return ([torch.rand(3, size, size, device=_device(model))],)


def example_inputs_for(model: nn.Module) -> tuple[Any, str] | None:
    """``(inputs, where they came from)`` for one forward pass of ``model``, or None (module docstring)."""
    if _is_hf(model):
        built = _hf_inputs(model)
        return None if built is None else (built, "inputs built from the model's config (HF dummy_inputs and sizes)")
    if type(model).__module__.startswith("torchvision.models.detection"):
        built = _torchvision_detection_inputs(model)
        return None if built is None else (built, "one image of the model's min_size (torchvision detection)")
    return None


@contextlib.contextmanager
def buffers_rebuilt(model: nn.Module) -> Iterator[None]:
    """For the duration, non-persistent buffers hold what the model's own init writes (module docstring)."""
    owners = [m for m in model.modules() if getattr(m, "_non_persistent_buffers_set", None)]
    rule = getattr(model, "_init_weights", None) if _is_hf(model) else None
    if not owners or rule is None:
        yield
        return
    saved = [(t, t.detach().clone()) for m in owners for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]
             if not t.is_meta]
    try:
        cuda = sorted({t.device.index or 0 for t, _ in saved if t.is_cuda})
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            for module in owners:
                try:
                    rule(module)
                except Exception:  # a model whose rule needs more than one module: leave its buffers be
                    pass
        yield
    finally:
        with torch.no_grad():
            for t, value in saved:
                t.copy_(value)


class _InPlaceOnParameters(TorchFunctionMode):
    def __init__(self, params: dict[int, torch.Tensor]):
        super().__init__()
        self.params, self.saved = params, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if args and id(args[0]) in self.params and id(args[0]) not in self.saved and name != "requires_grad_" and (
                name.endswith("_") and not name.startswith("__") or name.startswith("__i") or name == "__setitem__"):
            self.saved[id(args[0])] = (args[0], args[0].detach().clone(), args[0]._version)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def model_kept(model: nn.Module) -> Iterator[None]:
    """For the duration, in-place changes to parameters are recorded; afterwards they and the modules'
    plain attributes (bool, int, float, str) are as before (module docstring)."""
    attrs = [(m, k, v) for m in model.modules() for k, v in vars(m).items() if type(v) in (bool, int, float, str)]
    mode = _InPlaceOnParameters({id(p): p for p in model.parameters()})
    try:
        with mode:
            yield
    finally:
        with torch.no_grad():
            for p, value, version in mode.saved.values():
                if p._version != version:  # written: put back (a copy would count as a write, values.written)
                    p.copy_(value)
        for m, k, v in attrs:
            if vars(m).get(k, v) is not v:
                setattr(m, k, v)
