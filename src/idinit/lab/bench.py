"""``idinit bench``: throughput of the lab's training step on one device, in seconds per
run-epoch (one run's 40k-image CIFAR epoch: a pack of N runs counts N run-epochs per pack-epoch),
with ratios to references measured in the same call.

Every row times the step ``idinit run`` takes, :class:`~idinit.lab.train.step.TrainStep`, over the
device-resident loader (crop, flip) on synthetic uint8 images: one run alone
(:func:`~idinit.lab.train.forward.alone`) or a pack of N runs as one grouped network
(:func:`~idinit.lab.train.forward.packed`, ``idinit run --pack N``); bf16 autocast, channels_last
and ``torch.compile`` on CUDA, fused SGD. Warm-up steps (compile, cuDNN autotuning, CUDA-graph
recording) are timed apart from the ``steps`` timed steps between two device synchronisations.

What rows a call measures, and the search over pack sizes and layouts: :mod:`idinit.lab.bench_plans`.
"""
from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import pathlib
import queue
import re
import signal
import threading
import time
from dataclasses import dataclass

import torch

from .train.step import COMPILE_MODE

EPOCH_IMAGES = 40_000  # the shared protocol's training set
EVAL_IMAGES = 11_000   # evaluated after every epoch: 10k evaluation + 1k test images
# Issue 12's measurement (one H200, torch 2.11, ResNet-56, batch 1024), the "before" of this work.
ISSUE_BASELINE = {"eager alone": 0.94, "compiled alone": 0.62, "8 packed, compiled": 0.44, "target": 0.22}


@dataclass(frozen=True)
class Variant:
    """One way to train: ``pack`` runs of ``arch`` (1: a run alone), compiled or not, with
    PackedCifarResNet's ``dense_channels``, TrainStep's ``compile_mode``, and the activations'
    layout (``channels_last`` None: the lab's default, channels_last on CUDA only)."""

    arch: str = "resnet56"
    pack: int = 1
    compile: bool = False
    compile_mode: str = COMPILE_MODE
    dense_channels: int = 0
    channels_last: bool | None = None

    @property
    def label(self) -> str:
        how = "alone" if self.pack == 1 else f"pack {self.pack}"
        if self.pack > 1:
            how += " grouped" if self.dense_channels == 0 else f" dense<={self.dense_channels}ch"
        layout = {None: "", True: " channels_last", False: " contiguous"}[self.channels_last]
        return f"{self.arch} {how}{layout} " + (f"compiled {self.compile_mode}" if self.compile else "eager")


class BenchTimeout(BaseException):
    """A row ran past its time limit (a BaseException, so TrainStep's compile fallback lets it through)."""


class _TimeLimit:
    """Raise :class:`BenchTimeout` in the main thread after ``seconds`` (no limit off the main
    thread or without SIGALRM)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.active = (seconds is not None and hasattr(signal, "SIGALRM")
                       and threading.current_thread() is threading.main_thread())

    def _fire(self, signum, frame):
        raise BenchTimeout(f"over its time limit of {self.seconds:.0f} s")

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 0.01))
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(variant: Variant, device: str, batch_size: int, steps: int, warmup: int = 8, barrier=None,
                 profile_path=None, profile_steps: int = 5, eval_images: int = 0) -> dict:
    """Time ``warmup`` then ``steps`` training steps of ``variant``; returns seconds per step,
    images/s of all members, seconds per run-epoch, warm-up seconds, and (``eval_images > 0``)
    the seconds one evaluation pass over that many images costs per run. ``profile_path``: also
    profile ``profile_steps`` steps and write the tables there (:func:`write_profile`)."""
    from .data import DeviceLoader
    from .models import CifarResNet, parse_arch
    from .train import RunConfig, make_optimizer
    from .train import forward as fwd
    from .train.loop import evaluate_members
    from .train.step import TrainStep

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        # A freshly spawned process (scripts/gpu_scaling.py) has no CUDA context yet, and resetting
        # the statistics of an uninitialised device raises "Invalid device argument".
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    channels_last = cuda if variant.channels_last is None else variant.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    configs = [RunConfig(arch=variant.arch, init="default", batch_size=batch_size, seed=k) for k in range(variant.pack)]
    torch.manual_seed(0)
    members = [CifarResNet(parse_arch(variant.arch)).to(dev, memory_format=memory_format) for _ in configs]
    optimizers = [make_optimizer(m, c, dev) for m, c in zip(members, configs)]
    if variant.pack > 1:
        forward = fwd.packed(members, memory_format, variant.dense_channels)
    else:
        forward = fwd.alone(members[0])
    x_dtype = torch.bfloat16 if cuda else torch.float32
    n_images = batch_size * min(steps + warmup, 16)
    images = torch.randint(0, 256, (n_images, 32, 32, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_images,))
    loaders = [DeviceLoader(images, labels, batch_size, device=dev, train=True, seed=c.seed, channels_last=channels_last,
                            dtype=x_dtype) for c in configs]
    messages: list[str] = []
    step = TrainStep(forward.train, configs, optimizers, amp=cuda, device_type=dev.type, compile=variant.compile,
                     steps_per_epoch=len(loaders[0]), compile_mode=variant.compile_mode, log=messages.append)
    no_mixup = [None] * variant.pack
    forward.module.train()

    def run(count: int, epoch: int) -> None:
        done = 0
        while done < count:
            for i, batches in enumerate(zip(*(loader.epoch(epoch) for loader in loaders))):
                step(0, i, [x for x, _ in batches], [y for _, y in batches], no_mixup, no_mixup)
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
    run(steps, 1000)  # other epochs than the warm-up's: no batch is reused
    _sync(dev)
    seconds = time.perf_counter() - t0
    images_per_s = variant.pack * batch_size * steps / seconds
    out = {"step_s": seconds / steps, "images_per_s": images_per_s, "s_per_run_epoch": EPOCH_IMAGES / images_per_s,
           "warmup_s": warmup_s, "start": t0, "end": t0 + seconds, "compiled": step.compiled,
           "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None}
    if variant.compile and not step.compiled:
        out["note"] = "compile FAILED, timed eagerly: " + " | ".join(messages)
    if profile_path is not None:
        try:  # a profiler failure must not cost the row its timing
            out["profile"] = write_profile(lambda count: run(count, 2000), dev, profile_steps, profile_path,
                                           f"{variant.label}, batch {batch_size} per run")
        except Exception as err:
            note = f"profile FAILED: {type(err).__name__}: {str(err)[:200]}"
            out["note"] = f"{out['note']}; {note}" if "note" in out else note
    if eval_images:
        eval_loader = DeviceLoader(torch.randint(0, 256, (eval_images, 32, 32, 3), dtype=torch.uint8),
                                   torch.randint(0, 10, (eval_images,)), configs[0].eval_batch_size, device=dev,
                                   train=False, channels_last=channels_last,
                                   dtype=x_dtype)
        evaluate_members(forward, eval_loader, cuda)  # warm-up: cuDNN autotuning of the eval shapes
        _sync(dev)
        t0 = time.perf_counter()
        evaluate_members(forward, eval_loader, cuda)
        out["eval_s_per_run"] = (time.perf_counter() - t0) / variant.pack
    return out


# Kernel families of a training step, by kernel name (first match wins).
KERNEL_FAMILIES = (
    ("convolution (cuDNN/CUTLASS)", re.compile(r"conv|cudnn|xmma|implicit|dgrad|wgrad|cutlass|gemm|sm\d\d_", re.I)),
    ("batch norm (eager kernels)", re.compile(r"batch_?norm|bn_(fw|bw)", re.I)),
    ("optimiser", re.compile(r"multi_tensor|sgd|adam|foreach", re.I)),
    ("inductor-fused (triton)", re.compile(r"^triton_", re.I)),
    ("copies, casts, cat", re.compile(r"copy|memcpy|memset|cat|fill", re.I)),
    ("other eager elementwise/reduce", re.compile(r"elementwise|vectorized|reduce|index|scatter|gather", re.I)),
)


def write_profile(run_steps, device: torch.device, steps: int, path, title: str) -> dict:
    """Profile ``run_steps(steps)`` with torch.profiler and write to ``path``: device time per
    step by kernel family, device-busy against wall time (launch-bound when busy << wall), and the
    top 20 kernels by self device time (self CPU time on a CPU). Returns the family totals."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        run_steps(steps)
        _sync(device)
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    events = prof.key_averages()

    def self_ms(e) -> float:
        us = getattr(e, "self_device_time_total", None) if cuda else e.self_cpu_time_total
        if us is None:  # older torch
            us = getattr(e, "self_cuda_time_total", 0)
        return us / 1e3 / steps

    if cuda:  # the kernels themselves (a CPU op's self device time repeats its kernels')
        events = [e for e in events if str(e.device_type).split(".")[-1] != "CPU"]
    timed = sorted(((self_ms(e), e) for e in events if self_ms(e) > 0), key=lambda t: -t[0])
    busy = sum(ms for ms, _ in timed)
    families: dict[str, float] = {}
    for ms, e in timed:
        family = next((name for name, pattern in KERNEL_FAMILIES if pattern.search(e.key)), "other")
        families[family] = families.get(family, 0.0) + ms
    unit = "device" if cuda else "CPU"
    lines = [f"profile: {title}", f"{steps} steps profiled on {device_name(device)}, torch {torch.__version__}",
             f"wall {wall_ms:.2f} ms per step (under the profiler); {unit} busy {busy:.2f} ms per step "
             f"({100 * busy / wall_ms:.0f}% of wall: near 100% = bound by the {unit}'s work, far below = by launches "
             "and host code)"]
    if not timed:
        lines.append("no kernels recorded (the profiler may not see kernels replayed inside CUDA graphs; the eager "
                     "profile of the same pack shows them)")
    lines += ["", f"self {unit} time per step by kernel family:"]
    for name, ms in sorted(families.items(), key=lambda t: -t[1]):
        lines.append(f"  {name:<34} {ms:>9.2f} ms  {100 * ms / busy if busy else 0:>5.1f}%")
    lines += ["", f"top 20 by self {unit} time per step:",
              f"  {'ms/step':>9}  {'%':>5}  {'calls/step':>10}  name"]
    for ms, e in timed[:20]:
        lines.append(f"  {ms:>9.3f}  {100 * ms / busy if busy else 0:>5.1f}  {e.count / steps:>10.1f}  {e.key[:110]}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"wall_ms_per_step": wall_ms, "busy_ms_per_step": busy, "families_ms_per_step": families,
            "file": str(path)}


def time_training(arch: str, device: str, batch_size: int, steps: int, compile: bool, warmup: int = 8,
                  barrier=None) -> dict:
    """Seconds per step of ``arch`` trained alone (``compile``: in TrainStep's default mode)."""
    return time_variant(Variant(arch, 1, compile), device, batch_size, steps, warmup, barrier)


def time_packed(n: int, arch: str, device: str, batch_size: int, steps: int, compile: bool, warmup: int = 8,
                dense_channels: int = 0) -> dict:
    """Seconds per step of ``n`` runs of ``arch`` trained as one packed network."""
    return time_variant(Variant(arch, n, compile, dense_channels=dense_channels), device, batch_size, steps, warmup)


def _concurrent_worker(variant, device, batch_size, steps, warmup, barrier, results):
    try:
        if torch.device(device).type == "cpu":
            torch.set_num_threads(1)  # processes sharing the CPU: one core each
        results.put({"device": device, **time_variant(variant, device, batch_size, steps, warmup, barrier)})
    except threading.BrokenBarrierError:  # another process failed and let this one go
        results.put({"device": device, "released": True})
    except Exception as err:  # report, do not hang the others at the barrier
        barrier.abort()
        results.put({"device": device, "error": f"{type(err).__name__}: {err}"})


def time_concurrent(jobs: list[tuple[Variant, str]], batch_size: int, steps: int, warmup: int = 8) -> dict:
    """Each ``(variant, device)`` trained by its own process at once (several on one GPU, or one pack
    per GPU: ``scripts/gpu_scaling.py``); their timed windows start together, after every process's
    warm-up (compile included). Images/s are all processes' images over the span from the first
    start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(jobs), timeout=1800), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(variant, device, batch_size, steps, warmup, barrier, results))
             for variant, device in jobs]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=3600) for _ in procs]  # a crashed process must not hang the caller
    except queue.Empty as err:
        for p in procs:
            p.kill()
        raise RuntimeError(f"{len(jobs)} concurrent processes: no result within 3600 s") from err
    for p in procs:
        p.join()
    errors = [o["error"] for o in out if "error" in o]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(jobs)} concurrent processes failed: {errors[0]}")
    if any(o.get("released") for o in out):
        raise RuntimeError("a concurrent process was released from the barrier with no error reported")
    span = max(o["end"] for o in out) - min(o["start"] for o in out)
    images_per_s = sum(v.pack for v, _ in jobs) * batch_size * steps / span
    return {"images_per_s": images_per_s, "s_per_run_epoch": EPOCH_IMAGES / images_per_s,
            "per_process_images_per_s": [o["images_per_s"] for o in out], "devices": [o["device"] for o in out],
            "step_s": span / steps, "warmup_s": max(o["warmup_s"] for o in out)}


def device_name(device: torch.device) -> str:
    return torch.cuda.getdevice_name(device) if device.type == "cuda" else "CPU"


class Bench:
    """Rows measured in one call, under an overall time budget and a limit per row."""

    def __init__(self, device: str, batch_size: int, steps: int, warmup: int, budget_s: float | None,
                 variant_s: float | None, profile_dir=None, eval_images: int = EVAL_IMAGES):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.batch_size, self.steps, self.warmup = batch_size, steps, warmup
        self.budget_s, self.variant_s = budget_s, variant_s
        self.profile_dir = None if profile_dir is None else pathlib.Path(profile_dir)
        self.eval_images = eval_images
        self.start = time.perf_counter()
        self.rows: list[dict] = []

    def left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - (time.perf_counter() - self.start)

    def estimate_s(self, variant: Variant) -> float:
        """A rough cost of a row on an H200 (compile ~1 s per layer of depth), scaled by batch."""
        depth = int(variant.arch[6:]) if variant.arch[6:].isdigit() else 56
        work = (self.warmup + self.steps) * depth * variant.pack * 4e-4 * self.batch_size / 1024
        return (8 + 1.1 * depth if variant.compile else 2) + work

    def run(self, variant: Variant, role: str | None = None, profile: str | None = None, eval: bool = False):
        """Measure one row; returns it, or None when it failed or was skipped (both are printed)."""
        label = variant.label
        left = self.left()
        if left is not None and left < self.estimate_s(variant):
            reason = f"about {self.estimate_s(variant):.0f} s needed, {max(left, 0):.0f} s of the budget left"
            print(f"  skipped {label}: {reason}", flush=True)
            self.rows.append({**dataclasses.asdict(variant), "label": label, "role": role, "skipped": reason})
            return None
        limit = min(x for x in (self.variant_s, left, float("inf")) if x is not None)
        limit = None if limit == float("inf") else limit
        profile_path = None
        if profile and self.profile_dir is not None:
            profile_path = self.profile_dir / f"profile-{profile}.txt"
        t0 = time.perf_counter()
        try:
            with _TimeLimit(limit):
                result = time_variant(variant, self.device, self.batch_size, self.steps, self.warmup,
                                      profile_path=profile_path, eval_images=self.eval_images if eval else 0)
        except (Exception, BenchTimeout) as err:
            message = f"{type(err).__name__}: {str(err)[:400]}"
            print(f"  FAILED {label} after {time.perf_counter() - t0:.0f} s: {message}", flush=True)
            self.rows.append({**dataclasses.asdict(variant), "label": label, "role": role, "error": message})
            return None
        finally:
            _clean_up(self.device)
        row = {**dataclasses.asdict(variant), "label": label, "role": role, "row_s": time.perf_counter() - t0,
               **{k: v for k, v in result.items() if k not in ("start", "end")}}
        self.rows.append(row)
        extra = f", eval {row['eval_s_per_run']:.3f} s per run" if "eval_s_per_run" in row else ""
        extra += f", peak {row['peak_gib']:.1f} GiB" if row.get("peak_gib") is not None else ""
        print(f"  {label:<46} {row['s_per_run_epoch']:>7.3f} s/run-epoch  {row['images_per_s']:>9.0f} img/s  "
              f"step {1e3 * row['step_s']:>7.1f} ms  warm-up {row['warmup_s']:>5.1f} s{extra}"
              f"{'  ' + row['note'] if 'note' in row else ''}", flush=True)
        return row


def _clean_up(device: torch.device) -> None:
    """Drop a row's compiled graphs and CUDA-graph memory pools before the next row."""
    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
