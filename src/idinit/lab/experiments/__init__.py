"""Named, versioned experiments: each paper table or figure as a grid of run configurations x seeds."""
from __future__ import annotations

from .beyond_residual import allconv, allconv_short, linear5, res112
from .fig6 import fig6
from .grid import Experiment
from .lm_pretrain import lm_pretrain
from .smoke import smoke
from .table1 import table1
from .table4 import table4
from .table5 import table5
from .vision_recipes import resnet50_cifar, vit_cifar

EXPERIMENTS = {
    "table1": lambda: table1(56),
    "table1-resnet110": lambda: table1(110),
    "table5": lambda: table5(0),
    "table5-warmup5": lambda: table5(5),
    "fig6": fig6,
    "table4": table4,
    "lm-pretrain": lm_pretrain,
    "vit-cifar": vit_cifar,
    "resnet50-cifar": resnet50_cifar,
    "smoke": smoke,
    "linear5": linear5,
    "allconv": allconv,
    "allconv-short": allconv_short,
    "res112": res112,
    "res112-warmup5": lambda: res112(5),
    "res112-optionA": lambda: res112(shortcut="A"),
    "res112-A-centred": lambda: res112(shortcut="A-centred"),
    "res112-linear-conv2": lambda: res112(conv2_relu=False),
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]()


__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]
