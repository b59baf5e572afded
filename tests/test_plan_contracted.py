"""A raw parameter of three or more axes that the forward pass contracts as one matrix (``torch.einsum``).

HF XLNet keeps its attention projections as ``(d_model, n_head, d_head)`` parameters read through
einsum: q / k / v / r as ``ibh,hnd->ibnd`` (``d_model`` in, ``n_head * d_head`` out), o as
``ibnd,hnd->ibh`` (the other way). Each must get what the linear layer it stands for gets (paper Sec. 3.1
and A.5: IDI on q / k / v, IDIZ on o, which closes the residual branch), with the pattern laid on the
map's own (out, in) matrix. The references (tests/spec_patterns.py) are built in float64 from SPEC.md's formulas,
independently of the library; the shapes are chosen so that reading the wrong axes as the input gives
a different matrix (``n_head * d_head != d_model``).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import idinit
from spec_patterns import idi, idiz, quiet

D, HEADS, HEAD_DIM = 8, 2, 6  # n_head * d_head = 12 != d_model = 8


class EinsumAttention(nn.Module):
    """XLNet's pattern, post-norm: ``norm(h + o(attention(q h, k h, v h)))``, plus position keys ``r``
    projected from a constant table, and ``k`` stored ``(n_head, d_head, d_model)`` (its in-axis last:
    the reading follows the axes, not the shape)."""

    def __init__(self, d: int = D, heads: int = HEADS, head_dim: int = HEAD_DIM, seq: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        for name in ("q", "v", "o", "r"):
            setattr(self, name, nn.Parameter(0.02 * torch.randn(d, heads, head_dim, generator=g)))
        self.k = nn.Parameter(0.02 * torch.randn(heads, head_dim, d, generator=g))
        self.norm = nn.LayerNorm(d)
        self.register_buffer("table", torch.randn(seq, d, generator=g))
        self.scale = head_dim ** -0.5

    def forward(self, h):  # h: (seq, batch, d)
        q = torch.einsum("ibh,hnd->ibnd", h, self.q)
        k = torch.einsum("ibh,ndh->ibnd", h, self.k)
        v = torch.einsum("ibh,hnd->ibnd", h, self.v)
        r = torch.einsum("jh,hnd->jnd", self.table, self.r)  # a constant projected: no data input
        score = torch.einsum("ibnd,jbnd->bnij", q, k) + torch.einsum("ibnd,jnd->bnij", q, r)
        vec = torch.einsum("bnij,jbnd->ibnd", torch.softmax(score * self.scale, -1), v)
        return self.norm(h + torch.einsum("ibnd,hnd->ibh", vec, self.o))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, D)
        self.blocks = nn.ModuleList([EinsumAttention(), EinsumAttention()])
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def inputs() -> tuple:
    return (torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64),)


def branch_ratios(model: Net) -> list[float]:
    """|o(attention)| / |h| of each block, measured in float64."""
    got = []
    hooks = [b.norm.register_forward_pre_hook(lambda m, args: got.append(args[0])) for b in model.blocks]
    hooks += [b.register_forward_pre_hook(lambda m, args: got.append(args[0])) for b in model.blocks]
    with torch.no_grad():
        model(*inputs())
    for hook in hooks:
        hook.remove()
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    ratios = []
    for i in range(0, len(got), 2):  # the block's input, then the norm's input (h + branch)
        h, total = got[i], got[i + 1]
        ratios.append(rms(total - h) / rms(h))
    return ratios


def test_einsum_projections_are_linear_layers_read_along_their_axes():
    torch.manual_seed(0)
    model = Net().double()
    before = branch_ratios(model)
    p = quiet(idinit.init_, model, loose=0.0, example_inputs=inputs())
    for i in range(2):
        name = f"blocks.{i}"
        roles = {n: p[f"{name}.{n}"].role for n in ("q", "k", "v", "o")}
        assert roles == {"q": "attention_q", "k": "attention_k", "v": "attention_v", "o": "attention_out"}, roles
        assert p[f"{name}.r"].role == "identity"  # position keys: a projection of a constant table
        assert {p[f"{name}.{n}"].kind for n in "qkvor"} == {"contracted"}
        assert {n: p[f"{name}.{n}"].layout for n in "qkvor"} == {
            "q": "matrix1_t", "k": "matrix2", "v": "matrix1_t", "o": "matrix1", "r": "matrix1_t"}
        block = model.blocks[i]
        for n in ("q", "v", "r"):  # (d_model, heads, head_dim): the map is (12, 8), identity blocks stacked
            matrix = getattr(block, n).detach().reshape(D, -1).t()
            assert torch.equal(matrix, idi(HEADS * HEAD_DIM, D)), n
            # what reading the stored dim 0 as the output would write: [I | 0] on (8, 12)
            assert not torch.equal(matrix.t(), idi(D, HEADS * HEAD_DIM)), n
        assert torch.equal(block.k.detach().reshape(-1, D), idi(HEADS * HEAD_DIM, D))  # stored (heads, head_dim, d)
        assert torch.equal(block.o.detach().reshape(D, -1), idiz(D, HEADS * HEAD_DIM))
    after = branch_ratios(model)
    # the model's own N(0, 0.02) draw leaves each attention branch open (9.9e-4); IDIZ on o closes it (1.7e-7)
    assert min(before) > 1e-4 and max(after) < 1e-5, (before, after)
    # idinit.check measures o as a layer of its own (no module holds it alone) and sees both branches close
    report = quiet(idinit.check, model, inputs())
    ends = {b.branch_end: b.distance for b in report.blocks}
    assert set(ends) == {"blocks.0.o", "blocks.1.o"} and max(ends.values()) < 1e-5, ends
    assert not report.flags, report.flags


def test_torch_fx_reads_the_einsum_equation_as_the_autograd_graph_reads_the_matmul():
    """Without example inputs the plan comes from torch.fx, where einsum is one call: its equation says the
    same (a letter in the output only: an out-axis; one the other operand shares: an in-axis)."""
    model = Net().double()
    traced, run = quiet(idinit.plan, model), quiet(idinit.plan, model, example_inputs=inputs())
    assert traced.source == "torch.fx graph" and run.source.startswith("autograd")
    assert [(e.name, e.role, e.kind, e.layout) for e in traced] == [(e.name, e.role, e.kind, e.layout) for e in run]
    assert traced["blocks.0.k"].layout == "matrix2" and traced["blocks.1.o"].role == "attention_out"
    p = quiet(idinit.plan, NotOneMatrix())
    assert p.source == "torch.fx graph"
    assert {p[n].kind for n in ("per_head", "interleaved")} == {"unknown"}


def test_a_model_built_on_meta_gets_the_same_weights():
    """The FSDP2 order (meta, to_empty, init_): the graph's view shapes come from meta tensors."""
    torch.manual_seed(0)
    eager = Net().double()
    with torch.device("meta"):
        lazy = Net().double()
    lazy.to_empty(device="cpu")
    lazy.blocks[0].table.copy_(eager.blocks[0].table)
    lazy.blocks[1].table.copy_(eager.blocks[1].table)
    for model in (eager, lazy):
        quiet(idinit.init_, model, example_inputs=inputs(), generator=torch.Generator().manual_seed(3))
    for (name, a), b in zip(eager.named_parameters(), lazy.parameters()):
        assert torch.equal(a, b), name


def test_kaiming_draws_with_the_fans_of_the_matrix():
    """torch.nn.init reads a 3-D tensor as a kernel (fan_in = heads * head_dim for (d, heads, head_dim));
    the map q is (heads * head_dim, d): fan_in d."""
    torch.manual_seed(0)
    model = Net()
    block = model.blocks[0]
    for name in "qvor":  # big enough for the std to be read to ~1%
        setattr(block, name, nn.Parameter(torch.zeros(64, 4, 24)))
    block.k = nn.Parameter(torch.zeros(4, 24, 64))
    model.embed, model.head, block.norm = nn.Linear(4, 64), nn.Linear(64, 3), nn.LayerNorm(64)
    block.table = torch.randn(5, 64)
    model.blocks = nn.ModuleList([block])
    p = quiet(idinit.init_, model, "kaiming", example_inputs=(torch.randn(5, 2, 4),),
               generator=torch.Generator().manual_seed(0))
    assert p["blocks.0.q"].init == "kaiming_normal_" and p["blocks.0.q"].args["mode"] == "fan_in"
    q, o = block.q.detach(), block.o.detach()
    assert abs(q.std().item() - math.sqrt(2 / 64)) < 0.01  # fan_in d = 64; as a kernel: sqrt(2 / 96) = 0.144
    assert abs(o.std().item() - math.sqrt(2 / 96)) < 0.01  # fan_in heads * head_dim = 96 (as a kernel's here)


class NotOneMatrix(nn.Module):
    """Parameters an einsum reads otherwise: per head (a head axis in the batch, XLNet's ``seg_embed``) and
    with the in-axis between the out-axes (no 2-D view of the stored tensor is the map)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 12)
        self.per_head = nn.Parameter(torch.randn(3, 2, 6))
        self.interleaved = nn.Parameter(torch.randn(2, 12, 6))

    def forward(self, x):  # x: (batch, 4)
        h = self.inner(x)
        heads = h.view(-1, 2, 6)
        a = torch.einsum("bnd,snd->bns", heads, self.per_head).flatten(1)
        b = torch.einsum("bh,nhd->bnd", h, self.interleaved).flatten(1)
        return torch.cat([a, b], 1)


def test_a_stack_and_interleaved_axes_are_not_read_as_one_matrix():
    p = quiet(idinit.plan, NotOneMatrix(), example_inputs=(torch.randn(3, 4),))
    for name in ("per_head", "interleaved"):
        assert p[name].role == "unclassified" and p[name].kind == "unknown", p[name]


def test_hf_xlnet_attention_projections_and_branch():
    transformers = pytest.importorskip("transformers")
    config = transformers.XLNetConfig(n_layer=2, d_model=32, n_head=2, d_inner=64, vocab_size=100)
    torch.manual_seed(0)
    model = transformers.XLNetLMHeadModel(config)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))

    def ratios() -> list[float]:
        got = {}
        hooks = []
        for i, layer in enumerate(model.transformer.layer):
            hooks.append(layer.rel_attn.register_forward_pre_hook(lambda m, args, i=i: got.update({("h", i): args[0]})))
            hooks.append(layer.rel_attn.layer_norm.register_forward_pre_hook(
                lambda m, args, i=i: got.update({("sum", i): args[0]})))
        double = model.double()
        with torch.no_grad():
            double(ids)
        for hook in hooks:
            hook.remove()
        rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
        return [rms(got[("sum", i)] - got[("h", i)]) / rms(got[("h", i)]) for i in range(2)]

    before = ratios()
    p = quiet(idinit.init_, model, loose=0.0)
    for i in range(2):
        name = f"transformer.layer.{i}.rel_attn"
        got = {n: (p[f"{name}.{n}"].role, p[f"{name}.{n}"].kind, p[f"{name}.{n}"].layout) for n in "qkvor"}
        assert got == {"q": ("attention_q", "contracted", "matrix1_t"), "k": ("attention_k", "contracted", "matrix1_t"),
                       "v": ("attention_v", "contracted", "matrix1_t"), "o": ("attention_out", "contracted", "matrix1"),
                       "r": ("identity", "contracted", "matrix1_t")}, got
        # Transformer-XL's content / position biases u, v: added to the queries, held by the module itself and
        # drawn by the model (N(0, 0.02)): kept by the values rule
        assert {p[f"{name}.{n}"].role for n in ("r_w_bias", "r_r_bias")} == {"keep"}
    assert not p.by_role("unclassified") or all(e.name.endswith(("mask_emb", "r_s_bias", "seg_embed"))
                                               for e in p.unclassified)
    after = ratios()
    assert min(before) > 1e-3 and max(after) < 1e-5, (before, after)  # measured: 4.9e-3, 1.3e-6
    report = quiet(idinit.check, model.float(), {"input_ids": ids})
    ends = {b.branch_end: b.distance for b in report.blocks}
    assert {f"transformer.layer.{i}.rel_attn.o" for i in range(2)} <= set(ends), ends
    assert len(ends) == 4 and max(ends.values()) < 1e-5 and not report.flags, (ends, report.flags)


class PerHeadProjection(nn.Module):
    """Zamba's pattern: one (out, in) matrix per head in a (heads, out, in) parameter, broadcast over the
    batch (``w[:, None] @ h``, h of shape (heads, batch, in, seq)), and one stored (heads, in, out) read
    as ``h^T @ w[:, None]``."""

    def __init__(self, heads: int = 2, d: int = 6, out: int = 4):
        super().__init__()
        self.inner = nn.Linear(heads * d, heads * d)
        self.x_proj = nn.Parameter(0.02 * torch.randn(heads, out, d))
        self.y_proj = nn.Parameter(0.02 * torch.randn(heads, d, out))
        self.head = nn.Linear(out, 3)
        self.heads, self.d = heads, d

    def forward(self, x):  # x: (batch, seq, heads * d)
        h = self.inner(x).view(x.shape[0], x.shape[1], self.heads, self.d).permute(2, 0, 3, 1)
        a = self.x_proj[:, None] @ h  # (heads, batch, out, seq)
        b = h.transpose(-1, -2) @ self.y_proj[:, None]  # (heads, batch, seq, out)
        return self.head(a.transpose(-1, -2) + b)


def test_a_per_head_stack_broadcast_over_the_batch_is_a_stack_of_linear_layers():
    torch.manual_seed(0)
    model = PerHeadProjection()
    p = quiet(idinit.init_, model, loose=0.0, example_inputs=(torch.randn(2, 3, 12),))
    assert (p["x_proj"].kind, p["x_proj"].layout, p["x_proj"].role) == ("experts", "stacked", "identity")
    assert (p["y_proj"].kind, p["y_proj"].layout, p["y_proj"].role) == ("experts", "stacked_t", "identity")
    for w in model.x_proj.detach().double():  # each head (4, 6): [I | 0]
        assert torch.equal(w, idi(4, 6))
    for w in model.y_proj.detach().double():  # each head stored (6, 4) is the map (4, 6)
        assert torch.equal(w.t(), idi(4, 6)) and not torch.equal(w, idi(6, 4))


def test_hf_zamba_per_head_ssm_projections_get_what_mamba_linears_get():
    """HF Mamba's x_proj / dt_proj are nn.Linear and get IDI; Zamba splits them per head into (heads, out, in)
    parameters: each head's matrix gets IDI, the time-step bias stays the model's (values rule)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ZambaConfig(num_hidden_layers=4, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                      vocab_size=100, max_position_embeddings=64, num_key_value_heads=1, pad_token_id=0,
                                      bos_token_id=1, eos_token_id=2, n_mamba_heads=2, mamba_d_state=4,
                                      layers_block_type=["mamba", "hybrid", "mamba", "hybrid"])
    torch.manual_seed(0)
    model = transformers.ZambaForCausalLM(config)
    p = quiet(idinit.init_, model, loose=0.0)
    mixer = model.model.layers[0].mamba
    name = "model.layers.0.mamba"
    assert (p[f"{name}.x_proj_weight"].layout, p[f"{name}.dt_proj_weight"].layout) == ("stacked", "stacked")
    assert {p[f"{name}.{n}"].role for n in ("x_proj_weight", "dt_proj_weight")} == {"identity"}
    assert p[f"{name}.dt_proj_bias"].role == "keep"
    for stack in (mixer.x_proj_weight, mixer.dt_proj_weight):
        for w in stack.detach().double():
            assert torch.equal(w, idi(*w.shape))
    assert not p.unclassified, [e.name for e in p.unclassified]
