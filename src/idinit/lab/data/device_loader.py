"""A data loader that keeps the whole uint8 dataset on the training device.

CIFAR-sized sets fit on a GPU many times over, so the images are moved there once as uint8 and
every epoch is prepared by one batched gather that shuffles, random-crops (zero padding 4) and
horizontally flips all images at once (the standard CIFAR augmentation of He et al. 2016); no
DataLoader workers, no host-to-device copies per step. The random choices come from a CPU
generator seeded by ``(seed, epoch)``, so an epoch's order and augmentation are the same on CPU and
GPU and after a resume. The same code runs on CPU (slowly) for tests and the demo.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

# Per-channel statistics of the CIFAR-10 training set (RGB, in [0, 1] units).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_GATHER_CHUNK = 8192  # images per gather, to bound the index temporaries


def _as_tensor(array) -> torch.Tensor:
    if torch.is_tensor(array):
        return array
    array = np.asarray(array)
    # Read-only arrays (np.frombuffer) are copied: torch does not support non-writable tensors.
    return torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)


class DeviceLoader:
    """Batches ``(x, y)`` from uint8 images held on ``device``.

    ``images``: uint8 ``(N, H, W, C)`` (numpy or torch); ``labels``: integer ``(N,)``. With
    ``train=True`` each epoch is shuffled, cropped with ``pad`` zero pixels and flipped, and the
    last incomplete batch is dropped; with ``train=False`` the order is fixed and every image is
    used once. ``x`` comes out as float ``(B, C, H, W)``, normalised by ``mean``/``std`` (in
    [0, 1] units), in channels_last memory layout when ``channels_last`` (free here: the images are
    stored NHWC). Use ``for x, y in loader.epoch(e)``.
    """

    def __init__(self, images, labels, batch_size: int, *, device="cpu", train: bool = True,
                 pad: int = 4, flip: bool = True, seed: int = 0,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        images, labels = _as_tensor(images), _as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        channels = images.shape[-1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}")
        if train and batch_size > images.shape[0]:
            raise ValueError(f"batch_size {batch_size} exceeds the {images.shape[0]} training images "
                             "(the last incomplete batch is dropped, so no batch would remain)")
        self.device = torch.device(device)
        self.batch_size, self.train, self.pad, self.flip, self.seed = batch_size, train, pad, flip, seed
        self.channels_last, self.dtype = channels_last, dtype
        self.n, self.height, self.width = images.shape[0], images.shape[1], images.shape[2]
        self.labels = labels.to(self.device, torch.int64)
        if train and pad > 0:
            images = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))
        self.images = images.to(self.device).contiguous()
        # x_normalised = x_uint8 * scale + shift, per channel.
        std_t = torch.tensor(std, dtype=torch.float32) * 255.0
        self.scale = (1.0 / std_t).to(self.device).view(1, channels, 1, 1)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) * 255.0 / std_t).to(self.device).view(1, channels, 1, 1)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.train else -(-self.n // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images seen per epoch (after dropping the last incomplete training batch)."""
        return len(self) * self.batch_size if self.train else self.n

    def _augmented_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
        order = torch.randperm(self.n, generator=gen)
        shift_y = torch.randint(0, 2 * self.pad + 1, (self.n,), generator=gen)
        shift_x = torch.randint(0, 2 * self.pad + 1, (self.n,), generator=gen)
        flipped = torch.rand(self.n, generator=gen) < 0.5 if self.flip else torch.zeros(self.n, dtype=torch.bool)
        order, shift_y, shift_x, flipped = (t.to(self.device) for t in (order, shift_y, shift_x, flipped))
        rows_base = torch.arange(self.height, device=self.device)
        cols_base = torch.arange(self.width, device=self.device)
        out = torch.empty((self.n, self.height, self.width, self.images.shape[-1]), dtype=torch.uint8,
                          device=self.device)
        # One gather does shuffle + crop + flip: out[i, r, c] = padded[order[i], dy + r, dx + c'],
        # with c' = W - 1 - c for flipped images.
        for start in range(0, self.n, _GATHER_CHUNK):
            sl = slice(start, start + _GATHER_CHUNK)
            rows = shift_y[sl, None] + rows_base
            cols = shift_x[sl, None] + torch.where(flipped[sl, None], cols_base.flip(0), cols_base)
            out[sl] = self.images[order[sl, None, None], rows[:, :, None], cols[:, None, :]]
        return out, self.labels[order]

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of epoch ``epoch`` (its order and augmentation depend only on seed and epoch)."""
        if self.train:
            images, labels = self._augmented_epoch(epoch)
        else:
            images, labels = self.images, self.labels
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self._to_float(images[sl]), labels[sl]

    def _to_float(self, batch_nhwc: torch.Tensor) -> torch.Tensor:
        # NHWC storage permuted to NCHW is already channels_last in memory.
        x = batch_nhwc.permute(0, 3, 1, 2).to(self.dtype)
        x = x * self.scale.to(self.dtype) + self.shift.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
