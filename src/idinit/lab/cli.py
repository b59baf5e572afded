"""The lab's command line: idinit demo | run | report | plan | check | analyse | bench.

  idinit demo                                  # < 2 min on a laptop CPU, no download
  idinit run table5 --device cuda --data ~/c10 --out runs/table5 --pack 8
  idinit run table1 --only 'idinit-sgd*' --seeds 0,1 --set epochs=50
  idinit report runs/table5 [--out results/table5]
  idinit plan torchvision:resnet50 [--scheme kaiming] [--set conv=channel]
  idinit check timm:convnext_tiny [--scheme idinit] [--json] [--plot check.png]
  idinit analyse momentum [--set steps=500]
  idinit bench --device cuda

Model specs (plan, check): torchvision:NAME, timm:NAME, hf:MODEL_TYPE (built from its default
config, no download), lab:NAME or a bare lab name (resnet20 ... resnet110; -B: option-B shortcuts,
-Ac: option A with centred zero channels).
A mistake in the command line ends with one line naming it and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys
import threading
import time

from idinit.schemes import SCHEMES


class UsageError(Exception):
    """A mistake in the command line or in the files it names: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


class Heartbeat:
    """Prints ``label: still running, N s`` to stderr every ``interval`` seconds until the block ends."""

    interval = 30.0

    def __init__(self, label: str):
        self.label, self.stop = label, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        start = time.monotonic()
        while not self.stop.wait(self.interval):
            print(f"{self.label}: still running, {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _parse_seeds(text: str | None):
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds expects comma-separated integers, got {text!r}") from None


def _at_least(value, minimum: int, option: str):
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be at least {minimum}, got {value}")


def _folder(path, option: str):
    """Refuse an output folder that is a file or lies inside one, before anything is written."""
    if path is None:
        return
    p = pathlib.Path(path)
    for ancestor in (p, *p.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"{option} {path}: {ancestor} is a file, not a folder")
            return


def _file(path, option: str):
    """Refuse an output file that is a folder or lies inside a file."""
    if path is None:
        return
    if pathlib.Path(path).is_dir():
        raise UsageError(f"{option} {path}: is a folder, expected a file name")
    _folder(pathlib.Path(path).parent, option)


def _option_value(text: str):
    """``0`` -> 0, ``1e-6`` -> 1e-06, ``true`` -> True, ``channel`` -> "channel"."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(pairs, option: str, parse=_option_value) -> dict:
    found = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"{option} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        found[key.strip()] = parse(value.strip())
    return found


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


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dry_run_table(runs) -> str:
    """The runs as a table: one row per run with the settings that differ between runs, then the
    settings they share."""
    rows = [_flat(r.to_dict()) for r in runs]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    varying = [k for k in keys if k != "name" and len({json.dumps(row.get(k)) for row in rows}) > 1]
    shared = [k for k in keys if k != "name" and k not in varying]
    table = [["run", *varying]] + [[r.run_id, *(str(row.get(k)) for k in varying)] for r, row in zip(runs, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    lines.append(f"{len(runs)} runs; every run has: " + ", ".join(f"{k}={rows[0].get(k)}" for k in shared))
    return "\n".join(lines)


def cmd_run(args) -> int:
    from .experiments import EXPERIMENTS, get_experiment
    from .experiments.progress import Progress
    from .experiments.runner import run_configs, write_experiment_file

    if args.list or args.experiment is None:
        for name in sorted(EXPERIMENTS):
            exp = get_experiment(name)
            print(f"{name:<18} {len(exp.configs):>3} configurations  {exp.description}")
        return 0
    for value, minimum, option in ((args.workers, 1, "--workers"), (args.pack, 1, "--pack"),
                                   (args.checkpoint_every, 1, "--checkpoint-every"), (args.deadline_s, 0, "--deadline-s")):
        _at_least(value, minimum, option)
    experiment = get_experiment(args.experiment)
    runs = experiment.runs(seeds=_parse_seeds(args.seeds), only=args.only, overrides=args.set)
    out_dir = args.out or f"runs/{experiment.name}"
    device = args.device or _device_default()
    if args.dry_run:
        print(dry_run_table(runs))
        return 0
    _folder(out_dir, "--out")
    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_experiment_file(pathlib.Path(out_dir), experiment, runs, device, "idinit " + shlex.join(args.argv))
    how = f"packs of up to {args.pack}" if args.pack > 1 else f"{args.workers} worker(s)"
    print(f"{experiment.name}: {len(runs)} runs on {device} into {out_dir} ({how})", flush=True)
    failure = None
    with Progress(out_dir, runs):
        try:
            run_configs(runs, out_dir, device=device, data_dir=args.data, workers=args.workers,
                        compile=False if args.no_compile else None, amp=False if args.no_amp else None,
                        checkpoint_every=args.checkpoint_every,
                        deadline_s=args.deadline_s, pack=args.pack)
        except RuntimeError as err:
            failure = err
    _print_summary(out_dir)
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


# what report reads from a finished run's summary.json
_SUMMARY_KEYS = ("final_eval_acc", "epochs_to_target")


def _check_summaries(run_dir) -> None:
    """Name a summary.json that does not parse or lacks what the report reads, before reporting."""
    for path in sorted(pathlib.Path(run_dir).glob("*/seed*/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UsageError(f"{path}: not valid JSON ({err}); delete it and resume the run to rewrite it") from None
        if not isinstance(summary, dict):
            raise UsageError(f"{path}: expected a JSON object, got {type(summary).__name__}")
        missing = [k for k in _SUMMARY_KEYS if k not in summary]
        if summary.get("finished") and missing:
            raise UsageError(f"{path}: incomplete summary, missing {', '.join(missing)}; delete it and resume the "
                             "run to rewrite it")


def cmd_report(args) -> int:
    from .report import write_report

    if not pathlib.Path(args.run_dir).is_dir():
        raise UsageError(f"run folder {args.run_dir} does not exist")
    _folder(args.out, "--out")
    _check_summaries(args.run_dir)
    path = write_report(args.run_dir, args.out, title=args.title, with_records=args.with_records)
    figure = next((path.parent / f for f in ("accuracy.png", "loss.png") if (path.parent / f).is_file()), None)
    print(f"wrote {path}" + (f" and {figure}" if figure else ""))
    return 0


_LAB_ONLY = ("fixup", "rezero", "skipinit")


def _scheme_options(args) -> dict:
    from idinit.schemes import check_options

    options = _pairs(args.set, "--set")
    if args.scheme in _LAB_ONLY + ("none",):
        if options:
            raise UsageError(f"--scheme {args.scheme} takes no --set options")
        return {}
    try:
        check_options(args.scheme, options)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    return options


def _build(args, batch: int):
    from .zoo import build

    try:
        return build(args.spec, batch=batch, image_size=args.image_size, model_args=_pairs(args.model_arg, "--model-arg"))
    except TypeError as err:  # a model argument the builder does not take
        raise UsageError(f"{args.spec}: {err}") from None


def cmd_plan(args) -> int:
    import idinit

    if args.scheme in _LAB_ONLY:
        raise UsageError(f"{args.scheme} is a lab model variant with its own init (see idinit.lab.models.build_model), "
                         "not a library scheme; plan shows library schemes")
    options = _scheme_options(args)
    with Heartbeat(f"idinit plan: building {args.spec} and reading its graph"):
        built = _build(args, batch=2)
        result = idinit.plan(built.model, scheme=args.scheme, example_inputs=built.example_inputs, **options)
    print(result)
    return 0


def _initialise(args, built, options):
    """Initialise ``built.model`` as ``--scheme`` says; return the model and the state from before."""
    import idinit

    if args.scheme == "none":
        return built.model, None
    if args.scheme in _LAB_ONLY:
        from .models import CifarResNet, build_model

        if not isinstance(built.model, CifarResNet):
            raise UsageError(f"--scheme {args.scheme} is a variant of the lab's CIFAR ResNets, not of {args.spec}")
        return build_model(f"resnet{built.model.depth}", init=args.scheme, shortcut=built.model.shortcut_kind), None
    reference = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    idinit.init_(built.model, scheme=args.scheme, example_inputs=built.example_inputs, **options)
    return built.model, reference


def cmd_check(args) -> int:
    import torch

    import idinit

    options = _scheme_options(args)
    _at_least(args.batch, 2, "--batch")
    _file(args.plot, "--plot")
    torch.manual_seed(args.seed)
    with Heartbeat(f"idinit check: building {args.spec}, initialising ({args.scheme}) and measuring"):
        built = _build(args, batch=args.batch)
        model, reference = _initialise(args, built, options)
        report = idinit.check(model, built.example_inputs, reference=reference, train=not args.eval, seed=args.seed)
    if args.json:
        print(json.dumps({"spec": args.spec, "scheme": args.scheme, "model": built.description, **report.to_dict()},
                         indent=1))
    else:
        print(f"{args.spec} ({built.description}), scheme {args.scheme}")
        print(report)
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_analyse(args) -> int:
    from .analysis import ANALYSES, run_analysis  # lazily: the analyses are another package

    if args.name is None or args.name == "list":
        for name in sorted(ANALYSES):
            doc = (ANALYSES[name].__doc__ or "").strip().splitlines()
            print(f"{name:<18} {doc[0] if doc else ''}")
        return 0
    if args.name not in ANALYSES:
        raise UsageError(f"unknown analysis {args.name!r}; 'idinit analyse list' lists them: {', '.join(sorted(ANALYSES))}")
    overrides = _pairs(args.set, "--set", parse=str)  # the analysis converts each to its field's type
    out = args.out or f"runs/analysis-{args.name}"
    _folder(out, "--out")
    with Heartbeat(f"idinit analyse {args.name}"):
        record = run_analysis(args.name, out_dir=out, data_dir=args.data, device=args.device or "cpu",
                              overrides=overrides)
    print(f"{args.name}: wrote {out} ({len(record)} fields in the record)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    _at_least(args.epochs, 1, "--epochs")
    _at_least(args.seeds, 1, "--seeds")
    _folder(args.out, "--out")
    run_demo(out_dir=args.out, epochs=args.epochs, seeds=args.seeds)
    return 0


def _counts(text: str, option: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise UsageError(f"{option} expects comma-separated integers, got {text!r}") from None
    for n in counts:
        _at_least(n, 1, option)
    return counts


def cmd_bench(args) -> int:
    from .bench_plans import run_bench

    _at_least(args.batch, 1, "--batch")
    _at_least(args.steps, 1, "--steps")
    _at_least(args.warmup, 1, "--warmup")
    _at_least(args.eval_images, 1, "--eval-images")
    for value, option in ((args.budget_s, "--budget-s"), (args.row_s, "--row-s")):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be > 0 seconds, got {value}")
    _file(args.out, "--out")
    run_bench(device=args.device or _device_default(), archs=args.archs.split(","), batch_size=args.batch,
              steps=args.steps, concurrent=_counts(args.concurrent, "--concurrent"),
              packed=_counts(args.packed, "--packed"), compile=not args.no_compile, out=args.out,
              search_plan=args.search, warmup=args.warmup, budget_s=args.budget_s, variant_s=args.row_s,
              eval_images=args.eval_images)
    return 0


def _model_options(p) -> None:
    p.add_argument("spec", metavar="SPEC", help="torchvision:NAME, timm:NAME, hf:MODEL_TYPE, lab:NAME or a bare lab "
                   "name such as resnet56 (-B: option-B shortcuts, -Ac: centred option A)")
    p.add_argument("--set", nargs="*", metavar="OPTION=VALUE", help="scheme options, e.g. conv=channel loose=0")
    p.add_argument("--model-arg", nargs="*", metavar="KEY=VALUE",
                   help="arguments of the model's builder or HF config fields, e.g. n_layer=2 num_classes=10")
    p.add_argument("--image-size", type=int, help="side of the random example images (default 64; lab models 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="idinit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="IDInit vs Kaiming vs PyTorch default on scikit-learn's digits (CPU, < 2 min)")
    p.add_argument("--out", default="runs/demo", help="folder for demo.png and demo.json (default runs/demo)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs per run (default 10)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per initialisation (default 2)")
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
    p.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA too (no bf16 autocast)")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints (default 1)")
    p.add_argument("--deadline-s", type=float, help="stop (resumable) after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the runs as a table and exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md + accuracy.png for a run folder")
    p.add_argument("run_dir", help="the run folder (the --out of idinit run)")
    p.add_argument("--out", help="folder for the report (default: the run folder)")
    p.add_argument("--title", help="the report's title (default: the experiment's description)")
    p.add_argument("--with-records", action="store_true",
                   help="also copy experiment.json and each run's config/records/summary into --out")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plan", help="print idinit.plan for a model spec (torchvision:, timm:, hf:, lab:)")
    _model_options(p)
    p.add_argument("--scheme", default="idinit", help=f"one of {', '.join(SCHEMES)} (default idinit)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("check", help="initialise a model spec and report what the init did (idinit.check)")
    _model_options(p)
    p.add_argument("--scheme", default="idinit", help=f"the library scheme to initialise with ({', '.join(SCHEMES)}; "
                   "default idinit), 'none' for the model as its constructor left it, or fixup / rezero / skipinit "
                   "for lab ResNets")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--plot", metavar="FILE", help="also write a PNG of activation RMS, gradient norms and block distances")
    p.add_argument("--batch", type=int, default=8, help="example batch size (default 8, at least 2)")
    p.add_argument("--eval", action="store_true", help="measure in eval mode (running statistics, no dropout)")
    p.add_argument("--seed", type=int, default=0, help="seed for the model, the init and the measurement (default 0)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("analyse", help="run a named analysis of the paper's mechanisms ('list' lists them)")
    p.add_argument("name", nargs="?", help="the analysis; omit or 'list' to list them")
    p.add_argument("--out", help="folder for <name>.json and <name>.png (default runs/analysis-<name>)")
    p.add_argument("--data", help="dataset folder (default: $IDINIT_DATA or shared/data found upward)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default cpu)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override the analysis' settings, e.g. steps=500")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("bench", help="training throughput: eager, compiled, N concurrent processes, N packed models")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--archs", default="resnet56", help="comma-separated lab architectures (default resnet56)")
    p.add_argument("--batch", type=int, default=1024, help="batch size (default 1024)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per configuration (default 30)")
    p.add_argument("--concurrent", default="4", help="comma-separated process counts (default 4)")
    p.add_argument("--packed", default="8", help="comma-separated model counts for packed training (default 8)")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile on CUDA")
    p.add_argument("--out", help="write the measurements as JSON to this file (profiles beside it)")
    p.add_argument("--search", action="store_true",
                   help="issue 12's search instead of the fixed rows: references, an eager sweep of pack size and "
                        "dense convolutions, the best two compiled, profiles; the first of --archs is searched, the "
                        "others get the best setting")
    p.add_argument("--warmup", type=int, default=8, help="untimed warm-up steps per row (default 8)")
    p.add_argument("--budget-s", type=float, help="stop starting rows that would end past this many seconds")
    p.add_argument("--row-s", type=float, help="time limit of one row in seconds (a row past it fails, the rest go on)")
    p.add_argument("--eval-images", type=int, default=11_000,
                   help="images of the timed evaluation pass of the search's reference rows (default 11000)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "idinit"
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        command = f"idinit {args.command}"
        return args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        # ValueError / FileNotFoundError: the library's and lab's refusals of bad input (unknown
        # experiment, scheme option, model spec, missing folder); anything else is a bug: traceback.
        print(f"{command}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
