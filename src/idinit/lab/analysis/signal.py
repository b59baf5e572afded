r"""Signal (variance) propagation at initialisation (paper appendix C.3, Fig. 15).

Four networks, as the paper lists them:

* ``fc``: 10 fully connected layers, no activation: ``Linear(3072, 96)`` then 9 x ``Linear(96, 96)``
  (the paper's hidden widths were lost in extraction; 96 everywhere is our choice, the width the
  paper gives the residual version);
* ``resfc``: ``Linear(3072, 96)``, then 10 residual blocks ``h + W2 W1 h`` (96 wide, no activation);
* ``allconv``: the 9-layer AllConv of appendix C.2 (Table 9; All-CNN-C of Springenberg et al. 2015),
  ReLU, global average pooling to 10 outputs (``idinit.lab.models.AllConv``);
* ``resconv``: a 3x3 conv to 16 channels, then 10 blocks ``relu(h + conv2(relu(conv1(h))))`` of
  16 channels, ReLU, no normalisation.

Each is initialised with ``idinit.init_(model, scheme)`` by IDInit and by the paper's baseline,
Xavier for the FC networks and Kaiming for the conv networks, in ``rounds`` independent draws (a new
initialisation seed and a new batch of CIFAR-10 images each round, the paper's 500 rounds). The
images are normalised per channel (std ~1) and fed clean and with added Gaussian noise of std
``noise``; the record holds the std of the network's output in every round.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

import idinit
from idinit.lab.models.allconv import all_conv

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "signal"
NETWORKS = ("fc", "resfc", "allconv", "resconv")
BASELINE = {"fc": "xavier", "resfc": "xavier", "allconv": "kaiming", "resconv": "kaiming"}
# IDInit's stem gain depends on the activation (paper appendix B): 1 for the linear FC networks.
ACTIVATION = {"fc": "linear", "resfc": "linear", "allconv": "relu", "resconv": "relu"}


@dataclass(frozen=True)
class Settings:
    networks: tuple[str, ...] = NETWORKS
    rounds: int = 500
    batch: int = 4                 # images per round (each also fed with every noise level)
    noise: tuple[float, ...] = (0.1, 1.0)  # std of the added input noise (0 = clean is always run)
    width: int = 96                # FC / ResFC width
    conv_channels: int = 16        # ResConv width
    layers: int = 10               # FC layers, ResFC blocks and ResConv blocks
    eval_images: int = 10000       # rounds draw their images from the first N of the eval split

    def check(self) -> None:
        unknown = [n for n in self.networks if n not in NETWORKS]
        if unknown or not self.networks:
            raise ValueError(f"signal: unknown network(s) {unknown}; valid: {NETWORKS}")
        small = {k: getattr(self, k) for k in ("rounds", "batch", "width", "conv_channels", "layers", "eval_images")
                 if getattr(self, k) < 1}
        if small:
            raise ValueError(f"signal: these settings must be >= 1: {small}")
        if any(n <= 0 for n in self.noise):
            raise ValueError(f"signal: noise levels must be > 0 (clean inputs are always measured), got {self.noise}")


class LinearStack(nn.Module):
    """``Linear(inputs, width)`` followed by ``layers - 1`` x ``Linear(width, width)``, no activation."""

    def __init__(self, inputs: int, width: int, layers: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(inputs, width), *(nn.Linear(width, width) for _ in range(layers - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class LinearResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.fc1(h))


class ResidualLinearStack(nn.Module):
    """``Linear(inputs, width)``, then ``blocks`` linear residual blocks ``h + W2 W1 h``."""

    def __init__(self, inputs: int, width: int, blocks: int):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.Sequential(*(LinearResidualBlock(width) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x.flatten(1)))


class ConvResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h + self.conv2(torch.relu(self.conv1(h))))


class ResidualConvStack(nn.Module):
    """A 3x3 conv to ``channels``, then ``blocks`` residual blocks without normalisation."""

    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ConvResidualBlock(channels) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.relu(self.stem(x)))


def build_network(name: str, settings: Settings) -> nn.Module:
    if name == "fc":
        return LinearStack(3072, settings.width, settings.layers)
    if name == "resfc":
        return ResidualLinearStack(3072, settings.width, settings.layers)
    if name == "allconv":
        return all_conv()
    if name == "resconv":
        return ResidualConvStack(settings.conv_channels, settings.layers)
    raise ValueError(f"signal: unknown network {name!r}; valid: {NETWORKS}")


def plan_for(model: nn.Module, network: str, scheme: str) -> idinit.Plan:
    """The library's plan for ``model`` under ``scheme`` (roles found once, applied every round)."""
    options = {"activation": ACTIVATION[network]} if scheme == "idinit" else {}
    return idinit.plan(model, scheme, example_inputs=(torch.zeros(2, 3, 32, 32),), **options)


def _eval_images(settings: Settings, data_dir) -> torch.Tensor:
    from idinit.lab.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10

    data = load_cifar10(data_dir, train_chunks=(0,))  # only the evaluation split is used: decode one train chunk
    x = torch.tensor(data.x_eval[: settings.eval_images]).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    images = _eval_images(settings, data_dir)
    levels = (0.0, *settings.noise)
    stds: dict[str, dict[str, dict[str, list[float]]]] = {}
    with torch.no_grad():
        for network in settings.networks:
            model = build_network(network, settings).to(device)
            stds[network] = {}
            for scheme in ("idinit", BASELINE[network]):
                plan = plan_for(model, network, scheme)
                per_level = {f"{level:g}": [] for level in levels}
                for r in range(settings.rounds):
                    plan.apply(model, generator=torch.Generator().manual_seed(r))
                    gen = torch.Generator().manual_seed(500_000 + r)  # same images and noise for both schemes
                    x = images[torch.randint(0, images.shape[0], (settings.batch,), generator=gen)]
                    batch = torch.cat([x + level * torch.randn(x.shape, generator=gen) for level in levels])
                    out = model(batch.to(device)).reshape(len(levels), settings.batch, -1)
                    for level, part in zip(levels, out):
                        per_level[f"{level:g}"].append(part.std().item())
                stds[network][scheme] = per_level
    summary = {net: {scheme: {level: {"median": statistics.median(v), "min": min(v), "max": max(v),
                                      "mean": statistics.fmean(v), "std": statistics.pstdev(v)}
                              for level, v in per.items()}
                     for scheme, per in by_scheme.items()}
               for net, by_scheme in stds.items()}
    return {"output_std": stds, "summary": summary, "baseline": {n: BASELINE[n] for n in settings.networks},
            "input_std": images.std().item()}


def plot(record: dict, path) -> None:
    nets = list(record["output_std"])
    fig, axes = new_figure(1, len(nets), (4.2 * len(nets), 4.2))
    for ax, net in zip(axes[0], nets):
        by_scheme = record["output_std"][net]
        positions, data, labels = [], [], []
        for i, (scheme, per_level) in enumerate(by_scheme.items()):
            for j, (level, values) in enumerate(per_level.items()):
                positions.append(i * (len(per_level) + 1) + j)
                data.append(values)
                labels.append(f"{scheme}\nnoise {level}")
        ax.boxplot(data, positions=positions, widths=0.7, showfliers=True)
        ax.set_xticks(positions, labels, rotation=60, fontsize=7)
        ax.axhline(record["input_std"], color="grey", lw=0.8, ls="--")
        ax.set(yscale="log", title=net, ylabel="output std (one per round)")
    s = record["settings"]
    fig.suptitle(f"Output std at initialisation, {s['rounds']} rounds of {s['batch']} CIFAR-10 images "
                 f"(dashed: input std)", fontsize=10)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Output std at init of FC / ResFC / AllConv / ResConv, IDInit vs Xavier / Kaiming (C.3).')


__all__ = ["NAME", "NETWORKS", "Settings", "all_conv", "build_network", "plan_for", "measure", "plot", "run"]
