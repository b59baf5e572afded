"""The first SGD steps of Res-112 without BN (paper appendix C.6), on the CPU: per step the loss, the
logits' std, the gradient norm, and the share of ``stem_end``'s and ``conv2``'s ReLU outputs that are
positive (0 = every unit dead on that batch). Written for results/res112, to see why IDInit stayed at
chance there.

    PYTHONPATH=src python scripts/res112_first_steps.py --init idinit --lr 0.2 --momentum 0.9 --steps 6

``--no-conv2-relu`` builds ``res112-linear-conv2``: no ReLU after ``conv2``, the other reading of the damaged
Table 10 (idinit.lab.models.res112), to see whether the collapse depends on that ReLU.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from idinit.lab.data import DeviceLoader, load_cifar10
from idinit.lab.models import build_model
from idinit.lab.train import RunConfig
from idinit.lab.train.loop import make_optimizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", default="idinit")
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-conv2-relu", action="store_true", help="conv2 without its ReLU (module docstring)")
    parser.add_argument("--data")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    arch = "res112-linear-conv2" if args.no_conv2_relu else "res112"
    model = build_model(arch, args.init, "B")
    config = RunConfig(arch=arch, init=args.init, shortcut="B", lr=args.lr, momentum=args.momentum,
                       weight_decay=1e-8, batch_size=args.batch_size)
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    data = load_cifar10(args.data, train_chunks=(0,))
    alive = {}
    for name in ("stem_end", "conv2"):
        getattr(model, name).register_forward_hook(
            lambda module, inputs, output, name=name: alive.__setitem__(name, (output > 0).float().mean().item()))
    # shuffled once (seed 0), no crop or flip: the lab's own batches
    batches = DeviceLoader(data.x_train, data.y_train, args.batch_size, pad=0, flip=False).epoch(0)
    print("step  loss    logit_std  grad_norm  stem_end_alive  conv2_alive")
    for step, (x, y) in zip(range(args.steps), batches):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        grad = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"{step:4d}  {loss.item():.4f}  {logits.std().item():9.3g}  {grad.item():9.3g}  "
              f"{alive['stem_end']:14.3f}  {alive['conv2']:11.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
