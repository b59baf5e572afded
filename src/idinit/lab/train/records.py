"""Run folders on disk: per-epoch JSONL records, atomic checkpoints and summaries.

A run folder holds ``config.json``, ``records.jsonl`` (one line per finished epoch, flushed and
fsynced as it is written), ``checkpoint.pt`` (model + optimiser + the records so far, written
atomically after each epoch) and, once finished, ``summary.json``. The checkpoint is the truth: on
resume the records file is rewritten from the checkpoint's records, so an epoch appended after the
last checkpoint (the run was killed between the two writes) is dropped and trained again, never
recorded twice, and a partly written last line never survives.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pathlib
import pickle
import tempfile

import torch

CONFIG, RECORDS, CHECKPOINT, SUMMARY = "config.json", "records.jsonl", "checkpoint.pt", "summary.json"
CHECKSUM, LOCK = "checkpoint.sha256", ".lock"
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


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
    """All records of a records file. A last line without its newline (a write cut short by a
    kill) is ignored; a complete line that is not a JSON object, or bytes that are not UTF-8,
    raise ``ValueError`` naming the file and line, so no reader silently stops early."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    out = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}, line {number}: not a JSON record ({err})") from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: not a JSON record (a {type(record).__name__})")
            out.append(record)
    return out


def read_json(path):
    """The JSON value in ``path``; ``ValueError`` naming the file if it does not parse."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
