"""One run's folder: its configuration, checkpoint, per-epoch records and summary (file formats in
:mod:`idinit.lab.train.records`). Every way a run starts, resumes, saves and ends goes through
:class:`RunFolder`, for a run alone and for each member of a pack alike.

Guarantees (issue 13 §2):

- one writer: the folder is locked (``fcntl.flock`` on ``.lock``, released by the OS when its
  holder dies) from :meth:`RunFolder.prepare` to :meth:`RunFolder.release`; a second process is
  refused;
- never the wrong state: a checkpoint resumes only if its sha256 is one that
  ``checkpoint.sha256`` lists (written before the checkpoint is replaced, so a kill between the
  two writes leaves a checkpoint that still matches) and it was written for this configuration
  and this idinit version;
- nothing half-written survives: temporary files of an interrupted atomic write are removed on
  the next start.

The CIFAR / MNIST runs (:mod:`idinit.lab.train.loop`), the text-classification and the language-model
runs (:mod:`idinit.lab.experiments`) all use this class; a run whose next epochs draw from random
state the model and optimiser do not hold (dropout's global RNG, a batch generator) saves it as
``extra`` with the checkpoint and gets it back from :attr:`RunFolder.extra` on resume.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
from collections.abc import Iterator

import torch

import idinit

from . import records as rec
from .config import ConfigRecord


class RunFolder:
    def __init__(self, path, config: ConfigRecord, writer: bool = True):
        """``config``: any run configuration of the lab (a :class:`ConfigRecord`: ``to_dict()`` and
        ``run_id``). ``writer=False``: a reader of a folder another process (rank 0 of a data-parallel
        run) writes: it checks and loads, never locks or writes."""
        self.path, self.config, self.writer = pathlib.Path(path), config, writer
        self._lock = None
        self.extra: dict = {}  # what the resumed checkpoint saved besides model and optimiser

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, {self.config.run_id!r})"

    def prepare(self, log=print) -> dict | None:
        """Lock the folder, clean up temporary files of interrupted writes, write its
        ``config.json`` or check that the stored one is this configuration; return the stored
        summary if the run has finished (the folder is then released), else None."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            self._acquire()
        try:
            for tmp in self.path.glob(f".*{rec.TMP_SUFFIX}") if self.writer else ():
                tmp.unlink(missing_ok=True)
            config_path, summary_path = self.path / rec.CONFIG, self.path / rec.SUMMARY
            mine = self.config.to_dict()
            if config_path.is_file():
                stored = rec.read_json(config_path)
                if stored != mine:
                    raise ValueError(f"{config_path} holds a run of a different configuration "
                                     f"({_difference(stored, mine)}); use another output folder")
            elif self.writer:
                rec.atomic_write_json(config_path, mine)
            if summary_path.is_file():
                try:
                    summary = rec.read_json(summary_path)
                except ValueError as err:  # the checkpoint, not the summary, is the truth
                    log(f"{err}; resuming from the checkpoint instead")
                    summary = None
                if summary is not None and summary.get("finished"):
                    self.release()
                    return summary
        except BaseException:
            self.release()
            raise
        return None

    @contextlib.contextmanager
    def held(self, log=print) -> Iterator[dict | None]:
        """:meth:`prepare` on entry (yielding the finished run's summary, or None), :meth:`release`
        on exit, however the block ends."""
        try:
            yield self.prepare(log)
        finally:
            self.release()

    def _acquire(self) -> None:
        handle = open(self.path / rec.LOCK, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"{self.path} is being trained by another process (it holds the lock on "
                               f"{self.path / rec.LOCK}); wait for it or stop it") from None
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device) -> list[dict]:
        """Load the checkpoint (if any) into ``model`` and ``optimizer`` after checking that it is
        intact and this run's; return its records, which also replace ``records.jsonl`` (the
        checkpoint is the truth, see records.py)."""
        records: list[dict] = []
        checkpoint = self.path / rec.CHECKPOINT
        if checkpoint.is_file():
            self._check_integrity(checkpoint)
            state = rec.load_checkpoint(checkpoint, device)
            self._check_identity(checkpoint, state)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            records = state["records"]
            self.extra = state.get("extra", {})
        if self.writer:
            rec.write_records(self.path / rec.RECORDS, records)
        return records

    def _check_integrity(self, checkpoint: pathlib.Path) -> None:
        checksum = self.path / rec.CHECKSUM
        if not checksum.is_file():
            raise ValueError(f"{checkpoint}: no {rec.CHECKSUM} beside it, so its integrity cannot be checked; "
                             "move it away to start the run afresh")
        known = rec.read_json(checksum).get("sha256", [])
        actual = rec.sha256_file(checkpoint)
        if actual not in known:
            raise ValueError(f"{checkpoint}: sha256 {actual[:16]}... is not the one written with it "
                             f"({', '.join(k[:16] + '...' for k in known)} in {checksum}); the file is damaged "
                             "or was replaced: move it away to start the run afresh")

    def _check_identity(self, checkpoint: pathlib.Path, state: dict) -> None:
        stored = state.get("config")
        if stored != self.config.to_dict():
            raise ValueError(f"{checkpoint} was written by another run "
                             f"({_difference(stored or {}, self.config.to_dict())}); refusing to resume from it")
        if state.get("idinit_version") != idinit.__version__:
            raise ValueError(f"{checkpoint} was written by idinit {state.get('idinit_version')}, this is "
                             f"{idinit.__version__}; refusing to resume across versions")

    def append(self, record: dict) -> None:
        if self.writer:
            rec.append_record(self.path / rec.RECORDS, record)

    def save_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, records: list[dict],
                        extra: dict | None = None) -> None:
        """``extra``: tensors and plain data the run needs to continue bitwise (RNG states)."""
        if not self.writer:
            return
        data = rec.torch_bytes({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "records": records,
                                "config": self.config.to_dict(), "idinit_version": idinit.__version__,
                                "extra": extra or {}})
        checkpoint, checksum = self.path / rec.CHECKPOINT, self.path / rec.CHECKSUM
        # The new checksum goes first, listed with the current file's, so that whichever file a
        # kill leaves in place matches a listed checksum.
        listed = [rec.sha256_file(checkpoint)] if checkpoint.is_file() else []
        rec.atomic_write_json(checksum, {"sha256": [rec.sha256_bytes(data)] + listed})
        rec.atomic_write_bytes(checkpoint, data)

    def finish(self, summary: dict) -> None:
        if self.writer:
            rec.atomic_write_json(self.path / rec.SUMMARY, summary)


def _difference(stored: dict, mine: dict) -> str:
    keys = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    return "differs in " + ", ".join(f"{k}: {stored.get(k)!r} there, {mine.get(k)!r} here" for k in keys)


def global_rng_state(device) -> dict:
    """The global RNG states a run's next epoch draws from (dropout): the CPU one, and the CUDA one
    of ``device`` if it is a CUDA device; for :meth:`RunFolder.save_checkpoint`'s ``extra``."""
    device = torch.device(device)
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_global_rng(state: dict, device) -> None:
    """Put back what :func:`global_rng_state` saved (a checkpoint's ``extra``)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))
