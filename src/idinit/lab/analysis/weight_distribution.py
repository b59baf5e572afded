r"""Weight distribution at initialisation and after training (paper appendix C.4, Fig 17).

The paper's claim: "weights initialized with IDInit are almost full of zero at the beginning, while
Kaiming uses a Gaussian distribution. At the end of the training, IDInit still contains more zero
values than Kaiming".

Measured here over the *weights* of a CIFAR ResNet (every convolution and the classifier: the
tensors an initialisation fills; BN scales, biases and BN statistics are left out):

* at initialisation, for each ``init_archs`` (ResNet-20, the paper's network, and ResNet-56), built
  and initialised by the lab's ``build_model`` (option A, BN) with IDInit and with Kaiming;
* after training, from state dicts in ``trained_dir`` named ``trained_pattern`` (by default the
  Table 1 run's final ResNet-56 weights, ``results/table1-resnet56/weights``), loaded strictly into
  ``CifarResNet(trained_arch)`` so a wrong file is an error, not a silent mismatch.

For each set of weights the record holds the fraction of exact zeros, the fraction with
``|w| < t`` for each absolute threshold ``t``, the fraction with ``|w| < r * rms(W)`` for each
relative threshold ``r`` (``rms`` per weight tensor; scale-free, which matters because a conv
followed by BN can shrink under weight decay without changing the function), the same per layer
group (stem, branch-first convs ``conv1``, branch ends ``conv2``, head), and histograms. For the
trained weights it also splits them by where they started (:data:`ORIGINS`: exactly 0, IDIZ's
tiny +-eps, or a real value), rebuilding the initial weights as the training run did
(``torch.manual_seed(seed)`` then ``build_model``; exact for IDInit, whose pattern has no randomness
above 1e-6).

Weights saved in float16 (the Table 1 run's) flush ``|w| < 3e-8`` to zero and keep ~3 significant
digits: "exact zero" after training then means ``|w| < 3e-8``; the thresholds start at 1e-4, well
inside float16's range.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

from .recording import analysis_run, new_figure, save_figure_atomic

NAME = "weight-distribution"
GROUPS = ("stem", "branch_first", "branch_end", "shortcut", "head")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]


@dataclass(frozen=True)
class Settings:
    inits: tuple[str, ...] = ("idinit", "kaiming")
    init_archs: tuple[str, ...] = ("resnet20", "resnet56")
    trained_dir: str = "results/table1-resnet56/weights"  # "" skips the after-training part
    trained_pattern: str = "{init}-sgd-final-fp16.pt"
    trained_arch: str = "resnet56"
    abs_thresholds: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    rel_thresholds: tuple[float, ...] = (0.01, 0.1)
    bins: int = 120
    seed: int = 0

    def check(self) -> None:
        from idinit.lab.models import LIBRARY_SCHEMES, parse_arch

        bad = [i for i in self.inits if i not in LIBRARY_SCHEMES]
        if bad or not self.inits:
            raise ValueError(f"weight-distribution: inits must be library schemes {LIBRARY_SCHEMES}, got {self.inits}")
        for arch in (*self.init_archs, self.trained_arch):
            parse_arch(arch)
        if any(t <= 0 for t in self.abs_thresholds + self.rel_thresholds):
            raise ValueError("weight-distribution: thresholds must be > 0, got "
                             f"{self.abs_thresholds} and {self.rel_thresholds}")
        if self.bins < 10:
            raise ValueError(f"weight-distribution: bins must be >= 10, got {self.bins}")
        if "{init}" not in self.trained_pattern:
            raise ValueError(f"weight-distribution: trained_pattern must contain '{{init}}', got {self.trained_pattern!r}")


def weight_group(name: str) -> str | None:
    """Layer group of a CIFAR ResNet parameter name, or None for what is not a weight we count."""
    if not name.endswith(".weight"):
        return None
    if name == "conv1.weight":
        return "stem"
    if name == "fc.weight":
        return "head"
    if name.endswith(".conv1.weight"):
        return "branch_first"
    if name.endswith(".conv2.weight"):
        return "branch_end"
    if ".shortcut." in name:  # option B's 1x1 projection (option A has no weight)
        return "shortcut"
    return None


def weights_by_group(state: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The state dict's conv / linear weights (float32, flattened), by :func:`weight_group`."""
    groups: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    for name, tensor in state.items():
        group = weight_group(name)
        if group is not None and tensor.ndim >= 2:
            groups[group].append(tensor.detach().float().flatten().cpu())
    return groups


def fractions(tensors: list[torch.Tensor], abs_thresholds, rel_thresholds) -> dict:
    """Count, std, and the fractions of exact zeros, ``|w| < t`` and ``|w| < r * rms(tensor)``."""
    n = sum(t.numel() for t in tensors)
    if n == 0:
        return {"count": 0}
    flat = torch.cat(tensors)
    out = {"count": n, "std": flat.std().item() if n > 1 else 0.0,
           "exact_zero": (flat == 0).sum().item() / n,
           "abs_below": {f"{t:g}": (flat.abs() < t).sum().item() / n for t in abs_thresholds}}
    rel = {}
    for r in rel_thresholds:
        below = 0
        for t in tensors:
            rms = t.square().mean().sqrt()
            below += (t.abs() < r * rms).sum().item()
        rel[f"{r:g}"] = below / n
    out["rel_below"] = rel
    return out


def all_weights(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every counted weight of ``state``, flattened into one float32 vector (in GROUPS order)."""
    groups = weights_by_group(state)
    return torch.cat([t for g in GROUPS for t in groups[g]])


def describe(state: dict[str, torch.Tensor], settings: Settings, span: float) -> dict:
    """Fractions over all weights and per group; a histogram of ``w`` on ``[-span, span]`` and one
    of ``log10 |w|`` on ``[-9, 1]`` (values outside either range are counted apart)."""
    groups = weights_by_group(state)
    everything = [t for g in GROUPS for t in groups[g]]
    flat = torch.cat(everything)
    counts = torch.histc(flat, bins=settings.bins, min=-span, max=span)  # histc drops values outside
    nonzero = flat[flat != 0].abs()
    log_counts = torch.histc(nonzero.log10().clamp(-9, 1), bins=settings.bins, min=-9, max=1)
    return {"all": fractions(everything, settings.abs_thresholds, settings.rel_thresholds),
            "groups": {g: fractions(groups[g], settings.abs_thresholds, settings.rel_thresholds) for g in GROUPS},
            "histogram": {"range": [-span, span], "counts": counts.tolist(),
                          "outside": int((flat.abs() > span).sum())},
            "log_abs_histogram": {"range": [-9, 1], "counts": log_counts.tolist(), "zeros": int((flat == 0).sum())}}


# Where a weight started: exactly 0, a tiny non-zero (IDIZ's +-eps, below 1e-4), or a real value.
ORIGINS = {"init_zero": lambda w: w == 0, "init_tiny": lambda w: (w != 0) & (w.abs() < 1e-4),
           "init_large": lambda w: w.abs() >= 1e-4}


def by_origin(trained: torch.Tensor, initial: torch.Tensor, abs_thresholds) -> dict:
    """Trained weights split by their value at initialisation (:data:`ORIGINS`): count, mean |w|,
    and the fraction with ``|w| < t``."""
    out = {}
    for origin, select in ORIGINS.items():
        part = trained[select(initial)].abs()
        out[origin] = {"count": part.numel(), "mean_abs": part.mean().item() if part.numel() else None,
                       "abs_below": {f"{t:g}": (part < t).float().mean().item() if part.numel() else None
                                     for t in abs_thresholds}}
    return out


def resolve(path: str) -> pathlib.Path:
    """``path`` as given if it exists (absolute or from the current directory), else from the repository root."""
    given = pathlib.Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given
    return REPO_ROOT / given


def load_trained(settings: Settings, init: str) -> dict[str, torch.Tensor]:
    """A trained state dict, checked by loading it strictly into ``CifarResNet(trained_arch)``."""
    from idinit.lab.models import CifarResNet, parse_arch

    file = resolve(settings.trained_dir) / settings.trained_pattern.format(init=init)
    if not file.is_file():
        raise FileNotFoundError(f"weight-distribution: no trained weights for {init!r} at {str(file)!r} "
                                "(set trained_dir / trained_pattern, or trained_dir= to skip the trained part)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"weight-distribution: {file} holds a {type(state).__name__}, not a state dict")
    model = CifarResNet(parse_arch(settings.trained_arch), shortcut="A")
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as err:
        raise ValueError(f"weight-distribution: {file} is not a {settings.trained_arch} (option A) state dict: "
                         f"{str(err).splitlines()[0]}") from None
    return state


def _quantile(values: torch.Tensor, q: float) -> float:
    ordered = values.flatten().sort().values
    return ordered[int(q * (ordered.numel() - 1))].item()


def measure(settings: Settings, *, data_dir=None, device="cpu") -> dict:
    from idinit.lab.models import build_model

    def initial_state(arch: str, init: str) -> dict:
        # The Table 1 runs built their models the same way (torch.manual_seed(seed), then build_model).
        torch.manual_seed(settings.seed)
        return build_model(arch, init, shortcut="A").state_dict()

    at_init: dict[str, dict] = {}
    for arch in settings.init_archs:
        states = {init: initial_state(arch, init) for init in settings.inits}
        span = max(all_weights(s).abs().max().item() for s in states.values())  # one range per panel
        at_init[arch] = {init: describe(state, settings, span) for init, state in states.items()}
    trained: dict[str, dict] = {}
    origins: dict[str, dict] = {}
    files: dict[str, str] = {}
    if settings.trained_dir:
        states = {init: load_trained(settings, init) for init in settings.inits}
        # a few large weights (mostly the classifier's) would squeeze the plot: range = 1.2 x the
        # 99.9% quantile of |w|; the weights outside it are counted in "outside"
        span = 1.2 * max(_quantile(all_weights(s).abs(), 0.999) for s in states.values())
        for init, state in states.items():
            trained[init] = describe(state, settings, span)
            files[init] = str(resolve(settings.trained_dir) / settings.trained_pattern.format(init=init))
            initial, final = all_weights(initial_state(settings.trained_arch, init)), all_weights(state)
            origins[init] = by_origin(final, initial, settings.abs_thresholds)
            # How much of the start the trained weights remember (also checks that the rebuilt
            # start is the run's: another seed's Kaiming start correlates ~0).
            origins[init]["correlation_with_init"] = torch.corrcoef(torch.stack([initial, final]))[0, 1].item()
    return {"at_init": at_init,
            "trained": {"arch": settings.trained_arch, "files": files, "stats": trained, "by_origin": origins}}


COLORS = {"idinit": "tab:red", "kaiming": "tab:blue"}


def _centres(lo: float, hi: float, n: int) -> list[float]:
    width = (hi - lo) / n
    return [lo + (i + 0.5) * width for i in range(n)]


def _cdf_points(stats: dict) -> tuple[list[float], list[float]]:
    """Fraction of weights with |w| <= x, from the log-|w| histogram (zeros at the left edge)."""
    hist = stats["log_abs_histogram"]
    lo, hi = hist["range"]
    counts = hist["counts"]
    total = hist["zeros"] + sum(counts)
    width = (hi - lo) / len(counts)
    xs, ys, running = [10 ** lo], [hist["zeros"] / total], hist["zeros"]
    for i, c in enumerate(counts):
        running += c
        xs.append(10 ** (lo + (i + 1) * width))
        ys.append(running / total)
    return xs, ys


def plot(record: dict, path) -> None:
    at_init, trained = record["at_init"], record["trained"]["stats"]
    first_arch = next(iter(at_init))
    panels = [(f"{first_arch} at initialisation", at_init[first_arch])]
    if trained:
        panels.append((f"{record['trained']['arch']} after training", trained))
    fig, axes = new_figure(1, len(panels) + 1, (5.2 * (len(panels) + 1), 4.2))
    for ax, (title, by_init) in zip(axes[0], panels):
        for init, stats in by_init.items():
            hist = stats["histogram"]
            xs = _centres(*hist["range"], len(hist["counts"]))
            total = stats["all"]["count"]
            outside = f", {hist['outside']} outside the range" if hist["outside"] else ""
            ax.step(xs, [c / total for c in hist["counts"]], where="mid", color=COLORS.get(init),
                    label=f"{init} ({stats['all']['exact_zero']:.1%} exact zeros{outside})")
        ax.set(yscale="log", title=title, xlabel="weight value", ylabel="fraction of weights per bin")
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    for arch, by_init in at_init.items():
        for init, stats in by_init.items():
            ax.plot(*_cdf_points(stats), color=COLORS.get(init), ls="--" if arch == first_arch else ":",
                    label=f"{init}, {arch} at init")
    for init, stats in trained.items():
        ax.plot(*_cdf_points(stats), color=COLORS.get(init), lw=2, label=f"{init}, {record['trained']['arch']} trained")
    ax.set(xscale="log", xlabel="|w| (exact zeros drawn at the left edge)", ylabel="fraction of weights with |w| <= x",
           title="cumulative distribution of |w|", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Weights (convs + classifier) of CIFAR ResNets, IDInit vs Kaiming (paper C.4, Fig 17)", fontsize=10)
    save_figure_atomic(fig, path)


run = analysis_run(NAME, Settings, measure, plot,
                   'Weight histograms and near-zero fractions at init and after training, IDInit vs Kaiming (C.4).')


__all__ = ["GROUPS", "NAME", "ORIGINS", "Settings", "all_weights", "by_origin", "describe", "fractions", "load_trained", "measure", "plot", "run",
           "weight_group", "weights_by_group"]
