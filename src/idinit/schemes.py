r"""Schemes: what each role is filled with. Sixth link of the model level's chain (kinds -> graph ->
positions -> roles -> detect -> **schemes** -> plan): :mod:`idinit.detect` says what every parameter
is, a scheme says what it gets, :mod:`idinit.plan` writes it.

A scheme is one :class:`Scheme` declaration in :data:`TABLE`: its name, its options (default and the
values each takes), whether it needs the graph's positions (branch ends, stem, head), and its rule,
``rule(role, kind, options, residual) -> (initialiser name, arguments)``. Everything else derives
from the table: :data:`SCHEMES`, option checking, the ``plan`` / ``init_`` ``scheme=`` argument, the
command line's ``--scheme`` and the lab's lists. The initialiser names are those of :mod:`idinit`
(``identity_``, ``channel_identity_``, ``zero_preserving_``, ``hadamard_``) and
:mod:`torch.nn.init` (``kaiming_normal_``, ...), plus ``ones_``, ``zeros_``, ``reset_parameters``
(the module's own) and ``keep`` (left untouched).

==============  ==========================================================================
scheme          what it does
==============  ==========================================================================
``idinit``      IDInit (paper Sec. 3): IDI / IDIC (``conv="patch"``) or channel-maintain
                (``conv="channel"``) on every layer, gain sqrt(2) on the stem of a ReLU-like
                network (``activation``, appendix B); IDIZ / IDIZC on branch ends, attention
                output projections (appendix A.5) and, in a residual network, the head
                (``branch_end="zero"`` puts exact zeros there instead). Norms 1 / 0, biases 0.
                Options ``loose`` and ``eps``; ``branch_end_norm="zero"`` sets the norm
                closing each branch to scale 0 as Zero-gamma does (not in the paper: an option for BN
                networks trained at a high learning rate without warm-up, see
                ``results/analysis-startup``).
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
``zero_gamma``  Goyal et al. 2017: ``kaiming``, then the norm closing each residual branch
                (``branch_end_norm``) set to scale 0: weight 0, or -1 for a norm that scales
                by ``1 + weight`` (Gemma's post-norms; :func:`idinit.kinds.closing_weight`).
``zero``        ZerO (Zhao et al. 2022): ``hadamard_`` on every layer, exact zeros on the last
                layer of each residual branch (and attention output projections); norms 1 / 0,
                biases 0.
==============  ==========================================================================

Table 2 of the paper (ablation on ResNet-20) is four calls of the ``idinit`` scheme:
(i) ``conv="channel", branch_end="zero"``, (ii) ``conv="channel"``, (iii) ``branch_end="zero"``,
(iv) the defaults (``conv="patch", branch_end="zero_preserving"``).

In every scheme embeddings, learned scales and Mixture-of-Experts routers are kept as the model made
them (the paper sets embeddings only from pretrained vectors in its text experiments, and names no rule
for routers; a baseline's official code predates them, so each scheme gets the router the model's authors
chose, and a comparison of schemes differs only where the schemes do): :func:`idinit.init_` draws them
again with the model's own init (``reset_kept=True``, the default, so that a model materialised with
``to_empty()`` has no uninitialised memory left), or leaves them as they are (``reset_kept=False``).
Fused attention projections and recurrent gate stacks are filled block by block, fused Mixture-of-Experts
weights (kind ``experts``) expert by expert, each as the linear layer it stands for, and a parameter's
arguments never depend on its values, so planning works on the meta device.

Adding a scheme: one more ``Scheme(...)`` in :data:`TABLE` (and its name in :data:`SchemeName`,
which only type checkers read; ``tests/test_schemes_table.py`` fails until it is there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from idinit.roles import BRANCH_END_ROLES, KEPT_ROLES, MATRIX_ROLES, fused_blocks

__all__ = ["Option", "Scheme", "TABLE", "SCHEMES", "SchemeName", "lookup", "check_options", "assign", "needs_positions"]

# (role, kind, options, residual) -> (initialiser name, arguments), or None for the rule all schemes
# share for that role (biases 0, norm weights 1 and biases 0)
Rule = Callable[[str, str, Mapping[str, Any], bool], "tuple[str, dict] | None"]


@dataclass(frozen=True)
class Option:
    """One option of a scheme: its default and the values it takes (``choices``; none: any finite
    number >= 0, returned as a float)."""

    default: Any
    choices: tuple[str, ...] = ()

    def check(self, scheme: str, key: str, value: Any) -> Any:
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"scheme {scheme!r}: {key}={value!r} is not one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"scheme {scheme!r}: {key} must be a finite number >= 0, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class Scheme:
    """One scheme, declared once (module docstring).

    ``needs_positions``: the rule treats layers by where they sit (branch ends, stem, head), so a model
    whose graph cannot be read raises instead of being planned by layer type alone.
    ``equals_without``: ``(role, other scheme)`` when the scheme differs from the other only on
    parameters of that role; planning a model that has none warns.
    """

    name: str
    rule: Rule
    options: Mapping[str, Option] = field(default_factory=dict)
    needs_positions: bool = False
    equals_without: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        # a wrong declaration fails at import, not on a user's model
        if not self.name.isidentifier():
            raise ValueError(f"scheme name {self.name!r} must be an identifier (it is a keyword on the command line)")
        for key, option in self.options.items():
            option.check(self.name, key, option.default)


def _standard(role: str, kind: str) -> tuple[str, dict] | None:
    """What every scheme gives biases and norms unless its rule says otherwise (paper: biases 0, norm
    weights 1 and biases 0, the layers' own defaults)."""
    if role == "bias":
        return "zeros_", {}
    if role == "norm":
        return ("ones_" if kind == "norm_weight" else "zeros_"), {}
    if role == "branch_end_norm":
        return "ones_", {}
    return None


_CONV_KINDS = ("conv", "conv_transpose")

# IDI gain of the stem (paper appendix B: sqrt(2) for the first layer of a ReLU network, 1 for tanh).
# [decision] GELU / SiLU / ELU / leaky ReLU halve the signal's second moment roughly as ReLU does, so
# they get sqrt(2) too; saturating and linear activations get 1.
STEM_GAIN = {"relu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "silu": math.sqrt(2.0), "elu": math.sqrt(2.0),
             "leaky_relu": math.sqrt(2.0), "tanh": 1.0, "sigmoid": 1.0, "linear": 1.0, "identity": 1.0}


def _idinit(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    if role == "branch_end_norm":
        return ("zeros_" if options["branch_end_norm"] == "zero" else "ones_"), {}
    if role not in MATRIX_ROLES:
        return None
    # IDIZ closes what is added back; the classifier too, in a residual network only (paper Sec. 3.2,
    # "The IDInit framework")
    if role in BRANCH_END_ROLES or (role == "head" and residual):
        if options["branch_end"] == "zero_preserving":
            return "zero_preserving_", {"eps": options["eps"]}
        return "zeros_", {}
    gain = STEM_GAIN[options["activation"]] if role == "stem" else 1.0
    name = "channel_identity_" if kind in _CONV_KINDS and options["conv"] == "channel" else "identity_"
    return name, {"gain": gain, "loose": options["loose"]}


def _kaiming(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    if role not in MATRIX_ROLES:
        return None
    return "kaiming_normal_", {"mode": "fan_out" if kind in _CONV_KINDS else "fan_in", "nonlinearity": "relu"}


def _zero_gamma(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    if role == "branch_end_norm":
        return "zeros_", {}
    return _kaiming(role, kind, options, residual)


def _xavier(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    return ("xavier_uniform_", {"gain": 1.0}) if role in MATRIX_ROLES else None


def _orthogonal(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    return ("orthogonal_", {"gain": 1.0}) if role in MATRIX_ROLES else None


def _model_own(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    return "reset_parameters", {}


def _zero(role: str, kind: str, options: Mapping[str, Any], residual: bool):
    if role not in MATRIX_ROLES:
        return None
    return ("zeros_", {}) if role in BRANCH_END_ROLES else ("hadamard_", {})


TABLE: dict[str, Scheme] = {s.name: s for s in (
    Scheme("idinit", _idinit, needs_positions=True, options={
        "loose": Option(1e-6), "conv": Option("patch", ("patch", "channel")),
        "branch_end": Option("zero_preserving", ("zero_preserving", "zero")),
        "activation": Option("relu", tuple(STEM_GAIN)), "eps": Option(1e-6),
        "branch_end_norm": Option("one", ("one", "zero"))}),
    Scheme("kaiming", _kaiming),
    Scheme("xavier", _xavier),
    Scheme("orthogonal", _orthogonal),
    Scheme("default", _model_own),
    Scheme("zero_gamma", _zero_gamma, needs_positions=True, equals_without=("branch_end_norm", "kaiming")),
    Scheme("zero", _zero, needs_positions=True),
)}
SCHEMES = tuple(TABLE)
# For type checkers only, which cannot read TABLE: the same names (a test keeps them equal).
SchemeName = Literal["idinit", "kaiming", "xavier", "orthogonal", "default", "zero_gamma", "zero"]


def lookup(scheme: Any) -> Scheme:
    """The declaration of ``scheme``; a ValueError naming the schemes if there is none."""
    if not isinstance(scheme, str) or scheme not in TABLE:
        raise ValueError(f"unknown scheme {scheme!r}; schemes are {', '.join(TABLE)}")
    return TABLE[scheme]


def needs_positions(scheme: str) -> bool:
    """Whether the scheme treats layers differently by where they sit (branch ends, stem, head)."""
    return lookup(scheme).needs_positions


def check_options(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for ``scheme``; return them merged over the defaults."""
    declared = lookup(scheme).options
    unknown = sorted(set(options) - set(declared))
    if unknown:
        valid = ", ".join(declared) if declared else "none"
        raise TypeError(f"scheme {scheme!r} got unknown option(s) {', '.join(unknown)}; its options are: {valid}")
    given = {key: options.get(key, option.default) for key, option in declared.items()}
    return {key: declared[key].check(scheme, key, value) for key, value in given.items()}


def assign(scheme: str, role: str, kind: str, options: Mapping[str, Any], residual: bool) -> tuple[str, dict]:
    """``(initialiser name, arguments)`` for a parameter of ``role`` and layer ``kind`` under ``scheme``.

    ``residual`` says whether the model has residual branches (IDInit gives the head IDIZ only then:
    non-residual networks get no IDIZ).
    """
    if role in KEPT_ROLES:
        return "keep", {}
    found = lookup(scheme).rule(role, kind, options, residual) or _standard(role, kind)
    if found is None:
        raise ValueError(f"scheme {scheme!r} has no rule for role {role!r}")
    return found


def blocks_of(role: str, gates: int) -> int:
    """Row blocks filled separately: fused attention projections (q/k/v) and recurrent gate stacks."""
    return max(fused_blocks(role), gates)

