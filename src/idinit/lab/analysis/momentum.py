r"""Momentum breaks the identity trap (paper Sec. 3.1.1, appendix A.2, Fig. 10).

A deep linear network :math:`f(x) = W_L \cdots W_1 x` with every :math:`W_i = I` is asked to
learn a target map with negative eigenvalues, here :math:`-I`, under MSE with Gaussian inputs.

Full-batch gradient descent cannot: starting from :math:`W_i = I`, every gradient
:math:`W_{>i}^\top (P - \Phi)\Sigma W_{<i}^\top` is a polynomial in the data covariance
:math:`\Sigma` (for :math:`\Phi = -I`), so all layers stay equal and symmetric (Bartlett et al.
2019, Lemma 5); each eigen-direction then follows the scalar flow :math:`w \to w^L`, which reaches
the saddle :math:`w = 0` and never crosses it, and the loss stalls at :math:`E\|y\|^2/d = 1`.
Mini-batch SGD draws a different :math:`\Sigma_b` every step, so the layers stop commuting and
drift apart; momentum accumulates that asymmetry (paper Eq. 7) and the network converges.

Runs per seed, all from the same data and the same learning rate (no per-optimiser tuning):
``gd`` (full batch), ``gd_loose`` (full batch from the loose IDI of Sec. 3.1.2: is a 1e-6
perturbation enough?), ``sgd`` and ``sgd_momentum`` (mini-batches, the same batch sequence).
Computed in float64 so that "equal" means equal to rounding error.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

import idinit
from idinit.init import DEFAULT_LOOSE

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "momentum"
OPTIMISERS = ("gd", "gd_loose", "sgd", "sgd_momentum")
LABELS = {"gd": "GD (full batch)", "gd_loose": "GD, loose IDI (1e-6)", "sgd": "SGD",
          "sgd_momentum": "SGD + momentum"}


@dataclass(frozen=True)
class Settings:
    dim: int = 10              # width of every layer (paper: 10x10 weights)
    layers: int = 3            # paper: a 3-layer linear network
    samples: int = 1000        # size of the fixed Gaussian data set
    batch: int = 10            # SGD mini-batch; GD uses all samples
    lr: float = 0.1            # the same for every optimiser (our choice; the paper's Fig 10 states none)
    momentum: float = 0.9      # for sgd_momentum only
    steps: int = 1000
    seeds: int = 5
    loose: float = DEFAULT_LOOSE  # std of the loose condition in the gd_loose run
    log_every: int = 10
    converged_loss: float = 1e-3  # "converged": full-data MSE below this

    def check(self) -> None:
        positive = {k: getattr(self, k) for k in ("dim", "layers", "samples", "batch", "steps", "seeds", "log_every")}
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise ValueError(f"momentum: these settings must be >= 1: {bad}")
        if self.layers < 2:
            raise ValueError(f"momentum: layers must be >= 2 to compare layers, got {self.layers}")
        if self.batch > self.samples:
            raise ValueError(f"momentum: batch {self.batch} exceeds samples {self.samples}")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: need lr > 0 and 0 <= momentum < 1, got lr={self.lr}, momentum={self.momentum}")


def _max_pairwise_distance(weights: list[torch.Tensor]) -> float:
    return max((weights[i] - weights[j]).norm().item()
               for i in range(len(weights)) for j in range(i + 1, len(weights)))


def train(settings: Settings, optimiser: str, seed: int) -> dict:
    """Train one network; return logged steps, full-data loss, max pairwise layer distance and
    max layer asymmetry ``||W - W^T||_F``, plus every pairwise distance at the end."""
    if optimiser not in OPTIMISERS:
        raise ValueError(f"momentum: unknown optimiser {optimiser!r}; valid: {OPTIMISERS}")
    s = settings
    data_gen = torch.Generator().manual_seed(seed)
    x_all = torch.randn(s.samples, s.dim, generator=data_gen, dtype=torch.float64)
    y_all = -x_all  # target map -I: every eigenvalue negative

    init_gen = torch.Generator().manual_seed(10_000 + seed)
    loose = s.loose if optimiser == "gd_loose" else 0.0
    weights = [idinit.identity_(torch.empty(s.dim, s.dim, dtype=torch.float64), loose=loose, generator=init_gen)
               .requires_grad_() for _ in range(s.layers)]
    full_batch = optimiser.startswith("gd")
    opt = torch.optim.SGD(weights, lr=s.lr, momentum=s.momentum if optimiser == "sgd_momentum" else 0.0)
    batch_gen = torch.Generator().manual_seed(20_000 + seed)  # same batch sequence for sgd and sgd_momentum

    def network(x: torch.Tensor) -> torch.Tensor:
        for w in weights:
            x = x @ w.T
        return x

    log = {"step": [], "loss": [], "distance": [], "asymmetry": []}

    def record(step: int) -> None:
        with torch.no_grad():
            log["step"].append(step)
            log["loss"].append(((network(x_all) - y_all) ** 2).mean().item())
            log["distance"].append(_max_pairwise_distance(weights))
            log["asymmetry"].append(max((w - w.T).norm().item() for w in weights))

    for step in range(s.steps):
        if step % s.log_every == 0:
            record(step)
        if full_batch:
            x, y = x_all, y_all
        else:
            idx = torch.randint(0, s.samples, (s.batch,), generator=batch_gen)
            x, y = x_all[idx], y_all[idx]
        loss = ((network(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    record(s.steps)
    with torch.no_grad():
        log["final_pairwise"] = {f"W{i + 1}-W{j + 1}": (weights[i] - weights[j]).norm().item()
                                 for i in range(s.layers) for j in range(i + 1, s.layers)}
    return log


def _first_step_below(log: dict, threshold: float) -> int | None:
    return next((step for step, loss in zip(log["step"], log["loss"]) if loss < threshold), None)


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    """All optimisers x seeds, on the CPU in float64 (the problem is tiny; ``device`` is not used)."""
    runs = {opt: [train(settings, opt, seed) for seed in range(settings.seeds)] for opt in OPTIMISERS}
    summary = {}
    for opt, logs in runs.items():
        steps_to = [_first_step_below(log, settings.converged_loss) for log in logs]
        reached = [s for s in steps_to if s is not None]
        summary[opt] = {
            "final_loss_median": statistics.median(log["loss"][-1] for log in logs),
            "final_loss_max": max(log["loss"][-1] for log in logs),
            "final_distance_median": statistics.median(log["distance"][-1] for log in logs),
            "final_distance_min": min(log["distance"][-1] for log in logs),
            "distance_at_10pct_median": statistics.median(log["distance"][len(log["step"]) // 10] for log in logs),
            "converged_runs": len(reached),
            "steps_to_converge_median": statistics.median(reached) if reached else None,
        }
    return {"runs": runs, "summary": summary, "target": "-I", "dtype": "float64"}


def _band(ax, steps, curves, label, floor=0.0):
    import numpy as np

    data = np.maximum(np.asarray(curves, dtype=float), floor)
    ax.plot(steps, np.median(data, axis=0), label=label)
    ax.fill_between(steps, data.min(axis=0), data.max(axis=0), alpha=0.2)


def plot(record: dict, path) -> None:
    fig, axes = new_figure(1, 3, (15, 4.2))
    loss_ax, dist_ax, asym_ax = axes[0]
    for opt in OPTIMISERS:
        logs = record["runs"][opt]
        steps = logs[0]["step"]
        _band(loss_ax, steps, [log["loss"] for log in logs], LABELS[opt], floor=1e-32)
        _band(dist_ax, steps, [log["distance"] for log in logs], LABELS[opt], floor=1e-17)
        _band(asym_ax, steps, [log["asymmetry"] for log in logs], LABELS[opt], floor=1e-17)
    s = record["settings"]
    loss_ax.set(yscale="log", xlabel="step", ylabel="MSE on all samples", title=f"loss (target -I), lr {s['lr']}")
    dist_ax.set(yscale="log", xlabel="step", ylabel=r"max$_{i<j}\ \|W_i - W_j\|_F$", title="layers differ")
    asym_ax.set(yscale="log", xlabel="step", ylabel=r"max$_i\ \|W_i - W_i^\top\|_F$", title="layers asymmetric")
    loss_ax.legend(fontsize=8)
    fig.subplots_adjust(wspace=0.35)
    fig.suptitle(f"{s['layers']}-layer linear net, {s['dim']}x{s['dim']} identity init; median and "
                 f"min-max over {s['seeds']} seeds (float64; curves floored for the log scale)", fontsize=10)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Identity-initialised deep linear net, target -I: GD vs SGD vs SGD+momentum (Sec 3.1.1).')


__all__ = ["NAME", "OPTIMISERS", "Settings", "measure", "plot", "run", "train"]
