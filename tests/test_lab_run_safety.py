"""Runs never resume from the wrong state and never have two writers; bad files are named (issue
13 §2). Each test plants the fault it guards against."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import idinit
from idinit.lab.data import load_cifar10, load_mnist
from idinit.lab.experiments import get_experiment
from idinit.lab.experiments.runner import EXPERIMENT_LOCK, run_configs, write_experiment_file
from idinit.lab.train import RunConfig, RunFolder, read_records, train_run
from idinit.lab.train import records as rec
from lab_fixtures import TINY, fake_data, write_fake_mnist, write_fake_official, write_fake_shared_cifar

QUIET = dict(log=lambda m: None)
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _stopped_run(folder, **changes):
    config = RunConfig(name="s", **{**TINY, "epochs": 2, **changes})
    train_run(config, folder, data=fake_data(), stop_after_epoch=1, **QUIET)
    return config


def test_a_damaged_checkpoint_is_refused(tmp_path):
    config = _stopped_run(tmp_path)
    path = tmp_path / rec.CHECKPOINT
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 1024] = bytes(1024)  # 1 KiB overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint\.pt: sha256 .* is not the one written with it"):
        train_run(config, tmp_path, data=fake_data(), **QUIET)
    assert len(read_records(tmp_path / rec.RECORDS)) == 1  # nothing trained, nothing rewritten


def test_a_checkpoint_of_another_run_or_version_is_refused(tmp_path, monkeypatch):
    _stopped_run(tmp_path / "a", lr=0.05)
    config_b = _stopped_run(tmp_path / "b", lr=0.1)
    for name in (rec.CHECKPOINT, rec.CHECKSUM):  # an intact checkpoint, copied from run a
        (tmp_path / "b" / name).write_bytes((tmp_path / "a" / name).read_bytes())
    with pytest.raises(ValueError, match=r"b/checkpoint\.pt was written by another run \(differs in lr: 0.05 there, "
                                         r"0.1 here\)"):
        train_run(config_b, tmp_path / "b", data=fake_data(), **QUIET)
    config_a = RunConfig(name="s", **{**TINY, "epochs": 2, "lr": 0.05})
    monkeypatch.setattr(idinit, "__version__", "9.9.9")
    with pytest.raises(ValueError, match=r"written by idinit 0\.1\.0, this is 9\.9\.9"):
        train_run(config_a, tmp_path / "a", data=fake_data(), **QUIET)


def test_a_kill_between_checksum_and_checkpoint_still_resumes(tmp_path):
    """The checksum file is written first and lists the old checkpoint's checksum too."""
    config = _stopped_run(tmp_path)
    listed = rec.read_json(tmp_path / rec.CHECKSUM)["sha256"]
    rec.atomic_write_json(tmp_path / rec.CHECKSUM, {"sha256": ["0" * 64] + listed[:1]})  # as if killed there
    summary = train_run(config, tmp_path, data=fake_data(), **QUIET)
    assert summary["finished"] and summary["epochs"] == 2


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from idinit.lab.train import RunConfig, RunFolder
    folder = RunFolder({run!r}, RunConfig(**{config!r}))
    folder.prepare()  # holds the lock while this process lives
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_run_folder_has_one_writer_and_the_lock_dies_with_it(tmp_path):
    config = RunConfig(name="l", **{**TINY, "epochs": 1})
    script = _HOLDER.format(src=SRC, run=str(tmp_path), config=config.to_dict())
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n", holder.stderr.read().decode()[-2000:]
        with pytest.raises(RuntimeError, match="is being trained by another process"):
            train_run(config, tmp_path, data=fake_data(), **QUIET)
        assert not (tmp_path / rec.RECORDS).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert train_run(config, tmp_path, data=fake_data(), **QUIET)["finished"]  # the OS released the lock


def test_in_one_process_a_second_writer_is_refused_too(tmp_path):
    config = RunConfig(name="l", **{**TINY, "epochs": 1})
    first = RunFolder(tmp_path, config)
    assert first.prepare() is None
    with pytest.raises(RuntimeError, match=r"\.lock"):
        train_run(config, tmp_path, data=fake_data(), **QUIET)
    first.release()
    assert train_run(config, tmp_path, data=fake_data(), **QUIET)["finished"]


def test_two_calls_into_one_folder_both_stay_in_experiment_json(tmp_path):
    """The fault: calls on two GPUs start together and each reads experiment.json before the other
    writes it, so one call vanishes (2026-11-30). Here the first call is held mid-update (its lock
    taken, its record written late); the second must wait for it, then keep it."""
    experiment = get_experiment("table1")
    first, second = experiment.runs(only=["fixup-sgd"], seeds=[0]), experiment.runs(only=["fixup-sgd"], seeds=[1])
    path = tmp_path / "experiment.json"
    with open(tmp_path / EXPERIMENT_LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = threading.Thread(target=write_experiment_file, args=(tmp_path, experiment, second, "cpu", "second"))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and not path.exists(), "the second call wrote while the first held the lock"
        rec.atomic_write_json(path, {"calls": [{"command": "first", "runs": [r.run_id for r in first]}]})
    writer.join(timeout=30)
    calls = json.loads(path.read_text())["calls"]
    assert [c["command"] for c in calls] == ["first", "second"]
    assert calls[1]["runs"] == ["fixup-sgd/seed1"]


_PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {child!r}])
    print(child.pid, flush=True)
    time.sleep(120)
""")
_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from idinit.lab.machine import die_with_parent
    die_with_parent()
    open({ready!r}, "w").close()
    time.sleep(120)
""")


def test_a_worker_dies_with_its_parent(tmp_path):
    ready = tmp_path / "ready"
    child = _CHILD.format(src=SRC, ready=str(ready))
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(child=child)], stdout=subprocess.PIPE)
    child_pid = int(parent.stdout.readline())
    deadline = time.time() + 60
    while not ready.exists():
        assert time.time() < deadline, "the child never started"
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child_pid):
        if time.time() > deadline:
            os.kill(child_pid, signal.SIGKILL)
            pytest.fail("the child outlived its parent by 10 s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_leftover_temporaries_are_removed_and_files_are_ordinary(tmp_path):
    old = os.umask(0o022)
    try:
        config = RunConfig(name="t", **{**TINY, "epochs": 1})
        tmp_path.joinpath(".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
        train_run(config, tmp_path, data=fake_data(), **QUIET)
    finally:
        os.umask(old)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    for name in (rec.CONFIG, rec.RECORDS, rec.CHECKPOINT, rec.CHECKSUM, rec.SUMMARY):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_bad_records_stop_the_reader_at_the_file_and_line(tmp_path):
    path = tmp_path / rec.RECORDS
    good = json.dumps({"epoch": 1}) + "\n"
    path.write_bytes((good + '{"epoch": 2, "train\n' + good).encode())
    with pytest.raises(ValueError, match=r"records\.jsonl, line 2: not a JSON record"):
        read_records(path)
    path.write_bytes(good.encode() + b'{"epoch": 2, "name": "\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"records\.jsonl, line 2: not a JSON record"):
        read_records(path)
    path.write_bytes((good + '{"epoch": 2, "tra').encode())  # a torn last line is a write cut short
    assert read_records(path) == [{"epoch": 1}]


def test_bad_json_files_are_named_and_a_bad_summary_still_resumes(tmp_path):
    config = RunConfig(name="j", **{**TINY, "epochs": 1})
    first = train_run(config, tmp_path, data=fake_data(), **QUIET)
    (tmp_path / rec.SUMMARY).write_text('{"finished": tr')
    messages = []
    again = train_run(config, tmp_path, data=fake_data(), log=messages.append)
    assert any("summary.json: not valid JSON" in m for m in messages)
    assert again["finished"] and again["final_eval_acc"] == first["final_eval_acc"]
    assert rec.read_json(tmp_path / rec.SUMMARY)["finished"]
    (tmp_path / rec.CONFIG).write_bytes(b"\xff{")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        train_run(config, tmp_path, data=fake_data(), **QUIET)


def test_labels_out_of_range_are_refused_naming_the_file(tmp_path):
    write_fake_mnist(tmp_path / "mnist", train_labels=[3, 10])
    with pytest.raises(ValueError, match=r"mnist-train\.npz: 1 label\(s\) outside \[0, 10\), e\.g\. 10 at index 1"):
        load_mnist(tmp_path / "mnist")
    import pickle
    folder = tmp_path / "official" / "cifar-10-batches-py"
    write_fake_official(folder)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}, handle)
    with pytest.raises(ValueError, match=r"test_batch: 1 label\(s\) outside \[0, 10\)"):
        load_cifar10(folder, protocol="official")


def test_damaged_data_files_are_named(tmp_path):
    write_fake_shared_cifar(tmp_path)
    assert load_cifar10(tmp_path, train_chunks=(3,)).x_train.shape == (10000, 32, 32, 3)  # the control
    chunk = tmp_path / "cifar10-train-3.u8.xz"
    chunk.write_bytes(chunk.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=r"cifar10-train-3\.u8\.xz: not a readable \.xz chunk"):
        load_cifar10(tmp_path, train_chunks=(3,))
    write_fake_shared_cifar(tmp_path)
    (tmp_path / "cifar10-train-labels.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"cifar10-train-labels\.npz: not a readable \.npz"):
        load_cifar10(tmp_path, train_chunks=(3,))
    np.savez(tmp_path / "cifar10-train-labels.npz", y=np.array([{"a": 1}] * 50000, dtype=object))
    with pytest.raises(ValueError, match=r"cifar10-train-labels\.npz: not a readable \.npz .*allow_pickle"):
        load_cifar10(tmp_path, train_chunks=(3,))


def test_a_grid_checks_its_data_once_and_counts_its_failures(tmp_path):
    tiny = dict(arch="linear5-relu", init="kaiming", dataset="mnist", batch_size=32, epochs=1, train_limit=64,
                eval_limit=32)
    runs = [RunConfig(name="a", **tiny), RunConfig(name="b", **tiny)]
    write_fake_mnist(tmp_path / "bad", train_labels=[12])
    with pytest.raises(ValueError, match=r"mnist-train\.npz: 1 label\(s\) outside"):
        run_configs(runs, tmp_path / "out-bad", data_dir=tmp_path / "bad", **QUIET)
    assert not (tmp_path / "out-bad").exists()  # refused before any run folder was made
    write_fake_mnist(tmp_path / "good")
    out = tmp_path / "out"
    (out / "b" / "seed0").mkdir(parents=True)
    (out / "b" / "seed0" / rec.CONFIG).write_text(json.dumps(runs[1].replace(lr=0.3).to_dict()))  # another run's folder
    lines = []
    with pytest.raises(RuntimeError, match=r"1 of 2 run\(s\) failed"):
        run_configs(runs, out, data_dir=tmp_path / "good", log=lines.append)
    assert lines[-1].startswith("1 of 2 run(s) failed") and "b/seed0" in lines[-1]
    assert rec.read_json(out / "a" / "seed0" / rec.SUMMARY)["finished"]
