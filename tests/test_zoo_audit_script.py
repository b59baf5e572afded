"""scripts/zoo_audit.py on two small models: the rows it records and the refusal of unknown names."""
from __future__ import annotations

import json

import pytest

from lab_fixtures import load_script

def test_two_models_give_their_rows_and_table(tmp_path):
    zoo = load_script("zoo_audit")
    assert zoo.main(["--out", str(tmp_path), "--only", "mobilenetv3_small_050", "hf:bloom"]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "zoo.json").read_text())["models"]}
    mobile, bloom = rows["mobilenetv3_small_050"], rows["hf:bloom"]
    assert mobile["status"] == bloom["status"] == "ok"
    assert mobile["branch_ends"] == mobile["blocks"] == 7 and mobile["drop_path_roles_changed"] == []
    assert mobile["graph"] == "torch.fx graph" and mobile["input"] == [4, 3, 32, 32]
    assert bloom["branch_ends"] == bloom["blocks"] == 4 and "drop_path_roles_changed" not in bloom
    table = (tmp_path / "TABLE.md").read_text()
    assert "| mobilenetv3_small_050 | 32 | ok | fx |" in table and "2 models: 2 ok, 0 errors" in table


def test_an_unknown_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(SystemExit) as err:
        load_script("zoo_audit").main(["--out", str(tmp_path / "out"), "--only", "resnet18", "no_such_net"])
    assert err.value.code == 2 and not (tmp_path / "out").exists()
