"""Run a list of configurations into ``<out>/<run_id>/`` folders, in this process or in several
worker processes, resuming whatever was left unfinished.

Workers pull runs (or packs of runs) from a queue, so a grid of unequal runs stays balanced. They
share the device, except that ``device="cuda"`` on a host with several GPUs gives them the GPUs
round-robin, and ``--pack N`` there starts one worker per GPU (:func:`plan_workers`). The data are
loaded once per process and shared by its runs. A ``deadline`` (seconds from the start) makes
every worker stop at an epoch boundary with a checkpoint in time for the results to be packed:
a later call with the same command resumes.
"""
from __future__ import annotations

import fcntl
import json
import multiprocessing
import pathlib
import queue
import time

import torch

from ..machine import die_with_parent, machine_description, machine_line
from ..train import RunConfig, load_run_data
from ..train import records as rec
from ..train.loop import cut_data, train_run
from ..train.packed import plan_packs, train_packed

EXPERIMENT_LOCK = ".experiment.lock"


def write_experiment_file(out_dir: pathlib.Path, experiment, runs: list[RunConfig], device: str, command: str | None):
    """``experiment.json``: what ran, with which command, on which machine (merged with earlier calls).

    Calls on several GPUs share one output folder and start together, so the read-append-write is done
    under an exclusive lock on ``.experiment.lock`` beside it: without it, two calls started in the same
    second each read the file before the other wrote it, and one call vanished from the record (it did on
    2026-11-30, two Fixup runs at lr 0.1)."""
    path = out_dir / "experiment.json"
    call = {"command": command, "machine": machine_line(machine_description(device)), "device": device,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": [r.run_id for r in runs]}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / EXPERIMENT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        previous = rec.read_json(path) if path.is_file() else {}
        rec.atomic_write_json(path, {"experiment": experiment.name, "version": experiment.version,
                                     "description": experiment.description, "notes": experiment.notes,
                                     "paper": experiment.paper, "order": [c.name for c in experiment.configs],
                                     "calls": [*previous.get("calls", []), call]})


class _DataCache:
    def __init__(self, data_dir):
        self.data_dir, self.loaded = data_dir, {}

    def get(self, config):
        if not isinstance(config, RunConfig):  # another task's configuration loads its own data
            key = config.data_key()
            if key not in self.loaded:
                self.loaded[key] = config.load_data(self.data_dir)
            return self.loaded[key]
        key = (config.dataset, config.protocol, json.dumps(config.train_chunks))
        if key not in self.loaded:
            self.loaded[key] = load_run_data(config.replace(train_limit=None, eval_limit=None), self.data_dir)
        return cut_data(self.loaded[key], config)


def _run_one(config, out_dir, device, cache, runtime, deadline, log) -> bool:
    """Train one run; on an error write ``error.json`` beside it and return False (the grid goes on)."""
    (out_dir / config.run_id / "error.json").unlink(missing_ok=True)  # from an earlier attempt
    try:
        # A configuration of another task (text classification) trains itself in the same folder format.
        train = train_run if isinstance(config, RunConfig) else type(config).train
        train(config, out_dir / config.run_id, device=device, data=cache.get(config), deadline=deadline,
              log=log, **runtime)
        return True
    except Exception as err:
        log(f"{config.run_id}: FAILED {type(err).__name__}: {err}")
        rec.atomic_write_json(out_dir / config.run_id / "error.json", {"error": f"{type(err).__name__}: {err}"})
        return False


def _run_group(group, out_dir, device, cache, runtime, deadline, log) -> bool:
    if len(group) == 1:
        return _run_one(group[0], out_dir, device, cache, runtime, deadline, log)
    return _run_pack(group, out_dir, device, cache, runtime, deadline, log)


def _worker(task_queue, out_dir, device, data_dir, runtime, deadline):
    die_with_parent()
    cache = _DataCache(data_dir)
    while deadline is None or time.time() < deadline:
        try:
            group = task_queue.get(timeout=5)  # dataclasses of importable classes: they pickle across spawn
        except queue.Empty:
            return
        _run_group(group, out_dir, device, cache, runtime, deadline, lambda m: print(m, flush=True))


def gpu_count(device: str) -> int:
    """GPUs a bare ``"cuda"`` may use (all of the host's); 1 for anything else."""
    dev = torch.device(device)
    return max(1, torch.cuda.device_count()) if dev.type == "cuda" and dev.index is None else 1


def plan_workers(device: str, workers: int, pack: int, tasks: int) -> list[str]:
    """The devices of the worker processes (one entry each; one entry: train in this process).
    Packs on a bare ``"cuda"`` default to one worker per GPU; never more workers than tasks."""
    count = workers if workers > 1 or pack == 1 else gpu_count(device)
    return worker_devices(device, max(1, min(count, tasks)))


def worker_devices(device: str, workers: int) -> list[str]:
    """One device per worker process: a bare ``"cuda"`` on a host with several GPUs spreads the
    workers over them round-robin (``cuda:0``, ``cuda:1``, ...); anything else is shared as given."""
    dev = torch.device(device)
    count = torch.cuda.device_count() if dev.type == "cuda" and dev.index is None else 0
    if count > 1:
        return [f"cuda:{i % count}" for i in range(workers)]
    return [device] * workers


def _run_pack(configs, out_dir, device, cache, runtime, deadline, log) -> bool:
    """Train a pack of runs as one grouped network (see ``train.packed``); errors as ``_run_one``."""
    for config in configs:
        (out_dir / config.run_id / "error.json").unlink(missing_ok=True)
    try:
        train_packed(configs, [out_dir / c.run_id for c in configs], device=device, data=cache.get(configs[0]),
                     deadline=deadline, log=log, **runtime)
        return True
    except Exception as err:
        log(f"pack {[c.run_id for c in configs]}: FAILED {type(err).__name__}: {err}")
        for config in configs:
            rec.atomic_write_json(out_dir / config.run_id / "error.json", {"error": f"{type(err).__name__}: {err}"})
        return False


def run_configs(runs: list[RunConfig], out_dir, *, device="cpu", data_dir=None, workers: int = 1,
                compile: bool | None = None, amp: bool | None = None, checkpoint_every: int = 1,
                deadline_s: float | None = None, pack: int = 1, log=print) -> None:
    """Train every run (resuming unfinished ones). ``pack > 1`` trains up to that many runs of one
    architecture at once as one grouped network (``train.packed``; about 3x the throughput of one
    run on an H200). ``workers > 1`` uses that many processes, each pulling runs (or packs) from a
    queue; with ``pack > 1`` and a bare ``device="cuda"`` on a host with several GPUs, the default
    is one worker per GPU, so each GPU trains one pack at a time. ``compile`` / ``amp`` (bf16 autocast):
    None for ``train_run``'s default (on for CUDA)."""
    out_dir = pathlib.Path(out_dir)
    runtime = {"compile": compile, "amp": amp, "checkpoint_every": checkpoint_every}
    deadline = None if deadline_s is None else time.time() + deadline_s
    # The data are loaded (and so checked: files, formats, labels) once before any run starts: a
    # bad data folder stops the grid with one error instead of failing every run on its own.
    cache = _DataCache(data_dir)
    for run in runs:
        cache.get(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = plan_packs(runs, pack)
    devices = plan_workers(device, workers, pack, len(groups))
    if len(devices) <= 1:
        for group in groups:
            if deadline is not None and time.time() > deadline:
                break
            _run_group(group, out_dir, device, cache, runtime, deadline, log)
    else:
        cache.loaded.clear()  # each worker loads its own copy
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        task_queue = ctx.Queue()
        for group in groups:
            task_queue.put(group)
        processes = [ctx.Process(target=_worker, args=(task_queue, out_dir, worker_device, data_dir, runtime, deadline))
                     for worker_device in devices]
        log(f"{len(groups)} pack(s) of up to {pack} run(s) over {len(devices)} worker process(es) on {devices}")
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        crashed = [p.exitcode for p in processes if p.exitcode != 0]
        if crashed:
            log(f"{len(crashed)} worker process(es) exited with codes {crashed}")
    failed = [r.run_id for r in runs if (out_dir / r.run_id / "error.json").is_file()]
    if failed:
        log(f"{len(failed)} of {len(runs)} run(s) failed: {failed}")
        raise RuntimeError(f"{len(failed)} of {len(runs)} run(s) failed (see error.json in each): {failed}")
