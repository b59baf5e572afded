"""The configuration of one training run: everything that decides its numbers, and nothing else
(device, compile and other runtime choices are arguments of :func:`idinit.lab.train.train_run`)."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field

from ..models.cifar_resnet import SHORTCUTS

DATASETS = ("cifar10", "mnist")
# fields added after run folders existed -> their default (see RunConfig.to_dict)
LATER_FIELDS = {"dataset": "cifar10"}


class ConfigRecord:
    """What every run configuration of the lab shares: a dict round trip that refuses unknown
    fields, ``replace``, and the run folder name ``<name>/seed<k>``. A subclass for another task sets
    ``TASK`` (stored as ``"task"`` in its ``to_dict``, dropped again by ``from_dict``)."""

    TASK: str | None = None

    @classmethod
    def from_dict(cls, values: dict):
        if cls.TASK is not None:
            values = {k: v for k, v in values.items() if k != "task"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def run_id(self) -> str:
        """Folder name of the run inside an experiment: ``<name>/seed<k>``."""
        return f"{self.name}/seed{self.seed}"


@dataclass
class RunConfig(ConfigRecord):
    """One run: a model, its initialisation, the optimiser and schedule, the data, a seed.

    ``dataset`` is ``"cifar10"`` (``protocol`` and ``train_chunks`` choose the split) or ``"mnist"``
    (the official 60k / 10k split, evaluated on the 10k test set, no augmentation).
    """

    name: str = "run"                      # configuration name inside an experiment, e.g. "idinit-sgd"
    arch: str = "resnet56"
    init: str = "idinit"
    shortcut: str = "A"                   # "A" (zeros after + BN, Fixup code base), "A-centred", "B"
    init_options: dict = field(default_factory=dict)
    optimizer: str = "sgd"                 # "sgd", "adam" (L2 decay) or "adamw" (decoupled decay)
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
        # everything a run would refuse later is refused here, before a run folder is written (issue 13 §2)
        from ..models.build import INITS, OTHER_ARCHS, parse_arch

        if self.arch not in OTHER_ARCHS:
            parse_arch(self.arch)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.train_chunks is not None and (not self.train_chunks or any(c not in (0, 1, 2, 3) for c in self.train_chunks)):
            raise ValueError(f"train_chunks must be None or a non-empty subset of [0, 1, 2, 3], got {self.train_chunks}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {self.optimizer!r}")
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


def parse_overrides(pairs: list[str] | dict, target: type = RunConfig, context: str = "") -> dict:
    """``["epochs=2", "lr=0.1", "init_options={\\"loose\\": 0}"]`` -> typed values for the dataclass
    ``target`` (:class:`RunConfig` by default; the analyses' ``Settings`` too): the one ``--set`` parser.

    Each string is converted to its field's annotated type: bool (true/false/1/0/yes/no/on/off),
    int, float (finite), str, tuple (comma-separated items), dict or list (JSON), and ``none`` for a
    field that may be None. Values that are not strings pass through. Unknown keys raise
    ``ValueError`` naming them; ``context`` (e.g. ``"momentum: "``) prefixes every message.
    """
    items = pairs.items() if isinstance(pairs, dict) else [_split_pair(p) for p in pairs]
    hints = typing.get_type_hints(target)
    fields = {f.name for f in dataclasses.fields(target)}
    out = {}
    for key, raw in items:
        if key not in fields:
            raise ValueError(f"{context}unknown setting {key!r}; known settings: {sorted(fields)}")
        out[key] = _convert(key, raw, hints[key], context)
    return out


def split_pairs(pairs: list[str] | dict | None) -> dict:
    """``["k=v", ...]`` (as ``--set`` gives them) -> ``{"k": "v"}``; a dict passes through."""
    if pairs is None:
        return {}
    return dict(pairs) if isinstance(pairs, dict) else dict(_split_pair(p) for p in pairs)


def _split_pair(pair: str) -> tuple[str, str]:
    if "=" not in pair:
        raise ValueError(f"--set expects key=value, got {pair!r}")
    key, value = pair.split("=", 1)
    return key.strip(), value.strip()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(key: str, raw, kind, context: str = ""):
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        if text.lower() == "none":
            return None
        (kind,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        items = [part.strip() for part in text.split(",") if part.strip()]
        if not items:
            raise ValueError(f"{context}setting {key}={raw!r} needs at least one comma-separated value")
        item_kind = typing.get_args(kind)[0] if typing.get_args(kind) else str
        return tuple(_convert(key, item, item_kind, context) for item in items)
    try:
        if origin is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if origin is int:
            return int(text)
        if origin is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if origin in (dict, list):
            value = json.loads(text)
            if not isinstance(value, origin):
                raise ValueError(text)
            return value
        if origin is str:
            return text
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{context}setting {key}={raw!r} is not a valid {origin.__name__}") from err
    raise TypeError(f"{context}field {key!r} has a type ({kind}) that --set cannot set")
