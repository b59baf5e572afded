"""Where ``Plan.apply`` spends its time, against the ``zero_()`` floor: operator and kernel counts per
parameter, device-busy time against wall time, and the top operators, from ``torch.profiler``.

    python benchmarks/apply_profile.py [--device cuda] [--model gpt2] [--scheme idinit] [--steps 3]

The model is built as ``benchmarks/init_apply.py`` builds it (meta device, then ``to_empty``), planned
with ``reset_kept=False`` (the pattern writer alone: embeddings kept), warmed up once, then ``--steps``
applies and ``--steps`` floors are profiled. Read the launch counts first: when the device is busy for
a small part of the wall time, the cost is launches and host code, not bytes.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from init_apply import MODELS, build, sync  # noqa: E402  (a sibling benchmark script)

import idinit  # noqa: E402


def profiled(step, device: str, steps: int):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    step()
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    return prof, wall_ms


def summary(label: str, prof, wall_ms: float, steps: int, n_params: int, device: str, top: int) -> str:
    events = prof.key_averages()
    cuda = device.startswith("cuda")
    aten = [e for e in events if e.key.startswith("aten::")]
    # top-level aten calls: those not called from another aten op are what Python issued
    calls = sum(e.count for e in aten) / steps
    lines = [f"## {label}", f"wall {wall_ms:.2f} ms per call; aten operator calls per call {calls:.0f} "
             f"({calls / n_params:.1f} per parameter tensor, {n_params} tensors)"]
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        launches = sum(e.count for e in kernels) / steps
        busy_ms = sum(e.self_device_time_total for e in kernels) / 1e3 / steps
        lines.append(f"device kernels per call {launches:.0f} ({launches / n_params:.1f} per tensor); device busy "
                     f"{busy_ms:.2f} ms = {100 * busy_ms / wall_ms:.0f}% of wall")
        rows = sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]
        lines.append("top kernels: ms per call, launches per call, name")
        lines += [f"  {e.self_device_time_total / 1e3 / steps:8.3f} {e.count / steps:7.0f}  {e.key[:100]}" for e in rows]
    rows = sorted(aten, key=lambda e: -e.self_cpu_time_total)[:top]
    lines.append("top host operators: self CPU ms per call, calls per call, name")
    lines += [f"  {e.self_cpu_time_total / 1e3 / steps:8.3f} {e.count / steps:7.0f}  {e.key}" for e in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="gpt2", choices=sorted(MODELS))
    parser.add_argument("--scheme", default="idinit")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args(argv)
    model = build(args.model, args.device)
    params = [p for p in model.parameters()]
    plan = idinit.plan(model, args.scheme, reset_kept=False)
    generator = torch.Generator(device=args.device).manual_seed(0)
    report = [f"# Plan.apply profile: {args.model} on {args.device} "
              f"({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), torch {torch.__version__}, "
              f"scheme {args.scheme}, {args.steps} profiled calls",
              f"command: `python benchmarks/apply_profile.py {' '.join(argv if argv is not None else sys.argv[1:])}`"]

    def floor():
        with torch.no_grad():
            for p in params:
                p.zero_()

    for label, step in ((f"Plan.apply ({args.scheme})", lambda: plan.apply(model, generator=generator)),
                        ("zero_() on every parameter (the floor)", floor)):
        prof, wall_ms = profiled(step, args.device, args.steps)
        report.append(summary(label, prof, wall_ms, args.steps, len(params), args.device, args.top))
    text = "\n\n".join(report)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
