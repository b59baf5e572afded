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
import traceback

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


def median_ms(step, device: str, repeat: int, budget_s: float) -> tuple[float, int]:
    """Median wall time of ``step`` (ms) over at most ``repeat`` runs after a warm-up, fewer when the
    warm-up shows that ``repeat`` runs would not fit in ``budget_s``; also how many runs were timed."""
    sync(device)
    t0 = time.perf_counter()
    step()  # warm-up
    sync(device)
    warm = time.perf_counter() - t0
    runs = max(1, min(repeat, int(budget_s / max(warm, 1e-6))))
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, runs


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


def peak_extra_bytes(step, device: str) -> tuple[int, float]:
    """Memory ``step`` holds at its peak beyond what was allocated before it, and its time (ms, one run)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, (time.perf_counter() - t0) * 1e3
    before = _rss_peak_reset()
    t0 = time.perf_counter()
    step()
    return _status_kib("VmHWM") * 1024 - before, (time.perf_counter() - t0) * 1e3


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


def seeded(step):
    """``step`` from a fixed global seed (the model's own init draws from the global RNG, no generator)."""
    def run():
        torch.manual_seed(0)
        step()
    return run


def bench_model(name: str, device: str, repeat: int, budget_s: float) -> tuple[str, list[tuple[str, float, str]]]:
    """``[(row, ms or bytes, note)]`` for one model; a row that fails is reported (value nan) and the
    others still run."""
    t0 = time.perf_counter()
    model = build(name, device)
    build_s = time.perf_counter() - t0
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    size = sum(p.numel() * p.element_size() for p in params)
    largest = max(p.numel() * p.element_size() for p in params)
    generator = torch.Generator(device=device).manual_seed(0) if device.startswith("cuda") else \
        torch.Generator().manual_seed(0)
    rows: list[tuple[str, float, str]] = []
    plans: dict[str, idinit.Plan] = {}

    def row(label: str, measure) -> None:
        try:
            value, note = measure()
        except Exception as error:  # one failing row must not hide the others
            traceback.print_exc()
            value, note = float("nan"), f"failed: {type(error).__name__}: {str(error)[:200]}"
        rows.append((label, value, note))
        print(f"  {label}: {value:.3f}  {note}", flush=True)

    def timed(step):
        def measure():
            ms, runs = median_ms(step, device, repeat, budget_s)
            return ms, ("" if runs == repeat else f"median of {runs}")
        return measure

    def make_plan(key: str, scheme: str, reset_kept: bool):
        def measure():
            t0 = time.perf_counter()
            plans[key] = idinit.plan(model, scheme, reset_kept=reset_kept)
            sync(device)
            return (time.perf_counter() - t0) * 1e3, "once"
        return measure

    def apply(key: str, with_generator: bool):
        step = (lambda: plans[key].apply(model, generator=generator)) if with_generator else \
            seeded(lambda: plans[key].apply(model))
        return timed(step)

    row("zero_() floor", timed(zero_floor(params)))
    row("plan (once)", make_plan("idinit", "idinit", True))
    row("plan, reset_kept=False (once)", make_plan("idinit-kept", "idinit", False))
    row("plan kaiming, reset_kept=False (once)", make_plan("kaiming-kept", "kaiming", False))
    # the pattern writer alone: embeddings kept (reset_kept=False), everything else written by idinit
    row("apply idinit, embeddings kept", apply("idinit-kept", True))
    # the whole plan: the embeddings (and any other kept parameter) get the model's own init
    row("apply idinit, embeddings by the model's init", apply("idinit", False))
    row("apply kaiming, embeddings kept", apply("kaiming-kept", True))
    row("HF _init_weights", timed(seeded(hf_init(model))))
    row("kaiming_uniform_ loop", timed(kaiming_loop(params)))
    for reset_kept in (False, True):
        def measure(reset_kept=reset_kept):
            extra, ms = peak_extra_bytes(lambda: idinit.init_(model, reset_kept=reset_kept, generator=generator),
                                         device)
            verdict = "within" if extra <= largest else "OVER"
            return extra, (f"{verdict} the target (largest tensor {largest / 2**20:.1f} MiB); "
                           f"init_ took {ms:.0f} ms (plan included)")
        row(f"peak extra memory, init_(reset_kept={reset_kept})", measure)
    header = (f"{name}: {n_params / 1e6:.1f} M parameters, {MODELS[name][2]}, {size / 2**20:.0f} MiB, "
              f"built on meta + to_empty in {build_s:.1f} s")
    del model, params, plans
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return header, rows


def table(header: str, rows) -> str:
    values = {r: v for r, v, _ in rows}
    floor, loop = values.get("zero_() floor", float("nan")), values.get("kaiming_uniform_ loop", float("nan"))
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
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(MODELS),
                        help="default: llama-7b gpt2 on CUDA, gpt2 gpt2-medium llama-1b on CPU")
    parser.add_argument("--tiny", action="store_true", help="the tiny model only, 2 runs: checks the script")
    parser.add_argument("--repeat", type=int, default=None, help="default 20 on CUDA, 3 on CPU")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time for the timed runs of one row: fewer runs when they would not fit "
                             "(default 10 s on CUDA, 120 s on CPU)")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    models = ["tiny"] if args.tiny else args.models or (["llama-7b", "gpt2"] if cuda else
                                                        ["gpt2", "gpt2-medium", "llama-1b"])
    if "llama-7b" in models and not cuda:
        parser.error("llama-7b is measured on CUDA only (13 GiB in bf16)")
    repeat = 2 if args.tiny else args.repeat or (20 if cuda else 3)
    budget_s = args.budget_s or (10.0 if cuda else 120.0)
    machine = torch.cuda.get_device_name(args.device) if cuda else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    out = [f"# Plan.apply against a zero_() pass ({args.device}: {machine})", "",
           f"command: `python {' '.join(sys.argv)}`; torch {torch.__version__}, median of {repeat} after a warm-up "
           f"(fewer where the note says so)", ""]
    print("\n".join(out), flush=True)
    for name in models:
        try:
            header, rows = bench_model(name, args.device, repeat, budget_s)
            text = table(header, rows) + "\n"
        except Exception as error:  # a model that cannot be built: say so and go on with the next
            traceback.print_exc()
            text = f"### {name}: failed: {type(error).__name__}: {error}\n"
        print(text, flush=True)
        out.append(text)
        if args.out:  # written after every model, so that a run cut short keeps what it measured
            with open(args.out, "w") as f:
                f.write("\n".join(out))


if __name__ == "__main__":
    main()
