"""A tiny grid that touches every model variant, both optimisers, warm-up, mixup and both
shortcuts in one epoch of a few steps: the GPU smoke test and a CPU check of the whole path."""
from __future__ import annotations

from ..train import RunConfig
from .grid import Experiment
from .table1 import INITS


def smoke() -> Experiment:
    base = dict(arch="resnet20", epochs=1, batch_size=512, train_limit=1024, eval_limit=1000, lr=0.1,
                train_chunks=[3], target_accuracy=0.2)
    configs = [RunConfig(name=f"{init}-sgd", init=init, **base) for init in INITS]
    configs += [RunConfig(name="idinit-sgd-B", init="idinit", shortcut="B", **base),
                RunConfig(name="kaiming-adam-B", init="kaiming", shortcut="B", optimizer="adam",
                          weight_decay=0.0, **{**base, "lr": 1e-3}),
                RunConfig(name="fixup-adam", init="fixup", optimizer="adam", **{**base, "lr": 1e-3}),
                RunConfig(name="idinit-channel-zero-mixup-warmup", init="idinit", mixup_alpha=1.0,
                          init_options={"loose": 0.0, "conv": "channel", "branch_end": "zero"},
                          **{**base, "epochs": 2, "warmup_epochs": 1, "train_limit": 1024})]
    return Experiment(name="smoke", version=1, description="Every variant for a few steps (checks the code path)",
                      configs=configs, seeds=(0,))
