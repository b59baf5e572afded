"""Experts stored flat: a 2-D parameter ``(experts * rows, cols)`` viewed along its dim 0 as a stack of
matrices before the matmul (HF DBRX's ``w1`` / ``v1`` / ``w2``: ``w.view(-1, ffn, hidden)[e]``).

Each expert must get exactly what the same matrix of a 3-D stack ``(experts, rows, cols)`` gets (paper
Sec. 3.2 and A.5: IDI on the up / gate projections, IDIZ on the down projection that closes the residual
branch; loose noise and a baseline's draw per expert). The references are the 3-D path on the same numbers
and, for the patterns, SPEC.md's formulas written out in tests/spec_patterns.py.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import idinit
from spec_patterns import idi, idiz, quiet

E, FFN, HIDDEN = 3, 6, 4


class GluExperts(nn.Module):
    """DBRX's expert GLU, every expert run on every token: ``w1`` / ``v1`` read ``(ffn, hidden)`` as
    ``(out, in)`` (``x @ w1[e].T``), ``w2`` as ``(in, out)`` (``h @ w2[e]``). ``flat``: stored
    ``(experts * ffn, hidden)`` and viewed per expert, as DBRX; else ``(experts, ffn, hidden)``."""

    def __init__(self, flat: bool, split: str = "view"):
        super().__init__()
        self.flat, self.split = flat, split
        shape = (E * FFN, HIDDEN) if flat else (E, FFN, HIDDEN)
        self.inp = nn.Linear(HIDDEN, HIDDEN, dtype=torch.float64)
        self.w1, self.v1, self.w2 = (nn.Parameter(torch.randn(shape, dtype=torch.float64)) for _ in range(3))

    def expert(self, w: torch.Tensor, e) -> torch.Tensor:
        if not self.flat:
            return w[e]
        if self.split == "reshape":
            return w.reshape(E, FFN, HIDDEN)[e]
        return w.view(-1, FFN, HIDDEN)[e]

    def forward(self, x):
        x = self.inp(x)
        if self.split == "bmm":  # every expert at once: batched matmuls over the (experts, ffn, hidden) views
            w1, v1, w2 = (w.view(E, FFN, HIDDEN) for w in (self.w1, self.v1, self.w2))
            xs = x.expand(E, *x.shape)
            return x + torch.bmm(F.silu(torch.bmm(xs, w1.transpose(1, 2))) * torch.bmm(xs, v1.transpose(1, 2)), w2).sum(0)
        out = torch.zeros_like(x)
        for e in torch.arange(E).view(-1, 1):  # DBRX loops over a tensor of expert indices
            w1, v1, w2 = (self.expert(w, e[0]) for w in (self.w1, self.v1, self.w2))
            out = out + (F.silu(x.matmul(w1.T)) * x.matmul(v1.T)).matmul(w2)
        return x + out


def _x() -> tuple:
    return (torch.randn(5, HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),)


@pytest.mark.parametrize("scheme", ["idinit", "kaiming", "xavier"])
def test_a_flat_stack_is_initialised_exactly_as_the_3d_stack(scheme):
    flat, stacked = GluExperts(flat=True), GluExperts(flat=False)
    plans = [quiet(idinit.init_, model, scheme, example_inputs=_x(), generator=torch.Generator().manual_seed(3))
             for model in (flat, stacked)]  # loose noise on (the default): keyed per expert, "w1[e]"
    assert (plans[0]["w1"].layout, plans[1]["w1"].layout) == ("stacked_flat", "stacked")  # x @ w1[e].T both
    for name in ("w1", "v1", "w2"):
        got, want = getattr(flat, name).detach().view(E, FFN, HIDDEN), getattr(stacked, name).detach()
        assert torch.equal(got, want), (scheme, name)
        if scheme != "idinit" or name != "w2":  # IDIZ has no noise; the rest: no expert copied from another
            assert not torch.equal(want[0], want[1])
    # planted: the flat parameter filled as one (18, 4) matrix, which the plan did before it read the view
    if scheme == "idinit":
        whole = idinit.identity_(torch.empty(E * FFN, HIDDEN, dtype=torch.float64), loose=0.0)
        assert not torch.equal(whole.view(E, FFN, HIDDEN), idi(FFN, HIDDEN).expand(E, -1, -1))


def test_flat_experts_get_idi_then_idiz_per_expert():
    model = GluExperts(flat=True)
    p = idinit.init_(model, example_inputs=_x(), loose=0.0)
    assert (p["w1"].role, p["v1"].role, p["w2"].role) == ("identity", "identity", "branch_end")
    assert (p["w1"].kind, p["w1"].layout, p["w1"].stack) == ("experts", "stacked_flat", E)
    assert (p["w2"].layout, p["w2"].stack) == ("stacked_t_flat", E)  # h @ w2[e]: w2[e] is (in, out)
    assert "per expert: 3 row blocks, as .t()" in str(p)
    for e in range(E):
        rows = slice(e * FFN, (e + 1) * FFN)
        assert torch.equal(model.w1.detach()[rows], idi(FFN, HIDDEN))
        assert torch.equal(model.v1.detach()[rows], idi(FFN, HIDDEN))
        assert torch.equal(model.w2.detach()[rows].t(), idiz(HIDDEN, FFN))  # expert e: (hidden, ffn)
    # the residual branch starts closed: |branch| / |skip| at IDIZ's scale
    x = _x()[0]
    with torch.no_grad():
        skip = model.inp(x)
        ratio = float((model(x) - skip).norm() / skip.norm())
    assert 0 < ratio < 1e-4


def test_flat_experts_built_on_meta_are_initialised_after_to_empty():
    # the plan reads the view on meta tensors too; planted: NaN everywhere after to_empty()
    with torch.device("meta"):
        model = GluExperts(flat=True)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    idinit.init_(model, example_inputs=_x(), loose=0.0)
    assert torch.equal(model.w1.detach().view(E, FFN, HIDDEN), idi(FFN, HIDDEN).expand(E, -1, -1))
    assert torch.equal(model.w2.detach().view(E, FFN, HIDDEN).transpose(1, 2), idiz(HIDDEN, FFN).expand(E, -1, -1))


@pytest.mark.parametrize("split", ["reshape", "bmm"])
def test_reshape_and_batched_matmuls_read_as_the_per_expert_view(split):
    model, reference = GluExperts(flat=True, split=split), GluExperts(flat=True)
    p = idinit.init_(model, example_inputs=_x(), generator=torch.Generator().manual_seed(3))
    assert (p["w1"].layout, p["w2"].layout, p["w2"].role) == ("stacked_flat", "stacked_t_flat", "branch_end")
    idinit.init_(reference, example_inputs=_x(), generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


class NotAStack(nn.Module):
    """2-D parameters used whole, or viewed along their dim 1: no stack of matrices along dim 0."""

    def __init__(self):
        super().__init__()
        self.whole = nn.Parameter(torch.randn(4, 4))
        self.cols = nn.Parameter(torch.randn(4, 6))
        self.twice = nn.Parameter(torch.randn(12, 4))

    def forward(self, x):
        h = x @ self.whole.t()
        by_cols = self.cols.view(4, 2, 3)  # dim 1 split: each [:, e] is no row block of the stored matrix
        h = h + (h @ by_cols[:, 0]) @ by_cols[:, 1].t()
        # one parameter split two ways (3 and 2 matrices): no single stack
        h = h + x @ self.twice.view(3, 4, 4)[0].t() + (x @ self.twice.view(2, 6, 4)[1].t())[:, :4]
        return x + h


def test_a_2d_parameter_not_split_along_dim_0_stays_unclassified():
    with pytest.warns(UserWarning, match="no rule fits"):
        p = idinit.plan(NotAStack(), example_inputs=(torch.randn(3, 4),))
    assert {e.name for e in p.unclassified} == {"whole", "cols", "twice"}


def test_a_flat_layout_that_does_not_split_the_rows_is_refused_before_any_write():
    model = GluExperts(flat=True)
    p = idinit.plan(model, example_inputs=_x())
    p["w2"].stack = 4  # 18 rows do not split into 4 matrices (a plan edited by hand)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"w2: layout 'stacked_t_flat' needs a 2-D parameter whose rows split "
                                         r"into stack=4 .* got shape \(18, 4\)"):
        p.apply(model)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_hf_dbrx_experts_are_planned_per_expert_and_close_the_moe_branch():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.DbrxConfig(d_model=16, n_heads=2, n_layers=1, max_seq_len=32, vocab_size=64,
                                  attn_config={"kv_n_heads": 1, "rope_theta": 10000.0, "clip_qkv": 8.0},
                                  ffn_config={"ffn_hidden_size": 24, "moe_num_experts": 4, "moe_top_k": 2})

    def build():
        torch.manual_seed(0)
        return transformers.DbrxForCausalLM(cfg)

    def moe_distance(model) -> float:
        report = quiet(idinit.check, model)
        found = [b.distance for b in report.blocks if ".ffn." in b.branch_end]
        assert len(found) == 1, report.blocks
        return found[0]

    model = build()
    p = quiet(idinit.init_, model, loose=0.0, generator=torch.Generator().manual_seed(0))
    mlp = model.transformer.blocks[0].ffn.experts.mlp
    name = "transformer.blocks.0.ffn.experts.mlp"
    assert not p.unclassified
    assert [(p[f"{name}.{w}"].role, p[f"{name}.{w}"].layout) for w in ("w1", "v1", "w2")] == \
        [("identity", "stacked_flat"), ("identity", "stacked_flat"), ("branch_end", "stacked_t_flat")]
    for e in range(4):
        rows = slice(e * 24, (e + 1) * 24)
        assert torch.equal(mlp.w1.detach()[rows], idi(24, 16).float())
        assert torch.equal(mlp.w2.detach()[rows].t(), idiz(16, 24).float())
    # the MoE branch starts closed, at IDIZ's scale (|branch| / |skip| 6.8e-5 here, as the attention branch);
    # planted: the experts left to DBRX's own init (normal, std 0.02), as the plan did before, leave it open
    assert moe_distance(model) < 1e-4
    model = build()
    quiet(idinit.init_, model, overrides={"*.experts.mlp.*": "keep"}, generator=torch.Generator().manual_seed(0))
    assert moe_distance(model) > 1e-3
