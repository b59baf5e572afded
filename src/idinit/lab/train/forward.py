"""How the members' logits are computed: the one thing in which a run alone and a pack differ.

- :func:`alone`: one model, one batch.
- :func:`packed`: N CIFAR ResNets of one architecture as one grouped network
  (:class:`~idinit.lab.models.packed_resnet.PackedCifarResNet`; ~3x the images/s of one compiled
  model on an H200), its narrow convolutions optionally dense block-diagonal (:data:`DENSE_CHANNELS`). Which runs can share a pack: :func:`packable`, :func:`pack_key`,
  :func:`plan_packs`.

Both return a :class:`Forward`, whose ``train(xs)`` takes one batch per member and ``eval(x)`` one
batch shared by all members, each returning logits ``(B, N, classes)``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..models.cifar_resnet import CifarResNet
from ..models.packed_resnet import PackedCifarResNet
from .config import RunConfig

# Packed convolutions whose per-member output channels are at most this many run as one dense
# block-diagonal convolution (PackedCifarResNet's ``dense_channels``); 0: all grouped. Not the
# default until `idinit bench` shows it faster on the GPU: it costs N times the multiply-adds, and a
# member whose activations turn NaN/inf spreads them to its pack-mates.
DENSE_CHANNELS = 0

# Fields every member of a pack must share (the rest, e.g. init, seed, optimiser, lr, warm-up,
# mixup, may differ).
SHARED_FIELDS = ("arch", "dataset", "shortcut", "batch_size", "epochs", "protocol", "train_chunks", "train_limit",
                 "eval_limit", "eval_every", "eval_batch_size")


@dataclass
class Forward:
    module: nn.Module                     # what .train() / .eval() switch
    train: Callable                       # list of N batches (B, C, H, W) -> logits (B, N, classes)
    eval: Callable                        # one batch (B, C, H, W) -> logits (B, N, classes)
    sync: Callable[[int], None]           # after an epoch of ``steps``: members' BN statistics up to date
    packed: int | None = None             # pack size, recorded with the run; None for a run alone


def alone(model: nn.Module, trained: nn.Module | None = None) -> Forward:
    """``model`` alone; ``trained`` (e.g. its DistributedDataParallel wrapper) runs the training
    forward pass instead when given."""
    trained = model if trained is None else trained

    def one(x):
        return model(x)[:, None]

    return Forward(trained, lambda xs: trained(xs[0])[:, None], one, lambda steps: None)


def packed(members: list[nn.Module], memory_format=torch.contiguous_format,
           dense_channels: int = DENSE_CHANNELS) -> Forward:
    """The members as one :class:`PackedCifarResNet` (built now: it copies their BN statistics, so
    build it after loading their checkpoints); ``dense_channels``: see that class."""
    for model in members:
        if type(model) is not CifarResNet:
            raise ValueError(f"a {type(model).__name__} cannot be packed; only CifarResNet models can")
    network = PackedCifarResNet(members, dense_channels=dense_channels, memory_format=memory_format)
    network = network.to(next(members[0].parameters()).device)
    n = len(members)

    def train(xs):
        return network(torch.cat(xs, 1).contiguous(memory_format=memory_format))

    def evaluate(x):
        return network(x.repeat(1, n, 1, 1).contiguous(memory_format=memory_format))

    return Forward(network, train, evaluate, lambda steps: network.sync_members(steps_taken=steps), n)


def packable(config: RunConfig) -> bool:
    """Whether the run's model is a plain :class:`CifarResNet` variant (Fixup's is not; AllConv,
    Linear-5 and Res-112 are other architectures)."""
    return (isinstance(config, RunConfig) and config.init != "fixup" and config.arch.startswith("resnet")
            and config.arch[6:].isdigit())


def pack_key(config: RunConfig) -> tuple:
    """Runs with equal keys can share a pack (same architecture variant and data cadence)."""
    variant = {"skipinit": "nonorm-gate", "rezero": "norm-gate"}.get(config.init, "norm")
    return (variant,) + tuple(repr(getattr(config, f)) for f in SHARED_FIELDS)


def check_pack(configs: list[RunConfig]) -> None:
    """Refuse, before anything is written, runs that cannot share one packed network."""
    if len({pack_key(c) for c in configs}) > 1 or not all(packable(c) for c in configs):
        raise ValueError("these runs cannot share a pack: they must all be CifarResNet variants of one "
                         f"architecture and share {SHARED_FIELDS}; got {[c.run_id for c in configs]}")


def plan_packs(runs: list[RunConfig], max_pack: int) -> list[list[RunConfig]]:
    """Group ``runs`` into packs of at most ``max_pack`` members that can share a network (equal
    :func:`pack_key`), keeping the grid's order; a run that cannot be packed is a pack of one."""
    if max_pack < 1:
        raise ValueError(f"max_pack must be >= 1, got {max_pack}")
    groups: dict[tuple, list[RunConfig]] = {}
    singles: list[list[RunConfig]] = []
    for run in runs:
        if packable(run) and max_pack > 1:
            groups.setdefault(pack_key(run), []).append(run)
        else:
            singles.append([run])
    packs = [group[i:i + max_pack] for group in groups.values() for i in range(0, len(group), max_pack)]
    return packs + singles
