"""Mixture-of-Experts routers keep the model's own init (role ``router``, :mod:`idinit.positions`).

A router's output reaches the network only as the choice of experts (softmax or sigmoid, then top-k, the
picked scores scaling the experts). IDI on it reads the first ``num_experts`` features of every token, so
that every token picks the same experts (``scripts/router_at_init.py``: 100 % top-1 agreement between
layers, against 0.14-0.28 under the model's own init). Each test plants that fault (the router stated
``identity``, what the plan gave an ``nn.Linear`` router before) and sees it fail the property.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import idinit
from spec_patterns import quiet

WIDTH, EXPERTS, TOP_K = 8, 4, 2


class MoE(nn.Module):
    """``x + sum_e g_e(x) * expert_e(x)``, ``g`` the top-k of ``softmax(router(x))``, dispatched densely so
    that torch.fx traces it. ``raw``: the router is a bare weight, ``F.linear(x, w)`` (Mixtral, OLMoE).
    ``gather``: the top-k of ``sigmoid(router(x))`` gives indices only, the scores are gathered at them
    (DeepSeek-V3), so the autograd graph holds no top-k. ``top1``: the largest probability and its index,
    ``max(softmax(router(x)))`` (Switch Transformers)."""

    def __init__(self, raw: bool, gather: bool = False, top1: bool = False):
        super().__init__()
        self.raw, self.gather, self.top1 = raw, gather, top1
        if raw:
            self.router_weight = nn.Parameter(torch.randn(EXPERTS, WIDTH) / WIDTH ** 0.5)
        else:
            self.router = nn.Linear(WIDTH, EXPERTS, bias=False)
        self.up = nn.ModuleList(nn.Linear(WIDTH, 2 * WIDTH) for _ in range(EXPERTS))
        self.down = nn.ModuleList(nn.Linear(2 * WIDTH, WIDTH) for _ in range(EXPERTS))

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.linear(x, self.router_weight) if self.raw else self.router(x)
        if self.top1:
            top, index = torch.softmax(logits, dim=-1).max(dim=-1, keepdim=True)
        elif self.gather:
            scores = torch.sigmoid(logits)
            index = torch.topk(scores.detach(), TOP_K, dim=-1).indices
            top = scores.gather(-1, index)
        else:
            top, index = torch.topk(torch.softmax(logits, dim=-1), TOP_K, dim=-1)
        weights = top if self.top1 else top / top.sum(-1, keepdim=True)  # Switch keeps the top-1 probability
        return torch.zeros_like(logits).scatter(-1, index, weights)

    def forward(self, x):
        g = self.gates(x)
        return x + sum(g[:, e:e + 1] * self.down[e](torch.relu(self.up[e](x))) for e in range(EXPERTS))


class Routed(nn.Module):
    """An input layer, two MoE blocks, a classifier."""

    def __init__(self, raw: bool = False, gather: bool = False, top1: bool = False):
        super().__init__()
        self.raw = raw
        self.inp = nn.Linear(WIDTH, WIDTH)
        self.blocks = nn.Sequential(MoE(raw, gather, top1), MoE(raw, gather, top1))
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


def _routers(model: Routed) -> list[str]:
    return [f"blocks.{i}.{'router_weight' if model.raw else 'router.weight'}" for i in range(2)]


def _inputs() -> torch.Tensor:
    return torch.randn(64, WIDTH, generator=torch.Generator().manual_seed(1))


def _agreement(model: Routed) -> float:
    """The fraction of tokens whose top-1 expert is the same in both blocks (random routers: ~1 / EXPERTS)."""
    with torch.no_grad():
        x = model.inp(_inputs())
        first = model.blocks[0].gates(x).argmax(-1)
        second = model.blocks[1].gates(model.blocks[0](x)).argmax(-1)
    return float((first == second).double().mean())


VARIANTS = {"linear": {}, "raw": {"raw": True}, "gather": {"gather": True}, "top1": {"top1": True}}


@pytest.mark.parametrize("graph", ["autograd", "fx"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_router_keeps_its_values_and_the_experts_get_idinit(graph, variant):
    torch.manual_seed(0)
    model = Routed(**VARIANTS[variant])
    routers = _routers(model)
    before = {n: w.detach().double().clone() for n, w in model.named_parameters() if n in routers}
    example = (_inputs(),) if graph == "autograd" else None
    p = quiet(idinit.init_, model, example_inputs=example, reset_kept=False, loose=0.0)
    assert p.source.startswith("autograd" if graph == "autograd" else "torch.fx")
    assert not p.unclassified  # the raw weight was unclassified before
    params = dict(model.named_parameters())
    for name in routers:
        assert p[name].role == "router" and p[name].init == "keep"
        assert torch.equal(params[name].detach().double(), before[name])
    # the rest is IDInit as before: IDI in the experts, IDIZ closing each branch and on the residual head
    for block in ("blocks.0", "blocks.1"):
        assert {p[f"{block}.up.{e}.weight"].role for e in range(EXPERTS)} == {"identity"}
        assert {p[f"{block}.down.{e}.weight"].role for e in range(EXPERTS)} == {"branch_end"}
    assert p["head.weight"].role == "head"
    # the two blocks route the tokens independently; planted: IDI routers both read the first EXPERTS
    # features of the same (near-identity) stream, so every token picks the same expert in both
    assert _agreement(model) < 0.6
    torch.manual_seed(0)
    planted = Routed(**VARIANTS[variant])
    quiet(idinit.init_, planted, example_inputs=example, overrides=dict.fromkeys(routers, "identity"), loose=0.0)
    assert _agreement(planted) == 1.0


def test_every_scheme_gives_the_router_the_models_own_init():
    # nn.Linear's own init, kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in);
    # planted: "zero" writes Hadamard / partial identity, "idinit" IDI (both eye(4, 8) here)
    bound = 1 / WIDTH ** 0.5
    for scheme in idinit.SCHEMES:
        torch.manual_seed(0)
        model = Routed()
        p = quiet(idinit.init_, model, scheme, example_inputs=(_inputs(),),
                   generator=torch.Generator().manual_seed(3))
        for name in _routers(model):
            assert p[name].role == "router" and "Mixture-of-Experts router" in p[name].note, scheme
            assert p[name].init == "reset_parameters", scheme
        w = model.blocks[0].router.weight.detach().double()
        assert w.abs().max() <= bound and w.std() > bound / 3, scheme
        assert not torch.equal(w, torch.eye(EXPERTS, WIDTH, dtype=torch.float64)), scheme


class Ranked(nn.Module):
    """A classifier whose top-k scores are the output (a detector's best boxes): no path is picked."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(WIDTH, WIDTH)
        self.score = nn.Linear(WIDTH, EXPERTS)

    def forward(self, x):
        return torch.topk(torch.sigmoid(self.score(torch.relu(self.body(x)))), TOP_K, dim=-1).values


class Gated(nn.Module):
    """A sigmoid gate on a branch without a top-k (Qwen2-MoE's shared-expert gate): no router."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(WIDTH, 1)
        self.up, self.down = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return x + torch.sigmoid(self.gate(x)) * self.down(torch.relu(self.up(x)))


@pytest.mark.parametrize("graph", ["autograd", "fx"])
def test_a_top_k_that_picks_no_path_and_a_gate_without_top_k_are_no_routers(graph):
    example = (_inputs(),) if graph == "autograd" else None
    p = quiet(idinit.plan, Ranked(), example_inputs=example)
    assert p["score.weight"].role == "head" and p["score.weight"].init == "identity_"
    p = quiet(idinit.plan, Gated(), example_inputs=example)
    assert (p["gate.weight"].role, p["down.weight"].role) == ("identity", "branch_end")
    assert not p.by_role("router")


def test_a_router_stated_by_the_user_is_kept():
    model = Gated()
    before = model.gate.weight.detach().double().clone()
    p = quiet(idinit.init_, model, example_inputs=(_inputs(),), overrides={"gate": "router"}, reset_kept=False)
    assert p["gate.weight"].role == "router" and p["gate.weight"].source.startswith("overrides")
    assert torch.equal(model.gate.weight.detach().double(), before)


transformers = pytest.importorskip("transformers")


def _switch():
    return transformers.SwitchTransformersForConditionalGeneration(transformers.SwitchTransformersConfig(
        vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, num_experts=4,
        num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, expert_capacity=64, decoder_start_token_id=0,
        dropout_rate=0.0))


def _mixtral():
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2))


def _dbrx():
    return transformers.DbrxForCausalLM(transformers.DbrxConfig(
        d_model=32, n_heads=2, n_layers=2, max_seq_len=64, vocab_size=100,
        attn_config={"kv_n_heads": 1, "rope_theta": 10000.0, "clip_qkv": 8.0},
        ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}))


# (builder, suffix of the router weights, how the plan placed them before: Linear routers got IDI)
HF_MODELS = {"switch": (_switch, "router.classifier.weight", "identity"),
             "mixtral": (_mixtral, "mlp.gate.weight", "unclassified"),
             "dbrx": (_dbrx, "router.layer.weight", "identity")}


@pytest.mark.parametrize("family", sorted(HF_MODELS))
def test_hf_routers_keep_their_values(family):
    build, suffix, _ = HF_MODELS[family]
    torch.manual_seed(0)
    model = build()
    before = {n: w.detach().double().clone() for n, w in model.named_parameters() if n.endswith(suffix)}
    assert len(before) == 2
    p = quiet(idinit.init_, model, reset_kept=False, loose=0.0)
    params = dict(model.named_parameters())
    for name, value in before.items():
        assert p[name].role == "router" and p[name].init == "keep", name
        assert torch.equal(params[name].detach().double(), value), name
    assert not p.unclassified
    # the other linear layers of the MoE block still get IDInit: every expert's last layer closes its branch
    assert p.by_role("branch_end")


@pytest.mark.parametrize("family", sorted(HF_MODELS))
def test_hf_routers_get_the_models_own_init_by_default(family):
    # HF _init_weights: normal(0, initializer_range), Switch normal(0, initializer_factor); planted: IDI (one 1
    # per row, the rest 0), what an nn.Linear router got before
    build, suffix, _ = HF_MODELS[family]
    torch.manual_seed(0)
    model = build()
    std = model.config.initializer_factor if family == "switch" else model.config.initializer_range
    p = quiet(idinit.init_, model, generator=torch.Generator().manual_seed(0))
    routers = [(name, w.detach().double()) for name, w in model.named_parameters() if name.endswith(suffix)]
    for name, w in routers:
        assert p[name].init == "reset_parameters" and "_init_weights" in p[name].note, name
        # 128 draws: the sample std is within 25 % of the true one far beyond 3 sigma (~19 %)
        assert abs(float(w.std()) / std - 1) < 0.25, (name, float(w.std()))
    planted = torch.eye(*routers[0][1].shape, dtype=torch.float64)
    assert abs(float(planted.std()) / std - 1) > 0.25
