"""Train chosen runs of one experiment as packs on one GPU, until a wall-clock deadline (resumable).

    python3 scripts/gpu_runs.py table1 idinit-sgd:0,1,2 kaiming-sgd-warmup5:0 --out runs/t1 \
        --data ~/c10 --pack 8 --deadline-at 1764450000

Each ``NAME:SEEDS`` picks one configuration of the experiment and its seeds, so one pack can hold
different seeds of different configurations (``idinit run --only/--seeds`` crosses them). A run
folder already finished is skipped; an unfinished one resumes from its checkpoint. ``--set KEY=VALUE``
changes a setting of every picked run, as ``idinit run --set`` does (the run names stay: give such runs
their own ``--out``).
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import time

from idinit.lab.experiments import get_experiment
from idinit.lab.experiments.runner import run_configs, write_experiment_file


def selected_runs(experiment, items: list[str], overrides: list[str] | None = None) -> list:
    """The runs ``NAME:SEEDS`` items pick, with ``overrides`` (``KEY=VALUE``) applied (a ValueError names an
    item that picks nothing or a setting that does not exist)."""
    runs = []
    for item in items:
        name, _, seeds = item.partition(":")
        if not seeds or not all(s.isdigit() for s in seeds.split(",")):
            raise ValueError(f"{item!r}: expected NAME:SEEDS, e.g. idinit-sgd:0,1")
        runs += experiment.runs(seeds=[int(s) for s in seeds.split(",")], only=[name], overrides=overrides)
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("runs", nargs="+", metavar="NAME:SEEDS")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--deadline-at", type=float, help="unix time by which to stop (checkpointed)")
    parser.add_argument("--no-amp", action="store_true", help="float32 throughout (no bf16 autocast)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting of every picked run (repeatable)")
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="epochs between checkpoints (default 10: a pack of 16 writes 16 of them)")
    args = parser.parse_args(argv)
    experiment = get_experiment(args.experiment)
    try:
        runs = selected_runs(experiment, args.runs, args.set)
    except ValueError as err:
        parser.error(str(err))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_experiment_file(out, experiment, runs, args.device, shlex.join(["python3", *sys.argv]))
    deadline_s = None if args.deadline_at is None else args.deadline_at - time.time()
    if deadline_s is not None and deadline_s < 60:
        print(f"less than a minute before the deadline ({deadline_s:.0f} s): nothing started")
        return 0
    run_configs(runs, out, device=args.device, data_dir=args.data, deadline_s=deadline_s, pack=args.pack,
                amp=False if args.no_amp else None, checkpoint_every=args.checkpoint_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
