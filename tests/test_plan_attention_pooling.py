"""An attention whose output no skip joins (an attention-pooling head: SigLIP's ``head``, a learned query
attending over a residual encoder's tokens) closes no residual branch. Its output projection gets IDI,
as every layer of a network without residuals does (SPEC section 4); A.5's IDIZ on ``W_O`` is the end of a
transformer block's residual branch. With IDIZ there the pooled output starts at ~1e-6 of the tokens'
scale and everything after it reads (almost) nothing (zoo audit: SigLIP's ``pooler_output`` rms 3.7e-7)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import idinit


class PooledEncoder(nn.Module):
    """One pre-norm attention block (a residual), then a learned query attends over its tokens."""

    def __init__(self, d: int = 16, pool_layer: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.probe = nn.Parameter(torch.randn(1, 1, d))
        # the pooling attention: a bare nn.MultiheadAttention, or a whole encoder layer used as a pooler
        # (residuals of its own, which its out_proj closes)
        self.pool = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True) if pool_layer else \
            nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        if isinstance(self.pool, nn.TransformerEncoderLayer):
            return self.head(self.pool(x)[:, 0])
        pooled = self.pool(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return self.head(pooled[:, 0])


def _plan(model, example_inputs=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return idinit.plan(model, example_inputs=example_inputs)


@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_a_pooling_attention_keeps_its_output_alive(graph):
    torch.manual_seed(0)
    model, x = PooledEncoder(), torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))
    plan = _plan(model, (x,) if graph == "autograd" else None)
    assert plan.source.startswith("torch.fx" if graph == "fx" else "autograd")
    assert plan["attn.out_proj.weight"].role == "attention_out"  # the block's branch: IDIZ
    assert plan["pool.out_proj.weight"].role == "identity"  # was attention_out (IDIZ)
    plan.apply(model)
    got = {}
    model.pool.register_forward_hook(lambda m, args, out: got.update(pooled=out[0]))
    with torch.no_grad():
        model(x)
    rms = lambda t: t.double().pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(got["pooled"]) > 0.1 * rms(x)  # 3e-7 of it with IDIZ on the pooling out_proj


def test_an_encoder_layer_used_as_pooler_still_closes_its_own_branches():
    torch.manual_seed(0)
    plan = _plan(PooledEncoder(pool_layer=True))
    assert plan["pool.self_attn.out_proj.weight"].role == "attention_out"
    assert plan["pool.linear2.weight"].role == "branch_end"


def test_siglip_pooled_output_is_alive():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.SiglipVisionConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                          intermediate_size=64, image_size=16, patch_size=8)
    model = transformers.SiglipVisionModel(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idinit.init_(model)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    rms = lambda t: t.double().pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(out.pooler_output) > 0.01 * rms(out.last_hidden_state), rms(out.pooler_output)
