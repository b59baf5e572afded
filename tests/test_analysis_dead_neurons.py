"""Dead neurons (paper Sec. 3.2): exactly-zero branch ends get exactly-zero gradients behind an
option-A shortcut or a zero-gamma BN, and stay dead; the zero-preserving IDIZ ends do not.
Small instance: ResNet-8 (one block per stage), 4 SGD steps on CIFAR-10."""
import pytest

from idinit.lab.analysis import dead_neurons as dn
from idinit.lab.analysis import run_analysis

SMALL = {"arch": "resnet8", "steps": "4", "batch": "16"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("dead-neurons")
    rec = run_analysis("dead-neurons", out_dir=out, overrides=SMALL)
    assert (out / "dead-neurons.png").stat().st_size > 10_000
    return rec


def test_exact_zero_behind_option_a_stays_dead(record):
    log = record["runs"]["option_a/zero"]
    # the zero-filled channels have pre-activation exactly 0, where ReLU's gradient is 0, so the
    # branch ends writing them and every block reading them never receive a gradient
    assert log["never_updated_fraction"][-1] > 0.5
    assert min(log["zero_grad_fraction"]) > 0.5


def test_zero_preserving_revives_everything_after_one_step(record):
    for key in ("option_a/zero_preserving", "zero_gamma/zero_preserving"):
        log = record["runs"][key]
        assert log["zero_grad_fraction"][-1] == 0.0, key
        assert log["never_updated_fraction"][-1] == 0.0, key


def test_exact_zero_behind_zero_gamma_is_dead_for_ever(record):
    log = record["runs"]["zero_gamma/zero"]
    assert log["zero_grad_fraction"] == [1.0] * 4  # gamma = 0 and W2 = 0: neither moves


def test_goyal_zero_gamma_is_dead_only_at_the_first_step(record):
    log = record["runs"]["zero_gamma/kaiming_zero_gamma"]
    assert log["zero_grad_fraction"][0] == 1.0
    assert log["zero_grad_fraction"][1:] == [0.0] * 3


def test_variants_are_what_they_say():
    settings = dn.Settings(arch="resnet8")
    zero = dn.build(settings, "option_a", "zero")
    assert all(int(w.count_nonzero()) == 0 for w in dn.branch_ends(zero).values())
    idiz = dn.build(settings, "option_a", "zero_preserving")
    for w in dn.branch_ends(idiz).values():
        assert w.abs().max().item() == pytest.approx(1e-6) and int(w.count_nonzero()) == 2 * w.shape[0]
    gamma = dn.build(settings, "zero_gamma", "zero_preserving")
    assert all(b.bn2.weight.abs().max().item() == 0.0 for b in gamma.modules() if hasattr(b, "bn2"))


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown network.*'option_c'"):
        run_analysis("dead-neurons", out_dir=tmp_path, overrides={"networks": "option_c"})
