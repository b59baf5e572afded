"""One run's folder: its configuration, checkpoint, per-epoch records and summary (file formats in
:mod:`idinit.lab.train.records`). Every way a run starts, resumes, saves and ends goes through
:class:`RunFolder`, for a run alone and for each member of a pack alike."""
from __future__ import annotations

import pathlib

import torch

from . import records as rec
from .config import RunConfig


class RunFolder:
    def __init__(self, path, config: RunConfig):
        self.path, self.config = pathlib.Path(path), config

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, {self.config.run_id!r})"

    def prepare(self) -> dict | None:
        """Create the folder and write its ``config.json``, or check that the stored one is this
        configuration; return the stored summary if the run has finished, else None."""
        self.path.mkdir(parents=True, exist_ok=True)
        config_path, summary_path = self.path / rec.CONFIG, self.path / rec.SUMMARY
        mine = self.config.to_dict()
        if config_path.is_file():
            stored = rec.read_json(config_path)
            if stored != mine:
                diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
                raise ValueError(f"{self.path} holds a run of a different configuration (differs in {diff}); "
                                 "use another output folder")
        else:
            rec.atomic_write_json(config_path, mine)
        if summary_path.is_file():
            summary = rec.read_json(summary_path)
            if summary.get("finished"):
                return summary
        return None

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device) -> list[dict]:
        """Load the checkpoint (if any) into ``model`` and ``optimizer``; return its records, which
        also replace ``records.jsonl`` (the checkpoint is the truth, see records.py)."""
        records: list[dict] = []
        checkpoint = self.path / rec.CHECKPOINT
        if checkpoint.is_file():
            state = rec.load_checkpoint(checkpoint, device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            records = state["records"]
        rec.write_records(self.path / rec.RECORDS, records)
        return records

    def append(self, record: dict) -> None:
        rec.append_record(self.path / rec.RECORDS, record)

    def save_checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, records: list[dict]) -> None:
        rec.atomic_torch_save(self.path / rec.CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "records": records,
            "config": self.config.to_dict()})

    def finish(self, summary: dict) -> None:
        rec.atomic_write_json(self.path / rec.SUMMARY, summary)
