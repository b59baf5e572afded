"""The rows ``idinit bench`` measures (:mod:`idinit.lab.bench` times each one).

Two plans:

- fixed rows (``run_bench(packed=(8,), concurrent=(4,))``): eager, compiled, N processes at once,
  N packed;
- ``search_plan=True`` (``idinit bench --search``, issue 12): references (one run eager; ``--pack 8``
  as ``idinit run`` trained it before this search, with its profile), an eager sweep of pack sizes,
  dense (block-diagonal) convolutions and the other layout (:data:`SWEEP`), the best two of those
  compiled (the best one profiled), then the best setting on the other architectures and without
  CUDA graphs, while the time budget lasts. Each row is wrapped: a failure, or a row past its time
  limit, prints its error and the others go on.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import torch

from .bench import EVAL_IMAGES, ISSUE_BASELINE, Bench, Variant, device_name, time_concurrent

DEFAULT_PACK = 8  # issue 12's packed reference: `idinit run --pack 8` as it trained before this work

# The eager sweep of the search: (pack size, dense_channels). Dense convolutions trade N times the
# multiply-adds for dense tensor-core kernels, so they are tried on the narrow layers and small packs.
# The last row: the grouped pack in the other layout than the device's default.
SWEEP = ((8, 0, None), (16, 0, None), (8, 16, None), (4, 16, None), (4, 32, None), (4, 64, None), (8, 0, "other"))


def search(bench: Bench, arch: str = "resnet56", others=("resnet20", "resnet110")) -> None:
    """Issue 12's search on ``arch`` (see the module docstring), then the best setting on ``others``."""
    cuda = bench.cuda
    print(f"[{arch}] references: one run eager; --pack {DEFAULT_PACK} as idinit run trained it so far", flush=True)
    bench.run(Variant(arch), role="eager alone", eval=True)
    default = Variant(arch, DEFAULT_PACK, compile=cuda)
    bench.run(default, role="packed default", profile="packed-default", eval=True)
    print(f"[{arch}] eager sweep of pack size x dense block-diagonal convolutions", flush=True)
    eager = {}
    for pack, dense, layout in SWEEP:
        variant = Variant(arch, pack, dense_channels=dense, channels_last=None if layout is None else not cuda)
        row = bench.run(variant, role="sweep", profile="packed-eager" if variant == Variant(arch, DEFAULT_PACK) else None)
        if row is not None:
            eager[variant] = row["s_per_run_epoch"]
    ranked = sorted((v for v in eager if v != Variant(arch, DEFAULT_PACK)), key=eager.get)  # the default is compiled
    candidates = [dataclasses.replace(v, compile=cuda) for v in ranked[:2]]
    if cuda and candidates:
        print(f"[{arch}] the sweep's best two layouts, compiled", flush=True)
        for k, variant in enumerate(candidates):
            bench.run(variant, role="candidate", profile="best-candidate" if k == 0 else None, eval=k == 0)
    best = best_row(bench.rows, arch)
    if best is None:
        return
    chosen = Variant(**{f.name: best[f.name] for f in dataclasses.fields(Variant)})
    later = [("other", other) for other in others[:1]] + [("mode", arch)] + [("other", o) for o in others[1:]]
    for what, name in later:
        if what == "mode":
            if chosen.compile:
                print(f"[{arch}] the best setting without CUDA graphs (compile mode 'default')", flush=True)
                bench.run(dataclasses.replace(chosen, compile_mode="default"), role="compile mode")
            continue
        print(f"[{name}] one run eager, and the best {arch} setting", flush=True)
        bench.run(Variant(name), role="eager alone")
        bench.run(dataclasses.replace(chosen, arch=name), role="best setting")
    if cuda:
        print(f"[{arch}] one run compiled (issue 12's middle reference)", flush=True)
        bench.run(Variant(arch, compile=True), role="compiled alone")


def best_row(rows: list[dict], arch: str) -> dict | None:
    measured = [r for r in rows if r["arch"] == arch and "s_per_run_epoch" in r and r["pack"] > 1]
    return min(measured, key=lambda r: r["s_per_run_epoch"], default=None)


def summary_table(rows: list[dict]) -> list[str]:
    """The final table: per row, s per run-epoch and its ratios (speed-ups: reference time / row
    time) to one eager run and to today's ``--pack 8`` of the same architecture."""
    lines = [f"{'variant':<48} {'s/run-epoch':>11} {'x eager alone':>13} {'x pack-8 today':>14} "
             f"{'step ms':>8} {'warm-up s':>9} {'eval s/run':>10}"]
    for row in rows:
        if "error" in row or "skipped" in row:
            what = f"FAILED: {row['error']}" if "error" in row else f"skipped ({row['skipped']})"
            lines.append(f"{row['label']:<48} {what[:100]}")
            continue
        refs = {r["role"]: r["s_per_run_epoch"] for r in rows
                if r["arch"] == row["arch"] and "s_per_run_epoch" in r and r["role"] in ("eager alone", "packed default")}
        ratio = {k: (f"{v / row['s_per_run_epoch']:.2f}" if k in refs else "-") for k, v in refs.items()}
        evals = f"{row['eval_s_per_run']:.3f}" if "eval_s_per_run" in row else "-"
        lines.append(f"{row['label']:<48} {row['s_per_run_epoch']:>11.3f} {ratio.get('eager alone', '-'):>13} "
                     f"{ratio.get('packed default', '-'):>14} {1e3 * row['step_s']:>8.1f} {row['warmup_s']:>9.1f} "
                     f"{evals:>10}" + ("  " + row["note"][:60] if "note" in row else ""))
    return lines


def run_bench(device: str = "cuda", archs=("resnet56",), batch_size: int = 1024, steps: int = 30,
              concurrent=(4,), packed=(), compile: bool = True, out=None, *, search_plan: bool = False,
              warmup: int = 8, budget_s: float | None = None, variant_s: float | None = None,
              eval_images: int = EVAL_IMAGES) -> list[dict]:
    """Measure and print the rows (module docstring); write them as JSON to ``out`` and, with
    ``search_plan``, the profiles beside it. Returns the rows."""
    dev = torch.device(device)
    compile = compile and dev.type == "cuda"  # inductor on CPU is slow to build and not what we measure
    print(f"idinit bench on {device_name(dev)}, torch {torch.__version__}, batch {batch_size} per run, {steps} timed "
          f"steps after {warmup} warm-up steps; budget {budget_s or 'none'} s, row limit {variant_s or 'none'} s",
          flush=True)
    profile_dir = pathlib.Path(out).parent if out else None
    bench = Bench(device, batch_size, steps, warmup, budget_s, variant_s, profile_dir, eval_images)
    if search_plan:
        search(bench, archs[0], tuple(archs[1:]))
    else:
        for arch in archs:
            bench.run(Variant(arch), role="eager alone")
            if compile:
                bench.run(Variant(arch, compile=True), role="compiled alone")
            for n in concurrent:
                t0 = time.perf_counter()
                label = f"{arch} {n} processes at once " + ("compiled" if compile else "eager")
                try:
                    result = time_concurrent([(Variant(arch, 1, compile), device)] * n, batch_size, steps)
                    bench.rows.append({**dataclasses.asdict(Variant(arch, 1, compile)), "label": label, "role": None,
                                       "processes": n, "row_s": time.perf_counter() - t0, **result})
                except Exception as err:
                    print(f"  FAILED {label}: {type(err).__name__}: {err}", flush=True)
            for n in packed:
                bench.run(Variant(arch, n, compile), role="packed default" if n == DEFAULT_PACK else None)
    rows = bench.rows
    lines = ["", f"SUMMARY (idinit bench, {device_name(dev)}, torch {torch.__version__}, batch {batch_size} per run, "
             f"{time.perf_counter() - bench.start:.0f} s in all)"]
    lines += summary_table(rows)
    lines += ["",
              "s/run-epoch: seconds for one run's 40k-image epoch of training steps (a pack of N trains N runs at",
              "once, so it is the pack's epoch time / N); evaluation not included (eval s/run: one pass over "
              f"{eval_images} images,", "eager, per run). x columns: how many times faster than that reference row "
              "of the same architecture.", "warm-up s: the first steps (torch.compile, cuDNN autotuning, CUDA-graph "
              "recording), paid once per training call.",
              f"issue 12's numbers before this work (H200): {ISSUE_BASELINE}."]
    best = best_row(rows, archs[0])
    if best is not None:
        lines.append(f"fastest {archs[0]} pack: {best['label']} at {best['s_per_run_epoch']:.3f} s per run-epoch "
                     f"(target <= {ISSUE_BASELINE['target']}: {'met' if best['s_per_run_epoch'] <= 0.22 else 'not met'}"
                     f"); train with it: idinit.lab.train.train(..., pack=True, dense_channels={best['dense_channels']}, "
                     f"compile_mode={best['compile_mode']!r}"
                     + ("" if best["channels_last"] is None else f", channels_last={best['channels_last']}")
                     + f") on {best['pack']} runs (idinit run --pack {best['pack']})")
    print("\n".join(lines), flush=True)
    if out:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": device_name(dev), "torch": torch.__version__, "batch_size": batch_size,
                                    "steps": steps, "warmup": warmup, "issue_baseline": ISSUE_BASELINE,
                                    "rows": rows, "summary": lines}, indent=2, default=str))
    return rows
