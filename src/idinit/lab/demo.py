"""``idinit demo``: what IDInit does, measured on a CPU in about a minute with no download, on
scikit-learn's handwritten digits (1,797 8x8 images that ship with scikit-learn).

Part 1, digits with BatchNorm: the lab's CIFAR ResNet at depth 20 on 1-channel 8x8 inputs (stages
at 8x8, 4x4, 2x2; the lab's default option A shortcuts), IDInit against Kaiming and PyTorch's default.
It also measures why IDInit's first epoch looks like chance: the logits' std at initialisation
(IDInit's head is IDIZ, paper Eq. 12) and the epoch-1 test accuracy once BatchNorm's running
statistics are re-estimated on the training set.

Part 2, depth without normalisation (:mod:`idinit.lab.demo_depth`): a residual MLP at several
depths, where the paper says identity-preserving starts keep deep networks trainable (Sec. 1,
appendix C.3 / C.6).

Every initialisation gets the same data, order, optimiser (SGD, momentum 0.9, weight decay 5e-4,
cosine, batch 64), learning rates and seeds: only the call ``idinit.init_(model, scheme=...)``
differs. Prints two tables and a two-line reading; writes ``demo.png`` and ``demo.json``.
"""
from __future__ import annotations

import copy
import math
import os
import pathlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import idinit

from . import demo_depth
from .analysis.recording import machine_description, new_figure, save_figure_atomic, torch_threads, write_json_atomic
from .data import DeviceLoader
from .models import CifarResNet
from .train.loop import lr_factor

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


def _bn_reestimated_accuracy(model, train_eval: DeviceLoader, test: DeviceLoader) -> float:
    """Test accuracy of a copy of ``model`` whose BatchNorm running statistics are recomputed as a
    plain average over the training set (the model itself is left as it is)."""
    probe = copy.deepcopy(model)
    for module in probe.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    probe.train()
    with torch.no_grad():
        for x, _ in train_eval.epoch():
            probe(x)
        probe.eval()
        return sum((probe(x).argmax(1) == y).sum().item() for x, y in test.epoch()) / test.n


def train_one(scheme: str, seed: int, data, epochs: int, lr: float = 0.05, batch_size: int = 64) -> dict:
    """Train the digits ResNet-20 once. Returns ``history`` (per epoch: mean training loss, test
    accuracy in eval mode), ``init_logit_std`` (std of the test logits at initialisation) and
    ``epoch1_test_acc_bn_reestimated`` (epoch-1 test accuracy with re-estimated BN statistics)."""
    x_train, y_train, x_test, y_test = data
    mean, std = (float(x_train.mean()) / 255,), (float(x_train.std()) / 255,)
    torch.manual_seed(seed)
    model = CifarResNet(depth=20, in_channels=1)
    idinit.init_(model, scheme=scheme, example_inputs=(torch.zeros(2, 1, 8, 8),))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    train = DeviceLoader(x_train, y_train, batch_size, train=True, pad=0, flip=False, seed=seed, mean=mean, std=std)
    train_eval = DeviceLoader(x_train, y_train, 512, train=False, mean=mean, std=std)
    test = DeviceLoader(x_test, y_test, 512, train=False, mean=mean, std=std)
    model.eval()
    with torch.no_grad():
        init_logit_std = torch.cat([model(x) for x, _ in test.epoch()]).std().item()
    steps, history, bn_reestimated = len(train), [], None
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
        if epoch == 0:
            bn_reestimated = _bn_reestimated_accuracy(model, train_eval, test)
    return {"history": history, "init_logit_std": init_logit_std, "epoch1_test_acc_bn_reestimated": bn_reestimated}


def run_demo(out_dir="runs/demo", epochs: int = 10, seeds: int = 2, *, depths=(2, 8, 32, 128),
             depth_lrs=(0.01, 0.05), depth_epochs: int = 2) -> dict:
    """Run both parts and write ``demo.png`` and ``demo.json`` into ``out_dir`` (each atomically).

    ``epochs`` / ``seeds``: the digits ResNet-20 runs; ``depths`` / ``depth_lrs`` / ``depth_epochs``:
    the residual-MLP sweep (one seed). Returns the digits summary and the sweep's results.
    """
    for name, value in (("epochs", epochs), ("seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    depths, depth_lrs = list(depths), list(depth_lrs)
    demo_depth.check_sweep_args(depths, depth_lrs, depth_epochs)
    # The tensors are tiny (8x8 images, batch 64): one thread is as fast as several and cannot be
    # slowed down by oversubscribed cores (2 threads ran 20x slower than 1 on a busy 2-core machine).
    with torch_threads(1):
        return _run_demo(pathlib.Path(out_dir), epochs, seeds, depths, depth_lrs, depth_epochs)


def _run_demo(out_dir: pathlib.Path, epochs, seeds, depths, depth_lrs, depth_epochs) -> dict:
    wall0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    data = load_digits_split()
    print(f"Part 1. digits: {len(data[1])} train / {len(data[3])} test images, ResNet-20 with BN (option A), "
          f"{epochs} epochs, seeds {list(range(seeds))}", flush=True)
    runs = {}
    for scheme in SCHEMES:
        runs[scheme] = [train_one(scheme, seed, data, epochs) for seed in range(seeds)]
        final = statistics.fmean(r["history"][-1]["test_acc"] for r in runs[scheme])
        print(f"  {scheme:<8} final test accuracy {final:.2%}  ({time.perf_counter() - wall0:.0f} s so far)", flush=True)
    summary = summarise_digits(runs)
    print(f"\n{'init':<9} {'logit std':>9} {'epoch-1 loss':>12} {'epoch-1 acc':>11} {'(BN re-est.)':>12} "
          f"{'final acc':>9}  epochs to {TARGET:.0%} (per seed)")
    for scheme, s in summary.items():
        reach = ", ".join("never" if r is None else str(r) for r in s["epochs_to_90"])
        print(f"{scheme:<9} {s['init_logit_std']:>9.2g} {s['first_epoch_loss']:>12.3f} {s['epoch1_test_acc']:>11.2%} "
              f"{s['epoch1_test_acc_bn_reestimated']:>12.2%} {s['final_test_acc']:>9.2%}  {reach}")

    print(f"\nPart 2. residual MLP without normalisation (64 wide, blocks h + fc2(relu(fc1(h)))), depths {depths}, "
          f"{depth_epochs} epochs, seed 0; final test accuracy:", flush=True)
    sweep = demo_depth.run_sweep(data, depths, depth_lrs, depth_epochs,
                                 log=lambda line: print(line, flush=True))
    lines = [digits_reading(summary), demo_depth.reading(sweep, depths)]
    print("\nReading:\n  " + "\n  ".join(lines))

    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    record = {
        "command": f"idinit demo --out {out_dir} --epochs {epochs} --seeds {seeds}",
        "machine": {**machine_description("cpu"), "torch_threads": 1,
                    "load_average_1min_at_start_and_end": [load0[0], os.getloadavg()[0]]},
        "seconds": {"wall": wall, "cpu": cpu},
        "reading": lines,
        "digits": {"epochs": epochs, "seeds": seeds, "lr": 0.05, "summary": summary, "runs": runs},
        "depth_sweep": {"depths": depths, "lrs": depth_lrs, "epochs": depth_epochs, "seed": 0,
                        "schemes": list(demo_depth.DEPTH_SCHEMES), "results": sweep},
    }
    _plot(runs, sweep, depths, out_dir / "demo.png")
    write_json_atomic(record, out_dir / "demo.json")
    print(f"\nwrote {out_dir / 'demo.png'} and {out_dir / 'demo.json'} "
          f"({wall:.0f} s wall, {cpu:.0f} s CPU, one thread; 1-min load average {load0[0]:.1f} at start)")
    return {"digits": summary, "depth_sweep": sweep, "reading": lines}


def summarise_digits(runs: dict) -> dict:
    summary = {}
    for scheme, scheme_runs in runs.items():
        histories = [r["history"] for r in scheme_runs]
        summary[scheme] = {
            "final_test_acc": statistics.fmean(h[-1]["test_acc"] for h in histories),
            "first_epoch_loss": statistics.fmean(h[0]["train_loss"] for h in histories),
            "epoch1_test_acc": statistics.fmean(h[0]["test_acc"] for h in histories),
            "epoch1_test_acc_bn_reestimated": statistics.fmean(r["epoch1_test_acc_bn_reestimated"] for r in scheme_runs),
            "init_logit_std": statistics.fmean(r["init_logit_std"] for r in scheme_runs),
            "epochs_to_90": [next((e["epoch"] for e in h if e["test_acc"] >= TARGET), None) for h in histories],
        }
    return summary


def digits_reading(summary: dict) -> str:
    """One line: the final accuracies in order, IDInit's gap to the best, and its epoch-1 numbers."""
    order = sorted(summary, key=lambda s: -summary[s]["final_test_acc"])
    best, ours = order[0], summary["idinit"]
    place = ("first" if best == "idinit" else
             f"ranks {order.index('idinit') + 1} of {len(order)}, {(summary[best]['final_test_acc'] - ours['final_test_acc']) * 100:.1f} points behind {best}")
    return (f"Digits, ResNet-20 with BN: final test accuracy " + ", ".join(f"{s} {summary[s]['final_test_acc']:.1%}" for s in order)
            + f" (IDInit {place}); IDInit's logits start at std {ours['init_logit_std']:.0e} (IDIZ head), and its"
            f" epoch-1 test accuracy is {ours['epoch1_test_acc']:.0%} with BN running statistics,"
            f" {ours['epoch1_test_acc_bn_reestimated']:.0%} with them re-estimated.")


_COLORS = {"idinit": "tab:blue", "kaiming": "tab:orange", "default": "tab:green", "zero": "tab:purple"}


def _plot(runs, sweep, depths, path) -> None:
    fig, axes = new_figure(2, 2, (12, 8))
    (ax_loss, ax_acc), (ax_init, ax_depth) = axes
    for scheme, scheme_runs in runs.items():
        histories = [r["history"] for r in scheme_runs]
        epochs = [e["epoch"] for e in histories[0]]
        loss = [statistics.fmean(h[i]["train_loss"] for h in histories) for i in range(len(epochs))]
        acc = [statistics.fmean(h[i]["test_acc"] for h in histories) * 100 for i in range(len(epochs))]
        ax_loss.plot(epochs, loss, ".-", label=scheme, color=_COLORS[scheme])
        ax_acc.plot(epochs, acc, ".-", label=scheme, color=_COLORS[scheme])
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="digits, ResNet-20 with BN: training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="digits, ResNet-20 with BN: test accuracy")
    first_lr = next(iter(sweep))
    for k, scheme in enumerate(demo_depth.DEPTH_SCHEMES):
        color = _COLORS[scheme]
        init = [sweep[first_lr][scheme][str(d)]["init_loss"] for d in depths]
        ax_init.plot(depths, [v if math.isfinite(v) else np.nan for v in init], "o-", color=color, label=scheme)
        for j, (lr, style) in enumerate(zip(sweep, ("-", "--", ":", "-."))):
            cells = [sweep[lr][scheme][str(d)] for d in depths]
            acc = [np.nan if c["test_acc"] is None else c["test_acc"] * 100 for c in cells]
            ax_depth.plot(depths, acc, "o" + style, color=color, label=scheme if j == 0 else None)
            # Diverged runs: an x below the axis' 0, shifted per scheme and lr so none hides another.
            gone = [d * 1.07 ** (k - 1.5) for d, c in zip(depths, cells) if c["test_acc"] is None]
            ax_depth.plot(gone, [-3 - 4 * j] * len(gone), "x", color=color, markersize=8, mew=2)
    ax_init.axhline(math.log(10), color="grey", ls=":", lw=1)
    ax_init.set(xlabel="residual blocks", ylabel="training loss at initialisation", xscale="log", yscale="log",
                title="residual MLP, no normalisation: loss at init (dotted: ln 10)")
    styles = ", ".join(f"{style} lr {lr}" for lr, style in zip(sweep, ("solid", "dashed", "dotted", "dash-dot")))
    ax_depth.set(xlabel="residual blocks", ylabel="test accuracy (%)", xscale="log", ylim=(-4 - 4 * len(sweep), 100),
                 title=f"test accuracy after training ({styles}; x: diverged)")
    for ax in (ax_init, ax_depth):
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
    for ax in (ax_loss, ax_acc, ax_init, ax_depth):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)
