"""The demo's depth sweep: a residual MLP without normalisation on scikit-learn's digits, at several
depths, under each initialisation (paper Sec. 1 and appendix C.3 / C.6: identity-preserving starts
keep a deep residual network's signal at its input's scale, so it stays trainable without BN).

Every block is ``h + fc2(relu(fc1(h)))`` (64 wide, as the 8x8 images); nothing rescales the
branches, so under Kaiming each block roughly doubles the signal's variance and ``depth`` blocks
multiply it by about ``2**depth`` (``results/analysis-signal`` measures the same on 10 blocks).
Every initialisation gets the same data, batch order, optimiser, learning rate and step count; only
``idinit.init_(model, scheme=...)`` differs. A run whose loss stops being finite is stopped there
and counted as diverged (no finite loss can come back from a NaN weight).
"""
from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F
from torch import nn

import idinit

from .data import DeviceLoader
from .train.loop import lr_factor

DEPTH_SCHEMES = ("idinit", "zero", "kaiming", "default")
WIDTH = 64  # = the 8x8 digits flattened, so the stem is a square matrix under every scheme


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.relu(self.fc1(h)))


class ResidualMLP(nn.Module):
    """Stem ``Linear(64, width)`` + ReLU, ``depth`` residual blocks, ReLU, head ``Linear(width, 10)``;
    no normalisation anywhere."""

    def __init__(self, depth: int, width: int = WIDTH, in_features: int = 64, classes: int = 10):
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(depth)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.blocks(F.relu(self.stem(x.flatten(1))))))


def build(scheme: str, depth: int, seed: int) -> ResidualMLP:
    torch.manual_seed(seed)
    model = ResidualMLP(depth)
    # No generator: the 'default' scheme's reset_parameters() draws from the global RNG seeded above.
    idinit.init_(model, scheme=scheme, example_inputs=(torch.zeros(2, 64),))
    return model


def _mean_loss(model: nn.Module, loader: DeviceLoader) -> float:
    with torch.no_grad():
        total = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in loader.epoch())
    return total / loader.n


def train_depth(scheme: str, depth: int, lr: float, data, *, epochs: int, seed: int = 0,
                batch_size: int = 64) -> dict:
    """Train one residual MLP; return its loss at initialisation (whole training set), the mean
    training loss of each epoch, the final test accuracy, and the step where it diverged (or None)."""
    x_train, y_train, x_test, y_test = data
    mean, std = (float(x_train.mean()) / 255,), (float(x_train.std()) / 255,)
    model = build(scheme, depth, seed)
    train = DeviceLoader(x_train, y_train, batch_size, train=True, pad=0, flip=False, seed=seed, mean=mean, std=std)
    train_eval = DeviceLoader(x_train, y_train, 512, train=False, mean=mean, std=std)
    test = DeviceLoader(x_test, y_test, 512, train=False, mean=mean, std=std)
    init_loss = _mean_loss(model, train_eval)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps, epoch_losses, diverged_at = len(train), [], None
    for epoch in range(epochs):
        losses = []
        for i, (x, y) in enumerate(train.epoch(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(epoch * steps + i, epochs * steps, 0)
            loss = F.cross_entropy(model(x), y)
            if not math.isfinite(loss.item()):
                diverged_at = epoch * steps + i
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if diverged_at is not None:
            break
        epoch_losses.append(statistics.fmean(losses))
    test_acc = None
    if diverged_at is None:
        with torch.no_grad():
            test_acc = sum((model(x).argmax(1) == y).sum().item() for x, y in test.epoch()) / test.n
    return {"init_loss": init_loss, "epoch_losses": epoch_losses, "test_acc": test_acc, "diverged_at_step": diverged_at}


def check_sweep_args(depths, lrs, epochs: int) -> None:
    """Raise before anything runs or is written if the sweep's settings cannot make a sweep."""
    if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"depths must be a non-empty list of integers >= 1, got {depths!r}")
    if not lrs or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or not math.isfinite(r)
                      for r in lrs):
        raise ValueError(f"depth learning rates must be a non-empty list of finite numbers > 0, got {lrs!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"depth epochs must be an integer >= 1, got {epochs!r}")


def run_sweep(data, depths, lrs, epochs: int, seed: int = 0, log=print) -> dict:
    """``results[lr][scheme][depth]`` for every learning rate, scheme and depth (keys as strings, as
    they are stored in JSON)."""
    check_sweep_args(depths, lrs, epochs)
    results = {}
    for lr in lrs:
        results[str(lr)] = {}
        for scheme in DEPTH_SCHEMES:
            row = {str(d): train_depth(scheme, d, lr, data, epochs=epochs, seed=seed) for d in depths}
            results[str(lr)][scheme] = row
            log(f"  lr {lr:<5} {scheme:<8} " + "  ".join(
                f"{d}: {_cell(row[str(d)])}" for d in depths))
    return results


def _cell(run: dict) -> str:
    if run["diverged_at_step"] is not None:
        return f"diverged (step {run['diverged_at_step']})"
    return f"{run['test_acc']:.1%}"


def trained_up_to(by_depth: dict, depths, threshold: float = 0.5):
    """The largest depth ``d`` such that the runs at every depth up to ``d`` ended finite with test
    accuracy >= ``threshold`` (None if the shallowest did not)."""
    deepest = None
    for d in sorted(depths):
        run = by_depth[str(d)]
        if run["diverged_at_step"] is not None or run["test_acc"] < threshold:
            break
        deepest = d
    return deepest


def reading(results: dict, depths) -> str:
    """One line from the measurements: each scheme's loss at initialisation at the largest depth,
    then, per learning rate, the depth up to which each scheme trained (test accuracy there)."""
    deepest = str(max(depths))
    first_lr = next(iter(results))
    init = {s: results[first_lr][s][deepest]["init_loss"] for s in DEPTH_SCHEMES}
    order = sorted(DEPTH_SCHEMES, key=lambda s: -init[s] if math.isfinite(init[s]) else -math.inf)
    text = (f"Residual MLP without normalisation: loss at init with {deepest} blocks "
            + ", ".join(f"{s} {init[s]:#.3g}" for s in order) + f" (ln 10 = {math.log(10):.2f}); trained (>= 50% test)")
    for lr, by_scheme in results.items():
        reach = {s: trained_up_to(by_scheme[s], depths) for s in DEPTH_SCHEMES}
        ranked = sorted(DEPTH_SCHEMES, key=lambda s: -(reach[s] or 0))
        cells = [f"{s} none" if reach[s] is None else
                 f"{s} {reach[s]} ({by_scheme[s][str(reach[s])]['test_acc']:.1%})" for s in ranked]
        text += f" at lr {lr} up to: " + ", ".join(cells) + ";"
    return text[:-1] + "."
