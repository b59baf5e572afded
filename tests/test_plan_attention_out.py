"""An attention output projection that closes no residual branch gets IDI, not IDIZ. A.5's IDIZ on ``W_O``
is the end of a transformer block's residual branch; elsewhere it is an inner layer (SPEC section 4: IDI
on every layer but a branch's last). Two places (zoo audit):

- an attention whose output no skip joins (an attention-pooling head: SigLIP's ``head``, a learned query
  attending over a residual encoder's tokens): with IDIZ the pooled output started at ~1e-6 of the tokens'
  scale (SigLIP's ``pooler_output`` rms 3.7e-7);
- an attention inside a branch whose output passes more layers before the add (Zamba's shared block:
  ``x + linear(mlp(norm(attn(x))))``): with IDIZ there too, two near-zero layers stacked in one branch."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

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


class AttentionThenMLP(nn.Module):
    """``x + out(mlp(norm(attn(x))))``: the attention is inside the branch, ``out`` closes it."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm, self.fc1, self.fc2, self.out = nn.LayerNorm(d), nn.Linear(d, 32), nn.Linear(32, d), nn.Linear(d, d)

    def inner(self, x):
        h = self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))
        return self.fc2(torch.relu(self.fc1(self.norm(h))))

    def forward(self, x):
        return x + self.out(self.inner(x))


def test_an_attention_inside_a_branch_but_not_at_its_end_is_an_inner_layer():
    torch.manual_seed(0)
    model, x = AttentionThenMLP(), torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))
    plan = _plan(model, (x,))
    assert plan["o.weight"].role == "identity"  # was attention_out (IDIZ) under out's IDIZ
    assert plan["out.weight"].role == "branch_end"
    plan.apply(model)
    rms = lambda t: t.double().pow(2).mean().sqrt().item()  # noqa: E731
    with torch.no_grad():
        assert rms(model.inner(x)) > 0.1 * rms(x)  # 3e-4 of it with IDIZ on o as well
        assert rms(model(x) - x) < 1e-3 * rms(x)  # the block still starts at identity


def test_zamba_shared_block_is_closed_once():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ZambaForCausalLM(transformers.ZambaConfig(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
        vocab_size=100, max_position_embeddings=64, n_mamba_heads=2, mamba_d_state=4, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"]))
    plan = _plan(model)
    assert plan["model.layers.1.shared_transf.self_attn.o_proj.weight"].role == "identity"
    assert plan["model.layers.1.linear.weight"].role == plan["model.layers.3.linear.weight"].role == "branch_end"
