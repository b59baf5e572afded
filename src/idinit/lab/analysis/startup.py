"""The first steps of CIFAR ResNet training, step by step: why SGD at lr 0.2 without warm-up stalls.

Table 1's SGD setting (lr 0.2, momentum 0.9, wd 5e-4, batch 1024, no warm-up; paper Sec. 4.3)
left IDInit and Kaiming at chance for several epochs in this lab (``results/table1-resnet56``),
while Zero-gamma took off at once. This analysis trains the first ``steps`` steps of ResNet-56 on
CIFAR-10 exactly as the lab's training loop does (same loader, augmentation, bf16 autocast and
channels_last on CUDA) and records, every step:

- the training loss and accuracy of the batch and the standard deviation of the logits;
- per parameter group (stem conv, branch-first convs, branch-end convs, branch-closing BN
  weights, head) the gradient norm and the update norm relative to the weight norm;
- the standard deviation of the input of every branch-closing BN (``bn2``): the quantity that,
  under IDInit's zero-preserving branch ends (paper Eq. 12, ~1e-6), is far below BN's eps;
- the ratio ``rms(branch) / rms(skip)`` of every residual block.

The per-block quantities are kept as their mean, max and min over the blocks at each step.

Every intervention is applied to every initialisation alike (no setting favours one init):

==================  ============================================================================
``paper``           Table 1 as written: lr 0.2, no warm-up
``warmup1``         linear warm-up over 1 epoch (39 steps at batch 1024 on 40k images)
``warmup5``         linear warm-up over 5 epochs
``lr0.05``          lr 0.05, no warm-up
``default-head``    the classifier re-initialised with ``nn.Linear``'s own default for every init
``zero-bn2``        every branch-closing BN weight set to 0 (Kaiming becomes Zero-gamma; Zero-gamma
                    is unchanged; IDInit keeps its weights and gets a zero gamma)
``eps1e-3``         IDIZ eps 1e-3 instead of 1e-6 (acts on IDInit only; the others run as ``paper``)
==================  ============================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .recording import new_figure, run_and_record, save_figure_atomic

NAME = "startup"
INITS = ("idinit", "kaiming", "zero_gamma")
INTERVENTIONS = ("paper", "warmup1", "warmup5", "lr0.05", "default-head", "zero-bn2", "eps1e-3")
GROUPS = ("stem", "branch_first", "branch_end", "branch_norm", "head")


@dataclass(frozen=True)
class Settings:
    arch: str = "resnet56"
    shortcut: str = "A"
    inits: tuple[str, ...] = INITS
    interventions: tuple[str, ...] = INTERVENTIONS
    steps: int = 200               # ~5 epochs of 39 steps
    batch_size: int = 1024
    lr: float = 0.2
    seed: int = 0
    train_limit: int = 0           # 0: the whole 40k training split (tests cut it)

    def check(self) -> None:
        from idinit.lab.models import SHORTCUTS

        bad = [i for i in self.inits if i not in INITS] + [i for i in self.interventions if i not in INTERVENTIONS]
        if bad or not self.inits or not self.interventions:
            raise ValueError(f"startup: unknown init(s) or intervention(s) {bad}; inits: {INITS}; "
                             f"interventions: {INTERVENTIONS}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"startup: shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if min(self.steps, self.batch_size) < 1 or self.lr <= 0 or self.train_limit < 0:
            raise ValueError("startup: steps and batch_size must be >= 1, lr > 0, train_limit >= 0")


def _build(settings: Settings, init: str, intervention: str):
    from idinit.lab.models import BasicBlock, build_model

    options = {"eps": 1e-3} if intervention == "eps1e-3" and init == "idinit" else {}
    torch.manual_seed(settings.seed)
    model = build_model(settings.arch, init, settings.shortcut, init_options=options)
    with torch.no_grad():
        if intervention == "default-head":
            torch.manual_seed(settings.seed + 1)
            model.fc.reset_parameters()
        if intervention == "zero-bn2":
            for block in model.modules():
                if isinstance(block, BasicBlock):
                    block.bn2.weight.zero_()
    return model


def _groups(model) -> dict[str, list[torch.nn.Parameter]]:
    from idinit.lab.models import BasicBlock

    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    return {"stem": [model.conv1.weight], "branch_first": [b.conv1.weight for b in blocks],
            "branch_end": [b.conv2.weight for b in blocks], "branch_norm": [b.bn2.weight for b in blocks],
            "head": [model.fc.weight]}


def _norm(tensors) -> torch.Tensor:
    return torch.stack([t.float().pow(2).sum() for t in tensors]).sum().sqrt()


def _train_steps(settings: Settings, init: str, intervention: str, data, device) -> dict[str, list]:
    """``settings.steps`` training steps of one (init, intervention); per-step measurements."""
    from idinit.lab.data import DeviceLoader
    from idinit.lab.models import BasicBlock
    from idinit.lab.train import RunConfig
    from idinit.lab.train.loop import DATA_SPECS, lr_factor, make_optimizer

    cuda = torch.device(device).type == "cuda"
    model = _build(settings, init, intervention).to(device, memory_format=torch.channels_last if cuda else
                                                     torch.preserve_format)
    lr = 0.05 if intervention == "lr0.05" else settings.lr
    config = RunConfig(arch=settings.arch, init=init, shortcut=settings.shortcut, lr=lr,
                       batch_size=settings.batch_size, seed=settings.seed)
    optimizer = make_optimizer(model, config, torch.device(device))
    spec = DATA_SPECS["cifar10"]
    loader = DeviceLoader(data.x_train, data.y_train, settings.batch_size, device=device, train=True, pad=spec["pad"],
                          flip=spec["flip"], seed=settings.seed, channels_last=cuda,
                          dtype=torch.bfloat16 if cuda else torch.float32, mean=spec["mean"], std=spec["std"])
    per_epoch = len(loader)
    warmup = {"warmup1": 1, "warmup5": 5}.get(intervention, 0) * per_epoch
    total = per_epoch * 200  # the cosine of a 200-epoch run, as Table 1

    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    seen: dict[str, list[torch.Tensor]] = {"bn2_in": [], "branch": [], "skip": []}

    def keep(key):
        def hook(module, inputs, output):
            value = inputs[0] if key == "bn2_in" else output
            seen[key].append(value.detach().float().pow(2).mean().sqrt() if key != "bn2_in"
                             else value.detach().float().std())
        return hook

    handles = []
    for block in blocks:
        handles += [block.bn2.register_forward_hook(keep("bn2_in")), block.bn2.register_forward_hook(keep("branch")),
                    block.shortcut.register_forward_hook(keep("skip"))]
    groups = _groups(model)
    rows: dict[str, list] = {k: [] for k in ("loss", "acc", "logit_std")}
    for key in ("bn2_in_std", "branch_skip"):
        for stat in ("mean", "max", "min"):
            rows[f"{key}_{stat}"] = []
    for g in GROUPS:
        rows[f"grad_{g}"], rows[f"update_{g}"] = [], []
    step = 0
    model.train()
    while step < settings.steps:
        for x, y in loader.epoch(step // per_epoch):
            if step >= settings.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lr_factor(step, total, warmup)
            for values in seen.values():
                values.clear()
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cuda):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y)
            loss.backward()
            before = {g: [p.detach().clone() for p in ps] for g, ps in groups.items()}
            grads = {g: _norm([p.grad for p in ps]) for g, ps in groups.items()}
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            rows["loss"].append(loss.detach())
            rows["acc"].append((logits.argmax(1) == y).float().mean())
            rows["logit_std"].append(logits.detach().std())
            per_block = {"bn2_in_std": torch.stack(seen["bn2_in"]),
                         "branch_skip": torch.stack(seen["branch"]) / torch.stack(seen["skip"])}
            for key, values in per_block.items():
                rows[f"{key}_mean"].append(values.mean())
                rows[f"{key}_max"].append(values.max())
                rows[f"{key}_min"].append(values.min())
            for g, ps in groups.items():
                rows[f"grad_{g}"].append(grads[g])
                rows[f"update_{g}"].append(_norm([p.detach() - b for p, b in zip(ps, before[g])])
                                           / _norm(before[g]).clamp_min(1e-30))
            step += 1
    for h in handles:
        h.remove()
    # one host sync per run
    return {k: torch.stack(v).tolist() for k, v in rows.items()}


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    from idinit.lab.data import load_cifar10

    # a cut of the first 10k images needs only the first training chunk
    data = load_cifar10(data_dir, train_chunks=(0,) if 0 < settings.train_limit <= 10000 else None)
    if settings.train_limit:
        data = data._replace(x_train=data.x_train[:settings.train_limit], y_train=data.y_train[:settings.train_limit])
    runs = {iv: {init: _train_steps(settings, init, iv, data, device) for init in settings.inits}
            for iv in settings.interventions}
    return {"runs": runs, "summary": summarise(runs)}


def summarise(runs: dict) -> dict:
    """Per intervention and init: loss at steps 1 / 10 / 50 / last, the mean of the last 20 steps,
    the first step whose loss is below 2.0, and in the first 5 steps the largest branch/skip ratio
    and the smallest bn2 input std."""
    out = {}
    for iv, by_init in runs.items():
        for init, r in by_init.items():
            loss = r["loss"]
            below = next((i + 1 for i, v in enumerate(loss) if math.isfinite(v) and v < 2.0), None)
            early = range(min(5, len(loss)))
            out.setdefault(iv, {})[init] = {
                "loss_step1": loss[0], "loss_step10": loss[min(9, len(loss) - 1)],
                "loss_step50": loss[min(49, len(loss) - 1)], "loss_last": loss[-1],
                "loss_last20": sum(loss[-20:]) / len(loss[-20:]), "first_step_below_2": below,
                "max_branch_skip_first5": max(r["branch_skip_max"][i] for i in early),
                "min_bn2_in_std_step1": r["bn2_in_std_min"][0],
                "grad_branch_end_step1": r["grad_branch_end"][0], "grad_head_step1": r["grad_head"][0]}
    return out


COLORS = {"idinit": "tab:red", "kaiming": "tab:blue", "zero_gamma": "tab:green"}


def plot(record: dict, path) -> None:
    runs = record["runs"]
    ivs = list(runs)
    cols = 3
    rows = math.ceil((len(ivs) + 3) / cols)
    fig, axes = new_figure(rows, cols, (5.2 * cols, 3.6 * rows))
    flat = [ax for row in axes for ax in row]
    for ax, iv in zip(flat, ivs):
        for init, r in runs[iv].items():
            ax.plot(range(1, len(r["loss"]) + 1), r["loss"], color=COLORS.get(init), lw=1, label=init)
        ax.axhline(math.log(10), color="grey", lw=0.8, ls="--")
        ax.set(title=f"training loss: {iv}", ylim=(0, 8))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paper = runs.get("paper") or runs[ivs[0]]
    extra = flat[len(ivs):len(ivs) + 3]
    for init, r in paper.items():
        steps = range(1, len(r["loss"]) + 1)
        extra[0].plot(steps, r["branch_skip_max"], color=COLORS.get(init), lw=1, label=f"{init} max")
        extra[0].plot(steps, r["branch_skip_mean"], color=COLORS.get(init), lw=1, ls=":", label=f"{init} mean")
        extra[1].plot(steps, r["grad_branch_end"], color=COLORS.get(init), lw=1, label=init)
        extra[2].plot(steps, r["bn2_in_std_mean"], color=COLORS.get(init), lw=1, label=init)
    first = ivs[0] if "paper" not in runs else "paper"
    for ax, title in zip(extra, ("rms(branch) / rms(skip) per block", "grad norm, branch-end convs",
                                 "std of the branch-closing BN's input (mean over blocks)")):
        ax.set(yscale="log", title=f"{title} ({first})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in flat[len(ivs) + 3:]:
        ax.set_visible(False)
    fig.supxlabel("training step")
    fig.tight_layout()
    save_figure_atomic(fig, path)


def run(*, out_dir, data_dir=None, device="cpu", overrides=None) -> dict:
    """The first SGD steps of a CIFAR ResNet, per init and intervention (Table 1's start-up stall)."""
    return run_and_record(NAME, Settings, measure, plot, out_dir=out_dir, data_dir=data_dir,
                          device=device, overrides=overrides)
