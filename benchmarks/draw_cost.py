"""What one random draw costs against one ``zero_()`` pass, per element, on one tensor (issue 10 §1: why the
``kaiming`` scheme's apply is several times the floor).

    python benchmarks/draw_cost.py [--device cpu] [--shape 1024 4096] [--threads 1]

Rows (best of ``--repeat`` after a warm-up, thread CPU time on the CPU, synchronised wall time on CUDA):
``zero_()``; ``normal_`` and ``uniform_`` on the contiguous tensor; ``kaiming_normal_`` / ``kaiming_uniform_``;
and, for a weight stored transposed (HF ``Conv1D``), ``kaiming_normal_`` drawn on a fresh buffer of the
layer's shape then copied through the transpose (what ``Plan.apply`` did before) against drawn straight
into the storage (what it does now).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def best_ms(step, device: str, repeat: int) -> float:
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.thread_time
    step()
    times = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", type=int, nargs=2, default=[1024, 4096], help="stored (in, out), as Conv1D")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    w = torch.empty(args.shape, device=device)
    g = torch.Generator(device=device).manual_seed(0)

    def through_buffer():
        view = w.t()
        buffer = torch.empty(view.shape, device=device)
        nn.init.kaiming_normal_(buffer, generator=g)
        view.copy_(buffer)

    rows = [
        ("zero_()", lambda: w.zero_()),
        ("normal_", lambda: w.normal_(0.0, 0.02, generator=g)),
        ("uniform_", lambda: w.uniform_(-0.02, 0.02, generator=g)),
        ("kaiming_normal_", lambda: nn.init.kaiming_normal_(w, generator=g)),
        ("kaiming_uniform_(a=sqrt(5))", lambda: nn.init.kaiming_uniform_(w, a=5 ** 0.5, generator=g)),
        ("kaiming_normal_ of a transposed weight, via a buffer and a copy", through_buffer),
        ("kaiming_normal_ of a transposed weight, into the storage",
         lambda: nn.init.kaiming_normal_(w.t().transpose(0, 1), mode="fan_out", generator=g)),
    ]
    print(f"{device}, {args.threads} thread(s), tensor {tuple(args.shape)} float32, torch {torch.__version__}")
    print("| step | ms | x zero_() |\n|---|---|---|")
    floor = None
    for label, step in rows:
        ms = best_ms(step, device, args.repeat)
        floor = floor or ms
        print(f"| {label} | {ms:.2f} | {ms / floor:.1f} |")


if __name__ == "__main__":
    main()
