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
import multiprocessing
import pathlib
import platform
import sys

import torch


def _time_one(device: str, arch: str, pack: int, batch: int, steps: int, compile: bool, barrier, results) -> None:
    try:
        from idinit.lab.bench import time_packed

        if device == "cpu":
            torch.set_num_threads(1)
        # time_packed's own timing has no barrier: time a warm call first (compile, caches), then
        # line the processes up and time again.
        time_packed(pack, arch, device, batch, 1, compile, warmup=2)
        barrier.wait()
        result = time_packed(pack, arch, device, batch, steps, compile, warmup=2)
        import time

        end = time.time()
        results.put({"device": device, "images_per_s": result["images_per_s"], "end": end,
                     "start": end - pack * batch * steps / result["images_per_s"]})
    except Exception as err:  # report, do not hang the others at the barrier
        barrier.abort()
        results.put({"device": device, "error": f"{type(err).__name__}: {err}"})


def measure(devices: list[str], arch: str, pack: int, batch: int, steps: int, compile: bool) -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(devices), timeout=1800), ctx.Queue()
    procs = [ctx.Process(target=_time_one, args=(d, arch, pack, batch, steps, compile, barrier, results))
             for d in devices]
    for p in procs:
        p.start()
    out = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    errors = [o["error"] for o in out if "error" in o]
    if errors:
        raise RuntimeError(f"{len(errors)} process(es) failed: {errors[0]}")
    span = max(o["end"] for o in out) - min(o["start"] for o in out)
    return {"devices": devices, "images_per_s": len(devices) * pack * batch * steps / span,
            "per_device_images_per_s": [o["images_per_s"] for o in out]}


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
    one = measure(devices[:1], args.arch, args.pack, args.batch, args.steps, compile)
    print(f"1 device : {one['images_per_s']:>10.0f} img/s", flush=True)
    rows = {"one": one}
    if count > 1:
        every = measure(devices, args.arch, args.pack, args.batch, args.steps, compile)
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
