"""The identity trap of a deep linear net (paper Sec. 3.1.1): GD keeps the layers equal and stalls
on a -I target, SGD separates them, SGD + momentum converges. Small instance, real margins."""
import json

import pytest

from idinit.lab.analysis import momentum, run_analysis

SMALL = {"samples": "200", "steps": "300", "seeds": "2", "log_every": "25"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("momentum")
    rec = run_analysis("momentum", out_dir=out, overrides=SMALL)
    assert (out / "momentum.png").stat().st_size > 10_000
    assert json.loads((out / "momentum.json").read_text())["summary"] == rec["summary"]
    return rec


def test_gd_keeps_layers_equal_and_stalls(record):
    for log in record["runs"]["gd"]:
        # equal up to float64 rounding: the gradients of all layers are the same polynomial in Sigma
        assert max(log["distance"]) < 1e-11
        assert max(log["asymmetry"]) < 1e-11
        # stuck at the saddle W = 0, where the loss is E||y||^2 / d = 1 (0.8 leaves room for sampling)
        assert log["loss"][-1] > 0.8


def test_sgd_separates_the_layers(record):
    for log in record["runs"]["sgd"]:
        assert log["distance"][-1] > 1e-3
    # and the loose perturbation alone does not do it under GD within these steps
    for log in record["runs"]["gd_loose"]:
        assert log["distance"][-1] < 1e-3
        assert log["loss"][-1] > 0.8


def test_momentum_separates_more_and_converges(record):
    sgd, mom = record["summary"]["sgd"], record["summary"]["sgd_momentum"]
    assert mom["converged_runs"] == 2
    assert mom["final_loss_max"] < 1e-6
    assert sgd["final_loss_median"] > 1e3 * mom["final_loss_max"]
    assert mom["distance_at_10pct_median"] > 5 * sgd["distance_at_10pct_median"]


def test_train_is_deterministic_per_seed():
    settings = momentum.Settings(samples=50, steps=20, seeds=1, log_every=5)
    assert momentum.train(settings, "sgd_momentum", 3) == momentum.train(settings, "sgd_momentum", 3)


def test_bad_overrides_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown override key.*'stepz'.*valid keys"):
        run_analysis("momentum", out_dir=tmp_path, overrides={"stepz": "3"})
    with pytest.raises(ValueError, match="steps='ten' is not a valid int"):
        run_analysis("momentum", out_dir=tmp_path, overrides={"steps": "ten"})
    with pytest.raises(ValueError, match="batch 500 exceeds samples 200"):
        run_analysis("momentum", out_dir=tmp_path, overrides={"samples": "200", "batch": "500"})
    with pytest.raises(ValueError, match="unknown analysis 'momentun'.*valid names"):
        run_analysis("momentun", out_dir=tmp_path)
