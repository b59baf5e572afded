"""Issue 11 section 4 / paper appendix A.5: after ``idinit.init_`` on the transformers users bring
(HF BERT, GPT-2, Llama, T5, ViT; tiny configurations), every attention and MLP branch adds less
than 1e-3 of its skip at init: Q, K, V get IDI and the output projection IDIZ, so each branch's
output is eps-sized. Measured with forward hooks on a real forward pass; Xavier on the same model
is the planted fault (its branches are of the skip's order)."""
import pytest
import torch

import idinit

transformers = pytest.importorskip("transformers")

LIMIT = 1e-3


class BranchProbe:
    """Records ``|branch output| / |skip|`` for named (skip, branch) pairs.

    ``skip`` is read from a module's input (``("input", module)``: the pre-norm a branch starts
    from, i.e. the residual stream) or from an argument of a module (``("arg", module, i)``, BERT's
    post-norm ``input_tensor``); ``branch`` is the output of the branch's last layer."""

    def __init__(self):
        self.skips, self.branches, self.handles = {}, {}, []

    def pair(self, name, skip_module, branch_module, arg=0):
        def on_skip(module, args, kwargs):
            value = args[arg] if len(args) > arg else next(iter(kwargs.values()))
            self.skips[name] = value.detach().double().norm()

        def on_branch(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            self.branches[name] = out.detach().double().norm()

        self.handles.append(skip_module.register_forward_pre_hook(on_skip, with_kwargs=True))
        self.handles.append(branch_module.register_forward_hook(on_branch))

    def ratios(self) -> dict[str, float]:
        for h in self.handles:
            h.remove()
        assert set(self.skips) == set(self.branches), (sorted(self.skips), sorted(self.branches))
        return {k: float(self.branches[k] / self.skips[k]) for k in self.skips}


def _bert():
    from transformers import BertConfig, BertModel
    model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64))
    probe = BranchProbe()
    for i, layer in enumerate(model.encoder.layer):  # post-LN: LayerNorm(dense(h) + input_tensor)
        probe.pair(f"{i}.attn", layer.attention.output, layer.attention.output.dense, arg=1)
        probe.pair(f"{i}.mlp", layer.output, layer.output.dense, arg=1)
    return model, probe, {"input_ids": torch.randint(1, 100, (2, 12))}


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                            bos_token_id=0, eos_token_id=0))
    probe = BranchProbe()
    for i, block in enumerate(model.transformer.h):
        probe.pair(f"{i}.attn", block.ln_1, block.attn.c_proj)
        probe.pair(f"{i}.mlp", block.ln_2, block.mlp.c_proj)
    return model, probe, {"input_ids": torch.randint(0, 100, (2, 12))}


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    probe = BranchProbe()
    for i, layer in enumerate(model.model.layers):
        probe.pair(f"{i}.attn", layer.input_layernorm, layer.self_attn.o_proj)
        probe.pair(f"{i}.mlp", layer.post_attention_layernorm, layer.mlp.down_proj)
    return model, probe, {"input_ids": torch.randint(0, 100, (2, 12))}


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration
    model = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_decoder_layers=2, num_heads=4, decoder_start_token_id=0))
    probe = BranchProbe()
    for stack in ("encoder", "decoder"):
        for i, block in enumerate(getattr(model, stack).block):
            for j, layer in enumerate(block.layer):
                last = layer.DenseReluDense.wo if hasattr(layer, "DenseReluDense") else (
                    layer.SelfAttention.o if hasattr(layer, "SelfAttention") else layer.EncDecAttention.o)
                probe.pair(f"{stack}.{i}.{j}.{type(layer).__name__}", layer.layer_norm, last)
    ids = torch.randint(1, 100, (2, 12))
    return model, probe, {"input_ids": ids, "decoder_input_ids": torch.randint(1, 100, (2, 7))}


def _vit():
    from transformers import ViTConfig, ViTForImageClassification
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=64, num_labels=10))
    probe = BranchProbe()
    for i, layer in enumerate(model.vit.layers):  # transformers 5 layout
        probe.pair(f"{i}.attn", layer.layernorm_before, layer.attention.o_proj)
        probe.pair(f"{i}.mlp", layer.layernorm_after, layer.mlp.fc2)
    return model, probe, {"pixel_values": torch.randn(2, 3, 32, 32)}


MODELS = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "t5": _t5, "vit": _vit}


def _branch_ratios(name, scheme):
    torch.manual_seed(0)
    model, probe, inputs = MODELS[name]()
    idinit.init_(model, scheme=scheme, example_inputs=inputs)
    model.eval()
    with torch.no_grad():
        model(**inputs)
    return probe.ratios()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_attention_and_mlp_branch_starts_below_1e_3_of_its_skip(name):
    ratios = _branch_ratios(name, "idinit")
    assert len(ratios) >= 4
    too_big = {k: v for k, v in ratios.items() if not v < LIMIT}
    assert not too_big, f"{name}: branches at or above {LIMIT} of their skip after init_: {too_big}"
    # the fault this guards against: a scheme that does not zero branch ends (Xavier everywhere)
    # leaves branches of the skip's order, which the probe must see
    dense = _branch_ratios(name, "xavier")
    assert min(dense.values()) > 10 * LIMIT, dense
