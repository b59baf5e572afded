"""The "models nobody wrote a test for" audit: IDInit on a zoo of timm, torchvision and HF transformers architectures.

    PYTHONPATH=src python scripts/zoo_audit.py [--out results/zoo-audit] [--only NAME ...] [--threads 1]

For each model of :data:`TIMM` (one small variant per timm family, built with ``pretrained=False``),
:data:`TORCHVISION` (its classification models, ``weights=None``) and :data:`HF` (transformers architectures from
small configurations, nothing downloaded; listed in ``zoo_models.py``): build it (seeded),
``idinit.init_(model)`` with the defaults (scheme ``idinit``), then ``idinit.check(model, ..., reference=)``
with the state from before the init. ``init_`` is called first without example inputs, as the README
shows; when the model has no torch.fx graph and ``init_`` asks for example inputs, it is called again with
the same batch ``check`` gets (the row says which graph the roles came from).

A row records: ``ok`` or the exception (stage, type, first line), the plan's graph source and role counts
(``branch_end``: the residual branches it found), the warnings ``init_`` gave (first line; each note of role detection's list), the check's
residual blocks (and each one's |branch| / |skip|) and its flags (kind and the names involved), and seconds
per stage. Everything but the seconds is the same on every run (seeded). Writes ``<out>/zoo.json`` and ``<out>/TABLE.md``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import signal
import sys
import time
import warnings
from collections import Counter

import torch

import idinit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from zoo_models import HF  # noqa: E402 - the transformers rows, a sibling module

# (timm name, constructor kwargs, input side). Inputs are the smallest size the model accepts (a
# multiple of its total stride and window sizes); models with a fixed image size are built for it.
TIMM: list[tuple[str, dict, int]] = [
    ("resnet18", {}, 32),
    ("resnext26ts", {}, 32),
    ("seresnext26ts", {}, 32),
    ("res2net50_14w_8s", {}, 32),
    ("resnest14d", {}, 32),
    ("skresnet18", {}, 32),
    ("resnetv2_18", {}, 32),
    ("tresnet_m", {}, 64),
    ("regnetx_002", {}, 32),
    ("regnety_002", {}, 32),
    ("regnetz_b16", {}, 32),
    ("efficientnet_b0", {}, 32),
    ("mobilenetv3_small_050", {}, 32),
    ("mobilenetv4_conv_small", {}, 32),
    ("mnasnet_050", {}, 32),
    ("fbnetv3_b", {}, 32),
    ("lcnet_050", {}, 32),
    ("ghostnet_050", {}, 32),
    ("ghostnetv2_100", {}, 64),
    ("rexnet_100", {}, 32),
    ("repvgg_a0", {}, 32),
    ("mobileone_s0", {}, 32),
    ("repvit_m0_9", {}, 32),
    ("dla34", {}, 32),
    ("dpn48b", {}, 32),
    ("densenet121", {}, 32),
    ("inception_v3", {}, 75),
    ("xception41", {}, 32),
    ("vgg11", {}, 32),
    ("hrnet_w18_small", {}, 64),
    ("cspdarknet53", {}, 32),
    ("cs3darknet_s", {}, 32),
    ("vovnet39a", {}, 32),
    ("selecsls42b", {}, 32),
    ("hgnetv2_b0", {}, 32),
    ("nf_resnet26", {}, 32),
    ("dm_nfnet_f0", {}, 32),
    ("eca_nfnet_l0", {}, 32),
    ("convnext_atto", {}, 32),
    ("convnextv2_atto", {}, 32),
    ("inception_next_atto", {}, 32),
    ("starnet_s050", {}, 32),
    ("mambaout_femto", {}, 32),
    ("rdnet_tiny", {}, 32),
    ("poolformer_s12", {}, 32),
    ("poolformerv2_s12", {}, 32),
    ("edgenext_xx_small", {}, 64),
    ("efficientformer_l1", {}, 224),
    ("efficientformerv2_s0", {"img_size": 64}, 64),
    ("fastvit_t8", {}, 64),
    ("mobilevit_xxs", {}, 64),
    ("mobilevitv2_050", {}, 64),
    ("efficientvit_b0", {}, 64),
    ("levit_128s", {"img_size": 64}, 64),
    ("vit_tiny_patch16_224", {"img_size": 32, "depth": 4}, 32),
    ("deit3_small_patch16_224", {"img_size": 32, "depth": 4}, 32),
    ("beit_base_patch16_224", {"img_size": 32, "depth": 2}, 32),
    ("eva02_tiny_patch14_224", {"img_size": 28, "depth": 4}, 28),
    ("vit_little_patch16_reg1_gap_256", {"img_size": 32, "depth": 4}, 32),
    ("cait_xxs24_224", {"img_size": 32, "depth": 4}, 32),
    ("xcit_nano_12_p16_224", {"img_size": 32, "depth": 4}, 32),
    ("pit_ti_224", {"img_size": 64}, 64),
    ("crossvit_tiny_240", {}, 240),
    ("convit_tiny", {"img_size": 32, "depth": 4}, 32),
    ("tnt_s_patch16_224", {"img_size": 32, "depth": 2}, 32),
    ("volo_d1_224", {"img_size": 64}, 64),
    ("mixer_s32_224", {"img_size": 64}, 64),
    ("resmlp_12_224", {"img_size": 32}, 32),
    ("gmlp_ti16_224", {"img_size": 32}, 32),
    ("sequencer2d_s", {"img_size": 32}, 32),
    ("swin_tiny_patch4_window7_224", {"img_size": 224, "depths": (1, 1, 1, 1)}, 224),
    ("swinv2_cr_tiny_ns_224", {"img_size": 224, "depths": (1, 1, 1, 1)}, 224),
    ("maxvit_pico_rw_256", {"img_size": 64}, 64),
    ("coatnet_nano_rw_224", {"img_size": 64}, 64),
    ("coat_lite_tiny", {"img_size": 64}, 64),
    ("twins_svt_small", {"img_size": 64}, 64),
    ("pvt_v2_b0", {}, 64),
    ("nest_tiny", {"img_size": 64}, 64),
    ("gcvit_xxtiny", {"img_size": 224}, 224),
    ("davit_tiny", {"depths": (1, 1, 1, 1)}, 64),
    ("focalnet_tiny_srf", {}, 64),
    ("tiny_vit_5m_224", {}, 224),
    ("hiera_tiny_224", {"img_size": (64, 64)}, 64),
    ("mvitv2_tiny", {"img_size": 64}, 64),
    ("botnet26t_256", {"img_size": 64}, 64),
    # second round: the timm modules the list above left out (one variant each; models with only large
    # variants shrunk through their constructor's width / depth arguments)
    ("convmixer_768_32", {}, 32),
    ("cpubone_nano", {}, 32),
    ("csatv2", {}, 64),
    ("cspnext_tiny", {}, 32),
    ("deepseek_vit_412m", {"img_size": 84, "embed_dim": 64, "depth": 2, "num_heads": 2}, 84),
    ("efficientvim_m1", {}, 32),
    ("efficientvit_m0", {}, 32),
    ("fasternet_t0", {}, 32),
    ("gemma4_vit_167m", {"img_size": 48, "embed_dim": 64, "depth": 2, "num_heads": 2, "head_dim": 32,
                         "intermediate_size": 128}, 48),
    ("hardcorenas_a", {}, 32),
    ("hieradet_small", {"stages": (1, 1, 2, 1), "global_att_blocks": (3,)}, 32),
    ("iformer_t", {}, 32),
    ("inception_resnet_v2", {}, 75),
    ("inception_v4", {}, 75),
    ("lcnetv2_small", {}, 32),
    ("lowformer_b0", {}, 32),
    ("mobilenetv5_base", {"channel_multiplier": 0.25}, 32),
    ("naflexvit_base_patch16_gap", {"img_size": 32, "depth": 2}, 32),
    ("nasnetalarge", {"stem_size": 32, "num_features": 1344}, 32),
    ("nextvit_small", {}, 32),
    ("pnasnet5large", {}, 32),
    ("qwen3_vit_88m", {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2}, 32),
    ("repghostnet_050", {}, 32),
    ("legacy_seresnet18", {}, 32),
    ("shvit_s1", {}, 32),
    ("swiftformer_xs", {}, 32),
    ("swinv2_tiny_window8_256", {"img_size": 256, "depths": (1, 1, 1, 1)}, 256),
    ("visformer_tiny", {"img_size": 32}, 32),
    ("vit_tiny_r_s16_p8_224", {"img_size": 32, "depth": 4}, 32),
    ("vit_relpos_small_patch16_224", {"img_size": 32, "depth": 4}, 32),
    ("samvit_base_patch16", {"img_size": 64, "depth": 2, "global_attn_indexes": [1], "window_size": 2}, 64),
    ("vitamin_small_224", {"img_size": 64, "depth": 2}, 64),
    ("legacy_xception", {}, 32),
]


# (label, builder keyword arguments, input side): torchvision's classification models, which PyTorch
# users meet first; the drop_path column sets their ``stochastic_depth_prob`` where they take one.
TORCHVISION: list[tuple[str, dict, int]] = [
    ("tv:resnet18", {}, 64), ("tv:resnext50_32x4d", {}, 64), ("tv:wide_resnet50_2", {}, 64),
    ("tv:densenet121", {}, 64), ("tv:mobilenet_v2", {}, 64), ("tv:mobilenet_v3_small", {}, 64),
    ("tv:efficientnet_b0", {}, 64), ("tv:efficientnet_v2_s", {}, 64), ("tv:regnet_y_400mf", {}, 64),
    ("tv:regnet_x_400mf", {}, 64), ("tv:convnext_tiny", {}, 64), ("tv:swin_t", {}, 224), ("tv:swin_v2_t", {}, 256),
    ("tv:maxvit_t", {}, 224), ("tv:shufflenet_v2_x0_5", {}, 64), ("tv:squeezenet1_1", {}, 64),
    ("tv:googlenet", {"aux_logits": False, "init_weights": True}, 64), ("tv:mnasnet0_5", {}, 64),
    ("tv:vit_b_32", {}, 224), ("tv:alexnet", {}, 64), ("tv:vgg11_bn", {}, 64),
]

BATCH = 4
SECONDS_LIMIT = 120  # a model past this is stopped (the row says so): a sweep must not hang


class _TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeLimit(f"stopped after {SECONDS_LIMIT} s")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _warning_lines(message: str) -> list[str]:
    """A warning's first line, or for a heading with a list under it (role detection's notes) the heading
    and each item's first line: each note is a finding of its own."""
    lines = message.splitlines()
    items = [line.strip() for line in lines[1:] if line.startswith("- ")]
    return [f"{lines[0]} {item}" for item in items] if lines and lines[0].endswith(":") and items else lines[:1]


def _timm_builder(name: str, kwargs: dict):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return build



def _torchvision_builder(name: str, kwargs: dict):
    def build():
        import torchvision

        return torchvision.models.get_model(name.removeprefix("tv:"), weights=None, num_classes=10, **kwargs)
    return build


def _audit_one(label: str, build, side: int | None, recheck_side: int | None = None, drop_path=None) -> dict:
    row: dict = {"model": label, "status": "ok", "input": None}
    times = row["seconds"] = {}
    stage = "build"
    signal.alarm(SECONDS_LIMIT)
    try:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = build()
        times["build"] = time.perf_counter() - t0
        inputs = None
        if side is not None:
            inputs = (torch.randn(BATCH, 3, side, side, generator=torch.Generator().manual_seed(1)),)
            row["input"] = list(inputs[0].shape)
        row["params"] = sum(p.numel() for p in model.parameters())
        reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stage = "init_"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                plan = idinit.init_(model, generator=torch.Generator().manual_seed(0))
                row["needed_example_inputs"] = False
            except ValueError as err:
                if inputs is None or "needs example inputs" not in str(err):
                    raise
                row["needed_example_inputs"] = True
                model.load_state_dict(reference)
                plan = idinit.init_(model, example_inputs=inputs, generator=torch.Generator().manual_seed(0))
        times["init_"] = time.perf_counter() - t0
        row["warnings"] = sorted({line[:300] for w in caught for line in _warning_lines(str(w.message))})
        roles = Counter(e.role for e in plan)
        row["graph"] = plan.source
        row["residual"] = plan.residual
        row["roles"] = dict(sorted(roles.items()))
        # the residual branches the plan found: their ends (IDIZ, or IDI where a small layer scale closes
        # the branch: source "values") and the attention output projections
        row["branch_ends"] = sum(e.role in ("branch_end", "attention_out") or (e.source == "values" and e.role == "identity")
                                 for e in plan)
        row["unclassified"] = [f"{e.name}: {e.reason}"[:300] for e in plan.unclassified]
        if drop_path is not None:
            # stochastic depth, as training recipes switch it on: the same roles expected
            stage = "plan with drop_path_rate=0.1"
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.manual_seed(0)
                try:
                    other = drop_path()
                except TypeError:  # the model has no stochastic depth
                    other = None
                if other is not None:
                    again = idinit.plan(other, example_inputs=inputs if row["needed_example_inputs"] else None)
            if other is not None:
                changed = sorted(e.name for e in again if e.role != plan[e.name].role)
                row["drop_path_roles_changed"] = changed[:6] + ([f"... {len(changed)} in all"] if len(changed) > 6 else [])
            times["plan, drop path"] = time.perf_counter() - t0
        stage = "check"
        t0 = time.perf_counter()
        report = idinit.check(model, inputs, reference=reference)
        times["check"] = time.perf_counter() - t0
        row["blocks"] = len(report.blocks)
        # |branch| / |skip| of each block check found, by the layer whose output the branch carries
        row["block_distances"] = {b.branch_end: float(f"{b.distance:.3g}") for b in report.blocks}
        row["flags"] = [{"kind": f.kind, "names": f.names[:4], "message": f.message.splitlines()[0][:300]}
                        for f in report.flags]
        row["flag_counts"] = dict(sorted(Counter(f.kind for f in report.flags).items()))
        if recheck_side and {"dead_output", "starved_branch", "vanishing"} & set(row["flag_counts"]):
            # are they the small input's doing (1x1 feature maps)? the same model, checked at 224 x 224
            stage = "check at 224"
            big = torch.randn(2, 3, recheck_side, recheck_side, generator=torch.Generator().manual_seed(1))
            t0 = time.perf_counter()
            report = idinit.check(model, (big,), reference=reference)
            times["check at 224"] = time.perf_counter() - t0
            row["flags_at_224"] = [{"kind": f.kind, "names": f.names[:4], "message": f.message.splitlines()[0][:300]}
                                   for f in report.flags]
    except Exception as err:  # noqa: BLE001 - every failure is a finding of the audit
        row["status"] = f"error in {stage}"
        row["error"] = _first_line(err)
    finally:
        signal.alarm(0)
    row["seconds"] = {k: round(v, 2) for k, v in times.items()}
    return row


def _machine() -> dict:
    import timm
    import torchvision
    import transformers

    return {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": __import__("os").cpu_count(),
            "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "torchvision": torchvision.__version__, "transformers": transformers.__version__}


def _changed(row: dict) -> str:
    if "drop_path_roles_changed" not in row:
        return "" if row["model"].startswith("hf:") or row["status"] != "ok" else "no drop_path_rate"
    changed = row["drop_path_roles_changed"]
    return "none" if not changed else f"{len(changed)}: {changed[0]}"


def _table(rows: list[dict], machine: dict, command: str) -> str:
    lines = ["# Zoo audit: IDInit on architectures no test names", "",
             f"Command: `{command}`", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             "| model | input | status | graph | params | branch ends | check blocks | unclassified | flags | flags at 224 | "
             "roles changed by drop_path_rate=0.1 | s |",
             "|---|---|---|---|---:|---:|---:|---:|---|---|---|---:|"]
    for r in rows:
        graph = r.get("graph", "")
        graph = "fx" if graph.startswith("torch.fx") else "autograd" if graph.startswith("autograd") else graph
        if r.get("needed_example_inputs"):
            graph += " (no fx)"
        flags = ", ".join(f"{k} {n}" for k, n in r.get("flag_counts", {}).items()) or ("-" if r["status"] == "ok" else "")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        side = f"{r['input'][-1]}" if r.get("input") else "config"
        again = "" if "flags_at_224" not in r else ", ".join(
            f"{k} {n}" for k, n in sorted(Counter(f["kind"] for f in r["flags_at_224"]).items())) or "-"
        lines.append(f"| {r['model']} | {side} | {status.replace('|', '/')} | {graph} | {r.get('params', '')} | "
                     f"{r.get('branch_ends', '')} | {r.get('blocks', '')} | {len(r.get('unclassified', []))} | "
                     f"{flags} | {again} | {_changed(r)} | {sum(r['seconds'].values()):.1f} |")
    ok = sum(r["status"] == "ok" for r in rows)
    flagged = sum(bool(r.get("flags")) for r in rows)
    kinds = Counter(f["kind"] for r in rows for f in r.get("flags", []))
    lines += ["", f"{len(rows)} models: {ok} ok, {len(rows) - ok} errors; {flagged} with flags "
              f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) or 'none'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/zoo-audit")
    parser.add_argument("--only", nargs="*", help="audit only these models (timm names or hf:... labels)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    known = [m for m, _, _ in TIMM] + [m for m, _, _ in TORCHVISION] + [m for m, _ in HF]
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    signal.signal(signal.SIGALRM, _alarm)
    todo = [(m, _timm_builder(m, kw), side, None if "img_size" in kw or side >= 224 else 224,
             _timm_builder(m, {**kw, "drop_path_rate": 0.1})) for m, kw, side in TIMM]
    todo += [(m, _torchvision_builder(m, kw), side, 224 if side < 224 else None,
              _torchvision_builder(m, {**kw, "stochastic_depth_prob": 0.1})) for m, kw, side in TORCHVISION]
    todo += [(m, b, None, None, None) for m, b in HF]
    rows = []
    for label, build, side, recheck_side, drop_path in todo:
        if args.only and label not in args.only:
            continue
        row = _audit_one(label, build, side, recheck_side, drop_path)
        rows.append(row)
        print(f"{label:36s} {row['status']:16s} {sum(row['seconds'].values()):6.1f}s "
              f"{row.get('error', '') or row.get('flag_counts', '')}", flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    command = "PYTHONPATH=src python scripts/zoo_audit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "zoo.json").write_text(json.dumps({"machine": machine, "command": command.strip(), "models": rows},
                                             indent=1) + "\n")
    (out / "TABLE.md").write_text(_table(rows, machine, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
