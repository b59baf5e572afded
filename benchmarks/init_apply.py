"""Cost of initialising a whole model, as ratios to one ``zero_()`` pass over its parameters, in one run.

    python benchmarks/init_apply.py [--device cuda] [--models gpt2 llama-7b] [--repeat 10] [--out FILE]

Each model is built on the meta device from a Hugging Face config and materialised with ``to_empty``
(the way large models are made), then these rows are timed on it (median of ``--repeat`` runs after
one warm-up; CUDA timings synchronise before and after each run):

- ``plan``: ``idinit.plan(model)`` (once; role detection, nothing written);
- ``apply idinit`` / ``apply kaiming``: ``Plan.apply`` of the ``idinit`` and ``kaiming`` plans;
- ``zero_() floor``: ``p.zero_()`` on every parameter, the cost of writing every weight once;
- ``HF _init_weights``: ``model._init_weights(m)`` on every module (the model's own init);
- ``kaiming_uniform_ loop``: ``kaiming_uniform_(a=sqrt(5))`` on every matrix, ``zero_()`` elsewhere;
- ``peak memory``: the most memory ``idinit.init_`` (plan and apply) holds beyond the model, with and
  without ``reset_kept=True``, against the model's largest tensor (CUDA: allocator peak; CPU: the
  process's peak resident set, reset through ``/proc/self/clear_refs``).

Models: ``llama-7b`` (HF Llama defaults, 6.7 B parameters, bf16, CUDA only), ``gpt2`` (GPT-2 small,
fp32), ``gpt2-medium`` (fp32) and ``llama-1b`` (the Llama 3.2 1B shape, tied embeddings, fp32).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import idinit

MODELS = {
    "llama-7b": ("llama", dict(), torch.bfloat16),
    "gpt2": ("gpt2", dict(), torch.float32),
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16), torch.float32),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               tie_word_embeddings=True), torch.float32),
    # a few-layer model for checking the script itself
    "tiny": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256), torch.float32),
}


def build(name: str, device: str) -> nn.Module:
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    family, overrides, dtype = MODELS[name]
    config = (GPT2Config if family == "gpt2" else LlamaConfig)(**overrides)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = model.to_empty(device=device).eval()
    model.tie_weights()  # to_empty() unties shared parameters (GPT-2: lm_head and wte); HF re-ties them
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(step, device: str, repeat: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _rss_peak_reset() -> int:
    """Reset the process's peak resident set to its current size; return that size in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_extra_bytes(step, device: str) -> int:
    """Memory ``step`` holds at its peak beyond what was allocated before it."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _rss_peak_reset()
    step()
    return _status_kib("VmHWM") * 1024 - before


def zero_floor(params):
    def step():
        with torch.no_grad():
            for p in params:
                p.zero_()
    return step


def kaiming_loop(params):
    def step():
        with torch.no_grad():
            for p in params:
                if p.dim() >= 2:
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                else:
                    p.zero_()
    return step


def hf_init(model):
    def step():
        with torch.no_grad():
            for module in model.modules():
                model._init_weights(module)
    return step


def bench_model(name: str, device: str, repeat: int) -> list[tuple[str, float, str]]:
    """``[(row, ms or bytes, note)]`` for one model."""
    t0 = time.perf_counter()
    model = build(name, device)
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    size = sum(p.numel() * p.element_size() for p in params)
    largest = max(p.numel() * p.element_size() for p in params)

    t0 = time.perf_counter()
    plan = idinit.plan(model)
    plan_ms = (time.perf_counter() - t0) * 1e3
    kaiming = idinit.plan(model, "kaiming")
    generator = torch.Generator().manual_seed(0)

    floor = median_ms(zero_floor(params), device, repeat)
    rows = [("zero_() floor", floor, "")]
    rows.append(("plan (once)", plan_ms, ""))
    rows.append(("apply idinit", median_ms(lambda: plan.apply(model, generator=generator), device, repeat), ""))
    rows.append(("apply kaiming", median_ms(lambda: kaiming.apply(model, generator=generator), device, repeat), ""))
    rows.append(("HF _init_weights", median_ms(hf_init(model), device, repeat), ""))
    rows.append(("kaiming_uniform_ loop", median_ms(kaiming_loop(params), device, repeat), ""))
    for reset_kept in (False, True):
        extra = peak_extra_bytes(lambda: idinit.init_(model, reset_kept=reset_kept), device)
        rows.append((f"peak extra memory, init_(reset_kept={reset_kept})", extra,
                     f"largest tensor {largest / 2**20:.1f} MiB"))
    header = (f"{name}: {n_params / 1e6:.1f} M parameters, {MODELS[name][2]}, {size / 2**20:.0f} MiB, "
              f"built on meta + to_empty in {build_s:.1f} s")
    del model, params, plan, kaiming
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return header, rows


def table(header: str, rows, kaiming_loop_ms=None) -> str:
    floor = rows[0][1]
    loop = next(v for r, v, _ in rows if r == "kaiming_uniform_ loop")
    lines = [f"### {header}", "", "| step | ms | x floor | x kaiming_uniform_ loop | note |", "|---|---|---|---|---|"]
    for row, value, note in rows:
        if row.startswith("peak"):
            lines.append(f"| {row} | {value / 2**20:.1f} MiB | | | {note} |")
        else:
            lines.append(f"| {row} | {value:.2f} | {value / floor:.2f} | {value / loop:.2f} | {note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=None,
                        help="default: llama-7b gpt2 on CUDA, gpt2 gpt2-medium llama-1b on CPU")
    parser.add_argument("--repeat", type=int, default=None, help="default 20 on CUDA, 3 on CPU")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    models = args.models or (["llama-7b", "gpt2"] if cuda else ["gpt2", "gpt2-medium", "llama-1b"])
    if "llama-7b" in models and not cuda:
        parser.error("llama-7b is measured on CUDA only (13 GiB in bf16)")
    repeat = args.repeat or (20 if cuda else 3)
    machine = torch.cuda.get_device_name(args.device) if cuda else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    out = [f"# Plan.apply against a zero_() pass ({args.device}: {machine})", "",
           f"command: `python {' '.join(sys.argv)}`; torch {torch.__version__}, median of {repeat} after a warm-up", ""]
    print("\n".join(out), flush=True)
    for name in models:
        header, rows = bench_model(name, args.device, repeat)
        text = table(header, rows) + "\n"
        print(text, flush=True)
        out.append(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out))


if __name__ == "__main__":
    main()
