"""Weight distribution (paper C.4): IDInit's weights are almost all exact zeros at init, Kaiming's
are Gaussian (its near-zero fractions match the normal law layer by layer); the after-training part
counts hand-made state dicts exactly, splits them by their initial values, and names bad files."""
import math

import pytest
import torch

from idinit.lab.analysis import run_analysis
from idinit.lab.analysis import weight_distribution as wd
from idinit.lab.models import build_model


def small(tmp_path, **extra):
    return {"init_archs": "resnet8", "trained_arch": "resnet8", "trained_dir": str(tmp_path),
            "trained_pattern": "{init}.pt", **extra}


def save_states(tmp_path, idinit_state, kaiming_state):
    torch.save(idinit_state, tmp_path / "idinit.pt")
    torch.save(kaiming_state, tmp_path / "kaiming.pt")


def quarter_zero_state():
    """A ResNet-8 state dict whose every weight is 0.5, with the first quarter of each tensor 0."""
    state = build_model("resnet8", "kaiming").state_dict()
    for name, t in state.items():
        if wd.weight_group(name) is not None and t.ndim >= 2:
            flat = torch.full((t.numel(),), 0.5)
            flat[: t.numel() // 4] = 0.0
            state[name] = flat.view_as(t).half()  # stored in fp16, as the Table 1 weights
    return state


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)  # the analysis rebuilds the start with seed 0: "trained" = the start itself
    save_states(folder, {k: v.half() for k, v in build_model("resnet8", "idinit").state_dict().items()},
                quarter_zero_state())
    out = tmp_path_factory.mktemp("out")
    rec = run_analysis("weight-distribution", out_dir=out, overrides=small(folder))
    assert (out / "weight-distribution.png").stat().st_size > 10_000
    return rec


def test_idinit_starts_almost_all_zero_kaiming_gaussian(record):
    idinit, kaiming = record["at_init"]["resnet8"]["idinit"]["all"], record["at_init"]["resnet8"]["kaiming"]["all"]
    assert idinit["exact_zero"] > 0.98  # one (IDI) or two (IDIZ) non-zeros per row of thousands
    assert kaiming["exact_zero"] == 0.0
    # Kaiming: |w| < t happens with probability erf(t / (sigma sqrt 2)) in each layer; sum over layers.
    model = build_model("resnet8", "kaiming")
    for t in (1e-3, 1e-2):
        expected, total = 0.0, 0
        for name, p in model.state_dict().items():
            if wd.weight_group(name) is None or p.ndim < 2:
                continue
            fan = p.shape[0] * p[0, 0].numel() if p.ndim == 4 else p.shape[1]  # convs fan-out, linear fan-in
            sigma = math.sqrt(2.0 / fan)
            expected += p.numel() * math.erf(t / (sigma * math.sqrt(2)))
            total += p.numel()
        measured = kaiming["abs_below"][f"{t:g}"]
        assert abs(measured - expected / total) < 0.15 * expected / total + 2e-3, (t, measured, expected / total)


def test_trained_fractions_are_exact_on_a_known_state(record):
    stats = record["trained"]["stats"]["kaiming"]["all"]
    assert stats["exact_zero"] == pytest.approx(0.25, abs=1e-9)
    for t in ("0.0001", "0.001", "0.01"):
        assert stats["abs_below"][t] == pytest.approx(0.25, abs=1e-9)
    # rms of a tensor that is 3/4 at 0.5 is 0.433: the zeros and only the zeros are below 0.1 rms
    assert stats["rel_below"]["0.1"] == pytest.approx(0.25, abs=1e-9)
    assert stats["std"] == pytest.approx(math.sqrt(0.25 * 0.75) * 0.5, rel=1e-3)


def test_trained_weights_split_by_where_they_started(record):
    origins = record["trained"]["by_origin"]["idinit"]
    # the "trained" IDInit state is its start: zeros stayed zero, identity entries are 1 or sqrt(2)
    assert origins["init_zero"]["count"] > 50 * origins["init_large"]["count"] > 0
    assert origins["init_zero"]["abs_below"]["0.0001"] == 1.0
    assert 1.0 <= origins["init_large"]["mean_abs"] < 1.42
    assert origins["init_tiny"]["count"] > 0 and origins["init_tiny"]["mean_abs"] < 1e-5  # IDIZ's +-1e-6
    assert origins["correlation_with_init"] > 0.999
    # The Kaiming "trained" state is unrelated to its start: no zero start, correlation near 0
    assert record["trained"]["by_origin"]["kaiming"]["init_zero"]["count"] == 0
    assert abs(record["trained"]["by_origin"]["kaiming"]["correlation_with_init"]) < 0.2


def test_weight_groups_of_a_cifar_resnet():
    names = dict(build_model("resnet8", "kaiming", shortcut="B").named_parameters())
    groups = {n: wd.weight_group(n) for n in names}
    assert groups["conv1.weight"] == "stem" and groups["fc.weight"] == "head"
    assert groups["layer1.0.conv1.weight"] == "branch_first" and groups["layer1.0.conv2.weight"] == "branch_end"
    assert groups["layer2.0.shortcut.0.weight"] == "shortcut"
    assert groups["layer1.0.bn1.weight"] is None and groups["fc.bias"] is None


def test_bad_files_and_settings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="trained_dir"):
        run_analysis("weight-distribution", out_dir=tmp_path / "o", overrides=small(tmp_path))
    torch.save(build_model("resnet8", "idinit").state_dict(), tmp_path / "idinit.pt")
    with pytest.raises(ValueError, match="not a resnet20"):
        run_analysis("weight-distribution", out_dir=tmp_path / "o",
                     overrides=small(tmp_path, trained_arch="resnet20", inits="idinit"))
    with pytest.raises(ValueError, match="library schemes"):
        run_analysis("weight-distribution", out_dir=tmp_path / "o", overrides={"inits": "fixup"})
    with pytest.raises(ValueError, match="trained_pattern"):
        run_analysis("weight-distribution", out_dir=tmp_path / "o", overrides={"trained_pattern": "x.pt"})
