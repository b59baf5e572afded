"""Pack a run folder into a few .tar.gz files small enough to come back from the GPU machine
(at most 8 files of 16 MiB per call): every run's config / records / summary, the experiment's
files and report, each finished run's final weights in float16 (``model_fp16.pt``), and the full
checkpoint of each unfinished run (so a later call can resume it) while the budget allows.

    python3 scripts/pack_results.py RUN_DIR OUT_DIR [--prefix NAME] [--max-files 6] [--part-mib 15]
"""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys
import tarfile

import torch

from idinit.lab.train.records import load_checkpoint

SMALL = ("config.json", "records.jsonl", "summary.json", "error.json")


def _fp16_weights(checkpoint: pathlib.Path) -> bytes:
    state = load_checkpoint(checkpoint)["model"]  # weights_only: a planted file cannot run code
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(half, buffer)
    return buffer.getvalue()


def collect(run_dir: pathlib.Path) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(essential entries, optional entries): names inside the archive and their bytes."""
    essential, optional = [], []
    for path in sorted(run_dir.iterdir()):
        if path.is_file():
            essential.append((path.name, path.read_bytes()))
    for config in sorted(run_dir.rglob("seed*/config.json")):
        folder = config.parent
        rel = folder.relative_to(run_dir).as_posix()
        for name in SMALL:
            if (folder / name).is_file():
                essential.append((f"{rel}/{name}", (folder / name).read_bytes()))
        checkpoint = folder / "checkpoint.pt"
        if not checkpoint.is_file():
            continue
        summary = folder / "summary.json"
        finished = summary.is_file() and json.loads(summary.read_text()).get("finished")
        if finished:
            essential.append((f"{rel}/model_fp16.pt", _fp16_weights(checkpoint)))
        else:
            optional.append((f"{rel}/checkpoint.pt", checkpoint.read_bytes()))
    return essential, optional


def pack(run_dir, out_dir, prefix: str, max_files: int, part_bytes: int) -> list[pathlib.Path]:
    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    essential, optional = collect(run_dir)
    parts: list[list[tuple[str, bytes]]] = [[]]
    sizes = [0]
    skipped = []
    for name, data in essential + optional:
        if sizes[-1] + len(data) > part_bytes and parts[-1]:
            if len(parts) == max_files:
                skipped.append(name)
                continue
            parts.append([])
            sizes.append(0)
        parts[-1].append((name, data))
        sizes[-1] += len(data)
    if skipped:
        parts[0].append(("SKIPPED.txt", ("\n".join(skipped) + "\n").encode()))
        print(f"pack_results: no room for {len(skipped)} file(s), listed in SKIPPED.txt: {skipped[:5]} ...",
              file=sys.stderr)
    paths = []
    for i, entries in enumerate(parts):
        path = out_dir / f"{prefix}-part{i}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in entries:
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
        print(f"pack_results: {path} ({path.stat().st_size / 2**20:.1f} MiB, {len(entries)} files)")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--prefix", help="archive name and top folder inside it (default: the run folder's name)")
    parser.add_argument("--max-files", type=int, default=6)
    parser.add_argument("--part-mib", type=float, default=15.0)
    args = parser.parse_args(argv)
    run_dir = pathlib.Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"run folder {run_dir} does not exist")
    pack(run_dir, args.out_dir, args.prefix or run_dir.name, args.max_files, int(args.part_mib * 2**20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
