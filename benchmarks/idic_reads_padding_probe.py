"""How much signal the first conv of each residual branch reads at IDInit's initialisation.

    python benchmarks/idic_reads_padding_probe.py [--depth 56]

SPEC §2 flattens a kernel as column = c_in_index * k*k + tap, so a square 3x3 IDIC conv with C
channels reads only input channels 0 .. ceil(C/9)-1. Behind a centred option-A shortcut
("A-centred") the first (C_out - C_in) / 2 channels are zero-filled, and at initialisation every
branch adds only ~1e-6 to them, so later branches may read (almost) nothing; the Fixup code base's
option A ("A") appends its zero channels after the input's. This prints, per branch, the mean
square of the channels its conv1 reads as a fraction of the mean square of its whole input, for
each shortcut of the lab's CIFAR ResNets.
"""
import argparse

import torch

import idinit
from idinit.lab.models import SHORTCUTS, CifarResNet


def read_fractions(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    fractions = {}

    def hook(name):
        def record(module, inputs, output):
            w = module.weight.detach().reshape(module.weight.shape[0], -1)
            taps = module.weight[0, 0].numel()
            read = sorted({int(c) // taps for c in (w.abs() > 0.5).nonzero()[:, 1]})
            xin = inputs[0]
            fractions[name] = (xin[:, read].pow(2).mean() / xin.pow(2).mean()).item()
        return record

    for name, module in model.named_modules():
        if name.startswith("layer") and name.endswith("conv1"):
            module.register_forward_hook(hook(name))
    model(x)
    return fractions


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=56)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    for shortcut in SHORTCUTS:
        model = CifarResNet(args.depth, shortcut=shortcut)
        idinit.init_(model, example_inputs=(x[:2],))
        fractions = read_fractions(model.eval(), x)
        starved = [n for n, f in fractions.items() if f < 1e-6]
        print(f"shortcut {shortcut}: {len(starved)}/{len(fractions)} branches read < 1e-6 of their input's energy "
              f"at init; first: {starved[:1]}; per branch: "
              + ", ".join(f"{n.removesuffix('.conv1')} {f:.1e}" for n, f in fractions.items()))


if __name__ == "__main__":
    main()
