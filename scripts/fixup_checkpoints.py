"""What a Fixup CIFAR ResNet run's per-epoch checkpoints hold: its scalar biases and multipliers, its
branch-end weights, and, on 500 of the lossless official test images (float64, CPU), the share of each
block's channels that no image turns on (behind the branch's ReLU and behind the block's output ReLU),
each branch's RMS against its skip's and the logits' std; epoch 0 is the network as initialised.

The lab keeps one checkpoint per run, overwritten each epoch; copy it after each epoch to ``ep<N>.pt``
(as ``results/fixup-cpu-probe`` did) and point this script at the folder:

    PYTHONPATH=src python scripts/fixup_checkpoints.py FOLDER [--data ../shared/data] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re

import numpy as np
import torch
import torch.nn.functional as F

from idinit.lab.data import load_cifar10
from idinit.lab.data.device_loader import CIFAR10_MEAN, CIFAR10_STD
from idinit.lab.models import build_model
from idinit.lab.models.fixup_resnet import FixupBlock, FixupResNet

SCALARS = ("bias1a", "bias1b", "bias2a", "scale", "bias2b")


def _images(data, count: int) -> tuple[torch.Tensor, np.ndarray]:
    cifar = load_cifar10(data)
    x = torch.tensor(cifar.x_test1k[:count]).permute(0, 3, 1, 2).double() / 255
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (x - mean) / std, cifar.y_test1k[:count]


def _block_stats(block: FixupBlock, x: torch.Tensor, out: torch.Tensor) -> dict:
    """Recomputes the branch (as FixupBlock.forward does) to read its inner ReLU."""
    inner = F.relu(block.conv1(x + block.bias1a) + block.bias1b)
    branch = block.conv2(inner + block.bias2a) * block.scale + block.bias2b
    never_on = lambda t: float((t.amax(dim=(0, 2, 3)) <= 0).double().mean())  # noqa: E731
    return {"dead_inner": never_on(inner), "dead_out": never_on(out),
            "branch_over_skip": float(branch.pow(2).mean().sqrt() / x.pow(2).mean().sqrt().clamp_min(1e-300))}


def _model(config: dict, weights: dict | None) -> FixupResNet:
    """The run's network with ``weights``; None: as initialised (``build_model``, seeded with the run's seed)."""
    if weights is None:
        torch.manual_seed(config["seed"])
        return build_model(config["arch"], "fixup", config["shortcut"])
    model = FixupResNet(int(config["arch"].removeprefix("resnet")), shortcut=config["shortcut"])
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in weights.items()})
    return model


def read(epoch: int, model: FixupResNet, x: torch.Tensor, y: np.ndarray) -> dict:
    model = model.double().eval()
    blocks = [m for m in model.modules() if isinstance(m, FixupBlock)]
    stats: list[dict] = []
    hooks = [b.register_forward_hook(lambda m, args, out: stats.append(_block_stats(m, args[0], out))) for b in blocks]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    scalars = {k: np.array([float(getattr(b, k).detach()) for b in blocks]) for k in SCALARS}
    per_stage = np.array_split(np.arange(len(blocks)), 3)
    return {"epoch": epoch,
            "accuracy": float((logits.argmax(1).numpy() == y).mean()), "logits_std": float(logits.std()),
            "dead_out_by_stage": [round(float(np.mean([stats[i]["dead_out"] for i in s])), 4) for s in per_stage],
            "dead_inner_by_stage": [round(float(np.mean([stats[i]["dead_inner"] for i in s])), 4) for s in per_stage],
            "blocks_with_every_inner_channel_dead": sum(s["dead_inner"] == 1.0 for s in stats),
            "last_block_dead_out": stats[-1]["dead_out"],
            "max_branch_over_skip": max(s["branch_over_skip"] for s in stats),
            "conv2_norm_max": max(float(b.conv2.weight.norm()) for b in blocks),
            **{f"{k}_range": [round(float(v.min()), 4), round(float(v.max()), 4)] for k, v in scalars.items()},
            "stem_bias1": float(model.bias1.detach()), "head_bias2": float(model.bias2.detach()),
            "fc_weight_norm": float(model.fc.weight.detach().norm())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=pathlib.Path, help="a folder of ep<N>.pt checkpoints of one Fixup run")
    parser.add_argument("--data", default=None, help="dataset folder (default: $IDINIT_DATA or shared/data upward)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    paths = sorted(args.folder.glob("ep*.pt"), key=lambda p: int(re.search(r"ep(\d+)", p.name).group(1)))
    if not paths:
        raise SystemExit(f"no ep<N>.pt checkpoints in {args.folder}")
    x, y = _images(args.data, args.images)
    states = [(int(re.search(r"ep(\d+)", p.name).group(1)), torch.load(p, weights_only=True, map_location="cpu"))
              for p in paths]
    # epoch 0: the network as initialised (its dead channels are structural: conv2 and every scalar bias at 0)
    models = [(0, _model(states[0][1]["config"], None))] + [(e, _model(s["config"], s["model"])) for e, s in states]
    rows = []
    for epoch, model in models:
        rows.append(read(epoch, model, x, y))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
