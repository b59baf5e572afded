"""Roles: the part each parameter plays in its model, and how a user states one.

Fourth link of the model level's chain (kinds -> graph -> positions -> **roles** -> detect -> schemes ->
plan): the words for what a parameter is, and the roles a user states.

A role says *where* a parameter sits (paper Sec. 3.2, "The IDInit framework"); a scheme
(:mod:`idinit.schemes`) then says what each role is filled with. The roles:

===================  =====================================================================
role                 what it is
===================  =====================================================================
``stem``             the first layer of the network (IDI gain sqrt(2) in a ReLU network)
``identity``         any other linear / conv layer on the main path or inside a branch,
                     projection shortcuts included
``branch_end``       the last layer of a residual branch, whose output is added to the skip
``head``             the final classifier (zero-preserving in a residual network)
``attention_q``,     query / key / value projections; a fused projection gets the letters it
``attention_k``, ... holds (``attention_qkv``, ``attention_kv``) and is filled block by block
``attention_out``    the attention output projection (zero-preserving, paper A.5)
``recurrent``        a recurrent layer's hidden-to-hidden matrix (identity, Le et al. 2015)
``router``           a Mixture-of-Experts router, whose output only picks the experts (its top-k):
                     left to the model's own init under every scheme (the paper names no rule)
``norm``             a normalisation layer's weight (1) or bias (0); the weight of an affine
                     ``torch.addcmul(shift, weight, x)`` (its shift is a ``bias``)
``branch_end_norm``  the norm weight that closes a residual branch (0 under "zero_gamma")
``bias``             a bias vector (0)
``embedding``        an embedding table or a learned additive token (left as the model made it)
``scale``            a learned multiplier (layer scale, a ReZero / SkipInit gate): left as it is
``keep``             left untouched: a user's choice, or a value the model set on purpose
                     (a prior bias, :mod:`idinit.values`)
===================  =====================================================================

A user states roles in three ways, which win over anything detected (strongest first):

1. ``overrides={"layer*.conv2": "branch_end", "fc.weight": "head"}`` given to :func:`idinit.plan`;
   a pattern (``fnmatch``) names parameters or modules;
2. ``idinit.tag(module, role)`` on a module;
3. a method ``idinit_roles(self) -> dict`` on a block, mapping names relative to the block to roles
   (in the spirit of timm's ``zero_init_last()``).

A role given to a *module* goes to its weights, never to its biases: tagging ``conv2`` as
``branch_end`` leaves ``conv2.bias`` a ``bias``.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping

from torch import nn

__all__ = ["ROLES", "tag", "check_role"]

ATTENTION_ROLES = (
    "attention_q", "attention_k", "attention_v", "attention_qk", "attention_qv", "attention_kv",
    "attention_qkv", "attention_out",
)
MATRIX_ROLES = ("stem", "identity", "branch_end", "head", "recurrent") + ATTENTION_ROLES
# The layers whose output is added back to a residual stream: the ones a scheme zeroes to close a branch
BRANCH_END_ROLES = ("branch_end", "attention_out")
# Roles every scheme leaves as the model made them (:mod:`idinit.schemes`)
KEPT_ROLES = ("router", "embedding", "scale", "keep")
ROLES = MATRIX_ROLES + ("norm", "branch_end_norm", "bias") + KEPT_ROLES

# The attribute `tag` sets, and the method a block may define.
TAG_ATTRIBUTE = "_idinit_role"
ROLES_METHOD = "idinit_roles"


def check_role(role: str, where: str) -> str:
    """Return ``role`` if it is a known role, else raise a ValueError naming ``where`` it came from."""
    if role not in ROLES:
        raise ValueError(f"{where}: unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def tag(module: nn.Module, role: str) -> nn.Module:
    """Mark ``module``'s weights with ``role`` (its biases stay ``bias``); returns ``module``.

    The tag wins over every detected role. It is an attribute of the module, so it survives
    ``to_empty()`` and ``.to()``; ``idinit.tag(model.head, "head")`` is the typical use.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"idinit.tag: expected an nn.Module, got {type(module).__name__}")
    setattr(module, TAG_ATTRIBUTE, check_role(role, "idinit.tag"))
    return module


def is_bias_name(local_name: str) -> bool:
    """``bias``, ``in_proj_bias``, ``bias_ih_l0``: the names that stay ``bias`` under a module role."""
    return local_name == "bias" or local_name.endswith("_bias") or local_name.startswith("bias_ih") \
        or local_name.startswith("bias_hh")


def _module_role_targets(module_name: str, module: nn.Module) -> list[str]:
    """The qualified names of the parameters a module-level role applies to (its own weights)."""
    prefix = f"{module_name}." if module_name else ""
    return [prefix + n for n, _ in module.named_parameters(recurse=False) if not is_bias_name(n)]


def user_roles(
    model: nn.Module,
    overrides: Mapping[str, str] | None,
    aliases: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    """Roles stated by the user: ``{canonical parameter name: (role, source)}``.

    ``aliases`` maps every name of a parameter (tied ones have several) to its canonical name.
    Sources, weakest first so that later ones overwrite: block methods, tags, overrides.
    """
    found: dict[str, tuple[str, str]] = {}
    modules = dict(model.named_modules())
    for mod_name, module in modules.items():
        method = getattr(module, ROLES_METHOD, None)
        if method is None or not callable(method):
            continue
        stated = method()
        if not isinstance(stated, Mapping):
            raise TypeError(f"{type(module).__name__}.{ROLES_METHOD}() must return a dict of name -> role, "
                            f"got {type(stated).__name__}")
        for rel, role in stated.items():
            where = f"{type(module).__name__}.{ROLES_METHOD}() entry {rel!r}"
            check_role(role, where)
            full = f"{mod_name}.{rel}" if mod_name else rel
            targets = _targets(full, modules, aliases)
            if not targets:
                raise ValueError(f"{where}: {full!r} names no parameter or module of {type(model).__name__}")
            for name in targets:
                found[name] = (role, f"{ROLES_METHOD}()")
    for mod_name, module in modules.items():
        role = getattr(module, TAG_ATTRIBUTE, None)
        if role is None:
            continue
        check_role(role, f"tag on {mod_name or 'the model'}")
        for name in _module_role_targets(mod_name, module):
            found[aliases[name]] = (role, "tag")
    for pattern, role in (overrides or {}).items():
        if not isinstance(pattern, str):
            raise TypeError(f"overrides: keys are name patterns (str), got {pattern!r}")
        check_role(role, f"overrides[{pattern!r}]")
        targets = _targets(pattern, modules, aliases)
        if not targets:
            sample = ", ".join(list(aliases)[:6])
            raise ValueError(f"overrides: pattern {pattern!r} matches no parameter or module of "
                             f"{type(model).__name__} (parameter names look like: {sample}, ...)")
        for name in targets:
            found[name] = (role, f"overrides[{pattern!r}]")
    return found


def _targets(pattern: str, modules: Mapping[str, nn.Module], aliases: Mapping[str, str]) -> list[str]:
    """Canonical parameter names ``pattern`` selects: parameters by name, modules' weights by module name."""
    hits: list[str] = []
    for name in aliases:
        if fnmatch.fnmatchcase(name, pattern):
            hits.append(aliases[name])
    for mod_name, module in modules.items():
        if mod_name and fnmatch.fnmatchcase(mod_name, pattern):
            hits.extend(aliases[n] for n in _module_role_targets(mod_name, module))
    return list(dict.fromkeys(hits))


def fused_blocks(role: str) -> int:
    """How many row blocks a fused attention projection holds: ``attention_qkv`` -> 3."""
    if role.startswith("attention_") and role != "attention_out":
        return len(role.split("_", 1)[1])
    return 1


def strongest(roles: Iterable[str]) -> str:
    """The role that wins when one parameter is used in several places (attention, then router, branch
    end, head, stem, identity), as when a module is called twice."""
    order = ATTENTION_ROLES + ("router", "branch_end", "head", "stem", "recurrent", "identity")
    roles = list(roles)
    return min(roles, key=lambda r: order.index(r) if r in order else len(order))
