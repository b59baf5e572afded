"""Experiments whose runs are not CIFAR/MNIST :class:`~idinit.lab.train.RunConfig` runs (text
classification, language-model pretraining): the same :class:`Experiment`, with ``--set`` keys
checked against the run class's own fields. Their run classes give the runner ``data_key()``,
``load_data(data_dir)`` and ``train(run_dir, ...)`` (see ``runner._run_one``)."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

from .grid import Experiment


def parse_task_overrides(config_class, pairs) -> dict:
    """``["epochs=2", "embedding=random"]`` -> values for ``config_class`` (JSON values, else the
    string); a key that is not one of its fields raises ``ValueError`` naming the known ones."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    items = pairs.items() if isinstance(pairs, dict) else [p.split("=", 1) if "=" in p else (p, None) for p in pairs]
    out = {}
    for key, raw in items:
        key = key.strip()
        if raw is None:
            raise ValueError(f"--set expects key=value, got {key!r}")
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; known settings: {sorted(fields)}")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw.strip())
            except json.JSONDecodeError:
                raw = raw.strip()
        out[key] = raw
    return out


@dataclass
class TaskExperiment(Experiment):
    """An :class:`Experiment` of runs of another task; ``--set`` keys are their class's fields.
    ``run_order``, a sort key on runs, sets the order workers take them in (else configuration-major)."""

    run_order: Callable | None = None

    def runs(self, seeds=None, only=None, overrides=None) -> list:
        changes = parse_task_overrides(type(self.configs[0]), overrides or {})
        if "seed" in changes or "name" in changes:
            raise ValueError("set seeds with --seeds and do not rename configurations with --set")
        runs = [run.replace(**changes) for run in super().runs(seeds=seeds, only=only)]
        return runs if self.run_order is None else sorted(runs, key=self.run_order)


__all__ = ["TaskExperiment", "parse_task_overrides"]
