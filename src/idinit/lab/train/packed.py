"""Train N runs of one architecture at once, packed into one grouped network (see
:mod:`idinit.lab.models.packed_resnet` for why and how much faster).

Each member run is exactly the run :func:`~idinit.lab.train.loop.train_run` would make of its
configuration: the same seeded initialisation, data order, augmentation, mixup draws and
learning-rate schedule, its own optimiser (SGD and Adam members can share a pack), and the same
files in its own run folder, so a member can be resumed or continued by ``train_run`` and is
reported like any other run. Both go through the one loop :func:`~idinit.lab.train.loop.train`;
only the forward pass differs (:mod:`idinit.lab.train.forward`). What members must share:
:data:`~idinit.lab.train.forward.SHARED_FIELDS`.
"""
from __future__ import annotations

from .config import RunConfig
from .forward import SHARED_FIELDS, pack_key, packable, plan_packs
from .loop import train


def train_packed(configs: list[RunConfig], run_dirs: list, **runtime) -> list[dict]:
    """Train ``configs`` together (one pack); return one summary per member, in order.

    Members already finished are left alone; the others must all have stopped after the same epoch
    (they always do when they were trained as one pack). Keyword arguments as for ``train_run``.
    """
    return train(configs, run_dirs, pack=True, **runtime)


__all__ = ["SHARED_FIELDS", "pack_key", "packable", "plan_packs", "train_packed"]
