"""Run folders on disk: per-epoch JSONL records, atomic checkpoints and summaries.

A run folder holds ``config.json``, ``records.jsonl`` (one line per finished epoch, flushed and
fsynced as it is written), ``checkpoint.pt`` (model + optimiser + the records so far, written
atomically after each epoch) and, once finished, ``summary.json``. The checkpoint is the truth: on
resume the records file is rewritten from the checkpoint's records, so an epoch appended after the
last checkpoint (the run was killed between the two writes) is dropped and trained again, never
recorded twice, and a partly written last line never survives.
"""
from __future__ import annotations

import io
import json
import math
import os
import pathlib
import pickle
import tempfile

import torch

CONFIG, RECORDS, CHECKPOINT, SUMMARY = "config.json", "records.jsonl", "checkpoint.pt", "summary.json"
TMP_SUFFIX = ".tmp"  # atomic writes go through ".<name>.<random>.tmp" beside the file


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync, then ``os.replace`` it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; run files are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _json_safe(value):
    """``value`` with every non-finite float (nested in dicts, lists, tuples) as None: JSON has no
    NaN/inf, so a diverged run records null, never an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def dumps_record(record: dict) -> str:
    return json.dumps(_json_safe(record), allow_nan=False)


def atomic_write_json(path, value) -> None:
    """Write ``value`` as strict JSON (non-finite floats as null), atomically."""
    atomic_write_bytes(path, (json.dumps(_json_safe(value), indent=2, allow_nan=False) + "\n").encode())


def atomic_torch_save(path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, map_location="cpu") -> dict:
    """A run's checkpoint, read with ``torch.load(weights_only=True)``: only tensors and plain data
    (dicts, lists, numbers, strings) are accepted, so a planted file cannot run code; anything else
    is refused with a ``ValueError`` naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refused to load, it holds more than tensors and plain data ({first})") from err
    except (RuntimeError, EOFError) as err:  # truncated or not a torch file at all
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err


def append_record(path, record: dict) -> None:
    """Append one JSON line and make it durable before returning."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(dumps_record(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_records(path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(dumps_record(r) + "\n" for r in records).encode())


def read_records(path) -> list[dict]:
    """All complete JSON lines of a records file (a truncated last line is ignored)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
