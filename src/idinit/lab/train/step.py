"""What one training step does, for a run alone or for a pack of runs trained as one network.

A step takes one batch per member run and, for every member: sets its learning rate (linear
warm-up then cosine, :func:`lr_factor`), mixes its batch with a permutation of itself (mixup,
Zhang et al. 2018, when ``mixup_alpha > 0``), runs the forward pass under bf16 autocast (CUDA),
takes the cross-entropy with label smoothing, then one backward pass for the sum of the members'
losses (members never share a parameter, so each member's gradients are its own loss's) and one
optimiser step per member. A run alone is a pack of one; only how the forward pass computes the
members' logits differs (:mod:`idinit.lab.train.forward`).

``torch.compile`` (mode :data:`COMPILE_MODE` unless told: ``"reduce-overhead"`` replays the
compiled kernels as CUDA graphs) wraps the differentiable part on CUDA; if it fails on the first
step of a call, the step says so and goes on eagerly. On CUDA the step also turns on cuDNN's
autotuning (``torch.backends.cudnn.benchmark``). ``idinit bench`` times this step.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..models import parameter_groups
from .config import RunConfig

COMPILE_MODE = "reduce-overhead"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from ``1/warmup_steps`` to 1 over ``warmup_steps``, then cosine from 1 to 0
    over the remaining steps (Loshchilov & Hutter 2017, without restarts)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.init, config.lr)
    for group in groups:
        group["initial_lr"] = group["lr"]
    # The fused CUDA kernels update all parameters in a few launches (the loop is launch-bound).
    extra = {"fused": True} if torch.device(device).type == "cuda" else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay, **extra)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(decoupled_decay_groups(groups, config.weight_decay), lr=config.lr,
                                 betas=(config.beta1, config.beta2), **extra)
    return torch.optim.Adam(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                            weight_decay=config.weight_decay, **extra)


def decoupled_decay_groups(groups: list[dict], weight_decay: float) -> list[dict]:
    """AdamW's groups (Loshchilov & Hutter 2019, decay decoupled from the gradient): each group split
    into its matrices and tables, decayed by ``weight_decay``, and its vectors and scalars (biases,
    norm weights, branch gates) at 0, the split BERT and timm make."""
    split = []
    for group in groups:
        for decayed in (True, False):
            params = [p for p in group["params"] if (p.ndim >= 2) == decayed]
            if params:
                split.append({**group, "params": params, "weight_decay": weight_decay if decayed else 0.0})
    return split


def epoch_mixing(config: RunConfig, epoch: int, steps: int, batch: int, device):
    """Per-step mixup coefficients and partner permutations for one epoch, seeded by (seed, epoch)
    (None, None without mixup), so a resumed or packed run draws exactly what a straight one does."""
    if config.mixup_alpha <= 0:
        return None, None
    rng = np.random.default_rng([config.seed, epoch, 7])
    lams = torch.tensor(rng.beta(config.mixup_alpha, config.mixup_alpha, steps), dtype=torch.float32)
    perms = torch.from_numpy(np.stack([rng.permutation(batch) for _ in range(steps)]))
    return lams.to(device), perms.to(device)


def make_forward_loss(forward: Callable, configs: list[RunConfig], amp: bool, device_type: str,
                      shard: tuple[int, int] = (0, 1)) -> Callable:
    """The step's differentiable part. ``forward(list of N batches) -> logits (B, N, classes)``.

    The returned ``forward_loss(xs, ys, perms, lams)`` takes per-member lists (``perms[i]`` and
    ``lams[i]`` are None for a member without mixup) and returns (sum of member losses, per-member
    losses, per-member correct counts weighted as the mixed labels are). ``shard = (rank, world)``:
    data-parallel training, where every process mixes the whole batch, then takes its own
    ``1/world`` of the rows (so the processes together compute exactly the one-process step)."""
    mixup = [c.mixup_alpha > 0 for c in configs]
    smoothing = [c.label_smoothing for c in configs]
    rank, world = shard

    def forward_loss(xs, ys, perms, lams):
        parts, targets = [], []
        for i, (x, y) in enumerate(zip(xs, ys)):
            y_b = None
            if mixup[i]:
                x, y_b = lams[i] * x + (1 - lams[i]) * x[perms[i]], y[perms[i]]
            if world > 1:
                rows = slice(rank * (x.shape[0] // world), (rank + 1) * (x.shape[0] // world))
                x, y, y_b = x[rows], y[rows], (y_b[rows] if y_b is not None else None)
            parts.append(x)
            targets.append((y, y_b))
        with torch.autocast(device_type, torch.bfloat16, enabled=amp):
            logits = forward(parts)
        if amp:  # the loss in float32, not bf16; otherwise in the model's own dtype (float64 in tests)
            logits = logits.float()
        losses, corrects = [], []
        for i, (y, y_b) in enumerate(targets):
            out = logits[:, i]
            loss = F.cross_entropy(out, y, label_smoothing=smoothing[i])
            correct = (out.argmax(1) == y).sum().to(out.dtype)
            if y_b is not None:
                loss = lams[i] * loss + (1 - lams[i]) * F.cross_entropy(out, y_b, label_smoothing=smoothing[i])
                correct = lams[i] * correct + (1 - lams[i]) * (out.argmax(1) == y_b).sum().to(out.dtype)
            losses.append(loss)
            corrects.append(correct)
        losses, corrects = torch.stack(losses), torch.stack(corrects)
        return losses.sum(), losses.detach(), corrects.detach()

    return forward_loss


class TrainStep:
    """One optimisation step of every member: ``step(epoch, i, xs, ys, perms, lams)`` returns the
    members' (losses, correct counts) as device tensors (no host sync)."""

    def __init__(self, forward: Callable, configs: list[RunConfig], optimizers: list, *, amp: bool,
                 device_type: str, compile: bool, steps_per_epoch: int, shard: tuple[int, int] = (0, 1), log=print,
                 compile_mode: str = COMPILE_MODE):
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        self.configs, self.optimizers, self.log = configs, optimizers, log
        if device_type == "cuda":
            # cuDNN times its algorithms on each new shape once and keeps the fastest; without this
            # it picks by heuristics, which can be several times slower for grouped convolutions.
            torch.backends.cudnn.benchmark = True
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * configs[0].epochs
        self.eager = make_forward_loss(forward, configs, amp, device_type, shard)
        if compile:
            # A fresh compile per call: each call's closure would otherwise count as a recompile of
            # the same code, and dynamo silently falls back to eager past its recompile limit (8).
            # The on-disk inductor cache keeps a repeated architecture's rebuild short.
            torch._dynamo.reset()
            self.forward_loss = torch.compile(self.eager, mode=compile_mode, dynamic=False)
        else:
            self.forward_loss = self.eager
        self.compiled, self.compile_mode = compile, compile_mode
        self.first = True

    def lr(self, k: int, step: int) -> float:
        """Member ``k``'s learning rate (of its first parameter group) at global step ``step``."""
        config = self.configs[k]
        return config.lr * lr_factor(step, self.total_steps, self.steps_per_epoch * config.warmup_epochs)

    def __call__(self, epoch: int, i: int, xs, ys, perms, lams):
        step = epoch * self.steps_per_epoch + i
        for k, (config, optimizer) in enumerate(zip(self.configs, self.optimizers)):
            factor = lr_factor(step, self.total_steps, self.steps_per_epoch * config.warmup_epochs)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        first, self.first = self.first, False
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # harmless in the modes without CUDA graphs
            try:
                total, losses, corrects = self.forward_loss(xs, ys, perms, lams)
                total.backward()
            except Exception as err:  # compile is an optimisation: fall back, say so, go on
                if not first:
                    raise
                self.log(f"{self.configs[0].run_id}{' (pack)' if len(self.configs) > 1 else ''}: torch.compile "
                         f"failed ({type(err).__name__}: {err}); training eagerly")
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                self.forward_loss, self.compiled = self.eager, False
                total, losses, corrects = self.forward_loss(xs, ys, perms, lams)
                total.backward()
        else:
            total, losses, corrects = self.forward_loss(xs, ys, perms, lams)
            total.backward()
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return losses, corrects
