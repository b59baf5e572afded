"""Does training N CIFAR ResNets as one grouped network ("packing") add throughput on one GPU?

    python benchmarks/packed_resnet_probe.py [--depth 56] [--batch 1024] [--packs 1,4,8,16] [--compile-packs 1,8]

NOTES.md measured that separate processes sharing the GPU add no throughput (the step is bound by
inefficient small-channel kernels, not launches). Packing N models of the same architecture into
one network whose convolutions have ``groups=N`` turns N small kernels into one larger one; every
model keeps its own weights, BN statistics, head and data (its own 3 input channels). This probe
times one training step (forward, backward, SGD) at the given per-model batch for N models packed,
and prints the per-model images/s as a ratio to N = 1 (the plain network) measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class PackedZeroPad(nn.Module):
    """Option A shortcut for N packed models: subsample, zero-pad each model's channels."""

    def __init__(self, n: int, c_in: int, c_out: int):
        super().__init__()
        self.n, self.c_in, self.front = n, c_in, (c_out - c_in) // 2
        self.back = c_out - c_in - self.front

    def forward(self, x):
        b, _, h, w = x.shape
        x = x[:, :, ::2, ::2].reshape(b, self.n, self.c_in, h // 2, w // 2)
        x = F.pad(x, (0, 0, 0, 0, self.front, self.back))
        return x.reshape(b, -1, h // 2, w // 2)


class PackedBlock(nn.Module):
    def __init__(self, n, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(n * c_in, n * c_out, 3, stride, 1, groups=n, bias=False)
        self.bn1 = nn.BatchNorm2d(n * c_out)
        self.conv2 = nn.Conv2d(n * c_out, n * c_out, 3, 1, 1, groups=n, bias=False)
        self.bn2 = nn.BatchNorm2d(n * c_out)
        self.shortcut = PackedZeroPad(n, c_in, c_out) if stride > 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(y)))


class PackedResNet(nn.Module):
    def __init__(self, n: int, depth: int = 56, classes: int = 10):
        super().__init__()
        blocks = (depth - 2) // 6
        self.n = n
        self.stem = nn.Sequential(nn.Conv2d(3 * n, 16 * n, 3, 1, 1, groups=n, bias=False), nn.BatchNorm2d(16 * n), nn.ReLU())
        layers, c = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(blocks):
                layers.append(PackedBlock(n, c, width, 2 if (i > 0 and j == 0) else 1))
                c = width
        self.layers = nn.Sequential(*layers)
        self.head_w = nn.Parameter(torch.randn(n, classes, 64) * 0.01)
        self.head_b = nn.Parameter(torch.zeros(n, classes))

    def forward(self, x):  # x: (B, 3N, 32, 32) -> logits (B, N, classes)
        x = self.layers(self.stem(x)).mean((2, 3)).reshape(x.shape[0], self.n, 64)
        return torch.einsum("bnc,nkc->bnk", x, self.head_w) + self.head_b


def time_step(n, depth, batch, channels_last, compile_mode, steps=20):
    model = PackedResNet(n, depth).to(DEVICE)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3 * n, 32, 32, device=DEVICE).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch, n), device=DEVICE)

    def step(x, y):
        with torch.autocast(DEVICE, torch.bfloat16):
            loss = F.cross_entropy(model(x).reshape(-1, 10).float(), y.reshape(-1)) * n
        loss.backward()
        return loss

    fwd_bwd = torch.compile(step, mode=compile_mode) if compile_mode else step
    t_compile = time.perf_counter()
    for _ in range(3):
        fwd_bwd(x, y)
        opt.step()
        opt.zero_grad(set_to_none=False)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    t_compile = time.perf_counter() - t_compile
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fwd_bwd(x, y)
        opt.step()
        opt.zero_grad(set_to_none=False)
    sync()
    return (time.perf_counter() - t0) / steps, t_compile


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--packs", default="1,4,8,16")
    p.add_argument("--compile-packs", default="1,8")
    p.add_argument("--compile-mode", default="default")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    images_per_epoch = 40_000
    print(f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}, torch {torch.__version__}, ResNet-{args.depth}, batch {args.batch} per model")
    rows = []
    for compile_mode, packs in [(None, args.packs), (args.compile_mode, args.compile_packs)]:
        for n in [int(v) for v in packs.split(",") if v]:
            for cl in ([True, False] if compile_mode is None else [True]):
                try:
                    s, tc = time_step(n, args.depth, args.batch, cl, compile_mode)
                except Exception as exc:  # report and go on: one failing layout must not hide the rest
                    print(f"N={n} channels_last={cl} compile={compile_mode}: FAILED {type(exc).__name__}: {exc}")
                    continue
                per_model = n * args.batch / s
                rows.append((compile_mode or "eager", n, cl, s, per_model, tc))
                epoch_all = images_per_epoch / args.batch * s  # every one of the N models sees 40k images
                print(f"{compile_mode or 'eager':<28} N={n:<3} channels_last={cl!s:<5} step {s * 1e3:8.2f} ms  "
                      f"{per_model:10.0f} img/s  {epoch_all:6.2f} s/epoch for all N = {epoch_all / n:5.2f} s per model-epoch  "
                      f"(warm-up {tc:.0f} s)", flush=True)
    base = {r[0]: r[4] for r in rows if r[1] == 1 and r[2]}
    print("\nthroughput of all N models together, as a ratio to N = 1 with the same compile mode:")
    for mode, n, cl, s, total, _ in rows:
        if mode in base:
            print(f"  {mode:<28} N={n:<3} channels_last={cl!s:<5} x{total / base[mode]:.2f}")


if __name__ == "__main__":
    main()
