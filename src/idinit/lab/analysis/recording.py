"""What every analysis shares: typed settings from ``--set k=v`` strings, atomic JSON and PNG
writes, and the record's header (machine, versions, settings, wall time).

An analysis module defines a frozen dataclass ``Settings`` (its full-size defaults), a
``measure(settings, data_dir, device) -> dict`` and a ``plot(record, path)``; :func:`run_and_record`
turns those three into the ``run(*, out_dir, data_dir, device, overrides)`` the registry exposes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import platform
import tempfile
import time
import typing
from typing import Any, Callable

import torch


def _parse_value(text: str, kind: Any, key: str, analysis: str) -> Any:
    """Convert one ``--set`` string to the type of the settings field it sets."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        (item_kind, *_rest) = typing.get_args(kind)
        items = [part.strip() for part in text.split(",") if part.strip()]
        if not items:
            raise ValueError(f"{analysis}: override {key}={text!r} needs at least one comma-separated value")
        return tuple(_parse_value(item, item_kind, key, analysis) for item in items)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if kind is str:
            return text
    except ValueError:
        raise ValueError(f"{analysis}: override {key}={text!r} is not a valid {kind.__name__}") from None
    raise TypeError(f"{analysis}: settings field {key!r} has a type ({kind}) that overrides cannot set")


def settings_from_overrides(settings_cls: type, overrides: dict[str, str] | None, analysis: str):
    """Build ``settings_cls`` from its defaults and ``overrides`` (strings, as the CLI passes them).

    Raises ``ValueError`` naming an unknown key and listing the valid ones.
    """
    overrides = dict(overrides or {})
    hints = typing.get_type_hints(settings_cls)
    fields = {f.name for f in dataclasses.fields(settings_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"analysis {analysis!r}: unknown override key(s) {unknown}; "
                         f"valid keys: {sorted(fields)}")
    values = {}
    for key, text in overrides.items():
        values[key] = text if not isinstance(text, str) else _parse_value(text, hints[key], key, analysis)
    settings = settings_cls(**values)
    check = getattr(settings, "check", None)
    if check is not None:
        check()
    return settings


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities become ``null`` (strict JSON has no NaN); containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomic(record: dict, path: str | os.PathLike) -> None:
    """Write ``record`` as strict JSON (non-finite floats as ``null``) to ``path``, through a temp
    file in the same folder and ``os.replace``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_finite_or_none(record), handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def save_figure_atomic(figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG through a temp file and ``os.replace``, then close it."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)


def new_figure(n_rows: int, n_cols: int, size: tuple[float, float]):
    """A matplotlib figure on the non-interactive Agg backend (analyses run headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(n_rows, n_cols, figsize=size, squeeze=False)


@contextlib.contextmanager
def torch_threads(count: int):
    """Run a block with ``count`` intra-op threads, then restore the previous setting.

    Tiny problems (10x10 matmuls) run many times faster on one thread than on several, and far
    faster still when other processes share the cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def machine_description(device: str) -> dict:
    """Where a record was measured: host CPU count, torch version, device name (the intra-op thread
    count used is added by :func:`run_and_record`)."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


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
    write_json_atomic(record, out_dir / f"{name}.json")
    return record
