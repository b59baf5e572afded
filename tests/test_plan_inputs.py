"""The detection forward pass (issue 8 section 2): example inputs built from the model where that is
possible, a first error line saying what to pass where it is not, and no dependence on the
uninitialised non-persistent buffers a model built on the meta device carries after ``to_empty()``."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import idinit
from plan_zoo import roles, tiny_bert


def _quiet_roles(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return roles(idinit.plan(model, **kwargs))


def test_meta_bert_detection_does_not_read_garbage_buffers():
    torch.manual_seed(0)
    expected = _quiet_roles(tiny_bert())
    with torch.device("meta"):
        model = tiny_bert()
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
        for b in model.buffers():  # position_ids, token_type_ids: not in a state dict, never loaded
            b.fill_(10 ** 9)
    garbage = {n: b.clone() for n, b in model.named_buffers()}
    assert _quiet_roles(model) == expected  # today: an IndexError on position_ids, then "pass example_inputs"
    for n, b in model.named_buffers():  # planning writes nothing, buffers included
        assert torch.equal(b, garbage[n]), n
    assert all(torch.isnan(p).all() for p in model.parameters())


def _clip():
    from transformers import CLIPConfig, CLIPModel

    layer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return CLIPModel(CLIPConfig(text_config=dict(layer, vocab_size=100, max_position_embeddings=16),
                                vision_config=dict(layer, image_size=16, patch_size=8), projection_dim=16))


def _whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    return WhisperForConditionalGeneration(WhisperConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, num_mel_bins=8, max_source_positions=16,
        max_target_positions=16, decoder_start_token_id=1, pad_token_id=0, bos_token_id=0, eos_token_id=0))


def _wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    return Wav2Vec2ForCTC(Wav2Vec2Config(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=32,
        conv_dim=[16, 16], conv_stride=[5, 2], conv_kernel=[10, 3], num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, apply_spec_augment=False, layerdrop=0.0))


def _speech2text():
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    return Speech2TextForConditionalGeneration(Speech2TextConfig(
        vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=64,
        max_target_positions=64, conv_channels=16, input_feat_per_channel=8, num_conv_layers=2))


def _fcos():
    import torchvision

    return torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                                          min_size=64, max_size=64)


@pytest.mark.parametrize("build, given, closing", [
    (_clip, lambda: {"input_ids": torch.randint(0, 100, (2, 5)), "pixel_values": torch.rand(2, 3, 16, 16)},
     ["text_model.encoder.layers.0.mlp.fc2.weight", "vision_model.encoder.layers.0.mlp.fc2.weight"]),
    (_whisper, lambda: {"input_features": torch.randn(1, 8, 32), "decoder_input_ids": torch.ones(1, 3, dtype=torch.long)},
     ["model.encoder.layers.0.fc2.weight", "model.decoder.layers.0.fc2.weight"]),
    (_fcos, lambda: ([torch.rand(3, 64, 64)],), ["backbone.body.layer1.0.conv3.weight"]),
    # speech (zoo audit: these needed example_inputs): a waveform, filter-bank frames
    (_wav2vec2, lambda: (torch.randn(2, 1600),), ["wav2vec2.encoder.layers.0.feed_forward.output_dense.weight"]),
    (_speech2text, lambda: {"input_features": torch.randn(2, 32, 8), "decoder_input_ids": torch.full((2, 4), 2)},
     ["model.encoder.layers.0.fc2.weight", "model.decoder.layers.0.fc2.weight"]),
])
def test_models_that_needed_example_inputs_get_them_built(build, given, closing):
    torch.manual_seed(0)
    model = build()
    plan = idinit.plan(model)  # no example_inputs: built from the config / the transform
    assert "autograd" in plan.source
    got = roles(plan)
    assert got == roles(idinit.plan(model, example_inputs=given()))
    assert all(got[name] == "branch_end" for name in closing)
    assert "attention_out" in got.values() or "fcos" in type(model).__name__.lower()


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on data: torch.fx cannot trace it, and nothing builds inputs for it
            return x + self.b(self.a(x))
        return x + self.b(torch.relu(self.a(x)))


def test_the_first_line_of_the_error_says_what_to_pass():
    with pytest.raises(ValueError) as info:
        idinit.plan(Untraceable())
    first = str(info.value).splitlines()[0]
    assert first.startswith("Untraceable needs example inputs") and "example_inputs=(" in first, first
    assert "torch.fx" not in first and "torch.fx" in str(info.value)  # the detail comes after


def test_config_built_inputs_live_on_the_model_device():
    # transformers builds dummy_inputs on the CPU; on a GPU model the detection pass then failed on
    # mixed devices (seen on an H200 with transformers 5.17, where torch.fx cannot trace GPT-2 either).
    # The meta device stands in for "not the CPU" here.
    from idinit.inputs import example_inputs_for

    with torch.device("meta"):
        model = tiny_bert()
    inputs, _ = example_inputs_for(model)
    tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_rwkv_plan_reads_the_outputs_not_the_returned_recurrent_state():
    # in eval mode (the detection pass) RWKV returns its recurrent state, written from inside every block;
    # with it among the outputs each branch looked used outside its sum and no residual was found (zoo audit)
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.RwkvForCausalLM(transformers.RwkvConfig(num_hidden_layers=2, hidden_size=32,
                                                                 vocab_size=100, context_length=16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = idinit.plan(model)
    assert plan.residual
    for i in range(2):
        assert plan[f"rwkv.blocks.{i}.attention.output.weight"].role == "branch_end"
        assert plan[f"rwkv.blocks.{i}.feed_forward.value.weight"].role == "branch_end"
    plan.apply(model)
    ratios = []

    def hook(module, args, output):  # |branch| / |its input| in float64
        ratios.append((output[0].double().norm() / args[0].double().norm()).item())

    for block in model.rwkv.blocks:
        block.attention.register_forward_hook(hook)
        block.feed_forward.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0)))
    assert len(ratios) == 4 and max(ratios) < 1e-3, ratios


def test_the_detection_pass_leaves_rwkv_as_it_was():
    # HF RWKV divides its output weights by 2 ** (block // rescale_every) in eval mode (the detection pass)
    # and records it in layers_are_rescaled; the first training pass then multiplied the values the init
    # wrote by that factor (x8 in block 3 here, zoo audit)
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.RwkvForCausalLM(transformers.RwkvConfig(num_hidden_layers=4, hidden_size=32, vocab_size=100,
                                                                 context_length=16, rescale_every=1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = idinit.plan(model)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert model.rwkv.layers_are_rescaled is False
    plan.apply(model)
    written = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0)))
    for i in range(4):
        for name in (f"rwkv.blocks.{i}.attention.output.weight", f"rwkv.blocks.{i}.feed_forward.value.weight"):
            assert torch.equal(model.get_parameter(name), written[name]), name


def test_planning_writes_no_parameter():
    # what the detection pass puts back must be what it wrote: a parameter it only touched (requires_grad_)
    # keeps no record of a write, or after to_empty() its uninitialised memory would read as set on purpose
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    model.to_empty(device="cpu")
    idinit.plan(model, example_inputs=(torch.randn(2, 4),))
    assert all(p._version == 0 for p in model.parameters())


class RelativePositionAttention(nn.Module):
    """Attention with a relative-position bias looked up as ``table[index]`` (timm BEiT / Swin / LeViT, HF Swin):
    autograd keeps the index buffer to read the lookup's indices."""

    def __init__(self, dim: int = 8, tokens: int = 4, heads: int = 2):
        super().__init__()
        self.heads, self.tokens = heads, tokens
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads) * 0.02)
        grid = torch.arange(tokens)
        self.register_buffer("index", (grid[:, None] - grid[None, :] + tokens - 1).flatten())
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index].view(n, n, self.heads).permute(2, 0, 1)
        out = (q @ k.transpose(-2, -1) + bias).softmax(-1) @ v
        return x + self.proj(out.transpose(1, 2).reshape(b, n, d))


def test_buffers_the_pass_did_not_write_are_not_written_back():
    """Zoo audit, fourth round: 13 models with a relative-position index (BEiT, Swin, LeViT, TinyViT, MaxViT, ...)
    failed in ``init_`` / ``check`` with "modified by an inplace operation": the pass copied every buffer back,
    which counts as a write, and autograd then refused to hand over the index it had saved."""
    model = nn.Sequential(nn.Linear(8, 8), RelativePositionAttention(), nn.Linear(8, 3))
    index, version = model[1].index, model[1].index._version
    plan = idinit.plan(model, example_inputs=(torch.randn(2, 4, 8),))
    assert plan["1.proj.weight"].role == "attention_out" and plan["1.qkv.weight"].role == "attention_qkv"
    assert model[1].index is index and index._version == version
