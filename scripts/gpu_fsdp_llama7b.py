"""IDInit of an FSDP2-sharded Llama-7B, shard by shard: time against the sharded zero_() floor, and checksums
equal to the unsharded init's.

    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 2 scripts/gpu_fsdp_llama7b.py --out results/speed/fsdp-llama7b-2xh200.md
    torchrun --nproc-per-node 2 scripts/gpu_fsdp_llama7b.py --tiny --out /tmp/fsdp.md  # check: tiny model, CPU, gloo

Every rank builds the model on the meta device (HF Llama config, 7B defaults), plans it (roles need no
weights; ``reset_kept=False``: the embedding is kept), shards every decoder layer and the root with
``fully_shard`` and materialises its shards with ``to_empty``. Timed (median of ``--repeat`` after a
warm-up, synchronised, per rank): ``p.zero_()`` on every local shard (the floor) and ``Plan.apply`` of the
idinit plan. Then each parameter's checksum, exact and order-free so that shards can be added up: over its
elements, the sum of the bit patterns (as integers), of their squares and of bit pattern times (global flat
index mod 65521 + 1), in int64 (wrapping: exact modulo 2^64), reduced over the ranks. Then the user's one
call, ``idinit.init_`` (planning included, the embedding by the model's own init), on the sharded model,
timed once, and its checksums. Rank 0 then builds the same model unsharded on its own device, zeroes it
(the kept embedding then holds zeros on both sides), times the floor and the same plan's apply, then
``init_`` with the same seed, and compares both sets of checksums parameter by parameter. A step that fails
is reported and the others go on. The report (markdown, with a JSON block) goes to ``--out``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import idinit  # noqa: E402
from idinit.sharded import is_dtensor  # noqa: E402
from init_apply import MODELS, build  # noqa: E402

_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def checksum(tensor: torch.Tensor, flat_offset: int) -> torch.Tensor:
    """``[sum(b), sum(b^2), sum(b * (i mod 65521 + 1))]`` (int64) of the bit patterns ``b`` of ``tensor``,
    ``i`` the global flat index (the local data's first element is ``flat_offset``)."""
    bits = tensor.detach().contiguous().view(_INT[tensor.element_size()]).reshape(-1).to(torch.int64)
    index = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) + flat_offset
    return torch.stack([bits.sum(), (bits * bits).sum(), (bits * (index % 65521 + 1)).sum()])


def checksums(model) -> dict[str, list[int]]:
    """Checksums of every parameter (DTensor shards are summed over the ranks)."""
    found = {}
    for name, p in model.named_parameters():
        if is_dtensor(p):
            from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
            _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
            row = p.numel() // p.shape[0] if p.dim() else 1
            part = checksum(p.to_local(), offset[0] * row if p.dim() else 0)
            dist.all_reduce(part)
        else:
            part = checksum(p, 0)
        found[name] = [int(v) for v in part.tolist()]
    return found


def median_ms(step, device, repeat: int, collective: bool = True) -> tuple[float, list[float]]:
    """Median wall time of ``step`` (ms) over ``repeat`` runs after a warm-up, the ranks starting together
    (``collective``) and every run synchronised with the device."""
    step()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if collective:
            dist.barrier()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def attempt(label: str, failures: dict, step, default=None):
    """``step()``, or ``default`` with the error printed and kept under ``label`` in ``failures``."""
    try:
        return step()
    except Exception as error:  # one failing step must not hide the others
        traceback.print_exc()
        failures[label] = f"{type(error).__name__}: {str(error)[:300]}"
        return default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="report file (markdown with a JSON block)")
    parser.add_argument("--model", default="llama-7b", choices=sorted(MODELS))
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (gloo): checks the script")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                        help="default: the model's (bf16 for llama-7b); float32 keeps the loose noise")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    if args.tiny:
        args.model, args.device = "tiny", "cpu"

    cuda = args.device == "cuda"
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # no NVLink multicast on the lent machines
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if args.dtype:
        family, overrides, _ = MODELS[args.model]
        MODELS[args.model] = (family, overrides, getattr(torch, args.dtype))
    dtype = MODELS[args.model][2]
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    model = build(args.model, "meta")
    # reset_kept=False: the embedding is kept (the model's own init draws it from the global RNG, on a
    # DTensor not the unsharded draw); the floor's zeros stay in it on both sides of the comparison
    plan = idinit.plan(model, reset_kept=False)
    plan_s = time.perf_counter() - t0
    mesh = init_device_mesh(device.type, (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device=device)
    shards = [p.to_local() for p in model.parameters()]

    def floor():
        with torch.no_grad():
            for s in shards:
                s.zero_()

    def seeded_apply():
        plan.apply(model, generator=torch.Generator().manual_seed(0))

    floor_ms, floor_all = attempt("floor", failures, lambda: median_ms(floor, device, args.repeat), (None, []))
    apply_ms, apply_all = attempt("apply", failures, lambda: median_ms(seeded_apply, device, args.repeat),
                                  (None, []))
    sharded = attempt("checksums (sharded)", failures, lambda: checksums(model), {})

    def whole_init_():  # the user's one call on the sharded model (plan included), timed once
        t0 = time.perf_counter()
        # keep_model_values=False: after to_empty() the values are memory, not values the model set
        idinit.init_(model, generator=torch.Generator().manual_seed(1), keep_model_values=False)
        if cuda:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) * 1e3

    init_ms = attempt("init_ on the sharded model", failures, whole_init_)
    sharded_init = attempt("checksums (sharded init_)", failures, lambda: checksums(model), {}) \
        if init_ms is not None else {}
    per_rank = [None] * world
    dist.all_gather_object(per_rank, {"rank": rank, "floor_ms": floor_ms, "apply_ms": apply_ms,
                                      "init_ms_one_run": init_ms, "floor_runs": floor_all,
                                      "apply_runs": apply_all, "failures": failures})
    del model, shards
    gc.collect()  # FSDP's state holds the modules in reference cycles
    if cuda:
        torch.cuda.empty_cache()

    if rank == 0:
        single = {}

        def reference():
            model = build(args.model, str(device))
            with torch.no_grad():  # the sharded model's kept parameters (embeddings) hold the floor's zeros
                for p in model.parameters():
                    p.zero_()
            params = [p for p in model.parameters()]
            def floor_one():
                with torch.no_grad():
                    for p in params:
                        p.zero_()

            single["floor_ms"] = median_ms(floor_one, device, args.repeat, False)[0]
            single["apply_ms"] = median_ms(lambda: plan.apply(model, generator=torch.Generator().manual_seed(0)),
                                           device, args.repeat, False)[0]
            single["n_params"] = sum(p.numel() for p in params)
            found = checksums(model)
            t0 = time.perf_counter()
            idinit.init_(model, generator=torch.Generator().manual_seed(1), keep_model_values=False)
            if cuda:
                torch.cuda.synchronize(device)
            single["init_ms_one_run"] = (time.perf_counter() - t0) * 1e3
            single["init_checksums"] = checksums(model)
            return found

        unsharded = attempt("unsharded reference", failures, reference, {})
        differ = [n for n in unsharded if unsharded[n] != sharded.get(n)]
        compared = bool(unsharded) and bool(sharded)
        init_reference = single.pop("init_checksums", {})
        init_differ = [n for n in init_reference if init_reference[n] != sharded_init.get(n)]
        init_compared = bool(init_reference) and bool(sharded_init)
        n_params = single.get("n_params", 0)
        machine = torch.cuda.get_device_name(device) if cuda else "CPU"
        report = {
            "model": args.model, "parameters": n_params, "dtype": str(dtype), "world": world, "device": machine,
            "torch": torch.__version__, "plan_s": plan_s, "per_rank": per_rank, "single_device": single,
            "checksum_parameters": len(unsharded), "checksum_differ": differ,
            "checksum_equal": compared and not differ, "init_checksum_differ": init_differ,
            "init_checksum_equal": init_compared and not init_differ, "failures_rank0": failures,
            "kept_by_the_plan_zero_on_both_sides": [e.name for e in plan if e.init == "keep"],
            "command": "torchrun --nproc-per-node %d %s" % (world, " ".join(sys.argv)),
        }

        def fmt(value, spec=".2f"):
            return "failed" if value is None else format(value, spec)

        lines = [f"# FSDP2 IDInit of {args.model} ({n_params / 1e9:.2f} B parameters, {dtype}) on {world} x {machine}",
                 "", f"command: `{report['command']}`; torch {torch.__version__}; median of {args.repeat} after a "
                 "warm-up", "",
                 "| rank | zero_() on its shards (ms) | Plan.apply (ms) | x floor | init_ whole, one run (ms) |",
                 "|---|---|---|---|---|"]
        for r in per_rank:
            ratio = r["apply_ms"] / r["floor_ms"] if r["apply_ms"] and r["floor_ms"] else None
            lines.append(f"| {r['rank']} | {fmt(r['floor_ms'])} | {fmt(r['apply_ms'])} | {fmt(ratio)} "
                         f"| {fmt(r['init_ms_one_run'], '.1f')} |")
        if single:
            lines += ["", f"unsharded on one device: zero_() floor {fmt(single.get('floor_ms'))} ms, Plan.apply "
                          f"{fmt(single.get('apply_ms'))} ms, init_ one run {fmt(single.get('init_ms_one_run'), '.1f')} ms"]
        lines += [f"model built and planned on the meta device: {plan_s:.2f} s",
                  f"checksums of {len(unsharded)} parameters, sharded vs unsharded: "
                  + ("not compared (a step failed)" if not compared else "all equal" if not differ
                     else f"{len(differ)} differ: {', '.join(differ[:10])}"),
                  "checksums after `idinit.init_` (embedding by the model's own init, on gathered values), "
                  "sharded vs unsharded: "
                  + ("not compared (a step failed)" if not init_compared else "all equal" if not init_differ
                     else f"{len(init_differ)} differ: {', '.join(init_differ[:10])}")]
        for r in per_rank:
            for label, message in r["failures"].items():
                lines.append(f"rank {r['rank']} failed at {label}: {message}")
        for label, message in failures.items():
            if label == "unsharded reference":
                lines.append(f"rank 0 failed at {label}: {message}")
        lines += ["", "```json", json.dumps(report, indent=1), "```", ""]
        with open(args.out, "w") as f:
            f.write("\n".join(lines))
        print("\n".join(lines[:-4]))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
