"""How Mixture-of-Experts routers route at init: the evidence for the router rule (zoo audit, design question).

For three small transformers MoE models (DBRX and Switch Transformers: ``nn.Linear`` routers, which the plan gives
IDI; Mixtral: a raw-parameter router, left to the model's own init), under the model's own init and under
``idinit.init_``, on 4 x 64 random token ids: each router's logit std, top-1 load per expert, mean top-1
probability, and the fraction of tokens whose top-1 expert is the same in the model's two routed layers; then
the experts top-k picks with the routers set to zero (ZerO's choice), every other weight as IDInit sets it.

    PYTHONPATH=src python scripts/router_at_init.py
"""
import warnings

import torch
import transformers

import idinit

warnings.simplefilter("ignore")
IDS = torch.randint(0, 100, (4, 64), generator=torch.Generator().manual_seed(1))


def models():
    """(label, builder, suffix of the router module names, experts picked per token)."""
    yield "dbrx", lambda: transformers.DbrxForCausalLM(transformers.DbrxConfig(
        d_model=32, n_heads=2, n_layers=2, max_seq_len=64, vocab_size=100,
        attn_config={"kv_n_heads": 1, "rope_theta": 10000.0, "clip_qkv": 8.0},
        ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2})), "router.layer", 2
    yield "mixtral", lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2)), "mlp.gate", 2
    yield "switch", lambda: transformers.SwitchTransformersForConditionalGeneration(transformers.SwitchTransformersConfig(
        vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, num_experts=4,
        num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, expert_capacity=64,
        decoder_start_token_id=0)), "router.classifier", 1


def router_logits(label, build, suffix, how) -> dict:
    torch.manual_seed(0)
    model = build().eval()
    if how != "own init":
        idinit.init_(model, generator=torch.Generator().manual_seed(0))
    found = {}
    for name, module in model.named_modules():
        if name.endswith(suffix):
            if how == "zero":
                torch.nn.init.zeros_(module.weight)

            def hook(module, args, out, name=name):
                found[name] = (out[0] if isinstance(out, tuple) else out).reshape(-1, 4).float()
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids=IDS, **({"decoder_input_ids": IDS} if label == "switch" else {}))
    return found


for label, build, suffix, k in models():
    for how in ("own init", "idinit", "zero"):
        logits = router_logits(label, build, suffix, how)
        tops = []
        for name, z in logits.items():
            p = z.softmax(-1)
            tops.append(p.argmax(-1))
            picked = torch.bincount(torch.topk(p, k, -1).indices.flatten(), minlength=4).tolist()
            print(f"{label:8s} {how:9s} {name:46s} logit std {z.std():.3g}  experts picked {picked}  "
                  f"mean top-1 prob {p.max(-1).values.mean():.3f}")
        print(f"{label:8s} {how:9s} top-1 agreement between the two routed layers {float((tops[0] == tops[1]).double().mean()):.3f}")
