"""A table computed from parameters alone and added to the data (HF Swin-V2's continuous position bias: an MLP
over a constant grid of coordinates, added to the attention scores) is a table, not a layer on the data path.
Read as one call holding two weights, it made role detection warn that it "cannot see inside" the add, and it
hid the attention around it (q / k / v planned as plain 'identity', the output projection as a plain branch end;
zoo audit, HF Swin-V2 and ConViT). Passed as a float attention mask (timm's RelPosMlp) it is the same table.
torch.fx read the MLP's first layer, fed a constant, as the network's stem (gain sqrt 2; timm / torchvision
Swin-V2)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import idinit


class BiasMLPAttention(nn.Module):
    def __init__(self, dim=8, heads=2, tokens=4, as_mask=False):
        super().__init__()
        self.heads, self.tokens, self.as_mask = heads, tokens, as_mask
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.bias_mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, heads))
        grid = torch.stack(torch.meshgrid(torch.arange(tokens), torch.arange(tokens), indexing="ij"), -1)
        self.register_buffer("coords", grid.reshape(-1, 2).float() / tokens, persistent=False)

    def forward(self, x):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        table = self.bias_mlp(self.coords).t().reshape(self.heads, n, n)
        if self.as_mask:  # timm's RelPosMlp: the table is the attention's float mask
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=table)
        else:
            out = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5 + table).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim=8, as_mask=False):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = BiasMLPAttention(dim, as_mask=as_mask)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))


def _plan(example_inputs, as_mask):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Block(as_mask=as_mask), Block(as_mask=as_mask), nn.Linear(8, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = idinit.plan(model, example_inputs=example_inputs)
    return {e.name: e for e in plan}, [str(w.message) for w in caught]


@pytest.mark.parametrize("as_mask", [False, True], ids=["added-to-scores", "attention-mask"])
def test_position_bias_mlp_is_a_table_and_the_attention_around_it_is_seen(as_mask):
    for example_inputs in ((torch.randn(2, 4, 8),), None):  # the autograd graph, then torch.fx
        entries, messages = _plan(example_inputs, as_mask)
        assert not [m for m in messages if "cannot see inside" in m], messages
        for i in (1, 2):
            attn = f"{i}.attn."
            assert [entries[attn + p + ".weight"].role for p in "qkv"] == ["attention_q", "attention_k", "attention_v"]
            assert entries[attn + "proj.weight"].role == "attention_out"
            assert entries[attn + "proj.weight"].init == "zero_preserving_"
            assert entries[f"{i}.fc2.weight"].role == "branch_end"
            for layer in ("0", "2"):
                table = entries[f"{attn}bias_mlp.{layer}.weight"]
                assert table.role == "identity" and "from parameters alone" in table.note, table


class OneHotPositionTable(nn.Module):
    """timm's Gemma4-ViT position embedding: a raw (2, positions, dim) table looked up as one_hot(positions) @ table
    (a product with a constant) and added to the tokens."""

    def __init__(self, dim=8, positions=6, tokens=4):
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.table = nn.Parameter(torch.randn(2, positions, dim) * 0.02)
        grid = torch.stack([torch.arange(tokens), torch.arange(tokens).flip(0)], 0)  # (2, tokens)
        self.register_buffer("positions", grid, persistent=False)
        self.block = Block(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        one_hot = F.one_hot(self.positions, self.table.shape[1]).to(self.table)  # (2, tokens, positions)
        return self.head(self.block(self.embed(x) + (one_hot @ self.table).sum(0)))


def test_a_raw_table_looked_up_by_a_product_with_a_constant_stays_an_embedding():
    torch.manual_seed(0)
    model = OneHotPositionTable()
    before = model.table.detach().clone()
    plan = idinit.init_(model, example_inputs=(torch.randn(2, 4, 3),))
    assert plan["table"].role == "embedding", plan["table"]
    assert torch.equal(model.table.detach(), before)  # kept as the model drew it, not IDI's [I | 0]
    assert plan["block.fc2.weight"].role == "branch_end"


class ObjectQueryDecoder(nn.Module):
    """DETR's decoder: its target starts at zeros, so the first self-attention (queries = keys = object
    queries, values = the zero target) and its norm compute from parameters alone; their result is both the
    skip of the cross-attention's residual add and, with the queries added back, that attention's query."""

    def __init__(self, dim=8, queries=5):
        super().__init__()
        self.queries = nn.Embedding(queries, dim)
        self.memory = nn.Linear(3, dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_q, self.cross_k, self.cross_v, self.cross_o = (nn.Linear(dim, dim) for _ in range(4))
        self.head = nn.Linear(dim, 3)

    @staticmethod
    def attend(q, k, v):
        return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v

    def forward(self, x):
        memory = self.memory(x)
        pos = self.queries.weight.unsqueeze(0).expand(x.shape[0], -1, -1)
        target = torch.zeros_like(pos)
        h = self.norm1(target + self.o(self.attend(self.q(target + pos), self.k(target + pos), self.v(target))))
        h = self.norm2(h + self.cross_o(self.attend(self.cross_q(h + pos), self.cross_k(memory), self.cross_v(memory))))
        return self.head(h)


def test_a_first_decoder_layer_on_object_queries_is_a_table_not_a_call_the_graph_cannot_see_inside():
    """Zoo audit, HF DETR and SAM's mask decoder: the first self-attention was a weight chain kept as a value of
    its own, read as one call using the weights of four layers (a false "cannot see inside" warning)."""
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = idinit.plan(ObjectQueryDecoder(), example_inputs=(torch.randn(2, 6, 3),))
    assert not [str(w.message) for w in caught if "cannot see inside" in str(w.message)]
    for name in "qkvo":
        assert plan[f"{name}.weight"].role == "identity" and "from parameters alone" in plan[f"{name}.weight"].note
    assert plan["cross_o.weight"].role == "attention_out"


def test_hf_detr_first_decoder_self_attention_is_a_table():
    transformers = pytest.importorskip("transformers")
    backbone = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1],
                "layer_type": "basic", "out_features": ["stage4"]}
    config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone,
                                     d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8,
                                     num_labels=3)
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = idinit.plan(model, example_inputs={"pixel_values": torch.rand(1, 3, 64, 64)})
    assert not [str(w.message) for w in caught if "cannot see inside" in str(w.message)]
    first = plan["model.decoder.layers.0.self_attn.o_proj.weight"]
    assert first.role == "identity" and "from parameters alone" in first.note
    assert plan["model.decoder.layers.1.self_attn.o_proj.weight"].role == "attention_out"
