"""Per-epoch curves of a run folder: training loss, evaluation accuracy and the std of the model's
outputs (``eval_output_std``), one line per configuration, one panel per quantity; and a table of
the first epochs, where the paper's Res-112 and AllConv claims live (a blow-up in the first epochs).

    python3 -m idinit.lab.experiments.curves RUN_DIR OUT.png [--table OUT.md] [--first 6]
"""
from __future__ import annotations

import argparse
import math
import pathlib

from ..report import load_runs
from ..train import records as rec

PANELS = (("train_loss", "training loss", "log"), ("eval_acc", "evaluation accuracy", "linear"),
          ("eval_output_std", "std of the outputs (logits) on the evaluation set", "log"))


def _value(record: dict, key: str) -> float | None:
    value = record.get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def plot_curves(run_dir, path, title: str | None = None) -> pathlib.Path:
    """Write ``path`` (PNG, atomically): one panel per :data:`PANELS` quantity, every run a line (the
    seeds of a configuration in its colour); a run whose loss stopped being finite gets a dotted
    vertical line at its last epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, runs = load_runs(run_dir)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.5 * len(PANELS), 4.2), squeeze=False)
    order = {name: i for i, name in enumerate(meta.get("order", []))}
    runs = sorted(runs, key=lambda r: (order.get(r["config"]["name"], len(order)), r["config"]["seed"]))
    names = list(dict.fromkeys(r["config"]["name"] for r in runs))  # one colour per configuration
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    labelled = set()
    for run in runs:
        name = run["config"]["name"]
        color = cmap(names.index(name) % cmap.N)
        label = None if name in labelled else name  # seeds share their configuration's colour and label
        labelled.add(name)
        for ax, (key, _, _) in zip(axes[0], PANELS):
            points = [(r["epoch"], _value(r, key)) for r in run["records"]]
            points = [(e, v) for e, v in points if v is not None and (v > 0 or key == "eval_acc")]
            if points:
                ax.plot(*zip(*points), color=color, lw=1.0, alpha=0.85, label=label)
            if run["records"] and run["records"][-1].get("train_loss") is None:
                ax.axvline(run["records"][-1]["epoch"], color=color, ls=":", lw=0.8)
    for ax, (key, name, scale) in zip(axes[0], PANELS):
        ax.set(xlabel="epoch", title=name, yscale=scale)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or meta.get("description", str(run_dir)), fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def first_epochs_table(run_dir, first: int = 6) -> str:
    """Markdown: for each run, training loss and output std in its first ``first`` epochs
    ("diverged" once the loss is not finite)."""
    meta, runs = load_runs(run_dir)
    order = {name: i for i, name in enumerate(meta.get("order", []))}
    runs = sorted(runs, key=lambda r: (order.get(r["config"]["name"], len(order)), r["config"]["seed"]))
    head = "| run | " + " | ".join(f"epoch {e}: loss / output std" for e in range(1, first + 1)) + " |"
    lines = [head, "|---" * (first + 1) + "|"]
    for run in runs:
        cells = []
        by_epoch = {r["epoch"]: r for r in run["records"]}
        for e in range(1, first + 1):
            r = by_epoch.get(e)
            if r is None:
                cells.append("—")
            elif r.get("train_loss") is None:
                cells.append("diverged")
            else:
                std = r.get("eval_output_std")
                cells.append(f"{r['train_loss']:.3g} / {'—' if std is None else f'{std:.3g}'}")
        lines.append(f"| {run['config']['name']}/seed{run['config']['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("png")
    parser.add_argument("--table", help="also write the first epochs' table (markdown) here")
    parser.add_argument("--first", type=int, default=6)
    args = parser.parse_args(argv)
    plot_curves(args.run_dir, args.png)
    if args.table:
        rec.atomic_write_bytes(args.table, (first_epochs_table(args.run_dir, args.first) + "\n").encode())
    print(f"wrote {args.png}" + (f" and {args.table}" if args.table else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
