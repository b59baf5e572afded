"""Real training against the bench's step, in one process on the same synthetic data.

`idinit bench` timed a compiled pack of 8 ResNet-56 runs at 0.36 s per run-epoch on an H200, but the
Table 1 packs of 8 trained at 0.48-0.49 s (their records' per-epoch ``seconds``, evaluation apart).
This script measures both on one device and splits the real epoch, to find where the gap lies:

1. ``step``: :func:`idinit.lab.bench.time_variant`, ``steps`` timed steps between two syncs;
2. ``loop``: :func:`idinit.lab.train.loop.train` for ``epochs`` epochs on 40k synthetic images
   (the protocol's epoch), per-epoch train seconds and evaluation seconds from the records
   (median of epochs 2..E: epoch 1 compiles);
3. ``loop, no test1k``: the same without the 1k test set (one evaluation loader fewer);
4. with ``--profile``: a real run of 2 epochs under torch.profiler, its top operators by self CPU time
   (epoch 1 includes the compile, so read it for what the loop adds around the step, not for shares).

    python3 benchmarks/loop_vs_step.py --device cuda --arch resnet56 --pack 8 --epochs 4 --out loop_vs_step.md

On a CPU use tiny settings to check that it runs (``--arch resnet8 --pack 2 --images 2048 --batch 256``).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from idinit.lab.bench import Variant, time_variant
from idinit.lab.data.cifar10 import CIFAR10
from idinit.lab.train import RunConfig
from idinit.lab.train.loop import train


def synthetic(n_train: int, n_eval: int, n_test: int, seed: int = 0) -> CIFAR10:
    rng = np.random.default_rng(seed)

    def make(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)

    (xt, yt), (xe, ye) = make(n_train), make(n_eval)
    x1, y1 = make(n_test) if n_test else (None, None)
    return CIFAR10(xt, yt, xe, ye, x1, y1, "shared")


def time_loop(args, data: CIFAR10, profile: bool = False) -> dict:
    configs = [RunConfig(name=f"m{k}", arch=args.arch, init="kaiming", batch_size=args.batch, epochs=args.epochs,
                         lr=0.1, seed=k) for k in range(args.pack)]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [pathlib.Path(tmp) / c.run_id for c in configs]
        t0 = time.perf_counter()
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
            with torch_profile(activities=activities) as prof:
                train(configs, dirs, pack=args.pack > 1, device=args.device, data=data, checkpoint_every=10**6,
                      log=lambda m: None)
        else:
            train(configs, dirs, pack=args.pack > 1, device=args.device, data=data, checkpoint_every=10**6,
                  log=lambda m: None)
        wall = time.perf_counter() - t0
        records = [json.loads(line) for line in (dirs[0] / "records.jsonl").read_text().splitlines()]
    steady = records[1:] or records
    out = {"wall_s": wall, "epochs": len(records),
           "train_s_per_epoch": statistics.median(r["seconds"] for r in steady),
           "eval_s_per_epoch": statistics.median(r.get("eval_seconds", 0.0) for r in steady),
           "first_epoch_s": records[0]["seconds"]}
    out["s_per_run_epoch"] = out["train_s_per_epoch"] / args.pack * 40_000 / data.x_train.shape[0]
    if profile:
        out["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=40_000, help="training images per epoch (40k: the protocol)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the bench row")
    parser.add_argument("--profile", action="store_true", help="also profile a real run of 2 epochs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.pack < 1 or args.epochs < 2 or args.images < args.batch:
        parser.error("need --pack >= 1, --epochs >= 2 and --images >= --batch")
    out = pathlib.Path(args.out)
    if out.exists() and out.is_dir():
        parser.error(f"--out {out} is a folder; give a file path")
    n_eval = max(args.batch, args.images // 4)
    rows = {}
    step = time_variant(Variant(arch=args.arch, pack=args.pack, compile=args.device == "cuda"), args.device,
                        args.batch, args.steps, warmup=6)
    rows["step (idinit bench)"] = step["s_per_run_epoch"]
    loop = time_loop(args, synthetic(args.images, n_eval, 1000))
    rows["loop: training part of an epoch"] = loop["s_per_run_epoch"]
    no_test = time_loop(args, synthetic(args.images, n_eval, 0))
    rows["loop without the 1k test set"] = no_test["s_per_run_epoch"]
    lines = [f"# Real training against the bench's step: {args.arch}, pack {args.pack}, batch {args.batch}, "
             f"{args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}), torch {torch.__version__}",
             "", f"command: `python3 {' '.join(sys.argv)}`", "",
             "| row | s per run-epoch (40k images) | x step |", "|---|---|---|"]
    for label, value in rows.items():
        lines.append(f"| {label} | {value:.4f} | {value / rows['step (idinit bench)']:.2f} |")
    lines += ["", f"loop: first epoch {loop['first_epoch_s']:.1f} s (with the compile on CUDA), evaluation {loop['eval_s_per_epoch']:.3f} s "
              f"per pack-epoch ({no_test['eval_s_per_epoch']:.3f} s without the 1k test set), wall {loop['wall_s']:.0f} s "
              f"for {loop['epochs']} epochs"]
    out.write_text("\n".join(lines) + "\n")  # the timings survive a failing profile
    print("\n".join(lines))
    if args.profile:
        args.epochs = 2
        try:
            profiled = time_loop(args, synthetic(args.images, n_eval, 1000), profile=True)["profile"]
        except Exception as err:  # the profiler is a diagnosis: its failure is reported, not fatal
            profiled = f"profile FAILED: {type(err).__name__}: {str(err)[:300]}"
        with out.open("a") as handle:
            handle.write("\n".join(["", "## Profile of a real run, 2 epochs (self CPU time)", "", "```", profiled,
                                    "```", ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
