"""A parameter that is a block's stream is the skip of its residual, not a bias (zoo audit,
results/zoo-audit). CaiT's first class-attention block computes ``x_cls + gamma_1 * attn(cat(x_cls, x))``
with ``x_cls = cls_token.expand(B, -1, -1)``; the graph folded the expanded token into the add, which then
read as a bias add: no residual there, and ``attn.proj`` got IDIZ under ``gamma_1 = 1e-5`` (branch/skip
6.5e-10). A parameter added once and read nowhere else, or added in several places, is still no skip."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import idinit


class QueryStream(nn.Module):
    """Learned queries that are the stream of a residual block (CaiT's class token, Perceiver's latents):
    ``q + proj(relu(fc(cat(q, x))))[:, :1]`` with ``q = query.expand(B, -1, -1)``."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, width))
        self.fc = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        q = self.query.expand(x.shape[0], -1, -1)
        q = q + self.proj(torch.relu(self.fc(torch.cat([q, x], dim=1))))[:, :1]
        return self.head(q[:, 0])


class SharedOffset(nn.Module):
    """One position table added before each of two layers: an offset the layers share, not a stream."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 4, width))
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x + self.pos))
        h = torch.relu(self.fc2(h + self.pos))
        return self.head(h.mean(1))


def _example():
    return (torch.randn(2, 4, 8),)


@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_an_expanded_parameter_read_by_its_branch_is_the_skip(graph):
    torch.manual_seed(0)
    plan = idinit.plan(QueryStream(), example_inputs=_example() if graph == "autograd" else None)
    assert plan.source.startswith("torch.fx" if graph == "fx" else "autograd")
    assert plan.residual and [e.name for e in plan.by_role("branch_end")] == ["proj.weight"]
    assert plan["query"].role == "embedding"  # what it was as a folded chain: read by a cat and an add


@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_a_parameter_added_in_two_places_is_no_skip(graph):
    torch.manual_seed(0)
    plan = idinit.plan(SharedOffset(), example_inputs=_example() if graph == "autograd" else None)
    assert not plan.residual and not plan.by_role("branch_end")
    assert plan["pos"].role == "embedding"


@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_timm_cait_first_class_attention_block_is_a_residual(graph):
    import timm
    torch.manual_seed(0)
    model = timm.create_model("cait_xxs24_224", pretrained=False, img_size=32, depth=2, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    plan = idinit.init_(model, example_inputs=(x,) if graph == "autograd" else None)
    assert plan.source.startswith("torch.fx" if graph == "fx" else "autograd")
    for i in (0, 1):  # the first block like the second: gamma_1 = 1e-5 closes the branch, attn.proj gets IDI
        entry = plan[f"blocks_token_only.{i}.attn.proj.weight"]
        assert (entry.init, entry.source) == ("identity_", "values") and f"blocks_token_only.{i}.gamma_1" in entry.note
        proj = model.blocks_token_only[i].attn.proj.weight  # identity up to IDI's loose 1e-6 noise; IDIZ: all ~1e-6
        assert proj.diagonal().min() > 0.99 and (proj - torch.eye(*proj.shape)).abs().max() < 1e-4
    assert plan["cls_token"].role == "embedding"
    report = idinit.check(model, (x,))
    assert not report.flagged("stacked_near_zero_gains"), [str(f) for f in report.flags]


def test_a_parameter_gate_on_a_parameter_table_is_no_stream():
    # ConViT's GPSA: (1 - sigmoid(g)) * softmax(q k^T) + sigmoid(g) * softmax(pos_proj(rel_indices)), g = gating.view(...).
    # The second product holds parameters only (rel_indices is a buffer) and is added; the gating is read
    # twice, but no add reads it itself: kept as a stream it made pos_proj a branch end (caught by the zoo audit)
    import timm
    torch.manual_seed(0)
    model = timm.create_model("convit_tiny", pretrained=False, img_size=32, depth=2, num_classes=5)
    with pytest.warns(UserWarning, match="cls_token"):  # at depth 2 no block reads the class token
        plan = idinit.plan(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    assert {plan[f"blocks.{i}.attn.gating_param"].role for i in (0, 1)} == {"scale"}
    assert {plan[f"blocks.{i}.attn.pos_proj.weight"].role for i in (0, 1)} == {"identity"}
    # the attention is seen around the table (tests/test_plan_parameter_table.py): its projection closes the branch
    assert [e.name for e in plan.by_role("branch_end")] == [f"blocks.{i}.mlp.fc2.weight" for i in (0, 1)]
    assert [e.name for e in plan.by_role("attention_out")] == [f"blocks.{i}.attn.proj.weight" for i in (0, 1)]
    assert {plan[f"blocks.{i}.attn.proj.weight"].init for i in (0, 1)} == {"zero_preserving_"}
