"""One run trained data-parallel (DDP, gloo, 2 CPU processes) is the one-process run, up to the
order of floating-point sums: float64 makes that ~1e-12 (issue 12 §3)."""
import pytest
import torch

from idinit.lab.train import RunConfig, read_records, train_run
from idinit.lab.train.distributed import spawn_data_parallel
from lab_fixtures import TINY, fake_data


def test_two_processes_train_the_one_process_run(tmp_path):
    """Fixup ResNet-8 (no BN: SyncBatchNorm works only on GPUs), with mixup, whose partners come
    from the whole batch and so cross the processes' shards."""
    config = RunConfig(name="ddp", **{**TINY, "epochs": 2, "mixup_alpha": 1.0, "warmup_epochs": 1})
    data = fake_data()
    single = train_run(config, tmp_path / "one", data=data, dtype=torch.float64, log=lambda m: None)
    spawn_data_parallel(config, tmp_path / "two", processes=2, data=data, dtype=torch.float64)
    got, ref = read_records(tmp_path / "two" / "records.jsonl"), read_records(tmp_path / "one" / "records.jsonl")
    assert [r["epoch"] for r in got] == [1, 2]
    for a, b in zip(got, ref):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["train_acc"] == pytest.approx(b["train_acc"], rel=1e-10)
        assert a["eval_acc"] == b["eval_acc"] and a["lr"] == b["lr"]
    w_two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    w_one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    assert w_two.keys() == w_one.keys()
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=1e-9, atol=1e-11, msg=key)
    assert single["finished"]
