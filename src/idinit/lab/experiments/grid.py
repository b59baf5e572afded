"""A named experiment: a grid of :class:`RunConfig` (one per table cell) times seeds, with the
paper's numbers for each cell so the report can put them side by side."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from ..train import RunConfig, parse_overrides


@dataclass
class Experiment:
    name: str
    version: int
    description: str
    configs: list[RunConfig]
    seeds: tuple[int, ...] = (0,)
    # config name -> {"acc": "93.41±0.10", "epochs_to_target": "26±1", "source": "..."}
    paper: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # report sections of its own (the paper's table layout): rows of report.summary_rows -> markdown lines
    report_sections: Callable[[list[dict]], list[str]] | None = None

    def __post_init__(self):
        names = [c.name for c in self.configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"experiment {self.name!r} has duplicate configuration names {duplicates}")

    def runs(self, seeds=None, only=None, overrides=None) -> list[RunConfig]:
        """The runs to make: configurations whose name matches any glob in ``only`` (all if None),
        each with every seed, with ``overrides`` (``key=value`` strings or a dict) applied."""
        configs = self.configs
        if only:
            patterns = [only] if isinstance(only, str) else list(only)
            configs = [c for c in configs if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
            if not configs:
                raise ValueError(f"no configuration of {self.name!r} matches {patterns}; "
                                 f"names: {[c.name for c in self.configs]}")
        changes = parse_overrides(overrides or {})
        if "seed" in changes or "name" in changes:
            raise ValueError("set seeds with --seeds and do not rename configurations with --set")
        seeds = tuple(self.seeds if seeds is None else seeds)
        return [c.replace(seed=s, **changes) for c in configs for s in seeds]
