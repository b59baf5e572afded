"""What a model set on purpose (idinit.values) and the order in which role sources win (idinit.detect)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import idinit
from idinit.detect import PRECEDENCE
from plan_zoo import LSTMClassifier, roles


class Head(nn.Module):
    """A residual trunk and a classifier whose bias carries a prior, as detection heads set it."""

    def __init__(self, prior: float | None = -math.log(99)):
        super().__init__()
        self.stem, self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.cls = nn.Linear(8, 3)
        if prior is not None:
            with torch.no_grad():
                self.cls.bias.fill_(prior)

    def forward(self, x):
        h = self.stem(x)
        return self.cls(h + self.b(torch.relu(self.a(h))))


def test_a_constant_bias_is_kept_and_a_default_draw_is_not():
    model = Head()
    prior = model.cls.bias.detach().clone()
    plan = idinit.init_(model)
    assert torch.equal(model.cls.bias, prior) and plan["cls.bias"].init == "keep"
    assert "-4.595" in plan["cls.bias"].note and "overrides={'cls.bias': 'bias'}" in plan["cls.bias"].note
    assert torch.all(model.a.bias == 0)  # a's bias was PyTorch's default draw: zeroed as before


@pytest.mark.parametrize("fill, kept", [
    (lambda b: b.fill_(float("nan")), False),        # uninitialised memory is never a prior
    (lambda b: b.uniform_(-0.01, 0.01), False),      # inside nn.Linear's default draw
    (lambda b: b.copy_(torch.tensor([3.0, -1.0, 0.5])), True),  # outside +-1/sqrt(8): set on purpose
    (lambda b: b.zero_(), False),
])
def test_which_biases_count_as_set_on_purpose(fill, kept):
    model = Head(prior=None)
    with torch.no_grad():
        fill(model.cls.bias)
    assert (idinit.plan(model)["cls.bias"].role == "keep") is kept


def test_meta_and_the_switch_turn_the_rule_off():
    with torch.device("meta"):
        meta = Head()
    assert idinit.plan(meta)["cls.bias"].role == "bias"  # no values to read
    model = Head()
    assert idinit.plan(model, keep_model_values=False)["cls.bias"].role == "bias"


def test_recurrent_default_biases_are_not_taken_for_priors():
    plan = idinit.plan(LSTMClassifier())
    assert {plan[n].role for n in ("rnn.bias_ih_l0", "rnn.bias_hh_l1")} == {"bias"}


def test_sources_merge_by_the_stated_precedence():
    assert PRECEDENCE == ("user", "tied", "registry", "values", "graph", "type")
    model = Head()
    found = roles(idinit.plan(model))
    assert found["cls.bias"] == "keep" and found["b.weight"] == "branch_end"  # values over type, graph over type
    stated = idinit.plan(model, overrides={"cls.bias": "bias", "b": "identity"})  # user over values and graph
    assert (stated["cls.bias"].role, stated["cls.bias"].init, stated["cls.bias"].source) == \
        ("bias", "zeros_", "overrides['cls.bias']")
    assert stated["b.weight"].role == "identity"
    idinit.tag(model.cls, "keep")
    assert idinit.plan(model)["cls.weight"].source == "tag"  # a tag over the graph's head
