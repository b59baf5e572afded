"""scripts/audit_bad_inputs.py classifies each outcome as the issue 13 audit defines them; each planted
behaviour gets its class (so the audit's totals can show a fault when there is one)."""
import pathlib
import sys

import torch

from lab_fixtures import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _audit():
    sys.path.insert(0, str(ROOT / "scripts"))
    return load_script("audit_bad_inputs")


def test_each_planted_behaviour_gets_its_class():
    audit = _audit()
    from audit_cases import Case, tensor_bytes
    t = torch.zeros(3, 3)

    def writes_then_raises():
        t.fill_(1.0)
        raise ValueError("bad gain")

    def raises(kind, message):
        def run():
            raise kind(message)
        return run

    snap = lambda: tensor_bytes(t)
    planted = [
        (Case("g", "refused, named", raises(ValueError, "identity_: gain must be >= 0"), words=("gain",), snapshot=snap),
         audit.CLEAR),
        (Case("g", "refused, not named", raises(ValueError, "something failed"), words=("gain",), snapshot=snap),
         audit.WRONG),
        (Case("g", "refused, wrong type", raises(IndexError, "gain index"), words=("gain",), snapshot=snap),
         audit.WRONG),
        (Case("g", "written, then refused", writes_then_raises, words=("gain",), snapshot=snap), audit.CHANGED),
        (Case("g", "bad input accepted", lambda: None, snapshot=snap), audit.SILENT),
        (Case("g", "valid input, wrong result", lambda: 2, "ok", check=lambda r, s: r == 1 or "got 2"), audit.SILENT),
        (Case("g", "valid input, right result", lambda: 1, "ok", check=lambda r, s: r == 1 or "got 1"), audit.OK),
        (Case("g", "valid input refused", raises(ValueError, "no"), "ok", snapshot=snap), audit.WRONG),
    ]
    for case, outcome in planted:
        assert audit.classify(case)["outcome"] == outcome, case.name
