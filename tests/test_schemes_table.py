"""The scheme table: every rule against what the paper and SPEC say, and a new scheme as one declaration."""
from __future__ import annotations

import inspect
import math
import typing

import pytest
import torch
from torch import nn

import idinit
from idinit import schemes
from idinit.roles import ROLES
from idinit.schemes import Option, Scheme

# Every parameter kind idinit.kinds produces, split by how the rules read them.
CONV = ("conv", "conv_transpose")
OTHER_MATRIX = ("linear", "linear_t", "fused_qkv", "recurrent_ih", "recurrent_hh", "recurrent_hr", "unknown")
NORM = ("norm_weight", "norm_bias")
ALL_KINDS = CONV + OTHER_MATRIX + NORM + ("bias", "embedding", "token", "activation")
ATTENTION = ("attention_q", "attention_k", "attention_v", "attention_qk", "attention_qv", "attention_kv",
             "attention_qkv")

# ---- written from SPEC.md (sections 1-5) and the schemes' docstring, not from the code ----------------
R2 = math.sqrt(2.0)
IDI = ("identity_", {"gain": 1.0, "loose": 1e-6})            # SPEC 1: tau 1, loose 1e-6
IDI_STEM = ("identity_", {"gain": R2, "loose": 1e-6})        # SPEC 1: sqrt(2) on a ReLU network's first layer
IDIZ = ("zero_preserving_", {"eps": 1e-6})                   # SPEC 3: eps 1e-6
ZEROS, ONES, KEEP, OWN = ("zeros_", {}), ("ones_", {}), ("keep", {}), ("reset_parameters", {})
HE_IN = ("kaiming_normal_", {"mode": "fan_in", "nonlinearity": "relu"})
HE_OUT = ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"})  # SPEC 5: fan-out convs
XAVIER, ORTHO, HADAMARD = ("xavier_uniform_", {"gain": 1.0}), ("orthogonal_", {"gain": 1.0}), ("hadamard_", {})


def _matrix(stem, identity, branch_end, head_residual, head_plain, attention_out, recurrent, attention):
    return {"stem": stem, "identity": identity, "branch_end": branch_end, "head": (head_residual, head_plain),
            "attention_out": attention_out, "recurrent": recurrent, **{r: attention for r in ATTENTION}}


# scheme -> matrix role -> (what a linear-like layer gets, what a conv kernel gets); "head" holds
# (in a residual network, in a plain one) for each
SPEC = {
    # SPEC 4: IDI / IDIC everywhere, IDIZ on branch ends, attention W_O and, in residual networks only,
    # the classifier; Q/K/V tau 1; recurrent IDI (Le et al.). IDIC is identity_ on the flattened kernel.
    "idinit": _matrix((IDI_STEM, IDI_STEM), (IDI, IDI), (IDIZ, IDIZ), (IDIZ, IDIZ), (IDI, IDI), (IDIZ, IDIZ),
                      (IDI, IDI), (IDI, IDI)),
    # SPEC 5 + docstring: He normal, fan-out for convs, fan-in for linear layers, everywhere
    "kaiming": _matrix(*[(HE_IN, HE_OUT)] * 3, (HE_IN, HE_OUT), (HE_IN, HE_OUT), *[(HE_IN, HE_OUT)] * 3),
    "zero_gamma": _matrix(*[(HE_IN, HE_OUT)] * 3, (HE_IN, HE_OUT), (HE_IN, HE_OUT), *[(HE_IN, HE_OUT)] * 3),
    "xavier": _matrix(*[(XAVIER, XAVIER)] * 3, (XAVIER, XAVIER), (XAVIER, XAVIER), *[(XAVIER, XAVIER)] * 3),
    "orthogonal": _matrix(*[(ORTHO, ORTHO)] * 3, (ORTHO, ORTHO), (ORTHO, ORTHO), *[(ORTHO, ORTHO)] * 3),
    # SPEC 5 ZerO: Hadamard / partial identity everywhere, the last layer of each residual branch zero
    "zero": _matrix((HADAMARD, HADAMARD), (HADAMARD, HADAMARD), (ZEROS, ZEROS), (HADAMARD, HADAMARD),
                    (HADAMARD, HADAMARD), (ZEROS, ZEROS), (HADAMARD, HADAMARD), (HADAMARD, HADAMARD)),
    "default": None,  # the model's own init on every parameter it does not keep
}
# SPEC 4 [decision]: biases 0, norm weight 1 / bias 0; SPEC 5: Zero-gamma zeroes the norm closing a branch
BRANCH_END_NORM = {"idinit": ONES, "kaiming": ONES, "xavier": ONES, "orthogonal": ONES, "zero": ONES,
                   "zero_gamma": ZEROS}
# the schemes that place layers by position (branch ends, stem, head) need the graph
NEEDS_POSITIONS = {"idinit": True, "zero_gamma": True, "zero": True, "kaiming": False, "xavier": False,
                   "orthogonal": False, "default": False}


def _expected(scheme: str, role: str, kind: str, residual: bool):
    # SPEC 4 [decision]: left as the model made them; MoE routers too (the paper has none: idinit.schemes)
    if role in ("embedding", "scale", "keep", "router"):
        return KEEP
    if scheme == "default":
        return OWN
    if role == "bias":
        return ZEROS
    if role == "norm":
        return ONES if kind == "norm_weight" else ZEROS
    if role == "branch_end_norm":
        return BRANCH_END_NORM[scheme]
    linear_like, conv_like = SPEC[scheme][role] if role != "head" else SPEC[scheme]["head"][0 if residual else 1]
    return conv_like if kind in CONV else linear_like


def _pairs():
    for role in ROLES:
        kinds = ("norm_weight",) if role == "branch_end_norm" else NORM if role == "norm" else ALL_KINDS
        for kind in kinds:
            yield role, kind


def test_the_table_covers_every_scheme_and_role():
    assert set(SPEC) == set(idinit.SCHEMES) == set(NEEDS_POSITIONS)
    matrix_roles = {r for r in ROLES if r not in ("norm", "branch_end_norm", "bias", "embedding", "scale", "keep", "router")}
    assert all(set(rules) == matrix_roles for rules in SPEC.values() if rules is not None)


@pytest.mark.parametrize("scheme", sorted(SPEC))
def test_every_rule_is_what_the_spec_says(scheme):
    options = schemes.check_options(scheme, {})
    checked = 0
    for residual in (True, False):
        for role, kind in _pairs():
            got = schemes.assign(scheme, role, kind, options, residual)
            assert got == _expected(scheme, role, kind, residual), (scheme, role, kind, residual)
            checked += 1
    assert checked > 2 * 100
    assert schemes.needs_positions(scheme) is NEEDS_POSITIONS[scheme]


# The paper's Table 2 ablation and the other idinit options, on a conv branch (stem, inner layer, branch
# end, residual classifier): SPEC 2 channel-maintain, SPEC 3 zeros vs IDIZ, appendix B gains, eps.
CHANNEL = "channel_identity_"


@pytest.mark.parametrize("options, stem, identity, branch_end, head", [
    ({"conv": "channel", "branch_end": "zero"},
     (CHANNEL, {"gain": R2, "loose": 1e-6}), (CHANNEL, {"gain": 1.0, "loose": 1e-6}), ZEROS, ZEROS),
    ({"conv": "channel"}, (CHANNEL, {"gain": R2, "loose": 1e-6}), (CHANNEL, {"gain": 1.0, "loose": 1e-6}), IDIZ, IDIZ),
    ({"branch_end": "zero"}, IDI_STEM, IDI, ZEROS, ZEROS),
    ({"activation": "tanh", "loose": 0, "eps": 1e-3}, ("identity_", {"gain": 1.0, "loose": 0.0}),
     ("identity_", {"gain": 1.0, "loose": 0.0}), ("zero_preserving_", {"eps": 1e-3}),
     ("zero_preserving_", {"eps": 1e-3})),
    ({"activation": "gelu"}, IDI_STEM, IDI, IDIZ, IDIZ),
])
def test_idinit_options_on_a_conv_branch(options, stem, identity, branch_end, head):
    merged = schemes.check_options("idinit", options)
    got = [schemes.assign("idinit", role, "conv", merged, True) for role in ("stem", "identity", "branch_end", "head")]
    assert got == [stem, identity, branch_end, head]
    # channel-maintain is for kernels only: a linear layer keeps IDI (SPEC 2 is about convolutions)
    assert schemes.assign("idinit", "identity", "linear", merged, True)[0] == "identity_"
    zeroed = schemes.assign("idinit", "branch_end_norm", "norm_weight", {**merged, "branch_end_norm": "zero"}, True)
    assert zeroed == ZEROS


# ---- the table is the one place ---------------------------------------------------------------

def test_names_for_type_checkers_equal_the_table():
    assert typing.get_args(schemes.SchemeName) == idinit.SCHEMES == tuple(schemes.TABLE)
    for function in (idinit.plan, idinit.init_, idinit.hf.from_config):
        assert typing.get_type_hints(function)["scheme"] == schemes.SchemeName, function.__name__
    from idinit.lab.models import LIBRARY_SCHEMES
    from idinit.lab.cli import build_parser

    assert LIBRARY_SCHEMES == idinit.SCHEMES
    plan_help = build_parser()._subparsers._group_actions[0].choices["plan"].format_help()
    assert all(name in " ".join(plan_help.split()) for name in idinit.SCHEMES)


def test_every_named_option_keyword_matches_its_declaration():
    """The options of the library's schemes are named keywords of plan / init_ / from_config (an IDE
    shows them, with their choices as Literal types); options of a scheme declared elsewhere go through
    ``**options``."""
    declared = {k: o for s in schemes.TABLE.values() for k, o in s.options.items()}
    for function in (idinit.plan, idinit.init_, idinit.hf.from_config):
        hints = typing.get_type_hints(function)
        parameters = inspect.signature(function).parameters
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()), function.__name__
        for key, option in declared.items():
            assert parameters[key].kind is inspect.Parameter.KEYWORD_ONLY, (function.__name__, key)
            assert parameters[key].default is None, (function.__name__, key)
            literal = [a for a in typing.get_args(hints[key]) if typing.get_origin(a) is typing.Literal]
            if option.choices:
                assert typing.get_args(literal[0]) == option.choices, (function.__name__, key)
            else:
                assert float in typing.get_args(hints[key]) and not literal, (function.__name__, key)


def test_a_wrong_declaration_fails_when_it_is_made():
    rule = schemes.TABLE["kaiming"].rule
    with pytest.raises(ValueError, match="finite number >= 0"):
        Scheme("bad", rule, options={"eps": Option(-1.0)})
    with pytest.raises(ValueError, match="not one of a, b"):
        Scheme("bad", rule, options={"mode": Option("c", ("a", "b"))})
    with pytest.raises(ValueError, match="identifier"):
        Scheme("lsuv-less", rule)


def _branch_zero_kaiming(role, kind, options, residual):
    """A toy scheme: He normal with a chosen fan, and exact zeros on the last layer of each branch."""
    if role == "branch_end":
        return "zeros_", {}
    if role in ("stem", "identity", "head"):
        return "kaiming_normal_", {"mode": options["fan"], "nonlinearity": "relu"}
    return None


class _Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


def test_a_new_scheme_is_one_declaration(monkeypatch, capsys):
    declaration = Scheme("branch_zero_kaiming", _branch_zero_kaiming, needs_positions=True,
                         options={"fan": Option("fan_in", ("fan_in", "fan_out"))})
    monkeypatch.setitem(schemes.TABLE, declaration.name, declaration)  # the only change

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 256), _Block(256), _Block(256), nn.Linear(256, 10))
    p = idinit.init_(model, "branch_zero_kaiming", fan="fan_out")
    assert p.options == {"fan": "fan_out"}
    # the first layer feeds the residual stream directly, so it is no stem (no ReLU follows it)
    assert [e.role for e in p if e.name.endswith("weight")] == ["identity", "identity", "branch_end", "identity",
                                                                "branch_end", "head"]
    assert torch.count_nonzero(model[1].fc2.weight) == 0 and torch.count_nonzero(model[2].fc2.weight) == 0
    # He normal fan_out on a 256x256 layer: std sqrt(2/256) = 0.088 (65536 draws: within 3%)
    assert abs(model[1].fc1.weight.std().item() / math.sqrt(2 / 256) - 1) < 0.03
    assert torch.count_nonzero(model[1].fc1.bias) == 0  # biases: the shared rule
    # its options are checked from the declaration
    with pytest.raises(ValueError, match="fan='fan_middle' is not one of fan_in, fan_out"):
        idinit.plan(model, "branch_zero_kaiming", fan="fan_middle")
    with pytest.raises(TypeError, match="unknown option.*loose.*its options are: fan"):
        idinit.plan(model, "branch_zero_kaiming", loose=0.0)
    # the command line takes it
    from idinit.lab import cli

    assert cli.main(["plan", "resnet8", "--scheme", "branch_zero_kaiming", "--set", "fan=fan_out"]) == 0
    out = capsys.readouterr().out
    assert "scheme 'branch_zero_kaiming' (fan=fan_out)" in out and "zeros_" in out and "kaiming_normal_" in out


def test_unknown_scheme_names_the_table():
    with pytest.raises(ValueError, match="unknown scheme 'lsuv'; schemes are idinit, kaiming"):
        idinit.plan(nn.Linear(2, 2), "lsuv")
