"""Speed of the tensor initialisers against torch.nn.init references, as ratios measured in one run.

    python benchmarks/init_speed.py [--device cuda] [--repeat 20]

References: `torch.nn.init.eye_` / `dirac_` (what a user would otherwise call for an identity) and
`torch.nn.init.zeros_` (the floor: one write pass over the tensor). Every idinit function costs one
`zero_()` plus O(D_out) index writes, so its time should stay within a small factor of `zeros_`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import idinit


def median_seconds(fn, tensor, repeat: int) -> float:
    fn(tensor)  # warm-up
    times = []
    for _ in range(repeat):
        if tensor.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(tensor)
        if tensor.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cases = {
        "linear 4096x4096": ((4096, 4096), torch.nn.init.eye_),
        "linear 16384x1024": ((16384, 1024), None),
        "conv 512x512x3x3": ((512, 512, 3, 3), torch.nn.init.dirac_),
        "conv 256x64x7x7": ((256, 64, 7, 7), None),
    }
    fns = {
        "zeros_ (floor)": torch.nn.init.zeros_,
        "identity_": lambda t: idinit.identity_(t),
        "channel_identity_": lambda t: idinit.channel_identity_(t),
        "zero_preserving_": idinit.zero_preserving_,
        "hadamard_": idinit.hadamard_,
    }
    print(f"device {args.device}, torch {torch.__version__}, median of {args.repeat}")
    print(f"{'case':<20} {'function':<20} {'ms':>9} {'x zeros_':>9} {'x torch ref':>12}")
    for case, (shape, reference) in cases.items():
        tensor = torch.empty(shape, device=args.device)
        median_seconds(torch.nn.init.normal_, tensor, 2)  # touch every page before timing anything
        floor = median_seconds(torch.nn.init.zeros_, tensor, args.repeat)
        ref = median_seconds(reference, tensor, args.repeat) if reference else None
        if ref:
            print(f"{case:<20} {reference.__name__:<20} {ref * 1e3:9.3f} {ref / floor:9.2f} {1.0:12.2f}")
        for name, fn in fns.items():
            s = median_seconds(fn, tensor, args.repeat)
            rel = f"{s / ref:12.2f}" if ref else f"{'-':>12}"
            print(f"{case:<20} {name:<20} {s * 1e3:9.3f} {s / floor:9.2f} {rel}")


if __name__ == "__main__":
    main()
