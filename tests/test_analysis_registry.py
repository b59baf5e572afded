"""The analysis registry and what every analysis shares: names, typed overrides, atomic strict JSON."""
import json
import math

import pytest

from idinit.lab.analysis import ANALYSES, run_analysis
from idinit.lab.analysis import (dead_neurons, isometry, long_stem, momentum, rank, remaining_weight, signal,
                                 startup, weight_distribution)
from idinit.lab.analysis.recording import settings_from_overrides, write_json_atomic

MODULES = {"momentum": momentum, "rank": rank, "isometry": isometry, "signal": signal,
           "remaining-weight": remaining_weight, "dead-neurons": dead_neurons,
           "weight-distribution": weight_distribution, "long-stem": long_stem, "startup": startup}


def test_registry_names_every_analysis():
    assert set(ANALYSES) == set(MODULES)
    for name, module in MODULES.items():
        assert ANALYSES[name] is module.run
        assert module.NAME == name
        module.Settings().check()  # the full-size defaults are valid


def test_overrides_are_typed_from_strings():
    s = settings_from_overrides(remaining_weight.Settings, {"lrs": "0.5, 0.05", "seeds": "3"}, "remaining-weight")
    assert s.lrs == (0.5, 0.05) and s.seeds == 3
    s = settings_from_overrides(signal.Settings, {"networks": "fc,resconv"}, "signal")
    assert s.networks == ("fc", "resconv")
    with pytest.raises(ValueError, match="not a valid float"):
        settings_from_overrides(momentum.Settings, {"lr": "nan"}, "momentum")
    with pytest.raises(ValueError, match=r"unknown override key\(s\) \['depth'\]; valid keys: \[.*'steps'"):
        settings_from_overrides(momentum.Settings, {"depth": "3"}, "momentum")


def test_unknown_analysis_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown analysis 'jacobian'; valid names: \['dead-neurons', 'isometry'"):
        run_analysis("jacobian", out_dir=tmp_path)


def test_json_is_strict_and_written_atomically(tmp_path):
    path = tmp_path / "sub" / "record.json"
    write_json_atomic({"a": [1.0, math.nan, math.inf], "b": {"c": -math.inf}}, path)
    assert json.loads(path.read_text()) == {"a": [1.0, None, None], "b": {"c": None}}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temp file left behind
