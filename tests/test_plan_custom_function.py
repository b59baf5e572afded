"""Layers that run inside a custom ``torch.autograd.Function`` are named, not planned silently (zoo audit,
results/zoo-audit, fourth round). HF Reformer runs its reversible blocks (``y1 = x1 + f(x2)``,
``y2 = x2 + g(y1)``) inside one such Function, whose forward autograd does not record: the detection pass saw
a single ``_ReversibleFunctionBackward`` node and none of the blocks' weights, so the plan found no residual,
gave every layer IDI (both branches open at init) and said nothing. The Function keeps its blocks on its
context (``ctx.layers``); the graph now counts their weights as that call's, and the plan's note names the
call and the layers it cannot place."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import idinit


class Branch(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class _Residuals(torch.autograd.Function):
    """Residual blocks ``x + f(x)`` run unrecorded, the blocks kept on the context as Reformer keeps them."""

    @staticmethod
    def forward(ctx, x, blocks):
        ctx.blocks = blocks
        ctx.save_for_backward(x)
        for block in blocks:
            x = x + block(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        x = ctx.saved_tensors[0].detach().requires_grad_()
        with torch.enable_grad():
            y = x
            for block in ctx.blocks:
                y = y + block(y)
        return torch.autograd.grad(y, x, grad)[0], None


class Net(nn.Module):
    def __init__(self, dim: int = 6, custom: bool = True):
        super().__init__()
        self.custom = custom
        self.stem = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList([Branch(dim), Branch(dim)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        if self.custom:
            x = _Residuals.apply(x, self.blocks)
        else:  # the same arithmetic, recorded
            for block in self.blocks:
                x = x + block(x)
        return self.head(x)


X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
INSIDE = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]


def _plan_and_warnings(model, example_inputs=(X,)):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = idinit.plan(model, example_inputs=example_inputs)
    return plan, [str(w.message) for w in caught]


def test_recorded_blocks_close_both_branches():
    plan, _ = _plan_and_warnings(Net(custom=False))
    assert plan.residual and [e.name for e in plan.by_role("branch_end")] == ["blocks.0.fc2.weight", "blocks.1.fc2.weight"]


def test_layers_inside_a_custom_function_are_named_in_a_warning():
    torch.manual_seed(0)
    model = Net()
    model(X).sum().backward()  # the Function is a working one
    plan, messages = _plan_and_warnings(model)
    note = next((m for m in messages if "cannot see inside" in m), None)
    assert note is not None, messages  # the old code planned the four layers as 'identity' without a word
    assert "_ResidualsBackward (a custom autograd.Function" in note and all(name in note for name in INSIDE)
    assert "State the layer that closes each residual branch" in note and "example_inputs" not in note.split(":")[-1]
    for name in INSIDE:
        entry = plan[f"{name}.weight"]
        assert entry.role == "identity" and "inside _ResidualsBackward" in entry.reason
    # the warning's remedy works: the user states the branch ends
    fixed = idinit.plan(model, example_inputs=(X,), overrides={"blocks.0.fc2": "branch_end", "blocks.1.fc2": "branch_end"})
    assert [e.name for e in fixed.by_role("branch_end")] == ["blocks.0.fc2.weight", "blocks.1.fc2.weight"]


def test_hf_reformer_names_its_reversible_layers():
    transformers = pytest.importorskip("transformers")
    config = transformers.ReformerConfig(attn_layers=["local", "lsh"], hidden_size=32, num_attention_heads=2,
                                         attention_head_size=16, feed_forward_size=64, vocab_size=100,
                                         axial_pos_embds=False, max_position_embeddings=64, local_attn_chunk_length=5,
                                         lsh_attn_chunk_length=5, num_buckets=2, num_hashes=1, is_decoder=False)
    torch.manual_seed(0)
    model = transformers.ReformerForMaskedLM(config)
    plan, messages = _plan_and_warnings(model, None)  # inputs built from the config
    note = next(m for m in messages if "cannot see inside _ReversibleFunctionBackward" in m)
    for layer in (0, 1):
        for name in ("attention.output.dense", "feed_forward.output.dense"):
            assert f"reformer.encoder.layers.{layer}.{name}" in note
            assert plan[f"reformer.encoder.layers.{layer}.{name}.weight"].role == "identity"
