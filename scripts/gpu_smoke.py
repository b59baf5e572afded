"""GPU smoke test of the lab's training paths (run by scripts/gpu_smoke_bench.sh):

1. every model variant (7 inits x option A/B) trains a few steps eagerly on CUDA with bf16
   autocast and channels_last;
2. a compiled (``reduce-overhead``) run stops after epoch 1 and resumes: records 1, 2 exactly once;
3. a pack of 4 runs trains compiled and matches in structure what train_run writes.

Prints one line per check and exits non-zero if any fails.

    python3 scripts/gpu_smoke.py DATA_DIR OUT_DIR [--device cpu --tiny]   # the CPU form checks the script itself
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

from idinit.lab.models import INITS
from idinit.lab.train import RunConfig, read_records, train_run
from idinit.lab.train.loop import load_run_data
from idinit.lab.train.packed import train_packed


def main(data_dir: str, out: str, device: str = "cuda", tiny: bool = False) -> int:
    out = pathlib.Path(out)
    cuda = device.startswith("cuda")
    size = dict(arch="resnet8", batch_size=64, train_limit=128, eval_limit=128) if tiny else dict(
        arch="resnet20", batch_size=512, train_limit=2048, eval_limit=2000)
    base = RunConfig(epochs=1, lr=0.1, train_chunks=[3], target_accuracy=0.2, **size)
    data = load_run_data(base, data_dir)
    failures = []

    def check(label, fn):
        t0 = time.perf_counter()
        try:
            detail = fn()
            print(f"OK   {label} ({time.perf_counter() - t0:.1f} s) {detail or ''}", flush=True)
        except Exception as err:
            failures.append(label)
            print(f"FAIL {label} ({time.perf_counter() - t0:.1f} s): {type(err).__name__}: {err}", flush=True)

    for init in INITS:
        for shortcut in ("A", "B"):
            config = base.replace(name=f"{init}-{shortcut}", init=init, shortcut=shortcut)

            def one(config=config):
                s = train_run(config, out / "variants" / config.run_id, device=device, data=data, compile=False,
                              log=print)
                assert s["finished"] and s["amp"] == s["channels_last"] == cuda and s["final_eval_acc"] is not None, s
                return f"loss {read_records(out / 'variants' / config.run_id / 'records.jsonl')[0]['train_loss']:.3f}"

            check(f"eager{' bf16 channels_last' if cuda else ''} {init} {shortcut}", one)

    def compiled_resume():
        config = base.replace(name="compiled-resume", init="idinit", epochs=2, mixup_alpha=1.0, warmup_epochs=1)
        folder = out / "compiled" / config.run_id
        first = train_run(config, folder, device=device, data=data, stop_after_epoch=1, log=print)
        assert not first["finished"] and first["compiled"] == cuda, first
        second = train_run(config, folder, device=device, data=data, log=print)
        epochs = [r["epoch"] for r in read_records(folder / "records.jsonl")]
        assert second["finished"] and second["compiled"] == cuda and epochs == [1, 2], (second, epochs)
        return f"epochs {epochs}, {second['train_seconds']:.1f} s of training"

    check(f"{'compiled ' if cuda else ''}run, stop after epoch 1, resume", compiled_resume)

    def packed_compiled():
        configs = [base.replace(name=f"pack-{init}", init=init, epochs=2) for init in ("idinit", "kaiming", "zero_gamma", "zero")]
        summaries = train_packed(configs, [out / "packed" / c.run_id for c in configs], device=device, data=data, log=print)
        assert all(s["finished"] and s["compiled"] == cuda for s in summaries), summaries
        return json.dumps({s["name"]: round(s["final_eval_acc"], 3) for s in summaries})

    check(f"packed x4{' compiled' if cuda else ''}", packed_compiled)
    print(f"smoke: {len(failures)} failure(s) {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="ResNet-8 on 128 images (a CPU check of this script)")
    args = parser.parse_args()
    sys.exit(main(args.data_dir, args.out_dir, args.device, args.tiny))
