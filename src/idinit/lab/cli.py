"""The lab's command line: ``idinit demo | run | report | plan | analyse | bench``.

    idinit demo                                  # < 2 min on a laptop CPU, no download
    idinit run table5 --device cuda --data ~/c10 --out runs/table5 --pack 8
    idinit run table1 --only 'idinit-sgd*' --seeds 0,1 --set epochs=50
    idinit report runs/table5 [--out results/table5]
    idinit plan resnet56 [--scheme kaiming] [--set conv=channel]
    idinit analyse momentum [--set steps=500]
    idinit bench --device cuda
"""
from __future__ import annotations

import argparse
import shlex
import sys


def _device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _parse_seeds(text: str | None):
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise SystemExit(f"--seeds expects comma-separated integers, got {text!r}") from err


def _print_summary(out_dir) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report import load_runs, summary_rows

    meta, runs = load_runs(out_dir)
    table = Table(title=f"summary of {out_dir}")
    for column in ("configuration", "seeds", "final eval acc %", "test1k acc %", "epochs to target",
                   "paper acc %", "paper epochs", "s/epoch"):
        table.add_column(column)
    for r in summary_rows(meta, runs):
        acc, t1k, ep = r["acc"], r["test1k"], r["epochs"]
        fmt = lambda m, s, k=100, d=2: "-" if m is None else f"{m * k:.{d}f}" + ("" if s is None else f"±{s * k:.{d}f}")
        table.add_row(r["name"], f"{r['seeds_done']}/{r['seeds']}", fmt(*acc), fmt(*t1k),
                      fmt(*ep, k=1, d=1) if r["reached"] else ("never" if r["seeds_done"] else "-"),
                      r["paper_acc"] or "-", r["paper_epochs"] or "-",
                      "-" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.2f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def cmd_run(args) -> int:
    from .experiments import EXPERIMENTS, get_experiment
    from .experiments.progress import Progress
    from .experiments.runner import run_configs, write_experiment_file

    if args.list or args.experiment is None:
        for name in sorted(EXPERIMENTS):
            exp = get_experiment(name)
            print(f"{name:<18} {len(exp.configs):>3} configurations  {exp.description}")
        return 0
    experiment = get_experiment(args.experiment)
    runs = experiment.runs(seeds=_parse_seeds(args.seeds), only=args.only, overrides=args.set)
    out_dir = args.out or f"runs/{experiment.name}"
    device = args.device or _device_default()
    if args.dry_run:
        for r in runs:
            print(r.run_id, r.to_dict())
        return 0
    import pathlib

    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_experiment_file(pathlib.Path(out_dir), experiment, runs, device, "idinit " + shlex.join(args.argv))
    how = f"packs of up to {args.pack}" if args.pack > 1 else f"{args.workers} worker(s)"
    print(f"{experiment.name}: {len(runs)} runs on {device} into {out_dir} ({how})", flush=True)
    failure = None
    with Progress(out_dir, runs):
        try:
            run_configs(runs, out_dir, device=device, data_dir=args.data, workers=args.workers,
                        compile=False if args.no_compile else None, checkpoint_every=args.checkpoint_every,
                        deadline_s=args.deadline_s, pack=args.pack)
        except RuntimeError as err:
            failure = err
    _print_summary(out_dir)
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.run_dir, args.out, title=args.title, with_records=args.with_records)
    print(f"wrote {path} and {path.parent / 'accuracy.png'}")
    return 0


def _option_value(text: str):
    """``0`` -> 0, ``1e-6`` -> 1e-06, ``true`` -> True, ``channel`` -> "channel"."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_plan(args) -> int:
    import torch

    import idinit

    from .models import CifarResNet, parse_arch

    if args.scheme in ("fixup", "rezero", "skipinit"):
        raise SystemExit(f"{args.scheme} is a lab model variant with its own init (see idinit.lab.models."
                         "build_model), not a library scheme; plan shows library schemes")
    name = args.model
    shortcut = "B" if name.endswith("-B") else "A"
    model = CifarResNet(parse_arch(name.removesuffix("-B")), shortcut=shortcut)
    options = {}
    for pair in args.set or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects option=value, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip()] = _option_value(value.strip())
    print(idinit.plan(model, scheme=args.scheme, example_inputs=(torch.zeros(2, 3, 32, 32),), **options))
    return 0


def cmd_analyse(args) -> int:
    from .analysis import ANALYSES, run_analysis  # lazily: the analyses are another package

    if args.name is None or args.name == "list":
        for name in sorted(ANALYSES):
            doc = (ANALYSES[name].__doc__ or "").strip().splitlines()
            print(f"{name:<18} {doc[0] if doc else ''}")
        return 0
    overrides = {}
    for pair in args.set or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    record = run_analysis(args.name, out_dir=args.out or f"runs/analysis-{args.name}", data_dir=args.data,
                          device=args.device or "cpu", overrides=overrides)
    print(f"{args.name}: wrote {args.out or f'runs/analysis-{args.name}'} ({len(record)} fields in the record)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, epochs=args.epochs, seeds=args.seeds)
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    run_bench(device=args.device or _device_default(), archs=args.archs.split(","), batch_size=args.batch,
              steps=args.steps, concurrent=[int(n) for n in args.concurrent.split(",") if n],
              packed=[int(n) for n in args.packed.split(",") if n], compile=not args.no_compile,
              out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idinit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="IDInit vs Kaiming vs PyTorch default on scikit-learn's digits (CPU, < 2 min)")
    p.add_argument("--out", default="runs/demo", help="folder for demo.png and demo.json (default runs/demo)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=2)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run a named experiment (a grid of configurations x seeds)")
    p.add_argument("experiment", nargs="?", help="experiment name; omit (or --list) to list them")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override run settings, e.g. epochs=2 arch=resnet110")
    p.add_argument("--only", nargs="*", metavar="GLOB", help="run only configurations whose name matches")
    p.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--data", help="dataset folder (default: $IDINIT_DATA or shared/data found upward)")
    p.add_argument("--out", help="run folder (default runs/<experiment>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the device (default 1)")
    p.add_argument("--pack", type=int, default=1,
                   help="train up to N runs of one architecture at once as one grouped network (default 1: off)")
    p.add_argument("--no-compile", action="store_true", help="train eagerly on CUDA too")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints (default 1)")
    p.add_argument("--deadline-s", type=float, help="stop (resumable) after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md + accuracy.png for a run folder")
    p.add_argument("run_dir")
    p.add_argument("--out", help="folder for the report (default: the run folder)")
    p.add_argument("--title")
    p.add_argument("--with-records", action="store_true",
                   help="also copy experiment.json and each run's config/records/summary into --out")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plan", help="print idinit.plan for a lab model (resnet20..resnet110, '-B' for option B)")
    p.add_argument("model")
    p.add_argument("--scheme", default="idinit")
    p.add_argument("--set", nargs="*", metavar="OPTION=VALUE", help="scheme options, e.g. conv=channel loose=0")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("analyse", help="run a named analysis of the paper's mechanisms ('list' lists them)")
    p.add_argument("name", nargs="?")
    p.add_argument("--out")
    p.add_argument("--data")
    p.add_argument("--device")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("bench", help="training throughput: eager, compiled, N concurrent processes, N packed models")
    p.add_argument("--device")
    p.add_argument("--archs", default="resnet56")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--concurrent", default="4", help="comma-separated process counts (default 4)")
    p.add_argument("--packed", default="8", help="comma-separated model counts for packed training (default 8)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out", help="write the measurements as JSON here")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"idinit {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
