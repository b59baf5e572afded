r"""Schemes: what each role is filled with (SPEC §4-5).

A scheme maps ``(role, parameter, options)`` to an initialiser name and its arguments. The names
are those of :mod:`idinit` (``identity_``, ``channel_identity_``, ``zero_preserving_``,
``hadamard_``) and :mod:`torch.nn.init` (``kaiming_normal_``, ...), plus ``ones_``, ``zeros_``,
``reset_parameters`` (the module's own) and ``keep`` (left untouched).

==============  ==========================================================================
scheme          what it does
==============  ==========================================================================
``idinit``      IDInit (SPEC §4): IDI / IDIC (``conv="patch"``) or channel-maintain
                (``conv="channel"``) on every layer, gain sqrt(2) on the stem of a ReLU-like
                network (``activation``); IDIZ / IDIZC on branch ends, attention output
                projections and, in a residual network, the head (``branch_end="zero"`` puts
                exact zeros there instead). Norms 1 / 0, biases 0. Options ``loose`` and ``eps``;
                ``branch_end_norm="zero"`` sets the norm weight closing each branch to 0 as
                Zero-gamma does (not in the paper: an option for BN networks trained at a high
                learning rate without warm-up, see ``results/analysis-startup``).
``kaiming``     He et al. 2015: convolutions ``kaiming_normal_(mode="fan_out", relu)`` as
                torchvision's ResNet; linear layers ``kaiming_normal_(mode="fan_in", relu)``,
                He et al.'s own fully-connected form (and that of the CIFAR ResNet code the
                paper's Table 1 builds on). Norms 1 / 0, biases 0.
``xavier``      ``xavier_uniform_`` (gain 1) on every layer; norms 1 / 0, biases 0.
``orthogonal``  ``orthogonal_`` (gain 1) on every layer (a kernel on its ``(c_out, -1)``
                flattening); norms 1 / 0, biases 0.
``default``     the model's own init (:mod:`idinit.model_init`): HF transformers'
                ``_init_weights`` on every module, timm's ``init_weights()``, else every
                module's ``reset_parameters()`` (PyTorch's layer defaults), children first.
``zero_gamma``  Goyal et al. 2017: ``kaiming``, then the norm weight closing each residual
                branch (``branch_end_norm``) set to 0.
``zero``        ZerO (Zhao et al. 2022): ``hadamard_`` on every layer, exact zeros on the last
                layer of each residual branch (and attention output projections); norms 1 / 0,
                biases 0.
==============  ==========================================================================

Table 2 of the paper (ablation on ResNet-20) is four calls of the ``idinit`` scheme:
(i) ``conv="channel", branch_end="zero"``, (ii) ``conv="channel"``, (iii) ``branch_end="zero"``,
(iv) the defaults (``conv="patch", branch_end="zero_preserving"``).

In every scheme embeddings and learned scales are kept as the model made them (SPEC §4
[decision]): :func:`idinit.init_` draws them again with the model's own init (``reset_kept=True``,
the default, so that a model materialised with ``to_empty()`` has no uninitialised memory left), or
leaves them as they are (``reset_kept=False``). Fused attention projections and recurrent gate
stacks are filled block by block, and a parameter's arguments never depend on its values, so
planning works on the meta device.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from idinit.roles import ATTENTION_ROLES, fused_blocks

__all__ = ["SCHEMES", "SCHEME_OPTIONS", "check_options", "assign", "needs_positions"]

# scheme -> its options and their defaults
SCHEME_OPTIONS: dict[str, dict[str, Any]] = {
    "idinit": {"loose": 1e-6, "conv": "patch", "branch_end": "zero_preserving", "activation": "relu", "eps": 1e-6,
               "branch_end_norm": "one"},
    "kaiming": {},
    "xavier": {},
    "orthogonal": {},
    "default": {},
    "zero_gamma": {},
    "zero": {},
}
SCHEMES = tuple(SCHEME_OPTIONS)

# IDI gain of the stem (paper appendix B: sqrt(2) for the first layer of a ReLU network, 1 for tanh).
# [decision] GELU / SiLU / ELU / leaky ReLU halve the signal's second moment roughly as ReLU does, so
# they get sqrt(2) too; saturating and linear activations get 1.
STEM_GAIN = {"relu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "silu": math.sqrt(2.0), "elu": math.sqrt(2.0),
             "leaky_relu": math.sqrt(2.0), "tanh": 1.0, "sigmoid": 1.0, "linear": 1.0, "identity": 1.0}

_CHOICES = {"conv": ("patch", "channel"), "branch_end": ("zero_preserving", "zero"), "activation": tuple(STEM_GAIN),
            "branch_end_norm": ("one", "zero")}


def needs_positions(scheme: str) -> bool:
    """Whether the scheme treats layers differently by where they sit (branch ends, stem, head)."""
    return scheme in ("idinit", "zero_gamma", "zero")


def check_options(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for ``scheme``; return them merged over the defaults."""
    if not isinstance(scheme, str) or scheme not in SCHEME_OPTIONS:
        raise ValueError(f"unknown scheme {scheme!r}; schemes are {', '.join(SCHEMES)}")
    allowed = SCHEME_OPTIONS[scheme]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise TypeError(f"scheme {scheme!r} got unknown option(s) {', '.join(unknown)}; its options are: {valid}")
    merged = {**allowed, **options}
    for key, choices in _CHOICES.items():
        if key in merged and merged[key] not in choices:
            raise ValueError(f"scheme {scheme!r}: {key}={merged[key]!r} is not one of {', '.join(choices)}")
    for key in ("loose", "eps"):
        if key in merged:
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"scheme {scheme!r}: {key} must be a finite number >= 0, got {value!r}")
            merged[key] = float(value)
    return merged


_MATRIX = ("stem", "identity", "branch_end", "head", "recurrent") + ATTENTION_ROLES
_ZEROED = ("branch_end", "attention_out")


def assign(scheme: str, role: str, kind: str, options: Mapping[str, Any], residual: bool) -> tuple[str, dict]:
    """``(initialiser name, arguments)`` for a parameter of ``role`` and layer ``kind`` under ``scheme``.

    ``residual`` says whether the model has residual branches (IDInit gives the head IDIZ only then:
    SPEC §4, "non-residual networks: no IDIZ").
    """
    if role in ("embedding", "scale", "keep"):
        return "keep", {}
    if scheme == "default":
        return "reset_parameters", {}
    if role == "bias":
        return "zeros_", {}
    if role == "norm":
        return ("ones_" if kind == "norm_weight" else "zeros_"), {}
    if role == "branch_end_norm":
        zeroed = scheme == "zero_gamma" or (scheme == "idinit" and options["branch_end_norm"] == "zero")
        return ("zeros_" if zeroed else "ones_"), {}
    if role not in _MATRIX:
        raise ValueError(f"no rule for role {role!r}")
    conv = kind in ("conv", "conv_transpose")
    if scheme == "idinit":
        zero_pattern = ("zero_preserving_", {"eps": options["eps"]}) if options["branch_end"] == "zero_preserving" \
            else ("zeros_", {})
        if role in _ZEROED or (role == "head" and residual):
            return zero_pattern
        gain = STEM_GAIN[options["activation"]] if role == "stem" else 1.0
        name = "channel_identity_" if conv and options["conv"] == "channel" else "identity_"
        return name, {"gain": gain, "loose": options["loose"]}
    if scheme == "zero":
        return ("zeros_", {}) if role in _ZEROED else ("hadamard_", {})
    if scheme in ("kaiming", "zero_gamma"):
        mode = "fan_out" if conv else "fan_in"
        return "kaiming_normal_", {"mode": mode, "nonlinearity": "relu"}
    if scheme == "xavier":
        return "xavier_uniform_", {"gain": 1.0}
    if scheme == "orthogonal":
        return "orthogonal_", {"gain": 1.0}
    raise ValueError(f"unknown scheme {scheme!r}")


def blocks_of(role: str, gates: int) -> int:
    """Row blocks filled separately: fused attention projections (q/k/v) and recurrent gate stacks."""
    return max(fused_blocks(role), gates)
