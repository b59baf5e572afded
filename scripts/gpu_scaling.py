"""Images/s of one pack on one GPU against one pack per GPU on every GPU of the host, in one call
(issue 12 §3): the multi-GPU scaling of ``idinit run --pack N`` on this machine.

Each GPU gets its own process timing the packed training step of ``idinit bench`` (synthetic
uint8 images on the device, the device loader's crop/flip, bf16 + channels_last, fused SGD,
``torch.compile`` unless ``--no-compile``). The processes start their timed steps together
(a barrier after their warm-up); the aggregate is all their images over the span from the first
start to the last end.

    python scripts/gpu_scaling.py --arch resnet56 --pack 8 --batch 1024 --steps 30 --out results/speed/gpu_scaling.json

On the CPU (a check of the script, not a measurement): ``--device cpu --gpus 2 --arch resnet8 --pack 2
--batch 16 --steps 2 --no-compile``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys

import torch

from idinit.lab.bench import Variant, time_concurrent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda", help="cuda (every GPU of the host) or cpu (a check)")
    parser.add_argument("--gpus", type=int, help="how many devices for the scaled row (default: all GPUs)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", help="JSON file for the result")
    args = parser.parse_args(argv)
    count = args.gpus or (torch.cuda.device_count() if args.device == "cuda" else 2)
    if count < 1:
        parser.error("no GPU found")
    devices = [f"cuda:{i}" for i in range(count)] if args.device == "cuda" else ["cpu"] * count
    compile = not args.no_compile and args.device == "cuda"
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({platform.machine()})"
    print(f"gpu_scaling on {count} x {name}, torch {torch.__version__}: {args.arch}, pack {args.pack}, "
          f"batch {args.batch} per model, {args.steps} timed steps, compile {compile}", flush=True)
    variant = Variant(args.arch, args.pack, compile)
    one = time_concurrent([(variant, devices[0])], args.batch, args.steps, warmup=2)
    print(f"1 device : {one['images_per_s']:>10.0f} img/s", flush=True)
    rows = {"one": one}
    if count > 1:
        every = time_concurrent([(variant, d) for d in devices], args.batch, args.steps, warmup=2)
        ratio = every["images_per_s"] / one["images_per_s"]
        print(f"{count} devices: {every['images_per_s']:>10.0f} img/s  = {ratio:.2f}x one device, "
              f"{ratio / count:.2f} per device", flush=True)
        rows.update(every=every, ratio=ratio, ratio_per_device=ratio / count)
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": name, "count": count, "torch": torch.__version__, "arch": args.arch,
                                    "pack": args.pack, "batch": args.batch, "steps": args.steps, "compile": compile,
                                    "command": "python scripts/gpu_scaling.py " + " ".join(sys.argv[1:]),
                                    **rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
