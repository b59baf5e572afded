"""The configuration of one training run: everything that decides its numbers, and nothing else
(device, compile and other runtime choices are arguments of :func:`idinit.lab.train.train_run`)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..models.cifar_resnet import SHORTCUTS

DATASETS = ("cifar10", "mnist")
# fields added after run folders existed -> their default (see RunConfig.to_dict)
LATER_FIELDS = {"dataset": "cifar10"}


@dataclass
class RunConfig:
    """One run: a model, its initialisation, the optimiser and schedule, the data, a seed.

    ``dataset`` is ``"cifar10"`` (``protocol`` and ``train_chunks`` choose the split) or ``"mnist"``
    (the official 60k / 10k split, evaluated on the 10k test set, no augmentation).
    """

    name: str = "run"                      # configuration name inside an experiment, e.g. "idinit-sgd"
    arch: str = "resnet56"
    init: str = "idinit"
    shortcut: str = "A"                   # "A" (zeros after + BN, Fixup code base), "A-centred", "B"
    init_options: dict = field(default_factory=dict)
    optimizer: str = "sgd"                 # "sgd" or "adam"
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 1024
    epochs: int = 200
    warmup_epochs: int = 0                 # linear warm-up, then cosine to 0
    mixup_alpha: float = 0.0               # 0 disables mixup
    label_smoothing: float = 0.0
    seed: int = 0
    target_accuracy: float = 0.80          # for "epochs to target"
    protocol: str = "shared"               # "shared" (40k/10k + exact 1k test) or "official"
    train_chunks: list | None = None       # shared protocol: subset of training chunks 0-3
    train_limit: int | None = None         # use only the first N training images (tests, smoke runs)
    eval_limit: int | None = None          # use only the first N evaluation images
    eval_every: int = 1                    # evaluate every k epochs (and always after the last)
    eval_batch_size: int = 2000
    dataset: str = "cifar10"               # "cifar10" or "mnist"

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset != "cifar10" and self.train_chunks is not None:
            raise ValueError(f"train_chunks selects CIFAR-10 chunks; it must be None for dataset {self.dataset!r}")
        if self.protocol not in ("shared", "official"):
            raise ValueError(f"protocol must be 'shared' or 'official', got {self.protocol!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.lr <= 0 or self.mixup_alpha < 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0, mixup_alpha and weight_decay >= 0; got lr={self.lr}, "
                             f"mixup_alpha={self.mixup_alpha}, weight_decay={self.weight_decay}")

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        # Fields added after the first run folders were written are left out while at their
        # default, so those folders' config.json still equals the config and their runs resume.
        for name, default in LATER_FIELDS.items():
            if values[name] == default:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "RunConfig":
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def run_id(self) -> str:
        """Folder name of the run inside an experiment: ``<name>/seed<k>``."""
        return f"{self.name}/seed{self.seed}"


def parse_overrides(pairs: list[str] | dict) -> dict:
    """``["epochs=2", "lr=0.1", "init_options={\\"loose\\": 0}"]`` -> typed values for :class:`RunConfig`.

    Each value is converted to the field's type (int, float, bool, str; JSON for dict/list
    fields and ``none`` for None). Unknown keys raise ``ValueError`` naming them.
    """
    items = pairs.items() if isinstance(pairs, dict) else [_split_pair(p) for p in pairs]
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    defaults = RunConfig()
    out = {}
    for key, raw in items:
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; known settings: {sorted(fields)}")
        out[key] = _convert(key, raw, getattr(defaults, key))
    return out


def _split_pair(pair: str) -> tuple[str, str]:
    if "=" not in pair:
        raise ValueError(f"--set expects key=value, got {pair!r}")
    key, value = pair.split("=", 1)
    return key.strip(), value.strip()


def _convert(key: str, raw, default):
    if not isinstance(raw, str):
        return raw
    if raw.lower() == "none":
        return None
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (dict, list)) or default is None:
            return json.loads(raw)
        return raw
    except (ValueError, json.JSONDecodeError) as err:
        kind = type(default).__name__ if default is not None else "JSON"
        raise ValueError(f"setting {key}={raw!r} is not a valid {kind}") from err
