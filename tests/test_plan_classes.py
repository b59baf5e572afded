"""Architecture classes whose plan the graph analysis once got wrong (issue 8 section 1), each on two or
more members, each measured at init: a residual block must start within 1e-3 of identity, and what
must be alive (pyramid levels, the layers inside a conditioned branch) must have a normal scale."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import idinit
from plan_zoo import roles


def _block_changes(model: nn.Module, blocks: list[nn.Module], run) -> list[float]:
    """``||out - in|| / ||in||`` of each block in one forward pass (``run()``), in float64."""
    changes = []

    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        changes.append(((y.double() - x.double()).norm() / x.double().norm()).item())

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in blocks]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return changes


def _quiet_plan(model, **kwargs):
    """The plan, failing on any warning: a right plan of these models has nothing to warn about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return idinit.plan(model, **kwargs)


# ---------------------------------------------------------------------------------------------
# 1. parallel attention + MLP blocks: x + attn(ln(x)) + mlp(ln(x))

def _phi():
    from transformers import PhiConfig, PhiForCausalLM

    model = PhiForCausalLM(PhiConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                     vocab_size=100, max_position_embeddings=32, bos_token_id=0, eos_token_id=0))
    return model, model.model.layers, "self_attn.dense", "mlp.fc1", "mlp.fc2"


def _gptj():
    from transformers import GPTJConfig, GPTJForCausalLM

    model = GPTJForCausalLM(GPTJConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32, rotary_dim=8,
                                       bos_token_id=0, eos_token_id=0))
    return model, model.transformer.h, "attn.out_proj", "mlp.fc_in", "mlp.fc_out"


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                             num_attention_heads=2, vocab_size=100, max_position_embeddings=32,
                                             use_parallel_residual=True, bos_token_id=0, eos_token_id=0))
    return model, model.gpt_neox.layers, "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"


def _falcon():
    from transformers import FalconConfig, FalconForCausalLM

    model = FalconForCausalLM(FalconConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, vocab_size=100,
                                           parallel_attn=True, new_decoder_architecture=False,
                                           bos_token_id=0, eos_token_id=0))
    return model, model.transformer.h, "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"


def _cohere():
    # written x + attn(ln(x)) + mlp(ln(x)): the skip is summed first (zoo audit: its MLP was read as a
    # projection shortcut parallel to (x + attn), gate_proj as the network's stem, no MLP branch closed)
    from transformers import CohereConfig, CohereForCausalLM

    model = CohereForCausalLM(CohereConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                           num_attention_heads=2, vocab_size=100, max_position_embeddings=32,
                                           pad_token_id=0, bos_token_id=0, eos_token_id=0))
    return model, model.model.layers, "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"


@pytest.mark.parametrize("build", [_phi, _gptj, _neox, _falcon, _cohere])
def test_parallel_attention_and_mlp_both_close_their_branch(build):
    torch.manual_seed(0)
    model, layers, attn_out, mlp_in, mlp_out = build()
    plan = _quiet_plan(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    for i in range(len(layers)):
        layer = f"{prefix}.{i}"
        assert plan[f"{layer}.{attn_out}.weight"].role == "attention_out"
        assert plan[f"{layer}.{mlp_out}.weight"].role == "branch_end"
        assert plan[f"{layer}.{mlp_in}.weight"].role == "identity"
    plan.apply(model)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    changes = _block_changes(model, list(layers), lambda: model(input_ids=ids))
    assert len(changes) == 2 and max(changes) < 1e-3, changes  # 0.4-32 with an MLP taken for a shortcut


# ---------------------------------------------------------------------------------------------
# 2. feature pyramids (and 5: the focal-loss prior of the heads on them)

@pytest.mark.parametrize("arch", ["fcos_resnet50_fpn", "retinanet_resnet50_fpn"])
def test_feature_pyramid_levels_start_alive_and_the_prior_is_kept(arch):
    import torchvision

    torch.manual_seed(0)
    size = 160  # the smallest input whose coarsest level (p7, 1/128) is wider than one pixel
    model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None, num_classes=3,
                                                        min_size=size, max_size=size)
    prior = model.head.classification_head.cls_logits.bias.detach().clone()
    assert torch.allclose(prior, torch.full_like(prior, -math.log(99)))
    plan = idinit.plan(model, example_inputs=([torch.rand(3, size, size)],))
    assert not [e.name for e in plan if e.name.startswith("backbone.fpn") and e.role == "branch_end"]
    kept = plan["head.classification_head.cls_logits.bias"]
    assert (kept.role, kept.init, kept.source) == ("keep", "keep", "values") and "-4.595" in kept.note
    plan.apply(model)
    assert torch.equal(model.head.classification_head.cls_logits.bias, prior)
    model.eval()
    with torch.no_grad():
        levels = model.backbone(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)))
    rms = {k: v.pow(2).mean().sqrt().item() for k, v in levels.items()}
    assert len(rms) == 5 and min(rms.values()) > 0.1, rms  # three levels at ~1e-12 with a top-down sum as branch
    # the user can ask for the plain plan: the prior is then a bias like any other
    assert idinit.plan(model, example_inputs=([torch.rand(3, size, size)],), keep_model_values=False)[
        "head.classification_head.cls_logits.bias"].init == "zeros_"


# ---------------------------------------------------------------------------------------------
# 3. additive conditioning inside a residual branch

class TimeResBlock(nn.Module):
    """A diffusion U-Net ResBlock: ``h = conv1(x) + temb(t)``, ``x + conv2(h)``."""

    def __init__(self, c: int = 16, t: int = 8):
        super().__init__()
        self.n1, self.n2 = nn.GroupNorm(4, c), nn.GroupNorm(4, c)
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.temb = nn.Linear(t, c)

    def forward(self, x, e, y):
        h = self.conv1(torch.relu(self.n1(x))) + self.temb(e)[:, :, None, None]
        return x + self.conv2(torch.relu(self.n2(h)))


class FiLMClassBlock(TimeResBlock):
    """FiLM from the time embedding and a class embedding added inside the branch."""

    def __init__(self, c: int = 16, t: int = 8, classes: int = 5):
        super().__init__(c, t)
        self.scale, self.cemb = nn.Linear(t, c), nn.Embedding(classes, c)

    def forward(self, x, e, y):
        h = self.n2(self.conv1(torch.relu(self.n1(x))))
        h = h * (1 + self.scale(e)[:, :, None, None]) + self.temb(e)[:, :, None, None] + self.cemb(y)[:, :, None, None]
        return x + self.conv2(torch.relu(h))


class TinyUNet(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.time = nn.Sequential(nn.Linear(1, 8), nn.SiLU(), nn.Linear(8, 8))
        self.inc, self.out = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 3, 3, padding=1)
        self.blocks = nn.ModuleList([block(), block(), block()])

    def forward(self, x, t, y):
        e, h = self.time(t[:, None]), self.inc(x)
        for block in self.blocks:
            h = block(h, e, y)
        return self.out(h)


@pytest.mark.parametrize("block", [TimeResBlock, FiLMClassBlock])
@pytest.mark.parametrize("graph", ["fx", "autograd"])
def test_conditioning_added_inside_a_branch_is_no_branch_end(block, graph):
    torch.manual_seed(0)
    model = TinyUNet(block)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 3, 8, 8, generator=g), torch.rand(2, generator=g), torch.tensor([1, 3]))
    plan = _quiet_plan(model, example_inputs=inputs if graph == "autograd" else None)
    for i in range(3):
        assert plan[f"blocks.{i}.conv1.weight"].role == "identity"
        assert plan[f"blocks.{i}.temb.weight"].role == "identity"
        assert plan[f"blocks.{i}.conv2.weight"].role == "branch_end"
    plan.apply(model)
    changes = _block_changes(model, list(model.blocks), lambda: model(*inputs))
    assert max(changes) < 1e-3, changes
    inner = []
    for b in model.blocks:  # the conv inside the branch is alive: its output has the scale of its input
        b.conv1.register_forward_hook(lambda m, a, out: inner.append((out.norm() / a[0].norm()).item()))
    with torch.no_grad():
        model(*inputs)
    assert min(inner) > 0.1, inner  # ~1e-6 when conv1 was taken for a branch end


# ---------------------------------------------------------------------------------------------
# 4. state-space blocks

def _mamba():
    from transformers import MambaConfig, MambaForCausalLM

    model = MambaForCausalLM(MambaConfig(num_hidden_layers=2, hidden_size=32, state_size=4, vocab_size=100, expand=2,
                                         conv_kernel=4, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    return model, "dt_proj.bias", ("x_proj", "dt_proj", "in_proj")


def _mamba2():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    model = Mamba2ForCausalLM(Mamba2Config(num_hidden_layers=2, hidden_size=32, state_size=8, vocab_size=100,
                                           expand=2, num_heads=4, head_dim=16, n_groups=1, conv_kernel=4, chunk_size=8,
                                           bos_token_id=0, eos_token_id=0, pad_token_id=0))
    return model, "dt_bias", ("in_proj",)


@pytest.mark.parametrize("build", [_mamba, _mamba2])
def test_state_space_blocks(build):
    torch.manual_seed(0)
    model, time_bias, inner = build()
    layers = model.backbone.layers
    biases = [layer.mixer.get_parameter(time_bias).detach().clone() for layer in layers]
    assert all(b.max() < -2 for b in biases)  # inverse softplus of time steps in [1e-3, 0.1]
    plan = _quiet_plan(model)
    for i in range(len(layers)):
        mixer = f"backbone.layers.{i}.mixer"
        assert plan[f"{mixer}.out_proj.weight"].role == "branch_end"
        assert all(plan[f"{mixer}.{name}.weight"].role == "identity" for name in inner)
        assert plan[f"{mixer}.{time_bias}"].init == "keep"
    plan.apply(model)
    for layer, before in zip(layers, biases):
        assert torch.equal(layer.mixer.get_parameter(time_bias), before)
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    changes = _block_changes(model, list(layers), lambda: model(input_ids=ids))
    assert len(changes) == 2 and max(changes) < 1e-3, changes


# ---------------------------------------------------------------------------------------------
# 5. layer scale: a branch already closed by a small learned scale gets one zero-preserver, not two

def _timm(name: str, **kwargs):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kwargs)


_VIT = dict(img_size=32, patch_size=8, embed_dim=32, num_heads=2)
_LAYER_SCALED = {
    "deit3": (lambda: _timm("deit3_small_patch16_224", depth=2, **_VIT), "blocks.0", "mlp.fc2", "ls2.gamma"),
    "cait": (lambda: _timm("cait_xxs24_224", depth=2, depth_token_only=1, **_VIT), "blocks.0", "mlp.fc2", "gamma_2"),
    "convnext": (lambda: _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(16, 32, 32, 32)), "stages.0.blocks.0",
                 "mlp.fc2", "gamma"),
}


def _gradients(model, names):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    return {n: model.get_parameter(n).grad.norm().item() for n in names}


@pytest.mark.parametrize("arch", list(_LAYER_SCALED))
def test_layer_scale_is_not_stacked_with_a_zero_preserving_end(arch):
    build, block, end, scale = _LAYER_SCALED[arch]
    model = build()
    gamma = model.get_parameter(f"{block}.{scale}").detach().clone()
    assert gamma.abs().max() <= 1e-5  # the model closes its branches itself
    plan = _quiet_plan(model)
    entry = plan[f"{block}.{end}.weight"]
    assert (entry.role, entry.init, entry.source) == ("identity", "identity_", "values")
    assert f"{block}.{scale}" in entry.note and "overrides=" in entry.note
    plan.apply(model)
    assert torch.equal(model.get_parameter(f"{block}.{scale}"), gamma)  # the model's scale is kept
    ours = _gradients(model, [f"{block}.{scale}"])
    stacked = build()
    idinit.init_(stacked, keep_model_values=False)  # IDIZ behind the scale: the old plan
    old = _gradients(stacked, [f"{block}.{scale}"])
    # the scale's gradient is how the branch opens; IDIZ behind it scales that by ~1e-6
    assert ours[f"{block}.{scale}"] > 1e3 * old[f"{block}.{scale}"], (ours, old)


# ---------------------------------------------------------------------------------------------
# 6. a warning names the parameters and the remedy, and the remedy silences it

class NestedSumBlock(nn.Module):
    """``x + (h + g(h))`` with ``h = a(x)``: the outer branch ends in a residual sum, not a layer."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.a, self.g1, self.g2 = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        h = self.a(x)
        return x + (h + self.g2(torch.relu(self.g1(h))))


def test_a_warning_names_the_layers_and_its_override_fixes_the_block():
    model = nn.Sequential(nn.Linear(4, 8), NestedSumBlock(), nn.Linear(8, 2))
    with pytest.warns(UserWarning) as record:
        idinit.plan(model)
    message = "\n".join(str(w.message) for w in record)
    assert "overrides={'1.a': 'branch_end'" in message and "1.g2" in message
    fix = {"1.a": "branch_end"}
    plan = _quiet_plan(model, overrides=fix)  # the remedy applied, the warning is gone
    plan.apply(model)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    assert max(_block_changes(model, [model[1]], lambda: model(x))) < 1e-3
