"""scripts/pack_results.py: what comes back from a GPU call holds every run's records, the
finished runs' weights (fp16) and the unfinished runs' checkpoints, within the file budget."""
import io
import tarfile

import torch

from idinit.lab.train import RunConfig, train_run
from lab_fixtures import TINY, fake_data, load_script

def test_pack_results_roundtrip(tmp_path):
    pack_results = load_script("pack_results")
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


def _experiment_json(folder, command):
    import json

    (folder / "experiment.json").write_text(json.dumps(
        {"experiment": "t", "version": 1, "calls": [{"command": command, "runs": []}]}))


def test_merge_runs_takes_finished_runs_and_every_call(tmp_path):
    """Two GPUs' output folders merge into one: a finished run replaces its unfinished copy, the calls of
    both are kept, and checkpoints stay behind."""
    import json

    merge_runs = load_script("merge_runs")
    data = fake_data(n_train=64, n_eval=32)
    a, b, dest = tmp_path / "gpu0", tmp_path / "gpu1", tmp_path / "merged"
    first = RunConfig(name="first", **{**TINY, "epochs": 2})
    second = RunConfig(name="second", **{**TINY, "epochs": 1})
    train_run(first, a / first.run_id, data=data, stop_after_epoch=1, log=lambda m: None)  # unfinished on gpu0
    train_run(first, b / first.run_id, data=data, log=lambda m: None)                      # finished on gpu1
    train_run(second, b / second.run_id, data=data, log=lambda m: None)
    _experiment_json(a, "call on gpu0")
    _experiment_json(b, "call on gpu1")
    assert merge_runs.main([str(dest), str(a), str(b)]) == 0
    summary = json.loads((dest / first.run_id / "summary.json").read_text())
    assert summary["finished"] and summary["epochs"] == 2
    assert (dest / second.run_id / "records.jsonl").is_file()
    assert not list(dest.rglob("checkpoint.pt"))
    calls = json.loads((dest / "experiment.json").read_text())["calls"]
    assert [c["command"] for c in calls] == ["call on gpu0", "call on gpu1"]


def test_merge_runs_refuses_two_different_finished_copies_and_writes_nothing(tmp_path):
    import json

    merge_runs = load_script("merge_runs")
    a, b, dest = tmp_path / "gpu0", tmp_path / "gpu1", tmp_path / "merged"
    run = RunConfig(name="run", **{**TINY, "epochs": 1})
    train_run(run, a / run.run_id, data=fake_data(n_train=64, n_eval=32), log=lambda m: None)
    train_run(run, b / run.run_id, data=fake_data(n_train=64, n_eval=32), log=lambda m: None)
    summary = b / run.run_id / "summary.json"
    planted = json.loads(summary.read_text())
    planted["final_eval_acc"] = 0.123  # the same run, finished twice with different results
    summary.write_text(json.dumps(planted))
    _experiment_json(a, "a")
    _experiment_json(b, "b")
    assert merge_runs.main([str(dest), str(a), str(b)]) == 1
    assert not dest.exists()


def test_merge_runs_refuses_a_finished_run_whose_records_miss_epochs(tmp_path):
    """A summary with records from an earlier state of the run (what an archive unpacked over a finished run
    left behind on 2026-11-30) is refused, naming the run, and nothing is written."""
    merge_runs = load_script("merge_runs")
    source, dest = tmp_path / "gpu0", tmp_path / "merged"
    run = RunConfig(name="run", **{**TINY, "epochs": 2})
    train_run(run, source / run.run_id, data=fake_data(n_train=64, n_eval=32), log=lambda m: None)
    _experiment_json(source, "a")
    records = source / run.run_id / "records.jsonl"
    complete = records.read_text()
    records.write_text(complete.splitlines(keepends=True)[0])  # epoch 1 of 2
    assert merge_runs.main([str(dest), str(source)]) == 1
    assert not dest.exists()
    records.write_text(complete)
    assert merge_runs.main([str(dest), str(source)]) == 0


def test_merge_runs_replacing_deleted_runs_drops_the_calls_that_made_them(tmp_path):
    """A re-run after a fix: old finished runs are deleted from DEST and the new ones merged; DEST's calls then
    name only what made the runs there (a call of two runs keeps the one left; a call of deleted runs alone is
    dropped), and merging the same source again adds no call."""
    import json
    import shutil

    merge_runs = load_script("merge_runs")
    data = fake_data(n_train=64, n_eval=32)
    old, new, dest = tmp_path / "old", tmp_path / "new", tmp_path / "merged"
    alone, a, b = (RunConfig(name=n, **{**TINY, "epochs": 1}) for n in ("alone", "a", "b"))
    for run in (alone, a, b):
        train_run(run, old / run.run_id, data=data, log=lambda m: None)
    for run in (alone, a):
        train_run(run, new / run.run_id, data=data, log=lambda m: None)
    (old / "experiment.json").write_text(json.dumps({"experiment": "t", "version": 1, "calls": [
        {"command": "old alone", "runs": [alone.run_id]}, {"command": "old pair", "runs": [a.run_id, b.run_id]}]}))
    (new / "experiment.json").write_text(json.dumps({"experiment": "t", "version": 1, "calls": [
        {"command": "re-run", "runs": [alone.run_id, a.run_id]}]}))
    assert merge_runs.main([str(dest), str(old)]) == 0
    shutil.rmtree(dest / alone.run_id)
    shutil.rmtree(dest / a.run_id)
    assert merge_runs.main([str(dest), str(new)]) == 0
    assert merge_runs.main([str(dest), str(new)]) == 0
    calls = json.loads((dest / "experiment.json").read_text())["calls"]
    assert [(c["command"], c["runs"]) for c in calls] == [("old pair", [b.run_id]), ("re-run", [alone.run_id, a.run_id])]


def _queue_problems(text: str) -> list[str]:
    """What is wrong with a GPU queue file (scripts/gpu_queue.sh): each line "NEED_S COMMAND"; a gpu_runs.py
    command must name an experiment and runs it has, with an output folder and the shared deadline."""
    import shlex

    from idinit.lab.experiments import get_experiment

    gpu_runs = load_script("gpu_runs")
    problems = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        need, _, command = line.partition(" ")
        argv = shlex.split(command)
        if not need.isdigit():
            problems.append(f"NEED_S is not a number: {line}")
        elif argv[:2] == ["python3", "scripts/gpu_runs.py"]:
            names = argv[3:next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv))]
            settings = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"]
            try:
                gpu_runs.selected_runs(get_experiment(argv[2]), names, settings)
            except (KeyError, ValueError) as err:
                problems.append(f"{err}: {line}")
            if "--out" not in argv or "$DEADLINE_AT" not in command:
                problems.append(f"no --out or no --deadline-at $DEADLINE_AT: {line}")
    return problems


def test_every_gpu_queue_line_names_runs_that_exist():
    import pathlib

    queues = sorted((pathlib.Path(__file__).parent.parent / "scripts" / "queues").glob("*.txt"))
    assert queues
    for queue in queues:
        assert _queue_problems(queue.read_text()) == [], queue.name
    # the faults it guards against: a misspelt run, a seed that is no number, a missing deadline
    good = "60 python3 scripts/gpu_runs.py res112 idinit:0 --out runs/r --data $C10 --deadline-at $DEADLINE_AT"
    assert _queue_problems(good) == []
    assert len(_queue_problems(good.replace("idinit:0", "idinitt:0"))) == 1
    assert len(_queue_problems(good.replace("idinit:0", "idinit:x"))) == 1
    assert len(_queue_problems(good.replace(" --deadline-at $DEADLINE_AT", ""))) == 1
    assert _queue_problems(good.replace("--out", "--set epochs=3 --out")) == []
    assert len(_queue_problems(good.replace("--out", "--set epoch=3 --out"))) == 1  # no such setting


def test_gpu_runs_set_changes_every_picked_run_and_only_the_setting_named():
    from idinit.lab.experiments import get_experiment

    gpu_runs = load_script("gpu_runs")
    experiment = get_experiment("table1")
    plain = gpu_runs.selected_runs(experiment, ["fixup-sgd:0,1", "kaiming-adam:0"])
    mixed = gpu_runs.selected_runs(experiment, ["fixup-sgd:0,1", "kaiming-adam:0"], ["mixup_alpha=1.0"])
    assert [r.run_id for r in mixed] == [r.run_id for r in plain]
    assert [r.mixup_alpha for r in plain] == [0.0] * 3 and [r.mixup_alpha for r in mixed] == [1.0] * 3
    assert [r.replace(mixup_alpha=0.0) for r in mixed] == plain


def test_unpack_resume_restores_missing_runs_and_keeps_newer_files(tmp_path):
    """A warm machine's second launch carries the same resume archive again: it must not put a cut run's
    old records back over the run that has finished since (it did on 2026-11-30)."""
    import pathlib
    import shutil
    import subprocess

    script = pathlib.Path(__file__).parent.parent / "scripts" / "unpack_resume.sh"
    run = tmp_path / "runs" / "res112" / "fixup" / "seed0"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text("epoch 1\n" * 19)
    (run / "checkpoint.pt").write_bytes(b"epoch 15")
    (tmp_path / ".data" / "resume").mkdir(parents=True)
    with tarfile.open(tmp_path / ".data" / "resume" / "res112-fixup.tgz", "w:gz") as tar:
        tar.add(tmp_path / "runs", arcname="runs")
    # a fresh machine: the archive is all there is
    shutil.rmtree(tmp_path / "runs")
    subprocess.run(["bash", str(script)], cwd=tmp_path, check=True, capture_output=True)
    assert (run / "records.jsonl").read_text().count("\n") == 19 and (run / "checkpoint.pt").is_file()
    # the run then finishes on that machine; a second launch there unpacks the archive again
    (run / "records.jsonl").write_text("epoch 1\n" * 35)
    (run / "summary.json").write_text('{"finished": true}')
    subprocess.run(["bash", str(script)], cwd=tmp_path, check=True, capture_output=True)
    assert (run / "records.jsonl").read_text().count("\n") == 35


def test_fixup_first_steps_old_and_reference_blocks_agree_at_init_and_part_once_bias1a_trains():
    """scripts/fixup_first_steps.py compares the two Fixup blocks: identical at init (every bias 0), so step 0's
    loss is the same bit for bit; from the first update on, bias1a is nonzero and the old block's skip path
    carries it, so the later losses differ."""
    script = load_script("fixup_first_steps")
    data = fake_data(n_train=32, n_eval=8)
    reference = script.run(8, False, lr=0.2, batch_size=8, steps=3, data=data)
    old = script.run(8, True, lr=0.2, batch_size=8, steps=3, data=data)
    assert reference[0]["loss"] == old[0]["loss"]
    assert old[-1]["sum_bias1a"] != 0
    assert reference[-1]["loss"] != old[-1]["loss"]
