"""Res-112's long stem at init (paper C.6, t = 0): Kaiming without BN grows the activation std
block after block, Fixup and IDInit keep it; with option-A shortcuts IDInit's IDIC stem_end reads
only zero-filled channels and its stem output collapses, channel-maintain does not. Real CIFAR-10."""
import pytest

from idinit.lab.analysis import run_analysis

SMALL = {"images": "4", "seeds": "1", "eval_images": "200"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("long-stem")
    rec = run_analysis("long-stem", out_dir=out, overrides=SMALL)
    assert (out / "long-stem.png").stat().st_size > 10_000
    return rec


def std_at(record, shortcut, init, layer):
    return record["stds"][shortcut][init][0][record["layers"].index(layer)]


def test_layout_of_the_measurement(record):
    layers = record["layers"]
    assert layers[0] == "conv1" and layers[-3:] == ["stem_end", "conv2", "output"]
    assert len(layers) == 1 + 54 + 3  # 3 stages x 18 blocks


@pytest.mark.parametrize("shortcut", ["A", "A-centred", "B"])
def test_kaiming_explodes_fixup_and_idinit_keep_the_scale(record, shortcut):
    # Kaiming: each block roughly doubles the variance, sqrt(2)^54 ~ 1e8 in std
    assert std_at(record, shortcut, "kaiming", "layer3.17") > 1e5 * std_at(record, shortcut, "kaiming", "conv1")
    for init in ("fixup", "idinit", "idinit-channel"):
        ratio = std_at(record, shortcut, init, "layer3.17") / std_at(record, shortcut, init, "conv1")
        assert 0.2 < ratio <= 1.2, (init, ratio)  # option A halves the live channels per stage: ~0.5 each


def test_centred_option_a_kills_idinit_stem_end_but_not_channel_maintain(record):
    assert std_at(record, "A-centred", "idinit", "stem_end") < 1e-9  # measured ~4e-13
    assert std_at(record, "A-centred", "idinit-channel", "stem_end") > 0.1
    # zeros appended after the input's channels (Fixup code base): the patch conv reads real channels
    assert std_at(record, "A", "idinit", "stem_end") > 0.3 * std_at(record, "A", "idinit", "conv1")
    assert std_at(record, "B", "idinit", "stem_end") > 0.3 * std_at(record, "B", "idinit", "conv1")


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown init.*'lsuv'"):
        run_analysis("long-stem", out_dir=tmp_path, overrides={"inits": "lsuv"})
    with pytest.raises(ValueError, match="shortcuts"):
        run_analysis("long-stem", out_dir=tmp_path, overrides={"shortcuts": "C"})
