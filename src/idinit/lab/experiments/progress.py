"""Live progress of the runs of a grid, read from their run folders (so it works the same for runs
in this process and in worker processes): one line per run with epoch, loss, accuracies, s/epoch."""
from __future__ import annotations

import pathlib
import sys
import threading
import time

from ..train import records as rec


def run_status(run_dir: pathlib.Path, epochs: int) -> dict:
    records = rec.read_records(run_dir / rec.RECORDS)
    last = records[-1] if records else {}
    evals = [r for r in records if r.get("eval_acc") is not None]
    if (run_dir / "error.json").is_file():
        state = "failed"
    elif (run_dir / rec.SUMMARY).is_file():
        state = "diverged" if rec.read_json(run_dir / rec.SUMMARY).get("diverged") else "done"
    elif records:
        state = "running"
    else:
        state = "queued"
    recent = [r["seconds"] for r in records[-5:]]
    return {"epoch": last.get("epoch", 0), "epochs": epochs, "train_loss": last.get("train_loss"),
            "eval_acc": evals[-1]["eval_acc"] if evals else None,
            "test1k_acc": evals[-1].get("test1k_acc") if evals else None,
            "s_per_epoch": sum(recent) / len(recent) if recent else None, "state": state}


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


class Progress:
    """``with Progress(out_dir, runs): ...`` shows a live table on a terminal, and otherwise prints a
    line for each run every ``every`` epochs and when it ends."""

    def __init__(self, out_dir, runs, every: int = 10, interval: float = 1.0):
        self.out_dir, self.runs, self.every, self.interval = pathlib.Path(out_dir), runs, every, interval
        self._stop = threading.Event()
        self._printed: dict[str, tuple] = {}
        self._thread = None
        self._live = None

    def statuses(self):
        return [(r.run_id, run_status(self.out_dir / r.run_id, r.epochs)) for r in self.runs]

    def table(self):
        from rich.table import Table

        table = Table(title=f"runs in {self.out_dir}", expand=False)
        for column in ("run", "state", "epoch", "train loss", "eval acc", "test1k acc", "s/epoch"):
            table.add_column(column, justify="left" if column in ("run", "state") else "right")
        for run_id, s in self.statuses():
            table.add_row(run_id, s["state"], f"{s['epoch']}/{s['epochs']}", _fmt(s["train_loss"], ".3f"),
                          _fmt(s["eval_acc"], ".4f"), _fmt(s["test1k_acc"], ".3f"), _fmt(s["s_per_epoch"], ".2f"))
        return table

    def _print_changes(self):
        for run_id, s in self.statuses():
            key = (s["epoch"] // self.every, s["state"])
            if s["state"] != "queued" and self._printed.get(run_id) != key:
                self._printed[run_id] = key
                print(f"{run_id:<40} {s['state']:<8} epoch {s['epoch']:>3}/{s['epochs']:<3} "
                      f"loss {_fmt(s['train_loss'], '.3f'):>6} eval {_fmt(s['eval_acc'], '.4f'):>6} "
                      f"test1k {_fmt(s['test1k_acc'], '.3f'):>5} {_fmt(s['s_per_epoch'], '.2f')} s/epoch", flush=True)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._print_changes()

    def __enter__(self):
        if sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(get_renderable=self.table, refresh_per_second=2)
            self._live.__enter__()
        else:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._live is not None:
            self._live.__exit__(*exc)
        if self._thread is not None:
            self._thread.join()
            self._print_changes()
        return False
