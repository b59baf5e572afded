"""The start-up analysis: the mechanism behind Table 1's SGD stall, measured on a tiny ResNet."""
import pytest

from idinit.lab.analysis import run_analysis


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("startup")
    return run_analysis("startup", out_dir=out, overrides={
        "arch": "resnet8", "steps": "4", "batch_size": "32", "train_limit": "128",
        "interventions": "paper,zero-bn2"})


def test_idiz_branch_ends_feed_their_bn_far_below_its_eps_then_jump_after_one_step(record):
    idinit, kaiming = record["runs"]["paper"]["idinit"], record["runs"]["paper"]["kaiming"]
    assert idinit["bn2_in_std_max"][0] < 1e-5 < 0.1 < kaiming["bn2_in_std_min"][0]
    # at init the BN lifts the ~1e-6 branch to ~eps_idiz / sqrt(bn_eps) ~ 3e-4 of the skip ...
    assert idinit["branch_skip_max"][0] < 1e-2
    # ... and one SGD step at lr 0.2 makes it as large as Kaiming's (the BN renormalises any scale)
    assert idinit["branch_skip_max"][1] > 0.1


def test_a_zero_branch_norm_closes_every_branch_for_every_init(record):
    for init in ("idinit", "kaiming", "zero_gamma"):
        assert record["runs"]["zero-bn2"][init]["branch_skip_max"][0] == 0.0
    assert record["runs"]["zero-bn2"]["zero_gamma"]["loss"] == record["runs"]["paper"]["zero_gamma"]["loss"]
    assert record["summary"]["paper"]["idinit"]["loss_step1"] == pytest.approx(2.302585, abs=1e-4)  # IDIZ head


def test_unknown_intervention_is_named(tmp_path):
    with pytest.raises(ValueError, match="warmup9"):
        run_analysis("startup", out_dir=tmp_path, overrides={"interventions": "warmup9"})
