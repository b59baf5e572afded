"""The first SGD steps of Fixup's CIFAR ResNet (Table 1's setting: lr 0.2, momentum 0.9, wd 5e-4, no warm-up),
on the CPU, with the block as Fixup's reference code has it and with the block the lab used before
2026-11-30, whose identity shortcuts carried ``x + bias1a`` (results/table1-resnet110: Fixup at chance from
epoch 1). Per step: the loss, the logits' std, the sum of the blocks' ``bias1a`` (each of which the old block adds
to the skip path) and the share of the last block's outputs that are positive.

    PYTHONPATH=src python scripts/fixup_first_steps.py --depth 110 --batch-size 256 --steps 20 --data ../shared/data
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from idinit.lab.data import DeviceLoader, load_cifar10
from idinit.lab.models import build_model
from idinit.lab.models.fixup_resnet import FixupBlock
from idinit.lab.train import RunConfig
from idinit.lab.train.loop import make_optimizer


def _old_forward(block: FixupBlock, x: torch.Tensor) -> torch.Tensor:
    """The block before the fix: bias1a on the skip path as well."""
    x = x + block.bias1a
    out = F.relu(block.conv1(x) + block.bias1b)
    out = block.conv2(out + block.bias2a) * block.scale + block.bias2b
    return F.relu(block.shortcut(x) + out)


def run(depth: int, old_block: bool, lr: float, batch_size: int, steps: int, data) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(f"resnet{depth}", "fixup", "A")
    blocks = [m for m in model.modules() if isinstance(m, FixupBlock)]
    if old_block:
        for block in blocks:
            block.forward = _old_forward.__get__(block)
    config = RunConfig(arch=f"resnet{depth}", init="fixup", lr=lr, momentum=0.9, weight_decay=5e-4,
                       batch_size=batch_size)
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    alive = {}
    blocks[-1].register_forward_hook(lambda m, i, o: alive.__setitem__("last", (o > 0).float().mean().item()))
    rows = []
    # shuffled once (seed 0), no crop or flip: the lab's own batches
    batches = DeviceLoader(data.x_train, data.y_train, batch_size, pad=0, flip=False).epoch(0)
    for step, (x, y) in zip(range(steps), batches):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss": loss.item(), "logit_std": logits.std().item(),
                     "sum_bias1a": sum(b.bias1a.item() for b in blocks), "last_alive": alive["last"]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=110)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data")
    args = parser.parse_args(argv)
    images = args.batch_size * args.steps
    if images > 40_000:
        raise SystemExit(f"--batch-size x --steps = {images} is more than the 40000 training images")
    data = load_cifar10(args.data, train_chunks=tuple(range(-(-images // 10_000))))  # 10k images a chunk
    for old in (False, True):
        print(f"== ResNet-{args.depth} Fixup, {'old block (skip carries x + bias1a)' if old else 'reference block'}")
        print("step  loss     logit_std  sum_bias1a  last_block_alive")
        for r in run(args.depth, old, args.lr, args.batch_size, args.steps, data):
            print(f"{r['step']:4d}  {r['loss']:7.4f}  {r['logit_std']:9.3g}  {r['sum_bias1a']:10.4g}  "
                  f"{r['last_alive']:16.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
