"""SIGKILLs at random moments of tiny CPU trainings, each followed by a resume: a CIFAR-style run (Fixup
ResNet-8 on fake images, float64) and a text run (a Transformer with dropout on fake texts). Every
sequence of kills ends with a run to completion, whose checkpoint (model, optimiser, records, timings
aside) must equal bitwise that of an uninterrupted run, with every epoch recorded exactly once."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time

import torch
import torch.distributed as dist

from idinit.lab.experiments.text_classification import TextRunConfig, train_text_run
from idinit.lab.train import RunConfig, read_records, train_run
from idinit.lab.train import records as rec
from . import ROOT

sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fake data, one copy
from lab_fixtures import TINY, fake_data  # noqa: E402
from test_lab_text import fake_text  # noqa: E402

TIMING = ("seconds", "images_per_s", "eval_seconds", "texts_per_s", "pack_images_per_s")


def _train(kind: str, folder: str) -> None:
    """The training a child process runs (forked: the imports and data are the parent's)."""
    torch.set_num_threads(1)
    if kind == "cifar":
        config = RunConfig(name="k", **{**TINY, "epochs": 4})
        train_run(config, folder, data=_DATA["cifar"], dtype=torch.float64, log=lambda m: None)
    else:
        config = TextRunConfig(name="k", arch="transformer", init="idinit", dataset="trec6", epochs=3, batch_size=40,
                               optimizer="adam", lr=1e-3)
        train_text_run(config, folder, data=_DATA["text"], log=lambda m: None)


_DATA: dict = {}


def _start(kind: str, folder):
    child = multiprocessing.get_context("fork").Process(target=_train, args=(kind, str(folder)), daemon=True)
    child.start()
    return child


def _complete(kind: str, folder) -> float:
    t0 = time.perf_counter()
    child = _start(kind, folder)
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the resumed run failed (exit code {child.exitcode}; its traceback is above)")
    return time.perf_counter() - t0


def _end_state(folder) -> tuple:
    state = rec.load_checkpoint(folder / rec.CHECKPOINT)
    records = [{k: v for k, v in r.items() if k not in TIMING} for r in read_records(folder / rec.RECORDS)]
    return state, records


def _same(a, b) -> str | None:
    (sa, ra), (sb, rb) = a, b
    if ra != rb:
        return f"records differ: epochs {[r['epoch'] for r in ra]} vs {[r['epoch'] for r in rb]}"
    for key in sa["model"]:
        if not torch.equal(sa["model"][key], sb["model"][key]):
            return f"model tensor {key} differs"
    flat = lambda s: [t for group in s["optimizer"]["state"].values() for t in group.values() if torch.is_tensor(t)]
    if any(not torch.equal(x, y) for x, y in zip(flat(sa), flat(sb))) or len(flat(sa)) != len(flat(sb)):
        return "optimiser state differs"
    return None


def run(scratch, kills: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    scratch.mkdir(parents=True, exist_ok=True)
    if dist.is_initialized():  # the tensor cases' one-process group: the trainings are plain processes
        dist.destroy_process_group()
    _DATA.update(cifar=fake_data(), text=fake_text())
    rows: list[dict] = []
    kinds = ["cifar", "text"]
    references, durations = {}, {}
    for kind in kinds:
        durations[kind] = _complete(kind, scratch / f"reference-{kind}")
        references[kind] = _end_state(scratch / f"reference-{kind}")
    epochs = {"cifar": 4, "text": 3}
    per_sequence = 2
    sequence = 0
    t_start = time.time()
    while len(rows) < kills:
        kind = kinds[sequence % len(kinds)]
        folder = scratch / f"{kind}-{sequence}"
        mine = []
        while len(mine) < min(per_sequence, kills - len(rows)):
            done = len(read_records(folder / rec.RECORDS))
            # a moment in what is left of the training (its start included: preparing, resuming)
            moment = rng.uniform(0.0, durations[kind] * (1 - done / epochs[kind]))
            child = _start(kind, folder)
            child.join(moment)
            if not child.is_alive():  # it finished first: no kill; the sequence ends here
                break
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            mine.append({"kind": kind, "sequence": sequence, "moment_s": round(moment, 3), "epochs_before": done,
                         "epochs_recorded_when_killed": len(read_records(folder / rec.RECORDS))})
        try:
            _complete(kind, folder)
            verdict = _same(_end_state(folder), references[kind])
        except Exception as err:  # noqa: BLE001 - a failed resume is the finding
            verdict = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
        for row in mine:
            row.update(outcome="held" if verdict is None else "broken", detail=verdict or "")
        rows.extend(mine)
        print(f"kill: sequence {sequence} ({kind}): {len(mine)} kills, {'held' if verdict is None else verdict}",
              flush=True)
        sequence += 1
    print(f"kill: {len(rows)} SIGKILLs in {time.time() - t_start:.0f} s", flush=True)
    return rows
