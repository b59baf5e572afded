"""A run configuration that a run would refuse only after writing its folder is refused when it is made
(issue 13 §2; found by scripts/audit_bad_inputs.py: these were accepted, and a run then wrote its
config.json before failing)."""
import pytest

from idinit.lab.train import RunConfig, train_run
from lab_fixtures import TINY, fake_data


@pytest.mark.parametrize("change, message", [({"arch": "bogus"}, "unknown architecture 'bogus'"),
                                             ({"init": "bogus"}, "init must be one of"),
                                             ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\)"),
                                             ({"train_chunks": [7]}, "train_chunks must be None or"),
                                             ({"train_chunks": []}, "train_chunks must be None or")])
def test_a_bad_configuration_is_refused_before_any_file_is_written(tmp_path, change, message):
    values = {**RunConfig(name="x", **TINY).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        train_run(RunConfig.from_dict(values), tmp_path / "run", data=fake_data(), log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_the_accepted_values_still_pass():
    for arch in ("resnet8", "res112", "linear5-relu"):
        RunConfig(arch=arch, init="kaiming", label_smoothing=0.1, train_chunks=[0, 3])
