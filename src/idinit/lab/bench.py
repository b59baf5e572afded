"""``idinit bench``: training throughput of the lab's step, as ratios to the eager step measured in
the same run. Rows: eager; ``torch.compile(mode="reduce-overhead")``; N processes training at once
on the same device (aggregate images/s); N models packed into one grouped network
(:mod:`idinit.lab.train.packed`, the step of ``idinit run --pack N``).

Every row runs the real training step of :mod:`idinit.lab.train.loop` (bf16 autocast and
channels_last on CUDA, fused SGD, the device-resident loader with crop/flip) on synthetic uint8
images, so data, step and optimiser are what a run pays for. Timing: warm-up steps first (they
include compilation), then ``steps`` steps between two device synchronisations.
"""
from __future__ import annotations

import json
import multiprocessing
import pathlib
import queue
import statistics
import time

import torch

EPOCH_IMAGES = 40_000  # the shared protocol's training set


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(train_step, epoch_batches, warmup: int, steps: int, dev, barrier=None) -> tuple[float, float, float]:
    """Run ``warmup`` then ``steps`` training steps over ``epoch_batches(epoch)``; return
    (warm-up seconds, start of the timed window, its seconds). The timed steps start at epoch 1000,
    so they never reuse the warm-up's batches; ``barrier`` lines up concurrent processes."""

    def run(count: int, epoch: int) -> None:
        done = 0
        while done < count:
            for batch in epoch_batches(epoch):
                train_step(batch)
                done += 1
                if done == count:
                    return
            epoch += 1

    t0 = time.perf_counter()
    run(warmup, 0)
    _sync(dev)
    warmup_s = time.perf_counter() - t0
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    run(steps, 1000)
    _sync(dev)
    return warmup_s, t0, time.perf_counter() - t0


def time_training(arch: str, device: str, batch_size: int, steps: int, compile: bool, warmup: int = 8,
                  barrier=None) -> dict:
    """Seconds per step of the lab's training step for ``arch`` (one model)."""
    from .data import DeviceLoader
    from .models import CifarResNet, parse_arch
    from .train import RunConfig, make_optimizer
    from .train.loop import _make_step

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    config = RunConfig(arch=arch, init="default", batch_size=batch_size)
    torch.manual_seed(0)
    model = CifarResNet(parse_arch(arch)).to(dev, memory_format=torch.channels_last if cuda else torch.preserve_format)
    optimizer = make_optimizer(model, config, dev)
    n_images = batch_size * min(steps + warmup, 16)
    images = torch.randint(0, 256, (n_images, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_images,))
    loader = DeviceLoader(images, labels, batch_size, device=dev, train=True, channels_last=cuda,
                          dtype=torch.bfloat16 if cuda else torch.float32)
    eager = _make_step(model, config, cuda, dev.type)
    step = torch.compile(eager, mode="reduce-overhead", dynamic=False) if compile else eager

    def train_step(batch) -> None:
        x, y = batch
        if compile:
            torch.compiler.cudagraph_mark_step_begin()
        loss, _ = step(x, y, None, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup_s, t0, seconds = _time_steps(train_step, loader.epoch, warmup, steps, dev, barrier)
    return {"step_s": seconds / steps, "images_per_s": batch_size * steps / seconds, "warmup_s": warmup_s,
            "start": t0, "end": t0 + seconds}


def time_packed(n: int, arch: str, device: str, batch_size: int, steps: int, compile: bool, warmup: int = 8) -> dict:
    """Seconds per step of ``n`` models of ``arch`` trained as one packed network (each its own
    data, optimiser and batch of ``batch_size``), with the packed runner's own step."""
    from .data import DeviceLoader
    from .models import CifarResNet, parse_arch
    from .models.packed_resnet import PackedCifarResNet
    from .train import RunConfig, make_optimizer
    from .train.packed import _member_forward_loss

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    configs = [RunConfig(arch=arch, init="default", batch_size=batch_size, seed=k) for k in range(n)]
    torch.manual_seed(0)
    members = [CifarResNet(parse_arch(arch)).to(dev, memory_format=memory_format) for _ in range(n)]
    optimizers = [make_optimizer(m, c, dev) for m, c in zip(members, configs)]
    packed = PackedCifarResNet(members).to(dev)
    n_images = batch_size * min(steps + warmup, 16)
    images = torch.randint(0, 256, (n_images, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_images,))
    loaders = [DeviceLoader(images, labels, batch_size, device=dev, train=True, seed=k,
                            dtype=torch.bfloat16 if cuda else torch.float32) for k in range(n)]
    eager = _member_forward_loss(packed, configs, cuda, dev.type, memory_format)
    step = torch.compile(eager, mode="reduce-overhead", dynamic=False) if compile else eager
    no_perm = torch.zeros((n, batch_size), dtype=torch.int64, device=dev)
    no_lam = torch.ones(n, device=dev)

    def train_step(batches) -> None:
        xs = torch.stack([x for x, _ in batches])
        ys = torch.stack([y for _, y in batches])
        if compile:
            torch.compiler.cudagraph_mark_step_begin()
        total, _, _ = step(xs, ys, no_perm, no_lam)
        total.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def epoch_batches(epoch):
        return zip(*(loader.epoch(epoch) for loader in loaders))

    warmup_s, _, seconds = _time_steps(train_step, epoch_batches, warmup, steps, dev)
    return {"step_s": seconds / steps, "images_per_s": n * batch_size * steps / seconds, "warmup_s": warmup_s}


def _concurrent_worker(arch, device, batch_size, steps, compile, barrier, results):
    try:
        results.put(time_training(arch, device, batch_size, steps, compile, barrier=barrier))
    except Exception as err:  # report, do not hang the others at the barrier
        barrier.abort()
        results.put({"error": f"{type(err).__name__}: {err}"})


def time_concurrent(n: int, arch: str, device: str, batch_size: int, steps: int, compile: bool) -> dict:
    """``n`` processes each training a model at once; their timed windows start together."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n, timeout=600), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(arch, device, batch_size, steps, compile, barrier, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=900) for _ in procs]  # a crashed process must not hang the bench
    except queue.Empty as err:
        for p in procs:
            p.kill()
        raise RuntimeError(f"{n} concurrent processes: no result within 900 s") from err
    for p in procs:
        p.join()
    errors = [o["error"] for o in out if "error" in o]
    if errors:
        raise RuntimeError(f"concurrent run failed: {errors[0]}")
    # Aggregate over the common window: images of all processes over the span from first start to last end.
    span = max(o["end"] for o in out) - min(o["start"] for o in out)
    return {"images_per_s": n * batch_size * steps / span, "per_process_images_per_s":
            statistics.fmean(o["images_per_s"] for o in out), "step_s": span / steps,
            "warmup_s": max(o["warmup_s"] for o in out)}


def run_bench(device: str = "cuda", archs=("resnet56",), batch_size: int = 1024, steps: int = 30,
              concurrent=(4,), packed=(), compile: bool = True, out=None) -> list[dict]:
    dev = torch.device(device)
    compile = compile and dev.type == "cuda"  # inductor on CPU is slow to build and not what we measure
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"idinit bench on {name}, torch {torch.__version__}, batch {batch_size}, {steps} timed steps", flush=True)
    rows = []
    for arch in archs:
        reference = None

        def add(label, result, models=1):
            nonlocal reference
            ips = result["images_per_s"]
            reference = reference or ips
            row = {"arch": arch, "config": label, "models": models, "images_per_s": ips,
                   "s_per_epoch_per_model": EPOCH_IMAGES * models / ips, "ratio_to_eager": ips / reference,
                   "warmup_s": result.get("warmup_s")}
            rows.append(row)
            print(f"{arch:<10} {label:<34} {ips:>10.0f} img/s  {row['s_per_epoch_per_model']:>6.2f} s/epoch per model"
                  f"  x{row['ratio_to_eager']:.2f} of eager  (warm-up {row['warmup_s']:.0f} s)", flush=True)

        add("eager", time_training(arch, device, batch_size, steps, False))
        if compile:
            try:
                add("compiled (reduce-overhead)", time_training(arch, device, batch_size, steps, True))
            except Exception as err:
                print(f"{arch:<10} compiled: FAILED {type(err).__name__}: {err}", flush=True)
        for n in concurrent:
            try:
                res = time_concurrent(n, arch, device, batch_size, steps, compile)
                add(f"{n} processes at once{' (compiled)' if compile else ''}", res, models=n)
            except Exception as err:
                print(f"{arch:<10} {n} processes: FAILED {type(err).__name__}: {err}", flush=True)
        for n in packed:
            try:
                add(f"{n} models packed{' (compiled)' if compile else ''}",
                    time_packed(n, arch, device, batch_size, steps, compile), models=n)
            except Exception as err:
                print(f"{arch:<10} {n} packed: FAILED {type(err).__name__}: {err}", flush=True)
    print("\nratios are images/s of all models together over one eager model's, same run, same device")
    if out:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": name, "torch": torch.__version__, "batch_size": batch_size,
                                    "steps": steps, "rows": rows}, indent=2))
    return rows
