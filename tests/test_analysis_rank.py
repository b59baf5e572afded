"""Rank constraint (paper Thm 3.1): with zero padding rank(W2 - I) never exceeds D_0; with the
padded identity (IDI) SGD takes it past D_0 within a few steps. Small instance on MNIST."""
import pytest
import torch

import idinit
from idinit.lab.analysis import rank as rk
from idinit.lab.analysis import run_analysis

SMALL = {"components": "16", "hidden": "32", "steps": "40", "seeds": "2", "train_images": "5000"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank")
    rec = run_analysis("rank", out_dir=out, overrides=SMALL)
    assert (out / "rank.png").stat().st_size > 10_000
    return rec


def test_zero_padding_is_capped_at_d0(record):
    d0 = record["D0"]
    assert d0 == 16
    for log in record["runs"]["zero_padding"]:
        assert max(log["rank"]) <= d0                 # the constraint, at every step
        assert max(log["rank"]) >= d0 - 2             # and it binds (the data fill the D_0 directions)
        assert log["padded_rows_max_abs"] == 0.0      # the padded rows of W1 never move


def test_idi_breaks_the_constraint_within_a_few_steps(record):
    d0 = record["D0"]
    for init in ("idi", "idi_loose"):
        for log in record["runs"][init]:
            above = [t for t, r in enumerate(log["rank"]) if r > d0]
            assert above and above[0] <= 15, (init, log["rank"][:20])
            assert max(log["rank"]) >= d0 + 4


def test_all_start_at_rank_zero(record):
    # W2 = I exactly (or within the 1e-6 loose term, below the 1e-4 tolerance)
    for logs in record["runs"].values():
        assert all(log["rank"][0] == 0 for log in logs)


def test_initial_weights_patterns():
    settings = rk.Settings(components=4, hidden=10)
    w1, w2, w3 = rk.initial_weights(settings, "zero_padding", 0)
    assert torch.equal(w1, torch.cat([torch.eye(4), torch.zeros(6, 4)]).double())
    assert torch.equal(w2, torch.eye(10, dtype=torch.float64))
    w1, _, w3 = rk.initial_weights(settings, "idi", 0)
    assert torch.equal(w1, idinit.identity_(torch.empty(10, 4, dtype=torch.float64), loose=0.0))
    assert torch.equal(w1[4:8], w1[:4])                  # stacked identity blocks
    assert torch.equal(w3, torch.eye(10, dtype=torch.float64)[:10])
    w1_loose, _, _ = rk.initial_weights(settings, "idi_loose", 0)
    assert 0 < (w1_loose - w1).abs().max() < 1e-5


def test_rank_above_counts_singular_values():
    m = torch.diag(torch.tensor([1.0, 1e-3, 1e-5, 0.0], dtype=torch.float64))
    assert rk.rank_above(m, 1e-4) == 2


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="hidden must exceed D_0 = 32"):
        run_analysis("rank", out_dir=tmp_path, overrides={"components": "32", "hidden": "32"})
    with pytest.raises(ValueError, match="inputs must be 'pca' or 'pixels'"):
        run_analysis("rank", out_dir=tmp_path, overrides={"inputs": "raw"})
