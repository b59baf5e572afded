"""Merge the run folders of one experiment, trained in several output folders (one per GPU or per
call), into one folder that ``idinit report`` reads: each run's config, records and summary, and
``experiment.json`` with every call that produced them.

    python3 scripts/merge_runs.py DEST SRC [SRC ...]

Only what a report needs is copied (no checkpoints, locks or logs). Everything is checked before
anything is written: the sources must hold the experiment DEST holds (same name and version), and a
run present on both sides must be the same run (same config.json); a finished run replaces an
unfinished copy of itself, and two finished copies that differ stop the merge.

To replace finished runs (a re-run after a fix), delete their folders from DEST first: DEST's earlier
calls then stop listing them (a call left with no runs is dropped), so "How it was produced" names
only the commands that made what is there.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

from idinit.lab.train import records as rec

FILES = (rec.CONFIG, rec.RECORDS, rec.SUMMARY, "error.json")


def _runs(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    return {p.parent.relative_to(folder).as_posix(): p.parent for p in sorted(folder.rglob(rec.CONFIG))}


def _finished(run: pathlib.Path) -> dict | None:
    """The run's summary if it finished, None if not; raises ValueError when its records do not hold every
    epoch the summary counts (a folder put together from two states of the run: on 2026-11-30 a resume archive
    unpacked over a finished run left its summary with the first 19 of 35 epochs' records)."""
    summary = run / rec.SUMMARY
    if not summary.is_file():
        return None
    value = rec.read_json(summary)
    if not value.get("finished"):
        return None
    epochs = [r.get("epoch") for r in rec.read_records(run / rec.RECORDS)] if (run / rec.RECORDS).is_file() else []
    if epochs[1:] and epochs[0] == 0:  # an evaluation before the first step (the LM runs record one)
        epochs = epochs[1:]
    if epochs != list(range(1, value["epochs"] + 1)):
        shown = f"epochs {epochs[0]}-{epochs[-1]} ({len(epochs)} records)" if epochs else "no records"
        raise ValueError(f"{run}: finished after {value['epochs']} epoch(s) but its records hold {shown}")
    return value


def _calls_of(calls: list[dict], run_ids: set[str]) -> list[dict]:
    """``calls`` listing only the runs in ``run_ids``; a call left with none is dropped (its runs were deleted
    from DEST, to be replaced)."""
    kept = [dict(c, runs=[r for r in c.get("runs", []) if r in run_ids]) for c in calls]
    return [c for c, old in zip(kept, calls) if c["runs"] or not old.get("runs")]


def _call_key(call: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in call.items() if k != "runs"))


def plan_merge(dest: pathlib.Path, sources: list[pathlib.Path]) -> tuple[list[tuple[pathlib.Path, pathlib.Path]], dict]:
    """(run folders to copy as (source, target), the merged experiment.json); raises ValueError."""
    experiment = rec.read_json(dest / "experiment.json") if (dest / "experiment.json").is_file() else None
    chosen: dict[str, pathlib.Path] = {}
    existing = _runs(dest) if dest.is_dir() else {}
    if experiment is not None:
        experiment = dict(experiment, calls=_calls_of(experiment["calls"], set(existing)))
    for source in sources:
        if not (source / "experiment.json").is_file():
            raise ValueError(f"{source}: no experiment.json (not a run folder of idinit run / gpu_runs.py)")
        theirs = rec.read_json(source / "experiment.json")
        if experiment is None:
            experiment = dict(theirs, calls=[])
        elif (theirs["experiment"], theirs["version"]) != (experiment["experiment"], experiment["version"]):
            raise ValueError(f"{source} holds {theirs['experiment']} v{theirs['version']}, "
                             f"{dest} holds {experiment['experiment']} v{experiment['version']}")
        for call in theirs.get("calls", []):
            same = [c for c in experiment["calls"] if _call_key(c) == _call_key(call)]
            if same:  # a call merged before: it may list runs pruned from DEST since
                same[0]["runs"] = list(dict.fromkeys(same[0].get("runs", []) + call.get("runs", [])))
            else:
                experiment["calls"].append(dict(call))
        for run_id, run in _runs(source).items():
            mine = _finished(run)
            other = chosen.get(run_id) or existing.get(run_id)
            if other is not None:
                if rec.read_json(other / rec.CONFIG) != rec.read_json(run / rec.CONFIG):
                    raise ValueError(f"{run_id}: {run} and {other} hold different configurations")
                kept = _finished(other)
                if mine is None or (kept is not None and kept == mine):
                    continue  # nothing new: unfinished, or the same finished run
                if kept is not None:
                    raise ValueError(f"{run_id}: finished in both {run} and {other} with different results")
            chosen[run_id] = run
    if experiment is None:
        raise ValueError("no sources given")
    return [(run, dest / run_id) for run_id, run in chosen.items()], experiment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest")
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args(argv)
    dest = pathlib.Path(args.dest)
    try:
        copies, experiment = plan_merge(dest, [pathlib.Path(s) for s in args.sources])
    except (ValueError, OSError) as err:
        print(f"merge_runs: {err}; nothing written", file=sys.stderr)
        return 1
    for run, target in copies:
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (target / name).unlink(missing_ok=True)
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
    rec.atomic_write_json(dest / "experiment.json", experiment)
    print(f"merged {len(copies)} run(s) into {dest}; experiment.json lists {len(experiment['calls'])} call(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
