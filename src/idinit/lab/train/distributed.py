"""One run trained data-parallel over several processes (DistributedDataParallel), issue 12 §3.

Every process holds the whole data set and draws the same epoch order, augmentation and mixup
(they depend only on seed and epoch); each takes its ``1/world`` of every batch, and DDP averages
the gradients, so the processes together take exactly the one-process step (up to the order of
floating-point sums). Rank 0 alone writes the run folder. BN models get synchronised batch
statistics (``SyncBatchNorm``, CUDA only) so that they too match the one-process run.

On GPUs, under torchrun (one process per GPU)::

    torchrun --nproc_per_node 2 -m idinit.lab.train.distributed --config run.json --out runs/x --device cuda

On the CPU (tests), :func:`spawn_data_parallel` starts the processes itself (gloo backend).
"""
from __future__ import annotations

import argparse
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .config import RunConfig
from .loop import train_run


def train_data_parallel(config: RunConfig, run_dir, *, device="cpu", **runtime) -> dict:
    """Train ``config`` as one process of an initialised process group (torchrun sets RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); on CUDA each process uses ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return train_run(config, run_dir, device=device, **runtime)
    finally:
        if own_group:
            dist.destroy_process_group()


def _silent(message: str) -> None:
    pass


def _spawned(rank: int, world: int, port: int, config: dict, run_dir: str, runtime: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    runtime = {**runtime, "log": print if rank == 0 else _silent}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train_data_parallel(RunConfig.from_dict(config), run_dir, device="cpu", **runtime)
    finally:
        dist.destroy_process_group()


def spawn_data_parallel(config: RunConfig, run_dir, processes: int = 2, threads: int = 1, **runtime) -> None:
    """Train ``config`` on the CPU in ``processes`` processes (gloo) and wait for them; the summary
    is in ``run_dir``. ``runtime``: keyword arguments of ``train_run`` (``data``, ``dtype``, ...)."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime.pop("log", None)  # a closure cannot cross into spawned processes: rank 0 prints
    mp.spawn(_spawned, args=(processes, port, config.to_dict(), str(run_dir), runtime, threads), nprocs=processes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train one run data-parallel (run under torchrun).")
    parser.add_argument("--config", required=True, help="a RunConfig as JSON (e.g. a run folder's config.json)")
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", help="dataset folder (default: $IDINIT_DATA or shared/data)")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = RunConfig.from_dict(json.load(handle))
    summary = train_data_parallel(config, args.out, device=args.device, data_dir=args.data)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
