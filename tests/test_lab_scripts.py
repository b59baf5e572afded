"""scripts/pack_results.py: what comes back from a GPU call holds every run's records, the
finished runs' weights (fp16) and the unfinished runs' checkpoints, within the file budget."""
import importlib.util
import io
import pathlib
import tarfile

import torch

from idinit.lab.train import RunConfig, train_run
from lab_fixtures import TINY, fake_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_pack_results():
    spec = importlib.util.spec_from_file_location("pack_results", ROOT / "scripts" / "pack_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_results_roundtrip(tmp_path):
    pack_results = _load_pack_results()
    runs = tmp_path / "runs"
    data = fake_data(n_train=64, n_eval=32)
    done = RunConfig(name="done", **{**TINY, "epochs": 1})
    half = RunConfig(name="half", **{**TINY, "epochs": 2})
    train_run(done, runs / done.run_id, data=data, log=lambda m: None)
    train_run(half, runs / half.run_id, data=data, stop_after_epoch=1, log=lambda m: None)
    (runs / "experiment.json").write_text("{}")
    paths = pack_results.pack(runs, tmp_path / "out", "t5", max_files=3, part_bytes=15 * 2**20)
    assert len(paths) == 1
    with tarfile.open(paths[0]) as tar:
        names = set(tar.getnames())
        weights = torch.load(io.BytesIO(tar.extractfile("t5/done/seed0/model_fp16.pt").read()), weights_only=True)
        checkpoint = torch.load(io.BytesIO(tar.extractfile("t5/half/seed0/checkpoint.pt").read()), weights_only=True)
    assert {"t5/experiment.json", "t5/done/seed0/config.json", "t5/done/seed0/records.jsonl",
            "t5/done/seed0/summary.json", "t5/half/seed0/records.jsonl"} <= names
    assert "t5/done/seed0/checkpoint.pt" not in names and "t5/half/seed0/model_fp16.pt" not in names
    original = torch.load(runs / "done/seed0/checkpoint.pt", weights_only=True)["model"]
    assert weights.keys() == original.keys()
    for k, v in original.items():
        if v.is_floating_point():
            assert weights[k].dtype == torch.float16
            torch.testing.assert_close(weights[k].float(), v, rtol=1e-3, atol=1e-4)
    assert len(checkpoint["records"]) == 1 and "optimizer" in checkpoint
    # Over budget: the large files that do not fit are named in SKIPPED.txt, the small ones all come.
    tiny = pack_results.pack(runs, tmp_path / "tiny", "t5", max_files=1, part_bytes=50_000)
    with tarfile.open(tiny[0]) as tar:
        names = set(tar.getnames())
        skipped = tar.extractfile("t5/SKIPPED.txt").read().decode().split()
    assert "t5/done/seed0/records.jsonl" in names and "half/seed0/checkpoint.pt" in skipped
