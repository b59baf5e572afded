"""Signal propagation at init (paper C.3): Xavier / Kaiming blow the output std up in residual
networks, IDInit keeps it at the input's scale in all four networks. Small instance, real data."""
import pytest
import torch

from idinit.lab.analysis import run_analysis
from idinit.lab.analysis import signal as sg

SMALL = {"rounds": "12", "batch": "2", "eval_images": "500"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal")
    rec = run_analysis("signal", out_dir=out, overrides=SMALL)
    assert (out / "signal.png").stat().st_size > 10_000
    return rec


def median(record, net, scheme, level="0"):
    return record["summary"][net][scheme][level]["median"]


def test_residual_networks_explode_under_xavier_and_kaiming(record):
    # ResFC: 10 blocks h + W2 W1 h double the variance each (2^10 -> std x32); measured ~45x
    assert median(record, "resfc", "xavier") > 10 * median(record, "resfc", "idinit")
    # ResConv: relu(h + F(h)) with Kaiming; measured ~19x
    assert median(record, "resconv", "kaiming") > 5 * median(record, "resconv", "idinit")


def test_idinit_keeps_the_input_scale_everywhere(record):
    scale = record["input_std"]
    for net in ("fc", "resfc", "resconv"):
        assert 0.3 * scale < median(record, net, "idinit") < 3 * scale, net
    # AllConv ends in a global average pool over 6x6 positions, which shrinks any std
    assert 0.03 * scale < median(record, "allconv", "idinit") < 3 * scale
    # non-residual nets are fine under the baselines too (the paper's point is the residual case)
    assert 0.3 * scale < median(record, "fc", "xavier") < 3 * scale


def test_idinit_residual_stack_is_the_identity_at_init(record):
    # ResFC under IDInit = its stem (the same IDI as FC's first layer) followed by identity blocks,
    # and FC's later layers are identities too: both output the same numbers, up to the 1e-6 terms
    for level in ("0", "0.1", "1"):
        fc, resfc = record["output_std"]["fc"]["idinit"][level], record["output_std"]["resfc"]["idinit"][level]
        torch.testing.assert_close(torch.tensor(resfc), torch.tensor(fc), rtol=1e-4, atol=0)


def test_noise_reaches_the_output(record):
    for net in ("fc", "resfc", "resconv"):
        assert median(record, net, "idinit", "1") > 1.2 * median(record, net, "idinit", "0")


def test_networks_have_the_paper_shapes():
    settings = sg.Settings()
    x = torch.zeros(2, 3, 32, 32)
    shapes = {net: tuple(sg.build_network(net, settings)(x).shape) for net in sg.NETWORKS}
    assert shapes == {"fc": (2, 96), "resfc": (2, 96), "allconv": (2, 10), "resconv": (2, 16, 32, 32)}
    convs = [m for m in sg.all_conv().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 9 and [c.out_channels for c in convs] == [96, 96, 96, 192, 192, 192, 192, 192, 10]


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown network.*'mlp'"):
        run_analysis("signal", out_dir=tmp_path, overrides={"networks": "fc,mlp"})
    with pytest.raises(ValueError, match="noise levels must be > 0"):
        run_analysis("signal", out_dir=tmp_path, overrides={"noise": "0,1"})
