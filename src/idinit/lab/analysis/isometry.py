r"""Dynamical isometry of a deep residual MLP (paper Fig. 1, appendix C.5, Fig. 18).

The network of the ReZero example the paper reuses (Bachlechner et al. 2021, "Residual" variant,
no normalisation): flattened CIFAR-10 :math:`\to` ``Linear(3072, 256)`` + ReLU :math:`\to` 64
blocks :math:`x \leftarrow x + \mathrm{ReLU}(W_i x + b_i)` :math:`\to` ``Linear(256, 10)``.

Measured for each initialisation scheme (``idinit.init_(model, scheme)``):

* the mean squared singular value :math:`\chi` of the input-output Jacobian
  :math:`J = \partial f / \partial x \in \mathbb{R}^{10 \times 3072}` at 100 random inputs
  :math:`x \sim \mathcal{N}(0, I)` (as in the ReZero notebook), :math:`\chi = \|J\|_F^2 / 10`
  averaged over the inputs; :math:`\chi \gg 1` is the chaotic phase (exploding gradients),
  :math:`\chi \approx 1` dynamical isometry (paper Sec. 2);
* the same for the body alone, :math:`\partial h_{64} / \partial x \in \mathbb{R}^{256 \times 3072}`
  (the features the head reads; on the first ``body_inputs`` of the random inputs, as it costs
  256 backward rows per input), which shows the residual stack's isometry even where the head is
  near zero (IDInit's head is zero-preserving, so its full Jacobian starts at ~1e-12);
* both at initialisation and after every epoch of training (Adagrad lr 0.01, batch 100, cross
  entropy, as the paper), with the training loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import idinit

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "isometry"


@dataclass(frozen=True)
class Settings:
    width: int = 256
    depth: int = 64                # residual blocks
    schemes: tuple[str, ...] = ("idinit", "default")
    epochs: int = 5                # 0: measure at initialisation only
    batch: int = 100
    lr: float = 0.01               # Adagrad (paper C.5)
    jacobian_inputs: int = 100     # random inputs x ~ N(0, I) for the 10 x 3072 Jacobian (paper: 100)
    body_inputs: int = 10          # the first N of them for the 256 x 3072 body Jacobian (2,560 values)
    train_images: int = 40000      # the first N images of the 40k training split
    seed: int = 0
    log_every: int = 20

    def check(self) -> None:
        small = {k: getattr(self, k) for k in ("width", "depth", "batch", "jacobian_inputs", "body_inputs",
                                               "train_images", "log_every") if getattr(self, k) < 1}
        if small or self.epochs < 0:
            raise ValueError(f"isometry: these settings must be >= 1 (epochs >= 0): {small or {'epochs': self.epochs}}")
        unknown = [s for s in self.schemes if s not in idinit.SCHEMES]
        if unknown or not self.schemes:
            raise ValueError(f"isometry: unknown scheme(s) {unknown}; valid: {idinit.SCHEMES}")
        if self.lr <= 0:
            raise ValueError(f"isometry: lr must be > 0, got {self.lr}")


class DeepResidualMLP(nn.Module):
    """``relu(stem(x))``, then ``depth`` blocks ``h + relu(block(h))``, then ``head``."""

    def __init__(self, width: int = 256, depth: int = 64, inputs: int = 3072, classes: int = 10):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x.flatten(1)))
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(settings: Settings, scheme: str, device="cpu") -> DeepResidualMLP:
    torch.manual_seed(settings.seed)  # the "default" scheme (reset_parameters) draws from the global RNG
    model = DeepResidualMLP(settings.width, settings.depth)
    generator = None if scheme == "default" else torch.Generator().manual_seed(settings.seed)
    idinit.init_(model, scheme, example_inputs=(torch.zeros(2, 3072),), generator=generator)
    return model.to(device)


def jacobian_sq_singular_values(fn, x: torch.Tensor, outputs: int, chunk: int = 10) -> torch.Tensor:
    """Squared singular values of ``d fn(x_i) / d x_i`` for every row ``x_i`` of ``x``: ``(n, outputs)``.

    The samples do not interact (no normalisation), so for a chunk of samples one batched backward
    pass (``is_grads_batched``, one cotangent per output unit) gives every sample's full Jacobian.
    """
    values = []
    for part in x.split(chunk):
        part = part.detach().clone().requires_grad_(True)
        y = fn(part)
        cotangents = torch.eye(outputs, dtype=y.dtype, device=y.device)[:, None, :].expand(outputs, *y.shape)
        (jac,) = torch.autograd.grad(y, part, cotangents, is_grads_batched=True)  # (outputs, n, inputs)
        values.append(torch.linalg.svdvals(jac.transpose(0, 1).double()) ** 2)
    return torch.cat(values)


def _jacobian_stats(model: DeepResidualMLP, probe: torch.Tensor, settings: Settings) -> dict:
    full = jacobian_sq_singular_values(model, probe, 10)
    body = jacobian_sq_singular_values(model.features, probe[: settings.body_inputs], settings.width)
    return {
        "chi_full": full.mean().item(),            # mean squared singular value, 10 x 3072 Jacobian
        "chi_body": body.mean().item(),            # the same for the 256 x 3072 feature Jacobian
        "log10_sv_full": torch.log10(full.clamp_min(1e-300)).mul(0.5).flatten().tolist(),
        "body_sv_quantiles": torch.quantile(body.sqrt().flatten(), torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95],
                                            dtype=torch.float64)).tolist(),
    }


def _cifar_flat(settings: Settings, data_dir, device) -> tuple[torch.Tensor, torch.Tensor]:
    from idinit.lab.data import load_cifar10

    data = load_cifar10(data_dir)
    x = torch.as_tensor(data.x_train[: settings.train_images]).permute(0, 3, 1, 2)  # NCHW, as ToTensor
    x = x.reshape(x.shape[0], -1).float().div_(127.5).sub_(1.0)  # [-1, 1], the notebook's Normalize(0.5, 0.5)
    return x.to(device), torch.as_tensor(data.y_train[: settings.train_images]).to(device)


def train_and_probe(settings: Settings, scheme: str, x: torch.Tensor, y: torch.Tensor, probe: torch.Tensor) -> dict:
    model = build(settings, scheme, x.device)
    opt = torch.optim.Adagrad(model.parameters(), lr=settings.lr)
    order_gen = torch.Generator().manual_seed(settings.seed + 1)  # the same batches for every scheme
    log = {"jacobian": [_jacobian_stats(model, probe, settings)], "epoch_loss": [], "step": [], "loss": []}
    window, step, diverged = [], 0, False
    for _epoch in range(settings.epochs):
        order = torch.randperm(x.shape[0], generator=order_gen).to(x.device)
        epoch_losses = []
        for start in range(0, x.shape[0] - settings.batch + 1, settings.batch):
            idx = order[start:start + settings.batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if not math.isfinite(loss.item()):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            window.append(loss.item())
            epoch_losses.append(loss.item())
            if step % settings.log_every == 0:
                log["step"].append(step)
                log["loss"].append(sum(window) / len(window))
                window = []
        log["epoch_loss"].append(sum(epoch_losses) / max(1, len(epoch_losses)) if not diverged else math.nan)
        if diverged:
            break
        log["jacobian"].append(_jacobian_stats(model, probe, settings))
    log["diverged_at_step"] = step + 1 if diverged else None
    return log


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    if settings.epochs > 0:
        x, y = _cifar_flat(settings, data_dir, device)
    else:
        x = y = torch.empty(0, device=device)
    probe = torch.randn(settings.jacobian_inputs, 3072, generator=torch.Generator().manual_seed(12345)).to(device)
    runs = {scheme: train_and_probe(settings, scheme, x, y, probe) for scheme in settings.schemes}
    summary = {scheme: {"chi_full_init": log["jacobian"][0]["chi_full"],
                        "chi_body_init": log["jacobian"][0]["chi_body"],
                        "chi_full_end": log["jacobian"][-1]["chi_full"],
                        "chi_body_end": log["jacobian"][-1]["chi_body"],
                        "epoch_loss": log["epoch_loss"], "diverged_at_step": log["diverged_at_step"]}
               for scheme, log in runs.items()}
    return {"runs": runs, "summary": summary}


def plot(record: dict, path) -> None:
    import numpy as np

    s = record["settings"]
    fig, axes = new_figure(1, 3, (16, 4.2))
    hist_ax, chi_ax, loss_ax = axes[0]
    for i, (scheme, log) in enumerate(record["runs"].items()):
        color = f"C{i}"  # one colour per scheme in every panel
        values = np.asarray(log["jacobian"][-1]["log10_sv_full"])
        hist_ax.hist(values, bins=40, alpha=0.6, label=f"{scheme}", density=True, color=color)
        epochs = range(len(log["jacobian"]))
        chi_ax.plot(epochs, [j["chi_full"] for j in log["jacobian"]], "o-", color=color, label=f"{scheme}: full 10x3072")
        chi_ax.plot(epochs, [j["chi_body"] for j in log["jacobian"]], "s--", color=color,
                    label=f"{scheme}: body {s['width']}x3072")
        if log["step"]:
            loss_ax.plot(log["step"], log["loss"], label=scheme, color=color)
    hist_ax.set(xlabel="log10 singular value of the 10x3072 Jacobian",
                ylabel="density", title=f"after {len(record['runs'][s['schemes'][0]]['jacobian']) - 1} epoch(s)")
    chi_ax.axhline(1.0, color="grey", lw=0.8)
    chi_ax.set(yscale="log", xlabel="epoch (0 = at initialisation)", ylabel="mean squared singular value",
               title=f"{s['jacobian_inputs']} inputs x ~ N(0, I)")
    loss_ax.set(yscale="log", xlabel="step", ylabel=f"training loss (mean of {s['log_every']} steps)",
                title=f"Adagrad lr {s['lr']}, batch {s['batch']}")
    for ax in (hist_ax, chi_ax, loss_ax):
        ax.legend(fontsize=8)
    fig.suptitle(f"Residual MLP: Linear(3072, {s['width']}) + {s['depth']} blocks x + relu(Wx) + "
                 f"Linear({s['width']}, 10), no normalisation, CIFAR-10", fontsize=10)
    fig.subplots_adjust(wspace=0.3)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Input-output Jacobian spectrum of a 64-block residual MLP on CIFAR-10, and its loss (C.5).')


__all__ = ["NAME", "DeepResidualMLP", "Settings", "build", "jacobian_sq_singular_values", "measure", "plot", "run"]
