"""``idinit report RUN_DIR``: a markdown table of final accuracy and epochs to target (mean ± std
over seeds) beside the paper's numbers, and a PNG of evaluation accuracy against epoch."""
from __future__ import annotations

import math
import pathlib
import re
import statistics

from .train import records as rec


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt_ms(mean, std, scale=1.0, digits=2) -> str:
    if mean is None:
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text + (f"±{std * scale:.{digits}f}" if std is not None else "")


def _paper_mean(text: str | None) -> float | None:
    """The paper's accuracy where its cell is a number ("93.41±0.10", "≈76.7"); None for a bound ("> 90") or
    a claim in words, even one that holds a number ("fails within 4 epochs (Fig 19)")."""
    match = re.fullmatch(r"\s*≈?\s*(\d+(?:\.\d+)?)\s*(?:±\s*\d+(?:\.\d+)?)?\s*", text or "")
    return float(match.group(1)) if match else None


def load_runs(run_dir) -> tuple[dict, list[dict]]:
    """``experiment.json`` (or {}) and one entry per run folder: config, records, summary (or None)."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    meta = rec.read_json(run_dir / "experiment.json") if (run_dir / "experiment.json").is_file() else {}
    runs = []
    for config_path in sorted(run_dir.glob("*/seed*/" + rec.CONFIG)):
        folder = config_path.parent
        runs.append({"config": rec.read_json(config_path), "records": rec.read_records(folder / rec.RECORDS),
                     "summary": rec.read_json(folder / rec.SUMMARY) if (folder / rec.SUMMARY).is_file() else None,
                     "error": (folder / "error.json").is_file()})
    if not runs:
        raise FileNotFoundError(f"no runs (<name>/seed<k>/config.json) under {str(run_dir)!r}")
    return meta, runs


def summary_rows(meta: dict, runs: list[dict]) -> list[dict]:
    """One row per configuration name, in first-seen order, over its finished seeds."""
    paper = meta.get("paper", {})
    by_name: dict[str, list[dict]] = {}
    for run in runs:
        by_name.setdefault(run["config"]["name"], []).append(run)
    order = {name: i for i, name in enumerate(meta.get("order", []))}
    rows = []
    for name, group in sorted(by_name.items(), key=lambda item: order.get(item[0], len(order))):
        done = [r for r in group if r["summary"] and r["summary"].get("finished")]
        accs = [r["summary"]["final_eval_acc"] for r in done if r["summary"]["final_eval_acc"] is not None]
        t1k = [r["summary"]["final_test1k_acc"] for r in done if r["summary"].get("final_test1k_acc") is not None]
        reached = [r["summary"]["epochs_to_target"] for r in done if r["summary"]["epochs_to_target"] is not None]
        secs = [x["seconds"] for r in group for x in r["records"]]
        packs = sorted({x.get("packed", 1) for r in group for x in r["records"]})
        p = paper.get(name, {})
        acc_mean = _mean_std(accs)[0]
        paper_acc = _paper_mean(p.get("acc"))
        rows.append({
            "name": name, "config": group[0]["config"], "seeds_done": len(done), "seeds": len(group),
            "diverged": sum(1 for r in done if r["summary"].get("diverged")),
            "failed": sum(1 for r in group if r["error"]),
            "acc": _mean_std(accs), "test1k": _mean_std(t1k), "epochs": _mean_std(reached),
            "acc_values": accs, "epoch_values": reached if len(reached) == len(done) else [],
            "reached": len(reached), "s_per_epoch": statistics.median(secs) if secs else None,
            "packed": max(packs) if packs else 1,
            "paper_acc": p.get("acc", ""), "paper_epochs": p.get("epochs_to_target", ""),
            "delta": None if acc_mean is None or paper_acc is None else acc_mean * 100 - paper_acc,
            "target": group[0]["config"].get("target_accuracy", 0.8),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    target = rows[0]["target"] if rows else 0.8
    lines = [f"| configuration | seeds done | final eval acc (%) | exact 1k test acc (%) | epochs to {target:.0%} "
             f"| paper acc (%) | paper epochs | ours − paper (acc) | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = f"{r['seeds_done']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "") + (
            f" ({r['failed']} failed)" if r["failed"] else "")
        if r["reached"] == r["seeds_done"] and r["reached"]:
            epochs = _fmt_ms(*r["epochs"], digits=1)
        elif r["seeds_done"]:
            epochs = (_fmt_ms(*r["epochs"], digits=1) + f" ({r['reached']}/{r['seeds_done']} reached)"
                      if r["reached"] else "never")
        else:
            epochs = "—"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.2f}"
        pack_note = f" (pack of {r['packed']})" if r["packed"] > 1 else ""
        lines.append(f"| {r['name']} | {seeds} | {_fmt_ms(*r['acc'], scale=100)} | {_fmt_ms(*r['test1k'], scale=100)} "
                     f"| {epochs} | {r['paper_acc'] or '—'} | {r['paper_epochs'] or '—'} | {delta} "
                     f"| {_fmt_ms(r['s_per_epoch'], None)}{pack_note} |")
    return "\n".join(lines)


# What a setting is: every config field but these (so runs that differ only in their init compare)
_NOT_SETTING = ("name", "init", "init_options", "seed")


def _welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value, or None without two values a side or any spread at all."""
    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return None
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # one side constant (e.g. epochs 3, 3, 3): scipy warns, the test is still exact
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def seed_tests(rows: list[dict], reference: str = "idinit") -> list[str]:
    """A report section: the ``reference`` init (without init options) against every other row of the
    same setting, seed by seed: difference of the means and Welch's p for final accuracy and for epochs
    to target (where every seed reached it). These are the p-values a reading may quote."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = repr(sorted((k, v) for k, v in r["config"].items() if k not in _NOT_SETTING))
        groups.setdefault(key, []).append(r)
    table = []
    for group in groups.values():
        for ref in [r for r in group if r["config"]["init"] == reference and not r["config"].get("init_options")]:
            for other in (r for r in group if r is not ref and r["acc_values"]):
                if not ref["acc_values"]:
                    continue
                gap = 100 * (statistics.fmean(ref["acc_values"]) - statistics.fmean(other["acc_values"]))
                p_acc = _welch_p(ref["acc_values"], other["acc_values"])
                ep_ref, ep_other = ref["epoch_values"], other["epoch_values"]
                ep_gap = (f"{statistics.fmean(ep_ref) - statistics.fmean(ep_other):+.1f}" if ep_ref and ep_other
                          else "—")
                p_ep = _welch_p(ep_ref, ep_other) if ep_ref and ep_other else None
                table.append(f"| {ref['name']} | {other['name']} | {len(ref['acc_values'])} / "
                             f"{len(other['acc_values'])} | {gap:+.2f} | {'—' if p_acc is None else f'{p_acc:.3f}'} "
                             f"| {ep_gap} | {'—' if p_ep is None else f'{p_ep:.3f}'} |")
    if not table:
        return []
    return [f"## {reference} against the other inits, seed by seed", "",
            f"Rows whose configurations differ only in the init. Differences of the means ({reference} minus the "
            "other); p: Welch's t-test, two-sided (scipy `ttest_ind(equal_var=False)`), shown with at least two "
            "seeds a side. Diverged seeds count at their final accuracy; epochs to target only where every seed "
            "reached it. No correction for the number of comparisons.", "",
            f"| {reference} row | other row | seeds | accuracy (points) | p | epochs to target | p |",
            "|---|---|---|---|---|---|---|", *table, ""]


def plot_curves(runs: list[dict], path) -> None:
    """Evaluation accuracy (mean over seeds) against epoch, one panel per optimiser x warm-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple, dict[str, list[list[dict]]]] = {}
    for run in runs:
        c = run["config"]
        key = (c["optimizer"], c["warmup_epochs"])
        panels.setdefault(key, {}).setdefault(c["name"], []).append(run["records"])
    keys = sorted(panels)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, seed_records in panels[key].items():
            by_epoch: dict[int, list[float]] = {}
            for records in seed_records:
                for r in records:
                    if r.get("eval_acc") is not None:
                        by_epoch.setdefault(r["epoch"], []).append(r["eval_acc"] * 100)
            if by_epoch:
                epochs = sorted(by_epoch)
                ax.plot(epochs, [statistics.fmean(by_epoch[e]) for e in epochs], label=name, lw=1.2)
        ax.set_title(f"{key[0].upper()}, warm-up {key[1]} epochs")
        ax.set_xlabel("epoch")
        ax.set_ylabel("eval accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def copy_records(run_dir, out_dir) -> int:
    """Copy ``experiment.json`` and every run's config, records and summary (no checkpoints) from
    ``run_dir`` to ``out_dir``, keeping the layout; return the number of files copied."""
    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    files = [run_dir / "experiment.json"] if (run_dir / "experiment.json").is_file() else []
    for config in sorted(run_dir.glob("*/seed*/" + rec.CONFIG)):
        files += [config.parent / n for n in (rec.CONFIG, rec.RECORDS, rec.SUMMARY, "error.json")
                  if (config.parent / n).is_file()]
    for file in files:
        rec.atomic_write_bytes(out_dir / file.relative_to(run_dir), file.read_bytes())
    return len(files)


def _experiment_sections(meta: dict, rows: list[dict]) -> list[str]:
    """The sections the named experiment adds (its ``report_sections``: the paper's own table layout)."""
    from .experiments import EXPERIMENTS

    make = EXPERIMENTS.get(meta.get("experiment", ""))
    sections = make().report_sections if make else None
    return sections(rows) if sections else []


def write_report(run_dir, out_dir=None, title: str | None = None, with_records: bool = False) -> pathlib.Path:
    """Write ``report.md`` and ``accuracy.png`` into ``out_dir`` (default: ``run_dir``); return the md
    path. ``with_records`` also copies the runs' JSON / JSONL files there (:func:`copy_records`). A
    ``reading.md`` already in ``out_dir`` (a person's interpretation) is included under "Reading"."""
    run_dir = pathlib.Path(run_dir)
    meta, runs = load_runs(run_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if with_records and out_dir.resolve() != run_dir.resolve():
        copy_records(run_dir, out_dir)
    if {run["config"].get("task") for run in runs} == {"lm"}:  # losses against tokens and FLOPs, no accuracy
        from .experiments.lm_pretrain import write_lm_report

        return write_lm_report(run_dir, out_dir)
    rows = summary_rows(meta, runs)
    plot_curves(runs, out_dir / "accuracy.png")
    name = meta.get("experiment", run_dir.name)
    lines = [f"# {title or name}", "", meta.get("description", ""), ""]
    calls = meta.get("calls", [])
    if calls:
        lines += ["## How it was produced", ""]
        for call in calls:
            lines.append(f"- `{call.get('command') or '(command not recorded)'}` on {call.get('machine', '?')}, "
                         f"started {call.get('started', '?')} ({len(call.get('runs', []))} runs)")
        lines.append("")
    lines += ["## Results", "", "Final-epoch accuracy (not best-of-run) on the evaluation set, mean ± sample std "
              "over finished seeds; epochs to target counted on the evaluation set; s/epoch is the median "
              "wall time of a training epoch (of the whole pack, for runs trained packed).", "",
              markdown_table(rows), "", "![evaluation accuracy per epoch](accuracy.png)", ""]
    lines += _experiment_sections(meta, rows)
    reading = out_dir / "reading.md"
    if reading.is_file():  # the hand-written interpretation kept beside the generated report
        lines += ["## Reading", "", reading.read_text().strip(), ""]
    unfinished = [r["name"] for r in rows if r["seeds_done"] < r["seeds"]]
    missing = [n for n in meta.get("paper", {}) if n not in {r["name"] for r in rows}]
    if unfinished or missing:
        lines += ["## Not (fully) run", ""]
        if unfinished:
            lines.append("- unfinished seeds: " + ", ".join(unfinished))
        if missing:
            lines.append("- configurations with a paper number but no run here: " + ", ".join(missing))
        lines.append("")
    if meta.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    path = out_dir / "report.md"
    rec.atomic_write_bytes(path, "\n".join(lines).encode())
    return path
