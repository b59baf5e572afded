r"""Signal through Res-112's long residual stem at initialisation (paper appendix C.6, the t = 0
point of Fig 19).

The paper trains Res-112 without BN (109 layers in the residual stem) and reports that Kaiming's and
Fixup's output std explodes within 4 epochs while IDInit's settles. The training is the lab's
``res112`` experiments (GPU; ``results/res112``); this analysis measures, on the CPU, where each
initialisation *starts*: the std of the activations after the stem conv, after each of the 54
residual blocks, after the stem's closing conv (``stem_end``), after ``conv2`` and at the output, on
CIFAR-10 evaluation images, for each initialisation and down-sampling shortcut:

* ``kaiming``: He normal everywhere (no BN): every block adds a branch of the same variance as its
  input, so the variance roughly doubles per block;
* ``fixup``: Fixup's init (branch ends and classifier 0): every block starts as the identity;
* ``idinit`` and ``idinit-channel`` (IDInit with channel-maintain convs instead of IDIC): identity
  branch-first convs, IDIZ branch ends (~0), IDIZ head.

With shortcut option A, the zero-filled channels of the down-sampling blocks sit at channels 0-15 of
the last stage, exactly the channels that ``stem_end``'s IDIC kernel reads (output ``m`` reads input
channel ``m // 9``): IDInit's stem output is then ~0. Option B (1x1 projection) has no such channels.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "long-stem"
INITS = ("kaiming", "fixup", "idinit", "idinit-channel")


@dataclass(frozen=True)
class Settings:
    inits: tuple[str, ...] = INITS
    shortcuts: tuple[str, ...] = ("A", "A-centred", "B")
    images: int = 32           # CIFAR-10 evaluation images per draw
    seeds: int = 3             # independent initialisations (and image draws)
    eval_images: int = 2000    # draws come from the first N evaluation images

    def check(self) -> None:
        bad = [i for i in self.inits if i not in INITS]
        if bad or not self.inits:
            raise ValueError(f"long-stem: unknown init(s) {bad}; valid: {INITS}")
        from idinit.lab.models import SHORTCUTS

        if not self.shortcuts or any(s not in SHORTCUTS for s in self.shortcuts):
            raise ValueError(f"long-stem: shortcuts must be among {SHORTCUTS}, got {self.shortcuts}")
        if min(self.images, self.seeds, self.eval_images) < 1:
            raise ValueError("long-stem: images, seeds and eval_images must be >= 1")


def build(init: str, shortcut: str):
    from idinit.lab.models import build_model

    if init == "idinit-channel":
        return build_model("res112", "idinit", shortcut=shortcut, init_options={"conv": "channel"})
    return build_model("res112", init, shortcut=shortcut)


@torch.no_grad()
def stem_stds(model, x: torch.Tensor) -> tuple[list[str], list[float]]:
    """Std of the activations after the stem conv, each block, ``stem_end``, ``conv2`` and the head."""
    from idinit.lab.models import FixupRes112

    fixup = isinstance(model, FixupRes112)
    names, stds = ["conv1"], []
    h = F.relu(model.conv1(x) + model.bias1) if fixup else F.relu(model.conv1(x))
    stds.append(h.std().item())
    for stage in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, stage)):
            h = block(h)
            names.append(f"{stage}.{i}")
            stds.append(h.std().item())
    h = F.relu(model.stem_end(h))
    names.append("stem_end")
    stds.append(h.std().item())
    h = F.relu(model.conv2(h))
    names.append("conv2")
    stds.append(h.std().item())
    pooled = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
    out = model.fc(pooled + model.bias2 if fixup else pooled)
    names.append("output")
    stds.append(out.std().item())
    return names, stds


def _images(settings: Settings, data_dir) -> torch.Tensor:
    from idinit.lab.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10

    data = load_cifar10(data_dir, train_chunks=(0,))  # only the evaluation split is used
    x = torch.tensor(data.x_eval[: settings.eval_images]).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    images = _images(settings, data_dir)
    curves: dict[str, dict[str, list[list[float]]]] = {}
    names: list[str] = []
    for shortcut in settings.shortcuts:
        for init in settings.inits:
            runs = []
            for seed in range(settings.seeds):
                torch.manual_seed(seed)
                model = build(init, shortcut).to(device)
                gen = torch.Generator().manual_seed(1000 + seed)  # the same images for every init
                x = images[torch.randint(0, images.shape[0], (settings.images,), generator=gen)].to(device)
                names, stds = stem_stds(model, x)
                runs.append(stds)
            curves.setdefault(shortcut, {})[init] = runs
    summary = {shortcut: {init: {name: statistics.median(run[i] for run in runs) for i, name in enumerate(names)
                                 if name in ("conv1", "layer1.17", "layer2.17", "layer3.17", "stem_end", "output")}
                          for init, runs in by_init.items()}
               for shortcut, by_init in curves.items()}
    return {"layers": names, "stds": curves, "summary": summary, "input_std": images.std().item()}


COLORS = {"kaiming": "tab:blue", "fixup": "tab:green", "idinit": "tab:red", "idinit-channel": "tab:orange"}


def plot(record: dict, path) -> None:
    shortcuts = list(record["stds"])
    fig, axes = new_figure(1, len(shortcuts), (6.5 * len(shortcuts), 4.5))
    names = record["layers"]
    ticks = [i for i, n in enumerate(names) if n in ("conv1", "layer2.0", "layer3.0", "stem_end", "output")]
    for ax, shortcut in zip(axes[0], shortcuts):
        for init, runs in record["stds"][shortcut].items():
            for j, run in enumerate(runs):
                values = [v if v and v > 0 and math.isfinite(v) else float("nan") for v in run]
                ax.plot(range(len(values)), values, color=COLORS.get(init), lw=1, alpha=0.8,
                        label=init if j == 0 else None)
        ax.axhline(record["input_std"], color="grey", lw=0.8, ls="--")
        ax.set(yscale="log", title=f"Res-112 without BN at init, shortcut option {shortcut}",
               ylabel="activation std (exact 0 not drawn)")
        ax.set_xticks(ticks, [names[i] for i in ticks], fontsize=8, rotation=35, ha="right")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   "Activation std through Res-112's 109-layer stem at init: Kaiming / Fixup / IDInit (C.6).")


__all__ = ["INITS", "NAME", "Settings", "build", "measure", "plot", "run", "stem_stds"]
