"""DTensor and FSDP2 parameters are initialised shard by shard, in place, equal bit for bit to the unsharded
result (loose noise included), on CPU with the gloo backend in 2 and 4 processes (tests/sharded_worker.py)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch built without distributed / gloo")


def _spawn(world: int, tmp_path) -> None:
    from sharded_worker import run

    path = os.path.join(tmp_path, "rendezvous")
    mp.spawn(run, args=(world, path), nprocs=world, join=True)


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_init_equals_unsharded_bitwise(world, tmp_path):
    _spawn(world, str(tmp_path))

