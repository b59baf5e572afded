"""Dynamical isometry (paper Fig. 1, C.5): at initialisation IDInit's residual MLP has a body
Jacobian with mean squared singular value ~1, PyTorch's default init one far above 1. Small
instance (64 wide, 32 blocks) on CIFAR-10."""
import math

import pytest
import torch

from idinit.lab.analysis import isometry as iso
from idinit.lab.analysis import run_analysis

SMALL = {"width": "64", "depth": "32", "epochs": "1", "train_images": "1000", "jacobian_inputs": "20",
         "body_inputs": "5", "log_every": "2"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("isometry")
    rec = run_analysis("isometry", out_dir=out, overrides=SMALL)
    assert (out / "isometry.png").stat().st_size > 10_000
    return rec


def test_idinit_body_is_isometric_at_init(record):
    # relu(sqrt(2) [I | 0] x) then identity blocks: singular values sqrt(2) on the active half, 0 on
    # the rest, so the mean square is 2 * (active fraction) ~ 1
    assert 0.7 < record["summary"]["idinit"]["chi_body_init"] < 1.3
    # the head is zero-preserving (1e-6 entries): the full Jacobian starts near zero
    assert record["summary"]["idinit"]["chi_full_init"] < 1e-9


def test_default_init_is_chaotic_at_init(record):
    default = record["summary"]["default"]
    assert default["chi_body_init"] > 100      # measured ~1e4 at 32 blocks (1e9 at 64)
    assert default["chi_full_init"] > 100


def test_training_runs_and_is_logged(record):
    for scheme in ("idinit", "default"):
        run = record["runs"][scheme]
        assert run["diverged_at_step"] is None
        assert len(run["jacobian"]) == 2       # at init and after the one epoch
        assert len(run["loss"]) == 5 and all(math.isfinite(v) for v in run["loss"])
    # training gives IDInit's head weight, so its full Jacobian leaves ~0
    assert record["summary"]["idinit"]["chi_full_end"] > 1e3 * record["summary"]["idinit"]["chi_full_init"]


def test_jacobian_matches_autograd_jacobian():
    torch.manual_seed(0)
    model = iso.DeepResidualMLP(width=8, depth=3, inputs=3072).double()
    x = torch.randn(3, 3072, dtype=torch.float64)
    sq = iso.jacobian_sq_singular_values(model, x, 10, chunk=2)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i])
        torch.testing.assert_close(sq[i], torch.linalg.svdvals(jac) ** 2)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown scheme.*'lecun'"):
        run_analysis("isometry", out_dir=tmp_path, overrides={"schemes": "idinit,lecun"})
