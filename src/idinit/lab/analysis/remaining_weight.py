r"""Why identity for the remaining weight (paper Fig. 2, Sec. 1).

Identity control sets the last weight of each residual branch to zero, :math:`\theta_{i,2} = 0`,
so every block starts as the identity. That leaves the *other* branch weight
:math:`\theta_{i,1}` free; Fixup draws it at random (Xavier-like), ZerO uses a Hadamard matrix,
IDInit the (padded) identity. The paper's Fig. 2 shows the first two converging worse. Here a
residual MLP

.. math:: h \leftarrow h + \theta_{i,2}\, \mathrm{ReLU}(\theta_{i,1} h), \qquad \theta_{i,2} = 0

is trained on MNIST (resized to 16x16, so that D = 256 is a power of two and the square
Hadamard matrix is orthonormal) with the blocks' :math:`\theta_{i,1}` drawn by one of

* ``xavier``: ``torch.nn.init.xavier_normal_`` (Fixup's random choice, as the paper describes it);
* ``hadamard``: a Hadamard matrix. For a tall block this is ``idinit.hadamard_`` (ZerO:
  :math:`H_p[{:}m, {:}n]/\sqrt{p}`); for a square block ZerO's own rule gives the identity, which
  would make the comparison empty, so the square block gets the same formula without that special
  case, :math:`H_p[{:}n, {:}n]/\sqrt{p}` (orthonormal when ``n`` is a power of two, as here);
* ``identity``: ``idinit.identity_`` (IDI, the padded identity for the tall block, loose 1e-6);

on a *square* block (:math:`\theta_{i,1} \in \mathbb{R}^{D \times D}`) and a *rectangular* one
(:math:`D_h \times D`, :math:`D_h > D`). Everything else (data order, head, optimiser) is
identical across the six variants.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch import nn

import idinit

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "remaining-weight"
INITS = ("xavier", "hadamard", "identity")
SHAPES = ("square", "rectangle")


@dataclass(frozen=True)
class Settings:
    size: int = 16             # MNIST resized (area average) to size x size: D = size^2 = 256
    hidden: int = 320          # D_h of the rectangular block (the square block uses D_h = D)
    blocks: int = 8
    batch: int = 128
    lrs: tuple[float, ...] = (0.1, 0.01)  # every variant is trained at each of these
    momentum: float = 0.9
    epochs: int = 1
    seeds: int = 2
    train_images: int = 30000  # the first N MNIST training images
    log_every: int = 10

    def check(self) -> None:
        if not 2 <= self.size <= 28:
            raise ValueError(f"remaining-weight: size must be in [2, 28], got {self.size}")
        d = self.size ** 2
        if self.hidden <= d:
            raise ValueError(f"remaining-weight: hidden must exceed D = {d} (a tall block), got {self.hidden}")
        small = {k: getattr(self, k) for k in ("blocks", "batch", "epochs", "seeds", "log_every", "train_images")
                 if getattr(self, k) < 1}
        if small:
            raise ValueError(f"remaining-weight: these settings must be >= 1: {small}")
        if not self.lrs or min(self.lrs) <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"remaining-weight: need lrs > 0 and 0 <= momentum < 1, got lrs={self.lrs}, "
                             f"momentum={self.momentum}")
        if not 0 < self.train_images <= 60000 or self.batch > self.train_images:
            raise ValueError(f"remaining-weight: need batch <= train_images <= 60000, got "
                             f"batch={self.batch}, train_images={self.train_images}")


class ResidualMLP(nn.Module):
    """``h <- h + W2 relu(W1 h)`` for ``blocks`` blocks on ``dim`` features, then a linear head."""

    def __init__(self, dim: int, hidden: int, blocks: int, classes: int = 10):
        super().__init__()
        self.first = nn.ModuleList(nn.Linear(dim, hidden, bias=False) for _ in range(blocks))
        self.last = nn.ModuleList(nn.Linear(hidden, dim, bias=False) for _ in range(blocks))
        self.head = nn.Linear(dim, classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for first, last in zip(self.first, self.last):
            h = h + last(torch.relu(first(h)))
        return self.head(h)


def _hadamard_tall_or_square_(weight: torch.Tensor) -> torch.Tensor:
    """``H_p[:m, :n] / sqrt(p)``, ``p = 2^ceil(log2 m)``, for ``m >= n`` (ZerO's tall-matrix formula).

    For ``m > n`` this is exactly ``idinit.hadamard_``. For ``m == n`` ZerO prescribes the identity;
    here the block is cut from the library's tall ``2p x n`` Hadamard matrix instead and rescaled
    to ``1/sqrt(p)``, so the square block really is a (Sylvester) Hadamard matrix.
    """
    m, n = weight.shape
    if m > n:
        return idinit.hadamard_(weight)
    # A (2p x n) tall matrix from the library is H_{2p}[:2p, :n] / sqrt(2p); its top-left p x n block
    # equals H_p[:p, :n] / sqrt(2p) (Sylvester recursion), so rescale by sqrt(2) to get / sqrt(p).
    p = 1 << (m - 1).bit_length()
    tall = idinit.hadamard_(torch.empty(2 * p, n, dtype=torch.float64))
    with torch.no_grad():
        weight.copy_((tall[:m] * math.sqrt(2.0)).to(weight.dtype))
    return weight


def build(settings: Settings, init: str, shape: str, seed: int) -> ResidualMLP:
    """The residual MLP of one variant: ``init`` for every block's first weight, zeros for the last."""
    if init not in INITS or shape not in SHAPES:
        raise ValueError(f"remaining-weight: unknown variant ({init!r}, {shape!r}); inits {INITS}, shapes {SHAPES}")
    dim = settings.size ** 2
    hidden = dim if shape == "square" else settings.hidden
    torch.manual_seed(seed)
    model = ResidualMLP(dim, hidden, settings.blocks)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for first, last in zip(model.first, model.last):
            if init == "xavier":
                nn.init.xavier_normal_(first.weight, generator=generator)
            elif init == "hadamard":
                _hadamard_tall_or_square_(first.weight)
            else:
                idinit.identity_(first.weight, generator=generator)
            last.weight.zero_()  # theta_{i,2} = 0: the identity-control branch end
        # The head is the same for all variants: zero, so that only the branches' inputs differ.
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def _mnist(settings: Settings, data_dir, device) -> tuple[torch.Tensor, torch.Tensor]:
    from idinit.lab.data import load_mnist

    x, y, _, _ = load_mnist(data_dir)
    x = torch.as_tensor(x[: settings.train_images]).float().div_(255.0).unsqueeze(1)
    x = nn.functional.adaptive_avg_pool2d(x, settings.size).flatten(1)
    x = (x - x.mean()) / x.std()  # one global mean/std, so that no coordinate is singled out
    return x.to(device), torch.as_tensor(y[: settings.train_images]).to(device)


def train(settings: Settings, init: str, shape: str, lr: float, seed: int, x: torch.Tensor,
          y: torch.Tensor) -> dict:
    """SGD on the training images; returns the training loss every ``log_every`` steps (NaN from
    the first non-finite loss on: training stops there)."""
    model = build(settings, init, shape, seed).to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum)
    order_gen = torch.Generator().manual_seed(1_000 + seed)  # the same batches for every variant
    steps, losses, window = [], [], []
    step, diverged = 0, False
    for _epoch in range(settings.epochs):
        order = torch.randperm(x.shape[0], generator=order_gen).to(x.device)
        for start in range(0, x.shape[0] - settings.batch + 1, settings.batch):
            step += 1
            if not diverged:
                idx = order[start:start + settings.batch]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                diverged = not math.isfinite(loss.item())
                window.append(loss.item())
            if step % settings.log_every == 0:
                steps.append(step)
                # mean over the last log_every steps; NaN once diverged
                losses.append(math.nan if diverged else sum(window) / len(window))
                window = []
    if diverged:
        return {"step": steps, "loss": losses, "train_accuracy": None}
    with torch.no_grad():
        correct = sum((model(x[i:i + 4096]).argmax(1) == y[i:i + 4096]).sum().item()
                      for i in range(0, x.shape[0], 4096))
    return {"step": steps, "loss": losses, "train_accuracy": correct / x.shape[0]}


def active_fraction(model: ResidualMLP, x: torch.Tensor) -> float:
    """Fraction of the first block's hidden units with a positive pre-activation on ``x`` (at init
    every block sees the same input, since every branch end is zero)."""
    with torch.no_grad():
        return (model.first[0](x) > 0).double().mean().item()


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    x, y = _mnist(settings, data_dir, device)
    active = {f"{shape}/{init}": active_fraction(build(settings, init, shape, 0).to(device), x[:2048])
              for shape in SHAPES for init in INITS}
    runs = {f"lr{lr:g}/{shape}/{init}": [train(settings, init, shape, lr, seed, x, y)
                                          for seed in range(settings.seeds)]
            for lr in settings.lrs for shape in SHAPES for init in INITS}
    summary = {}
    for key, logs in runs.items():
        n = len(logs[0]["loss"])
        early = max(1, n // 10)
        finite = [l for l in logs if l["train_accuracy"] is not None]
        summary[key] = {
            "diverged": len(logs) - len(finite),
            # medians over the runs that did not diverge (None if all did)
            "loss_first_10pct_median": statistics.median(sum(l["loss"][:early]) / early for l in finite) if finite else None,
            "loss_last_10pct_median": statistics.median(sum(l["loss"][-early:]) / early for l in finite) if finite else None,
            "train_accuracy_median": statistics.median(l["train_accuracy"] for l in finite) if finite else None,
        }
    return {"runs": runs, "summary": summary, "dim": settings.size ** 2, "active_fraction_at_init": active}


def plot(record: dict, path) -> None:
    import numpy as np

    s = record["settings"]
    fig, axes = new_figure(len(s["lrs"]), 2, (12, 4.0 * len(s["lrs"])))
    for row, lr in zip(axes, s["lrs"]):
        for ax, shape in zip(row, SHAPES):
            for init in INITS:
                logs = record["runs"][f"lr{lr:g}/{shape}/{init}"]
                data = np.asarray([[np.nan if v is None else v for v in l["loss"]] for l in logs], dtype=float)
                steps = logs[0]["step"]
                diverged = sum(l["train_accuracy"] is None for l in logs)
                label = init + (f" ({diverged} of {len(logs)} diverged)" if diverged else "")
                if diverged < len(logs):
                    alive = data[[l["train_accuracy"] is not None for l in logs]]
                    ax.plot(steps, np.median(alive, axis=0), label=label)
                    ax.fill_between(steps, alive.min(axis=0), alive.max(axis=0), alpha=0.2)
                else:  # every seed diverged: show where the first one stopped
                    ax.plot(steps, data[0], label=label, marker="x")
            width = record["dim"] if shape == "square" else s["hidden"]
            ax.set(yscale="log", xlabel="step", ylabel=f"training loss (mean of {s['log_every']} steps)",
                   title=f"lr {lr:g}, {shape}: theta_1 is {width} x {record['dim']}, theta_2 = 0")
            ax.legend(title="theta_1 init", fontsize=8)
    fig.suptitle(f"Residual MLP, {s['blocks']} blocks, MNIST {s['size']}x{s['size']}; SGD momentum "
                 f"{s['momentum']}, batch {s['batch']}; median and min-max of {s['seeds']} seeds", fontsize=10)
    fig.subplots_adjust(hspace=0.3)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Branch end zero, other weight Xavier / Hadamard / identity: MNIST loss curves (Fig 2).')


__all__ = ["NAME", "INITS", "SHAPES", "ResidualMLP", "Settings", "build", "measure", "plot", "run", "train"]
