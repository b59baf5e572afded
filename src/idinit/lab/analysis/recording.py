"""What every analysis shares: typed settings from ``--set k=v`` strings, atomic JSON and PNG
writes, and the record's header (machine, versions, settings, wall time).

An analysis module defines a frozen dataclass ``Settings`` (its full-size defaults), a
``measure(settings, data_dir, device) -> dict`` and a ``plot(record, path)``; :func:`run_and_record`
turns those three into the ``run(*, out_dir, data_dir, device, overrides)`` the registry exposes.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import time
from typing import Callable

import torch

from ..machine import machine_description, torch_threads
from ..train.config import parse_overrides, split_pairs
from ..train.records import atomic_write_bytes, atomic_write_json


def settings_from_overrides(settings_cls: type, overrides: dict[str, str] | list[str] | None, analysis: str):
    """Build ``settings_cls`` from its defaults and ``overrides`` (``{"k": "v"}`` or the CLI's
    ``["k=v", ...]``), typed by :func:`idinit.lab.train.config.parse_overrides`.

    Raises ``ValueError`` naming an unknown key and listing the valid ones.
    """
    overrides = split_pairs(overrides)
    fields = {f.name for f in dataclasses.fields(settings_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"analysis {analysis!r}: unknown override key(s) {unknown}; "
                         f"valid keys: {sorted(fields)}")
    values = parse_overrides(overrides, settings_cls, context=f"{analysis}: ")
    settings = settings_cls(**values)
    check = getattr(settings, "check", None)
    if check is not None:
        check()
    return settings


def save_figure_atomic(figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG through a temp file and ``os.replace``, then close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def new_figure(n_rows: int, n_cols: int, size: tuple[float, float]):
    """A matplotlib figure on the non-interactive Agg backend (analyses run headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)


def analysis_run(name: str, settings_cls: type, measure: Callable, plot: Callable, summary: str) -> Callable[..., dict]:
    """The ``run(*, out_dir, data_dir, device, overrides)`` an analysis module exposes, with
    ``summary`` (one line) as its docstring."""

    def run(*, out_dir, data_dir=None, device="cpu", overrides: dict[str, str] | None = None) -> dict:
        return run_and_record(name, settings_cls, measure, plot, out_dir=out_dir, data_dir=data_dir, device=device,
                              overrides=overrides)

    run.__doc__ = summary
    return run


def run_and_record(name: str, settings_cls: type, measure: Callable, plot: Callable, *, out_dir,
                   data_dir=None, device="cpu", overrides: dict[str, str] | None = None) -> dict:
    """Parse overrides, measure, then write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.png``."""
    settings = settings_from_overrides(settings_cls, overrides, name)
    out_dir = pathlib.Path(out_dir)
    start = time.perf_counter()
    # One intra-op thread on CPU: these problems are small and the lab's CPU machines are shared;
    # measured on the 2-core sandbox under load, one thread ran a training step 3-7x faster than two.
    threads = 1 if torch.device(device).type == "cpu" else torch.get_num_threads()
    with torch_threads(threads):
        results = measure(settings, data_dir=data_dir, device=device)
    machine = {**machine_description(device), "torch_threads": threads}
    record = {"analysis": name, "settings": dataclasses.asdict(settings), "machine": machine,
              "elapsed_s": round(time.perf_counter() - start, 2), **results}
    plot(record, out_dir / f"{name}.png")
    atomic_write_json(out_dir / f"{name}.json", record)
    return record
