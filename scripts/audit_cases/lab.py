"""Bad inputs of the lab: run configurations, run folders (checkpoints, records, summary, config, the
lock), data files, and the command line (one line naming the mistake, exit code 2, no traceback)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import torch

from idinit.lab.data import load_cifar10, load_mnist
from idinit.lab.experiments.lm_pretrain import LMRunConfig
from idinit.lab.experiments.text_classification import TextRunConfig
from idinit.lab.report import load_runs
from idinit.lab.train import RunConfig, RunFolder, train_run
from idinit.lab.train import records as rec
from . import ROOT, Case, folder_state

sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fake data, one copy
from lab_fixtures import TINY, fake_data, write_fake_mnist, write_fake_official, write_fake_shared_cifar  # noqa: E402
from test_lab_text import fake_text  # noqa: E402

QUIET = dict(log=lambda m: None)
SRC = str(ROOT / "src")


def _config_cases():
    out = []
    bad = [("unknown field", lambda: RunConfig.from_dict({"arch": "resnet8", "lrr": 0.1}), ("lrr",)),
           ("arch='bogus'", lambda: RunConfig(arch="bogus"), ("arch", "bogus")),
           ("epochs=0", lambda: RunConfig(epochs=0), ("epochs",)),
           ("batch_size=0", lambda: RunConfig(batch_size=0), ("batch_size",)),
           ("lr=-1", lambda: RunConfig(lr=-1.0), ("lr",)),
           ("init='bogus'", lambda: RunConfig(init="bogus"), ("init", "bogus")),
           ("shortcut='Z'", lambda: RunConfig(shortcut="Z"), ("shortcut",)),
           ("dataset='imagenet'", lambda: RunConfig(dataset="imagenet"), ("dataset",)),
           ("eval_every=0", lambda: RunConfig(eval_every=0), ("eval_every",)),
           ("label_smoothing=1.5", lambda: RunConfig(label_smoothing=1.5), ("label_smoothing",)),
           ("mixup_alpha=-1", lambda: RunConfig(mixup_alpha=-1.0), ("mixup",)),
           ("train_chunks=[7]", lambda: RunConfig(train_chunks=[7]), ("train_chunks", "chunk")),
           ("protocol='bogus'", lambda: RunConfig(protocol="bogus"), ("protocol",)),
           ("text arch='bogus'", lambda: TextRunConfig(arch="bogus"), ("arch",)),
           ("LM width 30, heads 4", lambda: LMRunConfig(width=30, heads=4), ("heads", "width"))]
    for name, make, words in bad:
        out.append(Case("configuration", name, make, "error", words))
    return out


def _stopped(folder, **changes):
    config = RunConfig(name="s", **{**TINY, "epochs": 2, **changes})
    train_run(config, folder, data=fake_data(), stop_after_epoch=1, **QUIET)
    return config


def _run_case(group, name, scratch, plant, words, config_changes=None, expect="error", check=None, run=None):
    """A stopped tiny run in its own folder, ``plant(folder)`` applied, then resumed (or ``run(folder)``)."""
    # <group>/<case>/r/seed0: a run folder inside its own experiment folder, as `idinit report` reads them
    folder = scratch / group.replace(" ", "-") / name.replace(" ", "-").replace("/", "-") / "r" / "seed0"
    holder = {}

    def prepare():
        if "config" not in holder:
            shutil.rmtree(folder, ignore_errors=True)
            holder["config"] = _stopped(folder, **(config_changes or {}))
            plant(folder)
        return holder["config"]

    def go():
        config = prepare()
        if run is not None:
            return run(folder, config)
        return train_run(config, folder, data=fake_data(), **QUIET)

    return Case(group, name, go, expect, words, kinds=(ValueError, RuntimeError, FileNotFoundError),
                check=(lambda r, s: check(folder, r)) if check else (lambda r, s: True),
                snapshot=lambda: (prepare(), folder_state(folder))[1])


def _damage(offset_fraction=0.5, size=1024):
    def plant(folder):
        path = folder / rec.CHECKPOINT
        data = bytearray(path.read_bytes())
        start = int(len(data) * offset_fraction)
        data[start:start + size] = bytes(b ^ 0xFF for b in data[start:start + size])  # every byte changed
        path.write_bytes(bytes(data))
    return plant


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _checkpoint_cases(scratch):
    out = []

    def truncate(folder):
        path = folder / rec.CHECKPOINT
        path.write_bytes(path.read_bytes()[:200])

    def no_checksum(folder):
        (folder / rec.CHECKSUM).unlink()

    def bad_checksum_json(folder):
        (folder / rec.CHECKSUM).write_text("{not json")

    def foreign(folder):
        other = folder.parent.parent / "other" / "seed0"
        shutil.rmtree(other, ignore_errors=True)
        _stopped(other, lr=0.1)
        for name in (rec.CHECKPOINT, rec.CHECKSUM):
            (folder / name).write_bytes((other / name).read_bytes())

    def payload(folder):
        data = pickle.dumps({"model": _Payload()})
        (folder / rec.CHECKPOINT).write_bytes(data)
        rec.atomic_write_json(folder / rec.CHECKSUM, {"sha256": [rec.sha256_bytes(data)]})

    def version(folder):
        state = rec.load_checkpoint(folder / rec.CHECKPOINT)
        state["idinit_version"] = "0.0.1"
        data = rec.torch_bytes(state)
        (folder / rec.CHECKPOINT).write_bytes(data)
        rec.atomic_write_json(folder / rec.CHECKSUM, {"sha256": [rec.sha256_bytes(data)]})

    for name, plant, words in (("1 KiB overwritten", _damage(), ("sha256",)),
                               ("64 bytes overwritten near the end", _damage(0.9, 64), ("sha256",)),
                               ("truncated", truncate, ("sha256",)),
                               ("checksum file missing", no_checksum, ("checkpoint.sha256",)),
                               ("checksum file not JSON", bad_checksum_json, ("checkpoint.sha256", "json")),
                               ("copied from another configuration", foreign, ("another run", "differs in lr")),
                               ("written by another idinit version", version, ("idinit 0.0.1",)),
                               ("a pickle payload with a matching checksum", payload, ("refused", "checkpoint.pt"))):
        out.append(_run_case("checkpoint", name, scratch, plant, words))
    data = fake_text()

    def text_run(folder, config):
        from idinit.lab.experiments.text_classification import train_text_run
        return train_text_run(config, folder, data=data, **QUIET)

    def text_stopped(folder):
        from idinit.lab.experiments.text_classification import train_text_run
        train_text_run(_text_config(), folder, data=data, stop_after_epoch=1, **QUIET)
        _damage(0.5, 256)(folder)
    folder = scratch / "checkpoint" / "text"
    holder = {}

    def prepare():
        if not holder:
            shutil.rmtree(folder, ignore_errors=True)
            text_stopped(folder)
            holder["done"] = True

    out.append(Case("checkpoint", "text run: 256 bytes overwritten", lambda: (prepare(), text_run(folder, _text_config()))[1],
                    "error", ("sha256",), snapshot=lambda: (prepare(), folder_state(folder))[1]))
    return out


def _text_config():
    return TextRunConfig(name="t", arch="textcnn", init="idinit", dataset="trec6", epochs=2, batch_size=40)


def _folder_cases(scratch):
    out = []

    def corrupt_line(folder):
        with open(folder / rec.RECORDS, "a") as handle:
            handle.write("{not json\n")
            handle.write(json.dumps({"epoch": 9}) + "\n")

    def bad_utf8(folder):
        with open(folder / rec.RECORDS, "ab") as handle:
            handle.write(b'{"epoch": "\xff\xfe"}\n')

    def experiment(folder):  # report reads <run_dir>/<name>/seed<k>/
        return folder

    for name, plant, words in (("records.jsonl with a corrupt line", corrupt_line, ("records.jsonl, line 2",)),
                               ("records.jsonl with bad UTF-8", bad_utf8, ("records.jsonl, line 2",))):
        out.append(_run_case("records", f"report on {name}", scratch, plant, words,
                             run=lambda folder, config: load_runs(folder.parent.parent)))

    def bad_summary(folder):
        (folder / rec.SUMMARY).write_text('{"finished": tru')

    def resumed(folder, summary):
        records = rec.read_records(folder / rec.RECORDS)
        return True if summary["finished"] and [r["epoch"] for r in records] == [1, 2] else f"records {records}"
    out.append(_run_case("summary", "summary.json that does not parse: resumes from the checkpoint", scratch,
                         bad_summary, (), expect="ok", check=resumed))
    out.append(_run_case("summary", "report on a summary.json that does not parse", scratch, bad_summary,
                         ("summary.json",), run=lambda folder, config: load_runs(folder.parent.parent)))

    def bad_config(folder):
        (folder / rec.CONFIG).write_text("{")
    out.append(_run_case("config", "config.json that does not parse", scratch, bad_config, ("config.json",)))

    def other_config(folder):
        rec.atomic_write_json(folder / rec.CONFIG, RunConfig(name="s", **{**TINY, "epochs": 2, "lr": 0.3}).to_dict())
    out.append(_run_case("config", "config.json of another configuration", scratch, other_config,
                         ("different configuration", "differs in lr")))

    def locked(folder, config):
        holder = RunFolder(folder, config)
        holder.prepare()
        try:
            return train_run(config, folder, data=fake_data(), **QUIET)
        finally:
            holder.release()
    out.append(_run_case("lock", "a second writer on a run folder", scratch, lambda folder: None,
                         ("another process", ".lock"), run=locked))
    return out


def _data_cases(scratch):
    out = []
    root = scratch / "data"

    def official(plant):
        def make(name):
            folder = root / name / "cifar-10-batches-py"
            shutil.rmtree(folder.parent, ignore_errors=True)
            write_fake_official(folder)
            plant(folder)
            return folder
        return make

    def truncate(folder):
        path = folder / "data_batch_2"
        path.write_bytes(path.read_bytes()[:500])

    def payload(folder):
        with open(folder / "test_batch", "wb") as handle:
            pickle.dump({b"data": _Payload(), b"labels": [0]}, handle)

    def label(value):
        def plant(folder):
            with open(folder / "test_batch", "wb") as handle:
                pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, value]}, handle)
        return plant

    def shape(folder):
        with open(folder / "data_batch_1", "wb") as handle:
            pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, handle)

    for name, plant, words in (("CIFAR batch truncated", truncate, ("data_batch_2",)),
                               ("CIFAR batch holding a code payload", payload, ("test_batch",)),
                               ("CIFAR test label 10", label(10), ("test_batch", "label")),
                               ("CIFAR test label -1", label(-1), ("test_batch", "label")),
                               ("CIFAR batch of the wrong shape", shape, ("data_batch_1",))):
        make = official(plant)
        out.append(_data_case(name, lambda m=make, n=name: load_cifar10(m(n.replace(" ", "-")), protocol="official"),
                              words, root))

    def planted(write, plant, load):
        """A loader of a fresh folder that ``write`` fills and ``plant`` damages, named per case."""
        def run(name):
            folder = root / name
            shutil.rmtree(folder, ignore_errors=True)
            write(folder)
            plant(folder)
            return load(folder)
        return run

    def mnist(plant):
        return planted(write_fake_mnist, plant, load_mnist)

    def mnist_label(folder):
        write_fake_mnist(folder, train_labels=[3, 10])

    def mnist_object(folder):
        np.savez(folder / "mnist-test.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.array([{"a": 1}] * 2, dtype=object))

    def mnist_zip(folder):
        (folder / "mnist-train.npz").write_bytes(b"PK\x03\x04 not a zip")

    for name, plant, words in (("MNIST train label 10", mnist_label, ("mnist-train.npz",)),
                               ("MNIST npz holding pickled objects", mnist_object, ("mnist-test.npz",)),
                               ("MNIST npz that is not a zip", mnist_zip, ("mnist-train.npz",))):
        out.append(_data_case(name, lambda m=mnist(plant), n=name: m(n.replace(" ", "-")), words, root))

    def shared(plant):
        return planted(write_fake_shared_cifar, plant, lambda folder: load_cifar10(folder, train_chunks=(3,)))

    def xz_truncated(folder):
        chunk = folder / "cifar10-train-3.u8.xz"
        chunk.write_bytes(chunk.read_bytes()[:-100])

    def labels_missing(folder):
        (folder / "cifar10-train-labels.npz").unlink()

    for name, plant, words in (("shared xz chunk truncated", xz_truncated, ("cifar10-train-3.u8.xz",)),
                               ("shared labels file missing", labels_missing, ("cifar10-train-labels.npz",))):
        out.append(_data_case(name, lambda m=shared(plant), n=name: m(n.replace(" ", "-")), words, root))
    return out


def _data_case(name, run, words, root):
    return Case("data file", name, run, "error", words, kinds=(ValueError, FileNotFoundError),
                snapshot=lambda: None)


def _cli_cases(scratch):
    out = []
    scratch.mkdir(parents=True, exist_ok=True)
    a_file = scratch / "a-file"
    a_file.write_text("x")
    incomplete = scratch / "incomplete" / "r" / "seed0"
    incomplete.mkdir(parents=True, exist_ok=True)
    (incomplete / rec.CONFIG).write_text(json.dumps(RunConfig(name="r", **TINY).to_dict()))
    (incomplete / rec.SUMMARY).write_text(json.dumps({"finished": True}))
    commands = [("plan resnet20 --set bogus=1", ["plan", "resnet20", "--set", "bogus=1"], ("bogus",)),
                ("demo --epochs 0", ["demo", "--epochs", "0"], ("epochs",)),
                ("demo --out into a file", ["demo", "--out", str(a_file / "sub"), "--epochs", "1"], ("a-file", "out")),
                ("run an unknown experiment", ["run", "table9"], ("table9",)),
                ("run table5 --seeds x", ["run", "table5", "--seeds", "x", "--dry-run"], ("seeds",)),
                ("run table5 --set epochs=0", ["run", "table5", "--set", "epochs=0", "--dry-run"], ("epochs",)),
                ("report on a missing folder", ["report", str(scratch / "none")], ("none", "does not exist")),
                ("report on an incomplete summary.json", ["report", str(scratch / "incomplete")], ("summary",)),
                ("plan an unknown model", ["plan", "lab:resnet7"], ("resnet7",)),
                ("check with an unknown scheme", ["check", "resnet20", "--scheme", "bogus"], ("bogus",)),
                ("analyse an unknown analysis", ["analyse", "bogus"], ("bogus",)),
                ("run --workers 0", ["run", "table5", "--workers", "0", "--dry-run"], ("workers",))]
    for name, argv, words in commands:
        out.append(Case("command line", f"idinit {name}", lambda a=argv: _cli(a), "ok",
                        check=lambda r, s, w=words: _cli_verdict(r, w)))
    return out


def _cli(argv):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "idinit.lab.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    return done.returncode, done.stderr


def _cli_verdict(result, words):
    code, err = result
    lines = [line for line in err.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if code == 0:
        return f"accepted (exit code 0): {last}"
    if "Traceback" in err or code != 2:
        return f"wrong kind: exit code {code}{', a traceback' if 'Traceback' in err else ''}: {last}"
    if not any(w.lower() in last.lower() for w in words):
        return f"wrong kind: the message does not name {words}: {last}"
    return True


def cases(scratch):
    torch.set_num_threads(1)
    return (_config_cases() + _checkpoint_cases(scratch) + _folder_cases(scratch) + _data_cases(scratch)
            + _cli_cases(scratch / "cli"))
