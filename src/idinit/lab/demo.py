"""``idinit demo``: IDInit against Kaiming and PyTorch's default init on a small residual network,
on scikit-learn's handwritten digits (1,797 8x8 images that ship with scikit-learn: no download).
Runs on a CPU in about a minute; prints a comparison and writes ``demo.png`` and ``demo.json``.

The network is the lab's CIFAR ResNet at depth 20 on 1-channel 8x8 inputs (stages at 8x8, 4x4,
2x2; option A zero-filled shortcuts). Every initialisation gets the same data, order, optimiser
(SGD, momentum 0.9, lr 0.05, weight decay 5e-4, cosine, batch 64) and seeds: only the call
``idinit.init_(model, scheme=...)`` differs.
"""
from __future__ import annotations

import json
import pathlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import idinit

from .data import DeviceLoader
from .machine import torch_threads
from .models import CifarResNet
from .train import records as rec
from .train import lr_factor

SCHEMES = ("idinit", "kaiming", "default")
TARGET = 0.90


def load_digits_split(seed: int = 0, n_test: int = 497):
    """scikit-learn's digits as uint8 (N, 8, 8, 1) images (0..16 scaled by 15), split in a fixed,
    class-stratified way into 1,300 training and 497 test images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images * 15).round().astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[: round(n_test * len(members) / len(y))]] = True
    return x[~test], y[~test], x[test], y[test]


def train_one(scheme: str, seed: int, data, epochs: int, lr: float = 0.05, batch_size: int = 64) -> list[dict]:
    x_train, y_train, x_test, y_test = data
    mean, std = (float(x_train.mean()) / 255,), (float(x_train.std()) / 255,)
    torch.manual_seed(seed)
    model = CifarResNet(depth=20, in_channels=1)
    idinit.init_(model, scheme=scheme, example_inputs=(torch.zeros(2, 1, 8, 8),))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    train = DeviceLoader(x_train, y_train, batch_size, train=True, pad=0, flip=False, seed=seed, mean=mean, std=std)
    test = DeviceLoader(x_test, y_test, 512, train=False, mean=mean, std=std)
    steps, history = len(train), []
    for epoch in range(epochs):
        model.train()
        losses = []
        for i, (x, y) in enumerate(train.epoch(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(epoch * steps + i, epochs * steps, 0)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test.epoch())
        history.append({"epoch": epoch + 1, "train_loss": statistics.fmean(losses), "test_acc": correct / test.n})
    return history


def run_demo(out_dir="runs/demo", epochs: int = 15, seeds: int = 2) -> dict:
    # The tensors are tiny (8x8 images, batch 64): one thread (see machine.torch_threads).
    with torch_threads(1):
        return _run_demo(out_dir, epochs, seeds)


def _run_demo(out_dir, epochs: int, seeds: int) -> dict:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_digits_split()
    print(f"digits: {len(data[1])} train / {len(data[3])} test images, ResNet-20 (option A), "
          f"{epochs} epochs, seeds {list(range(seeds))}", flush=True)
    results, t0 = {}, time.perf_counter()
    for scheme in SCHEMES:
        results[scheme] = [train_one(scheme, seed, data, epochs) for seed in range(seeds)]
        final = statistics.fmean(h[-1]["test_acc"] for h in results[scheme])
        print(f"  {scheme:<8} final test accuracy {final:.2%}  ({time.perf_counter() - t0:.0f} s so far)", flush=True)
    summary = {}
    for scheme, histories in results.items():
        reach = [next((h["epoch"] for h in hist if h["test_acc"] >= TARGET), None) for hist in histories]
        summary[scheme] = {
            "final_test_acc": statistics.fmean(h[-1]["test_acc"] for h in histories),
            "first_epoch_loss": statistics.fmean(h[0]["train_loss"] for h in histories),
            "epoch1_test_acc": statistics.fmean(h[0]["test_acc"] for h in histories),
            "epochs_to_90": [r for r in reach],
        }
    print(f"\n{'init':<9} {'epoch-1 loss':>12} {'epoch-1 acc':>11} {'final acc':>9}  epochs to {TARGET:.0%} (per seed)")
    for scheme, s in summary.items():
        reach = ", ".join("never" if r is None else str(r) for r in s["epochs_to_90"])
        print(f"{scheme:<9} {s['first_epoch_loss']:>12.3f} {s['epoch1_test_acc']:>11.2%} {s['final_test_acc']:>9.2%}  {reach}")
    _plot(results, out_dir / "demo.png")
    rec.atomic_write_json(out_dir / "demo.json", {"epochs": epochs, "seeds": seeds, "summary": summary,
                                                  "histories": results, "seconds": time.perf_counter() - t0})
    print(f"\nwrote {out_dir / 'demo.png'} and {out_dir / 'demo.json'} ({time.perf_counter() - t0:.0f} s)")
    return summary


def _plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for scheme, histories in results.items():
        epochs = [h["epoch"] for h in histories[0]]
        loss = [statistics.fmean(h[i]["train_loss"] for h in histories) for i in range(len(epochs))]
        acc = [statistics.fmean(h[i]["test_acc"] for h in histories) * 100 for i in range(len(epochs))]
        ax_loss.plot(epochs, loss, label=scheme)
        ax_acc.plot(epochs, acc, label=scheme)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="digits, ResNet-20: training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (mean over seeds)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
