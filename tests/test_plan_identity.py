"""The property IDInit is for: after ``idinit.init_(model)`` every residual block is an identity map
up to a tiny error. Measured with hooks on real forward passes (eval mode), never read off the plan:
for every block, the branch output is below 1e-3 of the skip output in norm. Non-residual models get
no zero-preserving layer, and a model built on the meta device is initialised bitwise as an eager one.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import idinit
from plan_zoo import LSTMClassifier, TextTransformer, cnn, mlp, tiny_bert, tiny_gpt2

TOL = 1e-3


def _ratio(branch: torch.Tensor, skip: torch.Tensor) -> float:
    return (branch.norm() / skip.norm()).item()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnet_blocks_are_identities(arch):
    from torchvision.models.resnet import BasicBlock, Bottleneck

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10)
    idinit.init_(model)
    model.eval()
    ratios, branch_out = [], {}
    for block in model.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            # the block adds in place onto bn's output: keep a copy of the branch before it does
            last_bn.register_forward_hook(lambda m, i, o, b=block: branch_out.__setitem__(b, o.clone()))
            block.register_forward_hook(lambda b, i, o: ratios.append(
                _ratio(branch_out[b], b.downsample(i[0]) if b.downsample is not None else i[0])))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 48, 48))
    assert len(ratios) == (8 if arch == "resnet18" else 16)
    assert max(ratios) < TOL
    assert logits.abs().max() < 1e-3  # the head is zero-preserving too


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_lab_cifar_resnet_blocks_are_identities(shortcut):
    from idinit.lab.models.cifar_resnet import BasicBlock, CifarResNet

    torch.manual_seed(0)
    model = CifarResNet(20, shortcut=shortcut)
    idinit.init_(model)
    model.eval()
    ratios, branch_out = [], {}
    for block in model.modules():
        if isinstance(block, BasicBlock):
            block.bn2.register_forward_hook(lambda m, i, o, b=block: branch_out.__setitem__(b, o.clone()))
            block.register_forward_hook(lambda b, i, o: ratios.append(_ratio(branch_out[b], b.shortcut(i[0]))))
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    assert len(ratios) == 9 and max(ratios) < TOL


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_branches_vanish(norm_first):
    torch.manual_seed(0)
    model = TextTransformer(norm_first)
    idinit.init_(model)
    model.eval()
    ratios, moves = [], []
    for layer in model.encoder.layers:
        # attention branch: MultiheadAttention's output against the layer's input (its skip)
        layer.self_attn.register_forward_hook(lambda m, i, o, layer=layer: ratios.append(_ratio(o[0], layer._skip)))
        layer.register_forward_pre_hook(lambda m, i: setattr(m, "_skip", i[0]))
        # feed-forward branch: linear2's output against linear1's input's skip (the residual stream there)
        layer.linear2.register_forward_hook(lambda m, i, o, layer=layer: ratios.append(_ratio(o, layer._ff_skip)))
        norm = layer.norm2 if norm_first else layer.norm1
        hook = (lambda m, i, layer=layer: setattr(layer, "_ff_skip", i[0])) if norm_first else None
        if norm_first:
            norm.register_forward_pre_hook(hook)
        else:
            norm.register_forward_hook(lambda m, i, o, layer=layer: setattr(layer, "_ff_skip", o))
        layer.register_forward_hook(lambda m, i, o: moves.append(_ratio(o - i[0], i[0])))
    tokens = torch.randint(0, 50, (3, 7))
    model(tokens)  # grad enabled: keeps nn.TransformerEncoderLayer off its fused fast path, so hooks fire
    assert len(ratios) == 4 and max(ratios) < TOL
    if norm_first:  # pre-norm: the hidden states barely move from layer to layer
        assert max(moves) < TOL


def test_gpt2_hidden_states_barely_move():
    torch.manual_seed(0)
    model = tiny_gpt2()
    idinit.init_(model)
    model.eval()
    moves, branches = [], []

    def block_input(module, args, kwargs):
        module._skip = args[0] if args else kwargs["hidden_states"]

    def block_output(module, args, kwargs, out):
        out = out[0] if isinstance(out, tuple) else out  # a tuple in transformers 4.x, a tensor in 5.x
        moves.append(_ratio(out - module._skip, module._skip))

    for block in model.transformer.h:
        block.register_forward_pre_hook(block_input, with_kwargs=True)
        block.register_forward_hook(block_output, with_kwargs=True)
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            proj.register_forward_hook(lambda m, i, o, block=block: branches.append(_ratio(o, block._skip)))
    with torch.no_grad():
        model(input_ids=torch.randint(0, 100, (2, 9)))
    assert len(moves) == 2 and max(moves) < TOL
    assert len(branches) == 4 and max(branches) < TOL


def test_bert_branches_vanish():
    torch.manual_seed(0)
    model = tiny_bert()
    idinit.init_(model)
    model.eval()
    ratios = []

    def residual_output_hook(module, args, out):
        hidden, skip = args[0], args[1]  # BertSelfOutput / BertOutput: dense(hidden) + skip, then LayerNorm
        ratios.append(_ratio(module.dense(hidden), skip))

    for layer in model.bert.encoder.layer:
        layer.attention.output.register_forward_hook(residual_output_hook)
        layer.output.register_forward_hook(residual_output_hook)
    with torch.no_grad():
        logits = model(input_ids=torch.randint(0, 100, (2, 9))).logits
    assert len(ratios) == 4 and max(ratios) < TOL
    assert logits.abs().max() < 1e-3


@pytest.mark.parametrize("build, x", [(mlp, torch.randn(4, 10)), (cnn, torch.randn(2, 3, 8, 8)),
                                      (LSTMClassifier, torch.randint(0, 50, (2, 6)))])
def test_non_residual_models_get_no_zero_preserving_layer(build, x):
    torch.manual_seed(0)
    model = build()
    plan = idinit.init_(model)
    assert not any(e.init in ("zero_preserving_", "zeros_") for e in plan if e.role in idinit.roles.MATRIX_ROLES)
    # and so the signal is carried to the output, not zeroed: every output row holds one identity entry
    for e in plan:
        if e.role in idinit.roles.MATRIX_ROLES:
            weight = model.get_parameter(e.name).detach()
            assert (weight.abs() > 0.5).sum() == weight.shape[0], e.name
    model.eval()
    with torch.no_grad():
        assert model(x).abs().max() > 1e-2


def test_meta_device_plan_and_bitwise_init():
    with torch.device("meta"):
        meta = torchvision.models.resnet18(num_classes=10)
    plan = idinit.plan(meta)  # plan works on the meta device (torch.fx)
    assert plan.by_role("branch_end") and all(e.shape for e in plan)
    graph_plan = idinit.plan(meta, example_inputs=(torch.empty(1, 3, 32, 32, device="meta"),), use_registry=False)
    assert [(e.name, e.role, e.init) for e in graph_plan] == [(e.name, e.role, e.init) for e in plan]
    meta.to_empty(device="cpu")
    eager = torchvision.models.resnet18(num_classes=10)
    torch.manual_seed(7)
    idinit.init_(eager)
    # the plan made on meta read no values; a plan made after to_empty() would read uninitialised
    # memory as values the model set (idinit.values) unless keep_model_values=False says they are not
    for apply in (lambda: plan.apply(meta), lambda: idinit.init_(meta, keep_model_values=False)):
        torch.manual_seed(7)
        apply()
        for (name, a), b in zip(meta.state_dict().items(), eager.state_dict().values()):
            assert torch.equal(a, b), name


def test_meta_device_transformer_with_reset_kept():
    """Embeddings are kept by the scheme: init_ draws them again with the model's own init (reset_kept,
    the default), so after to_empty() they are no garbage and equal an eager model's from one seed."""
    tokens = torch.randint(0, 50, (2, 5))
    with torch.device("meta"):
        meta = TextTransformer(norm_first=True)
    plan = idinit.plan(meta, example_inputs=(tokens.to("meta"),), reset_kept=True)
    assert plan["emb.weight"].init == "reset_parameters"
    meta.to_empty(device="cpu")
    torch.manual_seed(3)
    # after to_empty() the values are memory, not values the model set: keep_model_values=False
    idinit.init_(meta, example_inputs=(tokens,), keep_model_values=False)
    eager = TextTransformer(norm_first=True)
    torch.manual_seed(3)
    idinit.init_(eager, keep_model_values=False)
    for (name, a), b in zip(meta.named_parameters(), eager.parameters()):
        assert torch.equal(a, b), name
