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


# ---------------------------------------------------------------------------------------------
# uninitialised memory is never kept (issue 8): the meta-device recipe with garbage planted in it

def _plant_through_data(model: nn.Module, fill) -> None:
    """Garbage as to_empty() leaves it: written through ``.data``, which records no write on the
    parameter, as uninitialised memory has none."""
    generator = torch.Generator().manual_seed(5)
    for p in model.parameters():
        fill(p.data, generator)


GARBAGE = {
    "huge": lambda t, g: t.fill_(1e30),
    "a prior's constant": lambda t, g: t.fill_(-math.log(99)),  # garbage that looks exactly like a prior
    "large random": lambda t, g: t.copy_(torch.randn(t.shape, generator=g) * 50),
    "nan": lambda t, g: t.fill_(float("nan")),
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_meta_recipe_keeps_no_planted_bias(garbage):
    with torch.device("meta"):
        model = Head()
    model.to_empty(device="cpu")
    _plant_through_data(model, GARBAGE[garbage])
    torch.manual_seed(0)
    plan = idinit.init_(model)  # the README's recipe, with the defaults
    assert plan["cls.bias"].init == "zeros_" and torch.all(model.cls.bias == 0)
    assert all(torch.isfinite(p).all() and p.abs().max() < 10 for p in model.parameters())
    if garbage in ("huge", "a prior's constant"):  # it looked set on purpose: the note says why it is not kept
        assert "nothing wrote it since it was allocated" in plan["cls.bias"].note
        assert "overrides={'cls.bias': 'keep'}" in plan["cls.bias"].note
    eager = Head()  # the same model built eagerly: its prior is the model's, and kept
    prior = eager.cls.bias.detach().clone()
    assert idinit.init_(eager)["cls.bias"].init == "keep" and torch.equal(eager.cls.bias, prior)


def test_a_deepcopy_starts_afresh_and_the_override_keeps_its_prior():
    import copy

    model = copy.deepcopy(Head())  # a copy records no write: its values cannot be told from memory
    assert idinit.plan(model)["cls.bias"].init == "zeros_"
    kept = idinit.init_(model, overrides={"cls.bias": "keep"})
    assert kept["cls.bias"].init == "keep" and torch.allclose(model.cls.bias, torch.full((3,), -math.log(99)))


def _deit3(**kwargs):
    import timm

    return timm.create_model("deit3_small_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=8,
                             embed_dim=32, num_heads=2, depth=2, **kwargs)


@pytest.mark.parametrize("garbage", ["huge", "large random"])
def test_meta_recipe_judges_layer_scale_on_the_models_own_init(garbage):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    eager = _deit3()
    eager_plan = idinit.plan(eager)
    with torch.device("meta"):
        model = _deit3()
    model.to_empty(device="cpu")
    _plant_through_data(model, GARBAGE[garbage])
    planted = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = torch.get_rng_state()
    plan = idinit.plan(model)
    assert torch.equal(torch.get_rng_state(), state)  # the own init was run aside and undone
    assert all(torch.equal(p, planted[n]) for n, p in model.named_parameters())
    # the branch ends behind a layer scale are planned on what LayerScale.reset_parameters() writes, as eagerly
    ends = [f"blocks.{i}.{layer}.weight" for i in (0, 1) for layer in ("attn.proj", "mlp.fc2")]
    assert [(plan[n].role, plan[n].source) for n in ends] == [(eager_plan[n].role, eager_plan[n].source) for n in ends]
    assert {plan[n].role for n in ends} == {"identity"}
    torch.manual_seed(0)
    idinit.init_(model)
    biggest = max(p.abs().max().item() for p in model.parameters())
    assert biggest < 10, biggest  # nothing planted survives
    for i in (0, 1):
        assert torch.equal(model.get_parameter(f"blocks.{i}.ls2.gamma"), eager.get_parameter(f"blocks.{i}.ls2.gamma"))


def test_a_model_given_its_own_init_after_to_empty_keeps_what_that_init_set():
    """from_config's order: to_empty(), the model's own init, then IDInit: Mamba's time-step biases (set by
    its _init_weights) are the model's, and kept."""
    transformers = pytest.importorskip("transformers")
    config = transformers.MambaConfig(num_hidden_layers=1, hidden_size=16, state_size=4, vocab_size=50, expand=2,
                                      conv_kernel=4, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model, plan = idinit.hf.from_config(config, generator=torch.Generator().manual_seed(0))
    entry = plan["backbone.layers.0.mixer.dt_proj.bias"]
    assert (entry.init, entry.source) == ("keep", "values")
    assert model.backbone.layers[0].mixer.dt_proj.bias.max() < -2  # inverse softplus of steps in [1e-3, 0.1]


def test_judging_a_layer_scale_records_no_write_on_the_model():
    """Planning twice gives the same plan: the own init run aside leaves the garbage unwritten."""
    pytest.importorskip("timm")
    with torch.device("meta"):
        model = _deit3()
    model.to_empty(device="cpu")
    _plant_through_data(model, GARBAGE["huge"])
    versions = {n: p._version for n, p in model.named_parameters()}
    first = idinit.plan(model)
    assert {n: p._version for n, p in model.named_parameters()} == versions
    assert [(e.role, e.init) for e in idinit.plan(model)] == [(e.role, e.init) for e in first]
