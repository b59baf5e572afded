r"""Dead neurons at exactly-zero branch ends, and the zero-preserving cure (paper Sec. 3.2).

Identity control zeroes the last layer of every residual branch. In two common implementations
that weight then receives an exactly-zero gradient (paper Sec. 3.2):

* **option A shortcut** (zero-filled down-sampling, as akamaster's and Fixup's CIFAR ResNets): the
  down-sampling block adds zero channels to its output. The next block's first convolution, an
  IDIC (patch-maintain) kernel, reads only the first few input channels, which are those zero
  channels, so its branch computes ``relu(bn(0)) = 0`` and the gradient of its branch end
  ``dL/dW2 = delta * h`` is exactly zero; the damage cascades through later blocks until earlier
  branch ends have moved;
* **zero-gamma BN** (Goyal et al. 2017; the BN after the branch end has weight 0): the gradient into
  the branch end is multiplied by gamma = 0, and gamma's own gradient ``sum(dy * x_hat)`` is zero
  too when the branch end is exactly zero (its BN input is constant, ``x_hat = 0``): neither ever
  moves.

With the zero-preserving IDIZ / IDIZC branch end (entries ``+-eps``), the branch outputs
``eps (x_a - x_b)``: tiny, but not constant, so BN normalises it to a non-zero signal and every
gradient above is non-zero.

The lab's CIFAR ResNet-20 (BN) is built with ``idinit.lab.models.build_model`` (IDInit with
``branch_end="zero"`` or the default ``"zero_preserving"``), trained with SGD on CIFAR-10 for a
few steps; at every step the record counts the branch-end (``conv2``) weights whose gradient is
exactly 0.0. Networks:

* ``option_a``: shortcut option A, BN weights 1;
* ``zero_gamma``: shortcut option B (1x1 conv + BN, so zero-filled channels play no part), every
  block's ``bn2.weight`` set to 0 after IDInit; plus Goyal et al.'s own zero-gamma (the library's
  ``"zero_gamma"`` scheme: Kaiming convs, random branch ends) for reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "dead-neurons"
VARIANTS = {
    "option_a": ("zero", "zero_preserving"),
    "zero_gamma": ("zero", "zero_preserving", "kaiming_zero_gamma"),
}
LABELS = {"zero": "IDInit, branch end exactly 0", "zero_preserving": "IDInit, branch end IDIZ (eps 1e-6)",
          "kaiming_zero_gamma": "Kaiming + zero gamma (Goyal et al.)"}


@dataclass(frozen=True)
class Settings:
    arch: str = "resnet20"
    networks: tuple[str, ...] = ("option_a", "zero_gamma")
    steps: int = 20
    batch: int = 128
    lr: float = 0.1               # the ablation's SGD (paper Sec. 4.2): lr 0.1, momentum 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def check(self) -> None:
        unknown = [n for n in self.networks if n not in VARIANTS]
        if unknown or not self.networks:
            raise ValueError(f"dead-neurons: unknown network(s) {unknown}; valid: {tuple(VARIANTS)}")
        if self.steps < 1 or self.batch < 2:
            raise ValueError(f"dead-neurons: need steps >= 1 and batch >= 2 (BN), got {self.steps}, {self.batch}")
        if self.lr <= 0:
            raise ValueError(f"dead-neurons: lr must be > 0, got {self.lr}")


def build(settings: Settings, network: str, variant: str) -> nn.Module:
    """The ResNet of one (network, variant), initialised through the lab's ``build_model``."""
    from idinit.lab.models import BasicBlock, build_model

    if network not in VARIANTS or variant not in VARIANTS[network]:
        raise ValueError(f"dead-neurons: unknown variant {network}/{variant}; valid: {VARIANTS}")
    shortcut = "A" if network == "option_a" else "B"
    torch.manual_seed(settings.seed)
    if variant == "kaiming_zero_gamma":
        return build_model(settings.arch, "zero_gamma", shortcut=shortcut)
    model = build_model(settings.arch, "idinit", shortcut=shortcut, init_options={"branch_end": variant})
    if network == "zero_gamma":
        with torch.no_grad():
            for block in model.modules():
                if isinstance(block, BasicBlock):
                    block.bn2.weight.zero_()  # Goyal et al.: the BN closing each branch starts at 0
    return model


def branch_ends(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{block name: conv2.weight}`` for every residual block, in forward order."""
    from idinit.lab.models import BasicBlock

    return {name: block.conv2.weight for name, block in model.named_modules() if isinstance(block, BasicBlock)}


def _batches(settings: Settings, data_dir, device):
    from idinit.lab.data import DeviceLoader, load_cifar10

    data = load_cifar10(data_dir, train_chunks=(0,))
    loader = DeviceLoader(data.x_train, data.y_train, settings.batch, device=device, train=True, seed=settings.seed)
    batches = []
    for x, y in loader.epoch(0):
        batches.append((x, y))
        if len(batches) == settings.steps:
            return batches
    raise ValueError(f"dead-neurons: {settings.steps} steps of batch {settings.batch} exceed one epoch of 10,000 images")


def train(settings: Settings, network: str, variant: str, batches) -> dict:
    """SGD for ``steps`` steps; per step, the fraction of branch-end weights with exactly-zero
    gradient (overall and per block), and the fraction never updated so far."""
    model = build(settings, network, variant).to(batches[0][0].device).train()
    ends = branch_ends(model)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    total = sum(w.numel() for w in ends.values())
    ever_nonzero = {name: torch.zeros_like(w, dtype=torch.bool) for name, w in ends.items()}
    log = {"zero_grad_fraction": [], "never_updated_fraction": [], "per_block": [], "loss": [],
           "blocks": list(ends), "weights": total}
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        zero, per_block = 0, {}
        for name, w in ends.items():
            is_zero = w.grad == 0
            ever_nonzero[name] |= ~is_zero
            per_block[name] = is_zero.double().mean().item()
            zero += int(is_zero.sum())
        log["zero_grad_fraction"].append(zero / total)
        log["never_updated_fraction"].append(sum(int((~m).sum()) for m in ever_nonzero.values()) / total)
        log["per_block"].append(per_block)
        log["loss"].append(loss.item())
        opt.step()
    return log


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    batches = _batches(settings, data_dir, device)
    runs = {f"{net}/{variant}": train(settings, net, variant, batches)
            for net in settings.networks for variant in VARIANTS[net]}
    summary = {key: {"zero_grad_at_step": [round(v, 6) for v in log["zero_grad_fraction"]],
                     "never_updated_after_all_steps": log["never_updated_fraction"][-1],
                     "fully_dead_blocks_at_step0": [b for b, f in log["per_block"][0].items() if f == 1.0]}
               for key, log in runs.items()}
    return {"runs": runs, "summary": summary}


def plot(record: dict, path) -> None:
    nets = record["settings"]["networks"]
    fig, axes = new_figure(1, len(nets), (6.5 * len(nets), 4.2))
    for ax, net in zip(axes[0], nets):
        for variant in VARIANTS[net]:
            log = record["runs"][f"{net}/{variant}"]
            steps = range(len(log["zero_grad_fraction"]))
            line, = ax.plot(steps, log["zero_grad_fraction"], "o-", label=LABELS[variant])
            ax.plot(steps, log["never_updated_fraction"], "--", color=line.get_color(), alpha=0.6)
        title = "option A shortcut (zero-filled channels)" if net == "option_a" else "zero-gamma BN (option B shortcut)"
        ax.set(xlabel="SGD step (0 = first)", ylabel="fraction of branch-end weights", ylim=(-0.03, 1.03),
               title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, title="solid: grad == 0 at that step; dashed: never != 0 so far", title_fontsize=7)
    s = record["settings"]
    fig.suptitle(f"{s['arch']} on CIFAR-10, SGD lr {s['lr']} momentum {s['momentum']}, batch {s['batch']}: "
                 "branch-end (conv2) weights whose gradient is exactly 0", fontsize=10)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Branch-end weights with exactly-zero gradient: exact zero vs IDIZ, option A and zero-gamma (3.2).')


__all__ = ["NAME", "VARIANTS", "Settings", "branch_ends", "build", "measure", "plot", "run", "train"]
