"""N CIFAR ResNets of one architecture run as one network with grouped convolutions ("packing").

Measured on one H200 (``benchmarks/packed_resnet_probe.py``, ResNet-56, batch 1024 per model,
bf16, channels_last): 8 models packed and compiled train 2.9x the images/s of one compiled model,
so a grid of runs that share an architecture finishes ~3x sooner. Separate processes add nothing
(NOTES.md): the step is bound by inefficient small-channel kernels, and packing makes them larger.

The packed network owns no weights of its own: it holds the N member :class:`CifarResNet` models
and concatenates their parameters on the fly (``groups=N`` convolutions, per-model heads), so each
member keeps its own parameter tensors, optimiser, learning-rate schedule and state dict, exactly
as if trained alone; gradients reach each member's tensors through the concatenation. Only the BN
running statistics live in packed buffers (``F.batch_norm`` updates its buffers in place), copied
back to the members by :meth:`PackedCifarResNet.sync_members`.

Input: ``(B, 3N, H, W)``, member ``i`` reading channels ``3i .. 3i+2`` (its own images);
output: ``(B, N, classes)``.

Two ways to run a packed convolution (``dense_channels``), equal in value while every member's
activations are finite: ``groups=N`` (the default; N times fewer multiply-adds), or one dense
convolution with a block-diagonal weight (the members' kernels on the diagonal, exact zeros
elsewhere), which runs the tensor-core kernels of an ``N*C``-channel network instead of the
grouped kernels of ``C``-channel groups. Dense costs N times the multiply-adds, so it can pay only
where the grouped kernels are far from the arithmetic peak (narrow layers, small packs); and a
member whose activations become NaN or inf spreads them to its pack-mates (0 * inf is NaN), which
``groups=N`` never does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cifar_resnet import BasicBlock, CifarResNet, ProjectionShortcut, ZeroPadShortcut


def architecture_signature(model: nn.Module) -> tuple:
    """What must agree for models to be packed: every parameter's and buffer's name and shape."""
    params = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    buffers = tuple((name, tuple(b.shape)) for name, b in model.named_buffers())
    modules = tuple((name, type(m).__name__) for name, m in model.named_modules())
    return params, buffers, modules


class PackedCifarResNet(nn.Module):
    """Run N :class:`CifarResNet` members (same depth, shortcut, norm and gate) as one network."""

    def __init__(self, members: list[CifarResNet], dense_channels: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format):
        """``dense_channels``: convolutions whose per-member output channels are at most this
        many run as one dense block-diagonal convolution (0: all grouped; 64: all dense for the
        CIFAR widths 16/32/64). ``memory_format``: the layout the network keeps its activations in
        (that of its input; the option-A shortcut would otherwise fall back to contiguous)."""
        super().__init__()
        if dense_channels < 0:
            raise ValueError(f"dense_channels must be >= 0, got {dense_channels}")
        if memory_format not in (torch.contiguous_format, torch.channels_last):
            raise ValueError(f"memory_format must be torch.contiguous_format or torch.channels_last, got {memory_format}")
        self.dense_channels, self.memory_format = dense_channels, memory_format
        if not members:
            raise ValueError("PackedCifarResNet needs at least one member model")
        for i, m in enumerate(members):
            if type(m) is not CifarResNet:
                raise TypeError(f"member {i} is a {type(m).__name__}; only CifarResNet models can be packed")
        signature = architecture_signature(members[0])
        for i, m in enumerate(members[1:], 1):
            if architecture_signature(m) != signature:
                raise ValueError(f"member {i} differs in architecture from member 0; packed models must share "
                                 "depth, shortcut, normalisation and gate")
        self.members = nn.ModuleList(members)
        self.n = len(members)
        # Packed BN running statistics, one buffer per BN path, members concatenated along channels.
        self._bn_paths = [name for name, mod in members[0].named_modules() if isinstance(mod, nn.BatchNorm2d)]
        for path in self._bn_paths:
            for stat in ("running_mean", "running_var"):
                self.register_buffer(self._buffer_name(path, stat), torch.cat(
                    [m.get_submodule(path).get_buffer(stat) for m in members]).clone())
        self.load_members()

    @staticmethod
    def _buffer_name(path: str, stat: str) -> str:
        return f"packed__{path.replace('.', '__')}__{stat}"

    # --- state exchange with the members ------------------------------------------------------

    @torch.no_grad()
    def load_members(self) -> None:
        """Copy the members' BN running statistics into the packed buffers."""
        for path in self._bn_paths:
            for stat in ("running_mean", "running_var"):
                self.get_buffer(self._buffer_name(path, stat)).copy_(
                    torch.cat([m.get_submodule(path).get_buffer(stat) for m in self.members]))

    @torch.no_grad()
    def sync_members(self, steps_taken: int = 0) -> None:
        """Copy the packed BN running statistics back to the members (before eval, checkpoint or
        unpacked use); ``steps_taken`` training steps are added to their ``num_batches_tracked``."""
        for path in self._bn_paths:
            for stat in ("running_mean", "running_var"):
                chunks = self.get_buffer(self._buffer_name(path, stat)).chunk(self.n)
                for member, chunk in zip(self.members, chunks):
                    member.get_submodule(path).get_buffer(stat).copy_(chunk)
            if steps_taken:
                for member in self.members:
                    member.get_submodule(path).num_batches_tracked += steps_taken

    # --- packed layers ------------------------------------------------------------------------

    def _cat(self, path: str, name: str) -> torch.Tensor:
        """The members' parameter ``path.name`` concatenated along dim 0 (differentiable)."""
        return torch.cat([getattr(m.get_submodule(path), name) for m in self.members])

    def _conv(self, path: str, x: torch.Tensor) -> torch.Tensor:
        conv: nn.Conv2d = self.members[0].get_submodule(path)
        bias = self._cat(path, "bias") if conv.bias is not None else None
        if conv.out_channels > self.dense_channels:
            return F.conv2d(x, self._cat(path, "weight"), bias, conv.stride, conv.padding, conv.dilation, groups=self.n)
        return F.conv2d(x, self._block_diagonal(path), bias, conv.stride, conv.padding, conv.dilation)

    def _block_diagonal(self, path: str) -> torch.Tensor:
        """The members' kernels ``(C_out, C_in, kh, kw)`` on the diagonal of one dense kernel
        ``(N*C_out, N*C_in, kh, kw)``; off-diagonal entries are exact zeros, written by one
        ``index_put`` (not multiplied by a mask, so a non-finite kernel stays on its diagonal)."""
        weights = torch.stack([m.get_submodule(path).weight for m in self.members])  # (N, Co, Ci, kh, kw)
        n, c_out, c_in, kh, kw = weights.shape
        index = torch.arange(n, device=weights.device)
        dense = weights.new_zeros(n, n, c_out, c_in, kh, kw).index_put((index, index), weights)
        dense = dense.transpose(1, 2).reshape(n * c_out, n * c_in, kh, kw)  # rows: (member, C_out)
        return dense.contiguous(memory_format=self.memory_format)

    def _norm(self, path: str, x: torch.Tensor) -> torch.Tensor:
        norm = self.members[0].get_submodule(path)
        if isinstance(norm, nn.Identity):
            return x
        return F.batch_norm(x, self.get_buffer(self._buffer_name(path, "running_mean")),
                            self.get_buffer(self._buffer_name(path, "running_var")),
                            self._cat(path, "weight"), self._cat(path, "bias"),
                            self.training, norm.momentum, norm.eps)

    def _shortcut(self, path: str, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.members[0].get_submodule(path)
        if isinstance(shortcut, nn.Identity):
            return x
        if isinstance(shortcut, ZeroPadShortcut):  # option A, per member: pad each model's own channels
            b, _, h, w = x.shape
            s = shortcut.stride
            x = self._norm(f"{path}.norm", x[:, :, ::s, ::s])
            h, w = x.shape[-2:]
            # Each member's channels padded in place of a 5-D pad-and-reshape, whose result is
            # contiguous: that made every later layer of a channels_last pack run contiguous.
            out = x.new_zeros(b, self.n * shortcut.out_channels, h, w).contiguous(memory_format=self.memory_format)
            front = shortcut.pad_front
            out.view(b, self.n, shortcut.out_channels, h, w)[:, :, front:front + shortcut.in_channels] = (
                x.reshape(b, self.n, shortcut.in_channels, h, w))
            return out
        if isinstance(shortcut, ProjectionShortcut):
            x = self._conv(f"{path}.0", x)
            return self._norm(f"{path}.1", x) if len(shortcut) > 1 else x
        raise TypeError(f"cannot pack shortcut {type(shortcut).__name__} at {path}")

    def _block(self, path: str, block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self._norm(f"{path}.bn1", self._conv(f"{path}.conv1", x)))
        branch = self._norm(f"{path}.bn2", self._conv(f"{path}.conv2", branch))
        if block.alpha is not None:  # ReZero / SkipInit gate, one scalar per member
            alpha = torch.cat([m.get_submodule(path).alpha for m in self.members])
            b, c, h, w = branch.shape
            branch = (branch.reshape(b, self.n, c // self.n, h, w) * alpha.view(1, self.n, 1, 1, 1)).reshape(b, c, h, w)
        return F.relu(self._shortcut(f"{path}.shortcut", x) + branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.members[0]
        x = F.relu(self._norm("bn1", self._conv("conv1", x)))
        for stage in ("layer1", "layer2", "layer3"):
            for i, block in enumerate(first.get_submodule(stage)):
                x = self._block(f"{stage}.{i}", block, x)
        features = x.mean((2, 3)).reshape(x.shape[0], self.n, -1)
        weight = torch.stack([m.fc.weight for m in self.members])  # (N, classes, C)
        bias = torch.stack([m.fc.bias for m in self.members])      # (N, classes)
        return torch.einsum("bnc,nkc->bnk", features, weight) + bias
