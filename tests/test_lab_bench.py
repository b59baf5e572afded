"""`idinit bench`: rows, ratios, profiles, and a row that fails, overruns or does not fit the budget."""
import json

import pytest
import torch

from idinit.lab import bench, bench_plans
from idinit.lab.bench import Bench, Variant
from idinit.lab.bench_plans import run_bench, summary_table

TINY_SWEEP = ((2, 0, None), (2, 16, None), (2, 0, "other"))


def test_the_search_measures_references_sweep_and_profile(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.setattr(bench_plans, "SWEEP", TINY_SWEEP)
    monkeypatch.setattr(bench_plans, "DEFAULT_PACK", 3)
    rows = run_bench(device="cpu", archs=["resnet8"], batch_size=4, steps=2, warmup=1, search_plan=True,
                     out=tmp_path / "bench.json", eval_images=8)
    roles = [r["role"] for r in rows]
    assert roles[:2] == ["eager alone", "packed default"] and roles[2:] == ["sweep"] * 3  # no compile on a CPU
    assert [(r["pack"], r["dense_channels"]) for r in rows] == [(1, 0), (3, 0), (2, 0), (2, 16), (2, 0)]
    assert rows[-1]["channels_last"] is True  # the CPU's other layout
    for r in rows:
        assert r["s_per_run_epoch"] == pytest.approx(40_000 / r["images_per_s"])
        assert r["images_per_s"] == pytest.approx(r["pack"] * 4 / r["step_s"])
    assert rows[0]["eval_s_per_run"] > 0 and rows[1]["eval_s_per_run"] > 0
    # the ratio columns: reference time over the row's time, per row
    eager, default = rows[0]["s_per_run_epoch"], rows[1]["s_per_run_epoch"]
    table = summary_table(rows)
    for row, line in zip(rows, table[1:]):
        assert line.split()[-5:-3] == [f"{eager / row['s_per_run_epoch']:.2f}", f"{default / row['s_per_run_epoch']:.2f}"]
    profile = (tmp_path / "profile-packed-default.txt").read_text()
    assert "resnet8 pack 3 grouped eager" in profile and "convolution" in profile
    assert len(profile.split("top 20 by self CPU time per step:")[1].strip().splitlines()) == 21
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [r["label"] for r in saved["rows"]] == [r["label"] for r in rows]
    out = capsys.readouterr().out
    assert "SUMMARY" in out and "fastest resnet8 pack:" in out
    best = min(rows[1:], key=lambda r: r["s_per_run_epoch"])
    assert f"fastest resnet8 pack: {best['label']} at" in out


def test_a_failing_or_overrunning_row_is_reported_and_the_rest_go_on(capsys, monkeypatch):
    import time

    import idinit.lab.bench as bench

    torch.set_num_threads(1)
    b = Bench("cpu", batch_size=4, steps=1, warmup=1, budget_s=None, variant_s=None, eval_images=0)
    assert b.run(Variant("resnet8", 2, dense_channels=-1)) is None  # planted fault: refused by the network
    real = bench.time_variant
    # planted overrun: a row that would take 30 s on any machine, under a 0.05 s limit
    monkeypatch.setattr(bench, "time_variant", lambda *a, **k: (time.sleep(30), real(*a, **k))[1])
    b.variant_s = 0.05
    t0 = time.perf_counter()
    assert b.run(Variant("resnet8", 2), role="slow") is None
    assert time.perf_counter() - t0 < 20  # stopped by the limit, not by the row's end
    monkeypatch.setattr(bench, "time_variant", real)
    b.variant_s = None
    assert b.run(Variant("resnet8", 2)) is not None  # the process still trains after both
    errors = [r.get("error", "") for r in b.rows]
    assert "dense_channels must be >= 0" in errors[0] and errors[1].startswith("BenchTimeout")
    assert "s_per_run_epoch" in b.rows[2]
    lines = summary_table(b.rows)
    assert "FAILED: ValueError" in lines[1] and "FAILED: BenchTimeout" in lines[2]
    assert capsys.readouterr().out.count("FAILED") == 2


def test_rows_that_do_not_fit_the_budget_are_skipped_and_listed():
    b = Bench("cpu", batch_size=4, steps=1, warmup=1, budget_s=1e-6, variant_s=None)
    assert b.run(Variant("resnet8", 2)) is None
    assert "budget left" in b.rows[0]["skipped"] and "skipped" in summary_table(b.rows)[1]


def test_the_fixed_rows_are_ratios_to_eager(tmp_path):
    torch.set_num_threads(1)
    rows = run_bench(device="cpu", archs=["resnet8"], batch_size=8, steps=1, concurrent=(), packed=(2,),
                     out=tmp_path / "bench.json")
    assert [r["label"] for r in rows] == ["resnet8 alone eager", "resnet8 pack 2 grouped eager"]
    assert rows[1]["s_per_run_epoch"] == pytest.approx(40_000 / rows[1]["images_per_s"])
    assert json.loads((tmp_path / "bench.json").read_text())["rows"] == rows


def test_the_step_refuses_an_unknown_compile_mode():
    from idinit.lab.train.step import COMPILE_MODES, TrainStep

    assert "reduce-overhead" in COMPILE_MODES and "default" in COMPILE_MODES
    with pytest.raises(ValueError, match="compile_mode must be one of .* got 'fastest'"):
        TrainStep(lambda xs: None, [], [], amp=False, device_type="cpu", compile=False, steps_per_epoch=1,
                  compile_mode="fastest")


def test_the_search_compiles_the_best_two_eager_layouts_and_carries_the_best_on(monkeypatch):
    """The search's order on a GPU, with a fake clock: seconds per run-epoch = 1 / pack, halved by
    compiling, dense<=16 5% faster; the default layout (pack 8 grouped) is never a candidate."""
    def fake(variant, device, batch_size, steps, warmup, **kw):
        s = (0.5 if variant.compile else 1.0) / variant.pack * (0.95 if variant.dense_channels == 16 else 1.0)
        return {"step_s": s * batch_size * variant.pack / 40_000, "images_per_s": 40_000 / s, "s_per_run_epoch": s,
                "warmup_s": 1.0, "compiled": variant.compile}

    monkeypatch.setattr(bench, "time_variant", fake)
    monkeypatch.setattr(bench, "_clean_up", lambda device: None)  # nothing compiled to drop
    b = Bench("cpu", batch_size=1024, steps=2, warmup=1, budget_s=None, variant_s=None)
    b.cuda = True
    bench_plans.search(b, "resnet56", ("resnet20", "resnet110"))
    got = [(r["arch"], r["role"], r["pack"], r["dense_channels"], r["compile"], r["compile_mode"]) for r in b.rows]
    sweep = [(p, d) for p, d, _ in bench_plans.SWEEP]
    assert got[:2] == [("resnet56", "eager alone", 1, 0, False, "reduce-overhead"),
                       ("resnet56", "packed default", 8, 0, True, "reduce-overhead")]
    assert [(g[2], g[3]) for g in got[2:2 + len(sweep)]] == sweep
    rest = got[2 + len(sweep):]
    # the two fastest eager layouts apart from the default: pack 16 grouped, then pack 8 dense<=16
    assert rest[:2] == [("resnet56", "candidate", 16, 0, True, "reduce-overhead"),
                        ("resnet56", "candidate", 8, 16, True, "reduce-overhead")]
    assert rest[2:] == [("resnet20", "eager alone", 1, 0, False, "reduce-overhead"),
                        ("resnet20", "best setting", 16, 0, True, "reduce-overhead"),
                        ("resnet56", "compile mode", 16, 0, True, "default"),
                        ("resnet110", "eager alone", 1, 0, False, "reduce-overhead"),
                        ("resnet110", "best setting", 16, 0, True, "reduce-overhead"),
                        ("resnet56", "compiled alone", 1, 0, True, "reduce-overhead")]


def test_concurrent_processes_line_up_and_a_failing_one_does_not_hang_the_others():
    # the path of `idinit bench` concurrency rows and scripts/gpu_scaling.py (one pack per GPU)
    from idinit.lab.bench import time_concurrent

    result = time_concurrent([(Variant("resnet8", 1), "cpu"), (Variant("resnet8", 2), "cpu")], 4, 1, warmup=1)
    assert result["devices"] == ["cpu", "cpu"] and len(result["per_process_images_per_s"]) == 2
    # all images over the common span: never more than the two processes' own rates added up
    assert 0 < result["images_per_s"] <= sum(result["per_process_images_per_s"]) * (1 + 1e-9)
    with pytest.raises(RuntimeError, match="1 of 2 concurrent processes failed: ValueError: dense_channels"):
        time_concurrent([(Variant("resnet8", 2), "cpu"), (Variant("resnet8", 2, dense_channels=-1), "cpu")], 4, 1,
                        warmup=1)  # planted fault in one process: the other is released from the barrier
