"""IDInit in an FSDP2 recipe: build on the meta device, materialise, initialise, shard, train.

    python examples/meta_fsdp2.py                       # world size 1, gloo, CPU: runs anywhere
    torchrun --nproc-per-node 2 examples/meta_fsdp2.py  # one process per rank (gloo, or nccl with --device cuda)

The model is built on the meta device (no memory, no init work), materialised with ``to_empty()``,
initialised with ``idinit.init_`` (every parameter and buffer, the embedding included: nothing is left
uninitialised) and then sharded with ``fully_shard``. Every rank draws the same weights from the same
seed, so the shards agree with an unsharded init.

``--shard-first`` runs the memory-saving order instead: ``fully_shard`` on the meta model, then
``to_empty()`` and ``idinit.init_``, each rank writing only its shards in place (planning runs on a
meta view of the unsharded model; the embedding's own init draws on its gathered values, one module at a
time). Both orders give the same weights, bit for bit; the default order holds the full model on each
rank once, before sharding.
"""
from __future__ import annotations

import argparse
import os
import socket

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import idinit


class Block(nn.Module):
    """A pre-norm residual MLP block: IDInit makes ``fc2`` its zero-preserving branch end."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 128, dim: int = 32, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _start_group(device: str) -> None:
    if "RANK" not in os.environ:  # run as a plain script: a world of one process
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shard-first", action="store_true",
                        help="shard on meta, then init each shard in place (the memory-saving order)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _start_group(args.device)
    try:
        device = torch.device(args.device, dist.get_rank() % max(torch.cuda.device_count(), 1)) \
            if args.device == "cuda" else torch.device(args.device)
        tokens = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(args.seed)).to(device)
        with torch.device("meta"):
            model = TinyLM()
        if args.shard_first:
            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        model.to_empty(device=device)
        # keep_model_values=False: after to_empty() the values are memory, not values the model set
        plan = idinit.init_(model, example_inputs=(tokens,), generator=torch.Generator().manual_seed(args.seed),
                            keep_model_values=False)
        if not args.shard_first:
            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        if dist.get_rank() == 0:
            print(plan)
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        local = {n: t.to_local() if hasattr(t, "to_local") else t for n, t in tensors.items()}
        bad = [n for n, t in local.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        assert not bad, f"non-finite after init: {bad}"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        if dist.get_rank() == 0:
            print("losses:", ", ".join(f"{x:.4f}" for x in losses))
        return {"first_loss": losses[0], "last_loss": losses[-1]}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
