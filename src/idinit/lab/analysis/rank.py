r"""The rank constraint of zero padding, and IDI breaking it (paper Sec. 3.1.2, Thm. 3.1, Fig. 4b).

A 3-layer *linear* network :math:`f(x) = W_3 W_2 W_1 x` with a dimension-increasing first layer,
:math:`W_1 \in \mathbb{R}^{D_h \times D_0}`, :math:`D_h > D_0`, :math:`W_2 \in \mathbb{R}^{D_h
\times D_h}`, :math:`W_3 \in \mathbb{R}^{10 \times D_h}`, trained with SGD on MNIST (cross entropy).

Inputs (``inputs``): ``"pca"`` (default), the images projected on their top :math:`D_0` principal
components and whitened, so that every input coordinate carries signal; or ``"pixels"``, the
images area-resized to ``size x size``. With pixels the bound :math:`D_0` never binds at this
tolerance (the pixel covariance decays fast, so updates have a lower effective rank anyway) and
IDI's padded rows copy the first pixels, which are blank border: the comparison then says nothing
about the constraint, which is why PCA inputs are the default.

* **zero padding** (ZerO's partial identity): :math:`W_1 = [I; 0]`, :math:`W_2 = I`,
  :math:`W_3 = [I \mid 0]`. The padded coordinates of :math:`h_1 = W_1 x` start at zero and, in a
  linear network, receive no gradient, so every update of :math:`W_2` has its row space in the
  first :math:`D_0` coordinates: :math:`\mathrm{rank}(W_2 - I) \le D_0` for ever (Zhao et al. 2022).
* **IDI**: :math:`W_1` stacks identity blocks (output ``m`` copies input ``m mod D_0``),
  :math:`W_2 = I`, :math:`W_3 = [I \mid 0]`: every hidden coordinate carries data, and Thm. 3.1
  says :math:`\mathrm{rank}(W_2 - I)` can exceed :math:`D_0` after a few SGD steps.
* **IDI + loose**: the same with the loose condition (std 1e-6 on the identity entries), which
  the paper says raises the rank further (replica problem, Fig. 4b).

All three come from the library's ``idinit.identity_`` (zero padding: ``identity_`` on the top
``D_0`` rows of a zeroed ``W_1``). The rank is counted with an absolute tolerance on the singular
values of :math:`W_2 - I` (``tolerance``, 1e-4: our choice, the paper states none), in float64.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

import idinit
from idinit.init import DEFAULT_LOOSE

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "rank"
INITS = ("zero_padding", "idi", "idi_loose")
LABELS = {"zero_padding": "zero padding", "idi": "IDI (loose off)", "idi_loose": "IDI + loose (1e-6)"}


@dataclass(frozen=True)
class Settings:
    inputs: str = "pca"         # "pca": top D_0 principal components, whitened; "pixels": resized images
    components: int = 32        # D_0 for inputs="pca"
    size: int = 14              # inputs="pixels": MNIST resized to size x size, D_0 = size^2
    hidden: int = 64            # D_h > D_0
    batch: int = 64
    lr: float = 0.1             # plain SGD, as Thm 3.1
    steps: int = 300
    seeds: int = 3
    tolerance: float = 1e-4     # singular values of W2 - I above this count towards the rank
    train_images: int = 60000

    @property
    def d0(self) -> int:
        return self.components if self.inputs == "pca" else self.size ** 2

    def check(self) -> None:
        if self.inputs not in ("pca", "pixels"):
            raise ValueError(f"rank: inputs must be 'pca' or 'pixels', got {self.inputs!r}")
        if not 2 <= self.size <= 28 or not 1 <= self.components <= 784:
            raise ValueError(f"rank: need 2 <= size <= 28 and 1 <= components <= 784, got {self.size}, {self.components}")
        if self.hidden <= self.d0:
            raise ValueError(f"rank: hidden must exceed D_0 = {self.d0} (a dimension-increasing first "
                             f"layer), got {self.hidden}")
        small = {k: getattr(self, k) for k in ("batch", "steps", "seeds", "train_images") if getattr(self, k) < 1}
        if small:
            raise ValueError(f"rank: these settings must be >= 1: {small}")
        if self.lr <= 0 or self.tolerance <= 0:
            raise ValueError(f"rank: lr and tolerance must be > 0, got lr={self.lr}, tolerance={self.tolerance}")
        if self.batch > self.train_images or self.train_images > 60000:
            raise ValueError(f"rank: need batch <= train_images <= 60000, got {self.batch}, {self.train_images}")


def initial_weights(settings: Settings, init: str, seed: int) -> list[torch.Tensor]:
    """``[W1, W2, W3]`` (float64) of one initialisation."""
    if init not in INITS:
        raise ValueError(f"rank: unknown init {init!r}; valid: {INITS}")
    d0, dh = settings.d0, settings.hidden
    shapes = [(dh, d0), (dh, dh), (10, dh)]
    weights = [torch.zeros(shape, dtype=torch.float64) for shape in shapes]
    loose = DEFAULT_LOOSE if init == "idi_loose" else 0.0
    generator = torch.Generator().manual_seed(seed)
    for i, w in enumerate(weights):
        if init == "zero_padding" and i == 0:
            idinit.identity_(w[:d0], loose=0.0)  # [I; 0]: the rows below D_0 stay zero
        else:
            idinit.identity_(w, loose=loose, generator=generator)
    return weights


def rank_above(matrix: torch.Tensor, tolerance: float) -> int:
    return int((torch.linalg.svdvals(matrix) > tolerance).sum())


def _mnist(settings: Settings, data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    from idinit.lab.data import load_mnist

    x, y, _, _ = load_mnist(data_dir)
    x = torch.tensor(x[: settings.train_images], dtype=torch.float64).div_(255.0)
    y = torch.tensor(y[: settings.train_images])
    if settings.inputs == "pixels":
        x = nn.functional.adaptive_avg_pool2d(x.unsqueeze(1), settings.size).flatten(1)
        return (x - x.mean()) / x.std(), y
    x = x.flatten(1)
    x = x - x.mean(0)
    variances, vectors = torch.linalg.eigh(x.T @ x / x.shape[0])  # ascending order
    top = vectors[:, -settings.components:].flip(1)
    scale = variances[-settings.components:].flip(0).clamp_min(1e-12).rsqrt()
    return x @ top * scale, y  # whitened: every coordinate has variance 1


def train(settings: Settings, init: str, seed: int, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Plain SGD; ``rank(W2 - I)`` after every step (step 0 = at initialisation)."""
    w1, w2, w3 = (w.requires_grad_() for w in initial_weights(settings, init, seed))
    opt = torch.optim.SGD([w1, w2, w3], lr=settings.lr)
    eye = torch.eye(settings.hidden, dtype=torch.float64)
    batch_gen = torch.Generator().manual_seed(1_000 + seed)  # the same batches for every init
    log = {"rank": [rank_above(w2.detach() - eye, settings.tolerance)], "loss": []}
    for _step in range(settings.steps):
        idx = torch.randint(0, x.shape[0], (settings.batch,), generator=batch_gen)
        loss = nn.functional.cross_entropy(x[idx] @ w1.T @ w2.T @ w3.T, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log["loss"].append(loss.item())
        log["rank"].append(rank_above(w2.detach() - eye, settings.tolerance))
    with torch.no_grad():
        padded_rows = w1[w1.shape[1]:]
        log["padded_rows_max_abs"] = padded_rows.abs().max().item()  # zero padding: stays exactly 0
    return log


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    """Float64 on the CPU (``device`` is not used: the SVDs dominate and the problem is small)."""
    x, y = _mnist(settings, data_dir)
    runs = {init: [train(settings, init, seed, x, y) for seed in range(settings.seeds)] for init in INITS}
    d0 = settings.d0
    summary = {}
    for init, logs in runs.items():
        first_above = [next((t for t, r in enumerate(log["rank"]) if r > d0), None) for log in logs]
        summary[init] = {
            "max_rank": max(max(log["rank"]) for log in logs),
            "final_rank_median": statistics.median(log["rank"][-1] for log in logs),
            "first_step_above_D0": first_above,
            "padded_rows_max_abs": max(log["padded_rows_max_abs"] for log in logs),
            "final_loss_median": statistics.median(sum(log["loss"][-20:]) / len(log["loss"][-20:]) for log in logs),
        }
    return {"runs": runs, "summary": summary, "D0": d0, "Dh": settings.hidden}


def plot(record: dict, path) -> None:
    import numpy as np

    fig, axes = new_figure(1, 2, (12, 4.2))
    rank_ax, zoom_ax = axes[0]
    for init in INITS:
        ranks = np.asarray([log["rank"] for log in record["runs"][init]], dtype=float)
        steps = np.arange(ranks.shape[1])
        for ax in (rank_ax, zoom_ax):
            ax.plot(steps, np.median(ranks, axis=0), label=LABELS[init])
            ax.fill_between(steps, ranks.min(axis=0), ranks.max(axis=0), alpha=0.2)
    d0, dh, s = record["D0"], record["Dh"], record["settings"]
    for ax in (rank_ax, zoom_ax):
        ax.axhline(d0, color="grey", ls="--", lw=0.8)
        ax.axhline(dh, color="grey", ls=":", lw=0.8)
        ax.set(xlabel="SGD step", ylabel=f"rank(W2 - I), tolerance {s['tolerance']:g}")
    rank_ax.text(0, d0, f" D_0 = {d0}", va="bottom", fontsize=8)
    rank_ax.text(0, dh, f" D_h = {dh}", va="bottom", fontsize=8)
    rank_ax.legend(fontsize=8, loc="lower right")
    rank_ax.set_title("whole run")
    zoom_ax.set(xlim=(0, min(60, s["steps"])), title="first steps")
    data = f"{d0} whitened PCA components" if s["inputs"] == "pca" else f"{s['size']}x{s['size']} pixels"
    fig.suptitle(f"Linear 3-layer net {d0} -> {dh} -> {dh} -> 10 on MNIST ({data}), SGD lr "
                 f"{s['lr']}, batch {s['batch']}; median and min-max of {s['seeds']} seeds", fontsize=10)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'rank(W2 - I) during SGD for zero padding vs IDI vs IDI + loose, MNIST (Thm 3.1, Fig 4b).')


__all__ = ["NAME", "INITS", "Settings", "initial_weights", "measure", "plot", "rank_above", "run", "train"]
