"""Mixture-of-Experts layers whose experts are separate modules (Switch Transformers: one
``DenseActDense`` per expert, a top-1 router whose weight is ``max(softmax(logits))``).

Each expert's ``wo`` closes the residual branch (IDIZ) like a dense MLP's, whether or not the pass the
plan was read from routed a token to it: an expert left at IDI would join the branch open the first
time training routes a token there."""
from __future__ import annotations

import warnings

import pytest
import torch

import idinit

transformers = pytest.importorskip("transformers")


def switch(experts: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.SwitchTransformersConfig(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                                num_decoder_layers=2, num_heads=2, num_experts=experts,
                                                num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
                                                expert_capacity=64, decoder_start_token_id=0, dropout_rate=0.0)
    return transformers.SwitchTransformersForConditionalGeneration(cfg)


def _experts(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if n.rpartition(".")[2].startswith("expert_")}


def test_every_expert_closes_its_branch_routed_or_not():
    model = switch()
    # one token repeated: the example pass reaches only the experts that token is routed to
    ids = {"input_ids": torch.full((2, 6), 7), "decoder_input_ids": torch.full((2, 4), 7)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = idinit.plan(model, example_inputs=ids)
    experts = _experts(model)
    unreached = [n for n in experts if "not reached" in plan[f"{n}.wo.weight"].note]
    assert unreached  # the planted condition: some experts saw no token
    for name in experts:
        assert plan[f"{name}.wo.weight"].role == "branch_end", name  # was identity: max() not read as a gate
        assert plan[f"{name}.wi.weight"].role == "identity", name


def test_the_sparse_feed_forward_starts_closed_on_every_token():
    model = switch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idinit.init_(model, example_inputs={"input_ids": torch.full((2, 6), 7),
                                            "decoder_input_ids": torch.full((2, 4), 7)})
    ratios = []

    def hook(module, args, output):  # |the MoE's output| / |its input|, float64
        ratios.append((output.double().norm() / args[0].double().norm()).item())

    sparse = [m for n, m in model.named_modules() if type(m).__name__ == "SwitchTransformersSparseMLP"]
    for m in sparse:
        m.register_forward_hook(hook)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # varied tokens: the router (the model's own init) spreads them over the experts
        model(input_ids=torch.randint(0, 100, (4, 16), generator=g),
              decoder_input_ids=torch.randint(0, 100, (4, 8), generator=g))
    assert len(ratios) == len(sparse) == 2 and max(ratios) < 1e-3, ratios
