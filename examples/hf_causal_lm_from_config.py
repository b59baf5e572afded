"""IDInit for a Hugging Face causal LM built from its config: one call, nothing uninitialised.

    python examples/hf_causal_lm_from_config.py                 # a tiny Llama, on the CPU, in seconds
    python examples/hf_causal_lm_from_config.py --arch gpt2 --eager

``idinit.hf.from_config(config)`` builds the model on the meta device (transformers' own init never
runs, so no weight is written twice), materialises it and applies IDInit; the embeddings and the tied
output layer get the model's own ``_init_weights``, the rotary / position buffers are recomputed.
With ``--eager`` the model is built as usual and ``idinit.init_(model)`` does the same on it.
"""
from __future__ import annotations

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import idinit

TINY = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=64, tie_word_embeddings=True),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(TINY), default="llama")
    parser.add_argument("--eager", action="store_true", help="build the model eagerly, then idinit.init_(model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = AutoConfig.for_model(args.arch, **TINY[args.arch])
    generator = torch.Generator().manual_seed(args.seed)
    if args.eager:
        model = AutoModelForCausalLM.from_config(config)
        plan = idinit.init_(model, generator=generator)
    else:
        model, plan = idinit.hf.from_config(config, generator=generator)
    print(plan)

    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"non-finite after init: {bad}"
    tokens = torch.randint(0, config.vocab_size, (2, 16), generator=generator)
    out = model(input_ids=tokens, labels=tokens)
    out.loss.backward()
    result = {"loss": out.loss.item(), "log_vocab": float(torch.log(torch.tensor(float(config.vocab_size))))}
    print(f"loss at init {result['loss']:.4f} (log vocab = {result['log_vocab']:.4f})")
    return result


if __name__ == "__main__":
    main()
