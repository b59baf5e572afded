"""Hugging Face transformers: IDInit for a whole model from its config, nothing left uninitialised.

Each test plants the fault it guards against: every parameter and buffer of a model materialised with
``to_empty()`` is filled with NaN (floats) or -7 (integers) before ``init_``, so anything the library
leaves alone is seen.
"""
import math
import subprocess
import sys
import warnings

import pytest
import torch

import idinit

transformers = pytest.importorskip("transformers")

PLANTED_INT = -7


def _configs():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    return {
        "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0,
                           eos_token_id=0),
        "llama": LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                             num_key_value_heads=1, vocab_size=100, max_position_embeddings=32,
                             tie_word_embeddings=True),
        "bert": BertConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                           vocab_size=100, max_position_embeddings=32),
    }


def _build(arch: str, meta: bool):
    from transformers import AutoModel, AutoModelForCausalLM

    config = _configs()[arch]
    auto = AutoModel if arch == "bert" else AutoModelForCausalLM
    if not meta:
        return auto.from_config(config)
    with torch.device("meta"):
        model = auto.from_config(config)
    model.to_empty(device="cpu")
    return model


def _plant(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.fill_(float("nan")) if t.is_floating_point() else t.fill_(PLANTED_INT)


def _uninitialised(model: torch.nn.Module) -> list[str]:
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers())
    return [n for n, t in tensors
            if (not torch.isfinite(t).all() if t.is_floating_point() else (t == PLANTED_INT).any())]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_meta_built_model_has_nothing_uninitialised(arch):
    model = _build(arch, meta=True)
    _plant(model)
    assert _uninitialised(model)  # the planted fault is visible
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing is left that init_ would have to warn about
        plan = idinit.init_(model)
    assert _uninitialised(model) == []
    assert not any("no method of the model" in note for note in plan.notes)
    # the embeddings got the model's own init: N(0, initializer_range), not the scheme and not garbage
    embedding = model.get_input_embeddings()
    assert plan[f"{_name_of(model, embedding)}.weight"].init == "reset_parameters"
    assert "_init_weights" in plan[f"{_name_of(model, embedding)}.weight"].note
    std = embedding.weight.std().item()
    assert abs(std - 0.02) < 0.004, std


def _name_of(model, module):
    return next(n for n, m in model.named_modules() if m is module)


def test_meta_built_causal_lm_is_tied_again_and_the_plan_says_so():
    model = _build("gpt2", meta=True)
    assert model.lm_head.weight is not model.transformer.wte.weight  # to_empty() unties them
    plan = idinit.init_(model)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert any("lm_head.weight -> transformer.wte.weight" in n for n in plan.notes)
    assert "lm_head.weight" not in [e.name for e in plan]


@pytest.mark.parametrize("arch, buffers", [
    ("llama", ["model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"]),
    ("bert", ["embeddings.position_ids", "embeddings.token_type_ids"]),
])
def test_non_persistent_buffers_are_rebuilt_as_the_model_builds_them(arch, buffers):
    eager = _build(arch, meta=False)
    model = _build(arch, meta=True)
    _plant(model)
    plan = idinit.init_(model)
    for name in buffers:
        assert plan.states[name].startswith("rebuilt by"), plan.states[name]
        assert name in str(plan)
        assert torch.equal(model.get_buffer(name), eager.get_buffer(name)), name


def test_meta_and_eager_give_the_same_weights_with_one_seed():
    eager = _build("llama", meta=False)
    meta = _build("llama", meta=True)
    _plant(meta)
    for model in (eager, meta):
        idinit.init_(model, generator=torch.Generator().manual_seed(3))
    for (name, a), b in zip(eager.state_dict().items(), meta.state_dict().values()):
        assert torch.equal(a, b), name


def test_default_scheme_is_the_models_own_init():
    """'default' runs the model's _init_weights on every module, children first, as transformers'
    initialize_weights() does: from one seed, bitwise the same weights, GPT-2's 1/sqrt(2 n_layer)
    scaled c_proj included (PyTorch's layer defaults would give Conv1D no such scale)."""
    ours = _build("gpt2", meta=True)
    theirs = _build("gpt2", meta=True)
    ours.tie_weights()
    theirs.tie_weights()
    with torch.no_grad():  # memory that looks like a prior set on purpose (one constant): 'default' ignores it
        for p in ours.parameters():
            p.fill_(-4.6)
    torch.manual_seed(1)
    plan = idinit.init_(ours, "default")
    assert {e.init for e in plan} == {"reset_parameters"}
    for module in theirs.modules():
        module._is_hf_initialized = False
    torch.manual_seed(1)
    theirs.initialize_weights()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    c_proj = ours.transformer.h[0].mlp.c_proj.weight
    assert abs(c_proj.std().item() / (0.02 / math.sqrt(2 * 2)) - 1) < 0.1


def test_loaded_weights_marked_initialised_still_get_the_models_own_init():
    """transformers marks loaded tensors _is_hf_initialized and its init functions skip them; init_
    lifts the mark while it runs and puts it back."""
    model = _build("gpt2", meta=True)
    _plant(model)
    model.transformer.wpe.weight._is_hf_initialized = True
    idinit.init_(model)
    assert _uninitialised(model) == []
    assert model.transformer.wpe.weight._is_hf_initialized is True


def test_reset_kept_false_keeps_what_the_user_loaded():
    model = _build("gpt2", meta=False)
    wte = model.transformer.wte.weight.detach().clone()
    plan = idinit.init_(model, reset_kept=False)
    assert plan["transformer.wte.weight"].init == "keep"
    assert torch.equal(model.transformer.wte.weight, wte)


def test_from_config_is_one_call():
    config = _configs()["llama"]
    model, plan = idinit.hf.from_config(config, generator=torch.Generator().manual_seed(0))
    assert _uninitialised(model) == []
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert plan["model.layers.0.mlp.down_proj.weight"].init == "zero_preserving_"
    assert plan["model.layers.0.self_attn.o_proj.weight"].init == "zero_preserving_"
    again, _ = idinit.hf.from_config(config, generator=torch.Generator().manual_seed(0))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    bf16, _ = idinit.hf.from_config(config, dtype=torch.bfloat16, scheme="kaiming")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_importing_idinit_imports_neither_transformers_nor_timm():
    code = "import sys, idinit, idinit.hf; assert 'transformers' not in sys.modules and 'timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
