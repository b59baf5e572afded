"""The CLI (run, report, plan, analyse dispatch), the experiment grids, the report and the demo's pieces."""
import json
import statistics

import pytest

from idinit.lab import cli
from idinit.lab.experiments import EXPERIMENTS, get_experiment
from idinit.lab.report import write_report
from idinit.lab.train import RunConfig, parse_overrides
from idinit.lab.train import records as rec



def test_table1_grid_has_every_cell_once():
    exp = get_experiment("table1")
    names = [c.name for c in exp.configs]
    for init in ("zero_gamma", "zero", "fixup", "skipinit", "rezero", "kaiming", "idinit"):
        for opt in ("sgd", "adam"):
            for warm in ("", "-warmup5"):
                assert f"{init}-{opt}{warm}" in names
    assert {c.name for c in exp.configs if c.shortcut == "B"} == {
        f"{i}-{o}-B{w}" for i in ("idinit", "kaiming") for o in ("sgd", "adam") for w in ("", "-warmup5")}
    for c in exp.configs:
        assert (c.arch, c.batch_size, c.epochs, c.target_accuracy) == ("resnet56", 1024, 200, 0.8)
        assert (c.lr, c.weight_decay) == ((0.2, 5e-4) if c.optimizer == "sgd" else (1e-3, 0.0))
        assert c.warmup_epochs == (5 if c.name.endswith("warmup5") else 0)
    assert exp.paper["idinit-sgd"]["acc"] == "93.41±0.10" and exp.paper["fixup-adam"]["epochs_to_target"] == "55±3"
    assert get_experiment("table1-resnet110").paper["rezero-sgd"]["acc"] == "94.03±0.26"


def test_table5_grid_is_the_eight_ablation_settings():
    exp = get_experiment("table5")
    options = {json.dumps(c.init_options, sort_keys=True) for c in exp.configs}
    assert len(exp.configs) == 8 == len(options)
    for c in exp.configs:
        assert (c.arch, c.init, c.lr, c.weight_decay, c.mixup_alpha, c.epochs) == ("resnet20", "idinit", 0.1, 5e-4, 1.0, 200)
    assert exp.paper["loose-channel-zero"]["acc"] == "87.01"


def test_grid_selection_seeds_and_overrides():
    exp = get_experiment("table1")
    runs = exp.runs(seeds=[0, 1], only=["idinit-sgd*"], overrides=["epochs=6", "arch=resnet110"])
    assert [r.run_id for r in runs] == [f"{n}/seed{s}" for n in ("idinit-sgd", "idinit-sgd-B", "idinit-sgd-warmup5",
                                                                  "idinit-sgd-B-warmup5") for s in (0, 1)]
    assert all(r.epochs == 6 and r.arch == "resnet110" for r in runs)
    with pytest.raises(ValueError, match="no configuration"):
        exp.runs(only="nothing*")
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        exp.runs(overrides=["epoch=3"])
    with pytest.raises(ValueError, match="not a valid int"):
        parse_overrides(["epochs=many"])
    assert parse_overrides(["train_chunks=[3]", "train_limit=none", "nesterov=true"]) == {
        "train_chunks": [3], "train_limit": None, "nesterov": True}


def test_cli_run_then_report_on_real_data(tmp_path, capsys):
    out = tmp_path / "t5"
    code = cli.main(["run", "table5", "--only", "loose-patch-zp", "tight-channel-zero", "--out", str(out), "--device",
                     "cpu", "--set", "epochs=2", "arch=resnet8", "train_limit=64", "eval_limit=64", "batch_size=32",
                     "train_chunks=[3]", "eval_every=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "summary of" in printed and "loose-patch-zp" in printed
    for name in ("loose-patch-zp", "tight-channel-zero"):
        records = rec.read_records(out / name / "seed0" / "records.jsonl")
        assert [r["epoch"] for r in records] == [1, 2]
        assert 0 <= records[-1]["test1k_acc"] <= 1 and "eval_acc" not in records[0]
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["calls"][0]["command"].startswith("idinit run table5") and "CPU" in meta["calls"][0]["machine"]
    assert cli.main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| loose-patch-zp | 1/1 |" in report and "87.01" not in report.split("## Not")[0].split("tight-channel-zero")[0]
    assert (out / "accuracy.png").stat().st_size > 10_000
    results = tmp_path / "results"
    assert cli.main(["report", str(out), "--out", str(results), "--with-records"]) == 0
    assert (results / "report.md").read_text() == report
    assert (results / "loose-patch-zp" / "seed0" / "records.jsonl").read_bytes() == \
        (out / "loose-patch-zp" / "seed0" / "records.jsonl").read_bytes()
    assert not list(results.rglob("checkpoint.pt")) and (results / "experiment.json").is_file()


def _fake_run(root, name, seed, accs, paper_cfg=None, finished=True):
    folder = root / name / f"seed{seed}"
    config = RunConfig(name=name, seed=seed, epochs=len(accs), **(paper_cfg or {}))
    rec.atomic_write_json(folder / "config.json", config.to_dict())
    records = [{"epoch": i + 1, "train_loss": 1.0, "eval_acc": a, "test1k_acc": a - 0.01, "seconds": 0.5}
               for i, a in enumerate(accs)]
    rec.write_records(folder / "records.jsonl", records)
    if finished:
        from idinit.lab.train import summarise

        rec.atomic_write_json(folder / "summary.json", {**summarise(records, 0.8), "finished": True})


def test_report_statistics_and_missing_cells(tmp_path):
    _fake_run(tmp_path, "idinit-sgd", 0, [0.5, 0.82, 0.90])
    _fake_run(tmp_path, "idinit-sgd", 1, [0.6, 0.7, 0.94])
    _fake_run(tmp_path, "kaiming-sgd", 0, [0.5, 0.6, 0.7])
    _fake_run(tmp_path, "kaiming-sgd", 1, [0.5, 0.6], finished=False)
    exp = get_experiment("table1")
    rec.atomic_write_json(tmp_path / "experiment.json", {"experiment": "table1", "description": exp.description,
                                                         "paper": exp.paper, "notes": exp.notes,
                                                         "calls": [{"command": "idinit run table1", "machine": "test"}]})
    text = write_report(tmp_path).read_text()
    mean = statistics.fmean([90, 94])
    std = statistics.stdev([90, 94])
    row = next(line for line in text.splitlines() if line.startswith("| idinit-sgd |"))
    assert f"{mean:.2f}±{std:.2f}" in row and "93.41±0.10" in row and f"{mean - 93.41:+.2f}" in row
    assert "2.5±0.7" in row  # epochs to 80%: 2 and 3
    krow = next(line for line in text.splitlines() if line.startswith("| kaiming-sgd |"))
    assert "1/2" in krow and "never" in krow
    assert "unfinished seeds: kaiming-sgd" in text and "fixup-adam" in text  # a cell never run is listed
    assert "`idinit run table1` on test" in text


def test_report_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no runs"):
        write_report(tmp_path)


def test_cli_lists_and_rejects(capsys):
    assert cli.main(["run", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in EXPERIMENTS)
    assert cli.main(["run", "table9"]) == 2
    assert "unknown experiment 'table9'" in capsys.readouterr().err


def test_cli_plan_prints_the_library_plan(capsys):
    assert cli.main(["plan", "resnet20"]) == 0
    text = capsys.readouterr().out
    assert "layer1.0.conv2.weight" in text and "zero_preserving_" in text and "branch_end" in text
    assert cli.main(["plan", "resnet20-B", "--scheme", "idinit", "--set", "conv=channel"]) == 0
    assert "channel_identity_" in capsys.readouterr().out


def test_cli_analyse_dispatches(capsys, tmp_path, monkeypatch):
    from idinit.lab import analysis

    calls = {}

    def fake_run_analysis(name, *, out_dir, data_dir=None, device="cpu", overrides=None):
        calls.update(name=name, out_dir=out_dir, data_dir=data_dir, device=device, overrides=overrides)
        return {"ok": True}

    monkeypatch.setattr(analysis, "run_analysis", fake_run_analysis)
    assert cli.main(["analyse", "momentum", "--out", str(tmp_path), "--device", "cpu", "--set", "steps=5", "lr=0.1"]) == 0
    assert calls == {"name": "momentum", "out_dir": str(tmp_path), "data_dir": None, "device": "cpu",
                     "overrides": {"steps": "5", "lr": "0.1"}}
    assert cli.main(["analyse"]) == 0
    assert "momentum" in capsys.readouterr().out


def test_runner_with_two_worker_processes(tmp_path):
    from idinit.lab.experiments.runner import run_configs

    runs = get_experiment("table5").runs(only=["loose-patch-zp", "tight-patch-zp"], overrides=[
        "epochs=1", "arch=resnet8", "train_limit=64", "eval_limit=64", "batch_size=32", "train_chunks=[3]"])
    run_configs(runs, tmp_path, device="cpu", workers=2)
    for run in runs:
        summary = json.loads((tmp_path / run.run_id / "summary.json").read_text())
        assert summary["finished"] and summary["epochs"] == 1


def test_bench_rows_are_ratios_to_eager(tmp_path, capsys):
    from idinit.lab.bench import run_bench

    rows = run_bench(device="cpu", archs=["resnet8"], batch_size=8, steps=1, concurrent=(), packed=(2,),
                     out=tmp_path / "bench.json")
    assert [r["config"] for r in rows] == ["eager", "2 models packed"]
    assert rows[0]["ratio_to_eager"] == 1.0
    for r in rows:
        assert r["images_per_s"] > 0
        assert r["s_per_epoch_per_model"] == pytest.approx(40_000 * r["models"] / r["images_per_s"])
        assert r["ratio_to_eager"] == pytest.approx(r["images_per_s"] / rows[0]["images_per_s"])
    assert json.loads((tmp_path / "bench.json").read_text())["rows"] == rows
    assert "img/s" in capsys.readouterr().out
