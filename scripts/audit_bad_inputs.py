"""The bad-input audit of issue 13, re-runnable: bad inputs on the tensor initialisers, on the model level
(``idinit.plan`` / ``idinit.init_`` / ``Plan.apply``) and on the lab (configurations, run folders, data
files, the command line), plus SIGKILLs at random moments of tiny CPU trainings that are then resumed.

    PYTHONPATH=src python scripts/audit_bad_inputs.py [--out results/audit] [--kills 28] [--seed 0]

Every case states what a correct library does with it: refuse it (``error``: an exception of the
expected kind whose message names the problem), accept it with a correct result (``ok``: a check of the
result), or either (``either``). Each outcome is one of

- ``clear error``: refused with a ValueError / TypeError / RuntimeError (FileNotFoundError for a missing
  file; exit code 2 and one line for the command line) naming the problem, and nothing changed (the
  tensor's storage, every parameter and buffer of the model bitwise and the global RNG state, the files
  of the run folder);
- ``accepted, correct``: a valid input (or one the library may accept) gave the right result;
- ``silent wrong result``: a bad input was accepted, or a valid one gave a wrong result;
- ``change before error``: refused, but something had already been changed;
- ``wrong kind``: refused with another exception type, a message not naming the problem, a
  traceback or another exit code on the command line, or a valid input refused.

A kill is ``held`` when the killed and resumed training ends with bitwise the same model, optimiser and
records (timings aside) as an uninterrupted one; else ``broken``.

Writes ``<out>/cases.json`` (every case) and ``<out>/README.md`` (totals, the command, the machine).
Exit status 1 if any case is a silent wrong result, a change before error or a wrong kind, or a kill broke.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import sys
import time
import traceback
import warnings

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

CLEAR, OK, SILENT, CHANGED, WRONG = ("clear error", "accepted, correct", "silent wrong result",
                                     "change before error", "wrong kind")
OUTCOMES = (CLEAR, OK, SILENT, CHANGED, WRONG)


def classify(case) -> dict:
    """Run one case (see ``audit_cases.Case``) and classify its outcome."""
    before = case.snapshot()
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = case.run()
    except Exception as err:  # noqa: BLE001 - classifying every exception is the point
        message = f"{type(err).__name__}: {err}".splitlines()[0][:400]
        after = case.snapshot()
        if after != before:
            return {"outcome": CHANGED, "detail": message}
        if case.expect == "ok":
            return {"outcome": WRONG, "detail": f"a valid input refused: {message}"}
        if not isinstance(err, case.kinds):
            return {"outcome": WRONG, "detail": message + " | " + traceback.format_exc(limit=-1).strip()[-300:]}
        text = str(err).lower()
        if case.words and not any(w.lower() in text for w in case.words):
            return {"outcome": WRONG, "detail": f"message does not name {case.words}: {message}"}
        return {"outcome": CLEAR, "detail": message}
    seen = [str(w.message).splitlines()[0][:200] for w in caught]
    if case.expect == "error":
        return {"outcome": SILENT, "detail": "accepted" + (f" (warned: {seen[0]})" if seen else "")}
    verdict = case.check(result, seen)
    if verdict is True:
        return {"outcome": OK, "detail": "; ".join(seen)[:300]}
    # a check may say the outcome was a refusal of the wrong kind (the command line's exit code, traceback)
    return {"outcome": WRONG if str(verdict).startswith("wrong kind") else SILENT, "detail": str(verdict)[:400]}


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "audit"))
    parser.add_argument("--kills", type=int, default=28, help="SIGKILLs at random moments of training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--only", choices=("tensor", "model", "lab", "kill"), action="append",
                        help="run only these parts (repeatable); default all")
    args = parser.parse_args(argv)
    parts = args.only or ["tensor", "model", "lab", "kill"]
    from audit_cases import kills, lab, model, tensor  # the cases import the whole lab: only when run
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    started = time.time()
    rows: list[dict] = []
    scratch = out / ".scratch"
    for layer, source in (("tensor", tensor), ("model", model), ("lab", lab)):
        if layer not in parts:
            continue
        t0 = time.time()
        for case in source.cases(scratch / layer):
            rows.append({"layer": layer, "group": case.group, "case": case.name, "expect": case.expect,
                         **classify(case)})
        print(f"{layer}: {sum(r['layer'] == layer for r in rows)} cases in {time.time() - t0:.0f} s", flush=True)
    kill_rows = kills.run(scratch / "kill", args.kills, args.seed) if "kill" in parts else []
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)

    totals = {layer: {o: sum(r["layer"] == layer and r["outcome"] == o for r in rows) for o in OUTCOMES}
              for layer in ("tensor", "model", "lab") if layer in parts}
    held = sum(k["outcome"] == "held" for k in kill_rows)
    command = "PYTHONPATH=src python scripts/audit_bad_inputs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "machine": machine(), "seconds": round(time.time() - started),
              "totals": totals, "kills": {"tried": len(kill_rows), "held": held}, "cases": rows,
              "kill_cases": kill_rows}
    (out / "cases.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Bad-input audit (issue 13)", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}; {report['seconds']} s.", "",
             "| layer | inputs tried | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for layer, counts in totals.items():
        lines.append(f"| {layer} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    if kill_rows:
        lines += ["", f"SIGKILLs at random moments of training: {len(kill_rows)}, of which {held} held (the "
                      "resumed run ended bitwise as the uninterrupted one, no epoch lost or doubled)."]
    bad = [r for r in rows if r["outcome"] in (SILENT, CHANGED, WRONG)] + [k for k in kill_rows if k["outcome"] != "held"]
    lines += ["", "Outcomes are defined in the docstring of scripts/audit_bad_inputs.py; every case with its detail "
                  "is in cases.json.", "", f"## Cases that are not a clear error or a correct result ({len(bad)})", ""]
    lines += [f"- {r.get('layer', 'kill')} / {r.get('group', '')} / {r.get('case', '')}: {r['outcome']}: "
              f"{r.get('detail', '')}" for r in bad] or ["none"]
    lines += ["", "## Cases", "", "| layer | group | case | expected | outcome |", "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['group']} | {r['case'].replace('|', '/')} | {r['expect']} | {r['outcome']} |"
              for r in rows]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    for layer, counts in totals.items():
        print(f"{layer}: {sum(counts.values())} tried; " + ", ".join(f"{o} {n}" for o, n in counts.items()))
    if kill_rows:
        print(f"kill: {len(kill_rows)} SIGKILLs, {held} held")
    print(f"wrote {out / 'README.md'} and {out / 'cases.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
