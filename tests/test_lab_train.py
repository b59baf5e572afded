"""The training loop: a short run, records, metrics, schedule, resume after a stop or a kill."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from idinit.lab.train import RunConfig, epochs_to_target, lr_factor, read_records, train_run
from idinit.lab.train.metrics import final_accuracy
from lab_fixtures import TINY, fake_data


def test_two_epoch_run_writes_records_checkpoint_and_summary(tmp_path):
    config = RunConfig(name="tiny", **{**TINY, "epochs": 2})
    summary = train_run(config, tmp_path / "run", data=fake_data(), log=lambda m: None)
    records = read_records(tmp_path / "run" / "records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r) >= {"train_loss", "train_acc", "eval_acc", "test1k_acc", "lr", "seconds", "images_per_s"}
        assert 0 <= r["eval_acc"] <= 1 and math.isfinite(r["train_loss"]) and r["seconds"] > 0
    # 192 images at batch 64: 3 steps per epoch, cosine over 6 steps; epoch 2 starts at step 3.
    assert records[0]["lr"] == pytest.approx(0.05)
    assert records[1]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert summary["finished"] and summary["epochs"] == 2
    assert summary["final_eval_acc"] == records[-1]["eval_acc"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_test1k_acc"] == records[-1]["test1k_acc"]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # A finished run is not trained again.
    again = train_run(config, tmp_path / "run", data=fake_data(), log=lambda m: None)
    assert again == json.loads((tmp_path / "run" / "summary.json").read_text())
    # The folder refuses a different configuration.
    with pytest.raises(ValueError, match="differs in lr: 0.05 there, 0.1 here"):
        train_run(config.replace(lr=0.1), tmp_path / "run", data=fake_data(), log=lambda m: None)


def test_training_learns_the_fake_task(tmp_path):
    config = RunConfig(name="learn", **{**TINY, "epochs": 8})
    data = fake_data(n_train=512, n_eval=256)
    train_run(config, tmp_path, data=data, log=lambda m: None)
    records = read_records(tmp_path / "records.jsonl")
    # Fixup ResNet-8 on 512 fake images: the training loss falls steadily (measured 2.29 -> 1.22);
    # the 256-image evaluation is noisy from epoch to epoch, so its best epoch is what is checked.
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.5
    assert max(r["eval_acc"] for r in records) > 0.3  # chance is 0.10 (measured 0.39)


def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
    """Stop after epoch 1, resume: the same records (losses, accuracies) and weights as one go,
    since data order, augmentation and mixup depend only on (seed, epoch). In float64 so that the
    two agree to ~1e-12 on any CPU (a resume that lost the optimiser state or an epoch's data would
    differ by ~1e-2)."""
    config = RunConfig(name="r", **{**TINY, "mixup_alpha": 1.0, "warmup_epochs": 1})
    data = fake_data()
    exact = dict(log=lambda m: None, dtype=torch.float64)
    straight = train_run(config, tmp_path / "a", data=data, **exact)
    partial = train_run(config, tmp_path / "b", data=data, stop_after_epoch=1, **exact)
    assert not partial["finished"] and not (tmp_path / "b" / "summary.json").exists()
    assert len(read_records(tmp_path / "b" / "records.jsonl")) == 1
    resumed = train_run(config, tmp_path / "b", data=data, **exact)
    ra, rb = read_records(tmp_path / "a" / "records.jsonl"), read_records(tmp_path / "b" / "records.jsonl")
    assert [r["epoch"] for r in rb] == [1, 2, 3]
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-12)
        assert x["eval_acc"] == y["eval_acc"] and x["lr"] == y["lr"]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-12, atol=1e-14, msg=k)
    assert straight["final_eval_acc"] == resumed["final_eval_acc"]


def test_resume_drops_records_after_the_checkpoint_and_torn_lines(tmp_path):
    config = RunConfig(name="t", **TINY)
    data = fake_data()
    train_run(config, tmp_path, data=data, stop_after_epoch=1, log=lambda m: None)
    # As if killed after appending epoch 2's record but before its checkpoint, mid-way through epoch 3's line.
    with open(tmp_path / "records.jsonl", "a") as handle:
        handle.write(json.dumps({"epoch": 2, "train_loss": 9.9}) + "\n" + '{"epoch": 3, "train_lo')
    train_run(config, tmp_path, data=data, log=lambda m: None)
    records = read_records(tmp_path / "records.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[1]["train_loss"] != 9.9


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from lab_fixtures import fake_data, TINY
    from idinit.lab.train import RunConfig, train_run
    config = RunConfig(name="k", **{{**TINY, "epochs": 40}})
    train_run(config, {run!r}, data=fake_data(), log=lambda m: None)
""")


def test_resume_after_a_real_kill(tmp_path):
    run = tmp_path / "run"
    script = _KILL_SCRIPT.format(tests=os.path.dirname(__file__), run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # a guard against a stuck child, not a timing: loaded machines are slow
    while len(read_records(run / "records.jsonl")) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the child made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_records(run / "records.jsonl"))
    assert 3 <= done_before < 40
    config = RunConfig(name="k", **{**TINY, "epochs": 40})
    train_run(config, run, data=fake_data(), stop_after_epoch=done_before + 2, log=lambda m: None)
    epochs = [r["epoch"] for r in read_records(run / "records.jsonl")]
    assert epochs == list(range(1, done_before + 3))


def test_lr_schedule():
    assert [round(lr_factor(s, 10, 0), 4) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    warm = [lr_factor(s, 20, 4) for s in range(6)]
    assert warm[:4] == [0.25, 0.5, 0.75, 1.0] and warm[4] == 1.0 and warm[5] < 1.0


def test_metrics_from_records():
    records = [{"epoch": 1, "eval_acc": 0.5}, {"epoch": 2}, {"epoch": 3, "eval_acc": 0.81}, {"epoch": 4, "eval_acc": 0.79}]
    assert epochs_to_target(records, 0.8) == 3
    assert epochs_to_target(records, 0.9) is None
    assert final_accuracy(records) == 0.79  # the last epoch, not the best
    with pytest.raises(ValueError, match="target"):
        epochs_to_target(records, 80)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="optimizer"):
        RunConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="warmup_epochs"):
        RunConfig(epochs=3, warmup_epochs=5)
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"learning_rate": 0.1})
