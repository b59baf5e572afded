"""Hugging Face transformers: build a model from its config straight into IDInit.

``idinit.init_(model)`` works on any transformers model as it is (eager, or built on the meta device
and materialised with ``to_empty()``): the embeddings and tied weights get the model's own
``_init_weights``, the buffers (``position_ids``, rotary ``inv_freq``) are recomputed, the tied
output layer is tied again, and everything else gets the scheme. :func:`from_config` is the one call
that builds the model on the meta device (no memory is written while it is built), materialises it,
runs the model's own init (as an eager build does, so that the values it sets on purpose are there to
keep) and then IDInit. transformers is imported only when the function is called.

::

    from transformers import AutoConfig
    import idinit.hf

    config = AutoConfig.for_model("llama", hidden_size=512, num_hidden_layers=4, ...)
    model, plan = idinit.hf.from_config(config)            # AutoModelForCausalLM, IDInit, on the CPU
    print(plan)
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import nn

from idinit.model_init import run_model_init, seeded_from
from idinit.plan import Activation, Plan, init_
from idinit.schemes import SchemeName

__all__ = ["from_config"]


def from_config(config: Any, model_class: Any = None, *, scheme: SchemeName = "idinit",
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                generator: torch.Generator | None = None, example_inputs: Any = None,
                overrides: Mapping[str, str] | None = None, loose: float | None = None,
                conv: Literal["patch", "channel"] | None = None,
                branch_end: Literal["zero_preserving", "zero"] | None = None,
                activation: Activation | None = None, eps: float | None = None,
                branch_end_norm: Literal["one", "zero"] | None = None, **options: Any) -> tuple[nn.Module, Plan]:
    """Build the transformers model of ``config`` on the meta device, materialise it on ``device`` and
    initialise it with ``scheme`` (:func:`idinit.init_`). Returns ``(model, plan)``.

    Args:
        config: a transformers ``PretrainedConfig``.
        model_class: an ``AutoModel*`` class (anything with ``from_config``) or a model class called as
            ``model_class(config)``; default ``AutoModelForCausalLM``.
        scheme, generator, example_inputs, overrides, loose, conv, branch_end, activation, eps,
            branch_end_norm, options: as in :func:`idinit.init_`.
        device: where the weights are materialised.
        dtype: the parameters' dtype (default: the config's, else float32).
    """
    if model_class is None:
        from transformers import AutoModelForCausalLM  # imported here: idinit does not depend on transformers

        model_class = AutoModelForCausalLM
    with torch.device("meta"):
        model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_class built a {type(model).__name__}, not an nn.Module")
    if dtype is not None:
        model = model.to(dtype)
    model.to_empty(device=device)
    # the model's own init first, as an eager build runs it: the values it sets on purpose (Mamba's
    # time-step biases) are then there for idinit.values to keep
    model.tie_weights()
    with torch.no_grad(), seeded_from(generator, model):
        run_model_init(model, {name for name, _ in model.named_modules()}, set())
    plan = init_(model, scheme, example_inputs, generator=generator, overrides=overrides, loose=loose, conv=conv,
                 branch_end=branch_end, activation=activation, eps=eps, branch_end_norm=branch_end_norm, **options)
    return model, plan
