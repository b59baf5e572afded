"""``idinit demo``: the digits split, the depth sweep's measured properties, the BN re-estimation
probe, and the output files (written atomically, nothing written on bad input)."""
import json
import math
import os

import numpy as np
import pytest
import torch

from idinit.lab import demo, demo_depth
from idinit.lab.models import CifarResNet


@pytest.fixture(scope="module")
def digits():
    return demo.load_digits_split()


def small(data, n_train=320, n_test=200):
    x_train, y_train, x_test, y_test = data
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]


def test_digits_split_is_stratified_uint8(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.uint8 and len(y_train) + len(y_test) == 1797
    assert x_train.max() == 240  # 0..16 scaled by 15
    counts = np.bincount(y_test, minlength=10)
    assert counts.min() >= 45 and counts.max() <= 55


def test_depth_sweep_kaiming_explodes_idinit_keeps_chance_loss_and_trains(digits):
    # A real (tiny) training: 320 images, 5 steps per epoch, 2 epochs, depths 1 and 24.
    results = demo_depth.run_sweep(small(digits), depths=[1, 24], lrs=[0.05], epochs=2, log=lambda line: None)
    runs = results["0.05"]
    # Without normalisation each Kaiming block roughly doubles the variance (2^24 ~ 1.7e7): its loss
    # at init is measured at ~4e5; IDInit's IDIZ head and branch ends give logits ~1e-13, so ln 10.
    assert runs["kaiming"]["24"]["init_loss"] > 1000 * runs["idinit"]["24"]["init_loss"]
    for depth in ("1", "24"):
        assert runs["idinit"][depth]["init_loss"] == pytest.approx(math.log(10), abs=1e-5)
    assert runs["kaiming"]["24"]["diverged_at_step"] is not None and runs["kaiming"]["24"]["test_acc"] is None
    deep = runs["idinit"]["24"]
    assert deep["diverged_at_step"] is None and len(deep["epoch_losses"]) == 2
    assert deep["epoch_losses"][-1] < 0.7 * math.log(10) and deep["test_acc"] > 0.5
    assert demo_depth.trained_up_to(runs["idinit"], [1, 24]) == 24
    line = demo_depth.reading(results, [1, 24])
    assert f"kaiming {runs['kaiming']['24']['init_loss']:#.3g}" in line and "idinit 24 (" in line


def test_trained_up_to_stops_at_the_first_failure():
    def cell(acc, diverged=None):
        return {"test_acc": acc, "diverged_at_step": diverged}

    row = {"2": cell(0.9), "8": cell(0.6), "32": cell(0.3), "128": cell(0.9)}
    assert demo_depth.trained_up_to(row, [2, 8, 32, 128]) == 8
    row = {"2": cell(0.9), "8": cell(None, diverged=3), "32": cell(0.9)}
    assert demo_depth.trained_up_to(row, [32, 8, 2]) == 2
    assert demo_depth.trained_up_to({"2": cell(0.2)}, [2]) is None


def test_every_depth_scheme_goes_through_the_library():
    kaiming, idinit_model = demo_depth.build("kaiming", 3, seed=0), demo_depth.build("idinit", 3, seed=0)
    eye = torch.eye(64, dtype=torch.float32)
    # IDInit: stem sqrt(2) I, fc1 I (each + the 1e-6 loose term), branch ends and head at the 1e-6 scale.
    assert torch.allclose(idinit_model.stem.weight, math.sqrt(2) * eye, atol=1e-5)
    assert torch.allclose(idinit_model.blocks[2].fc1.weight, eye, atol=1e-5)
    assert idinit_model.blocks[2].fc2.weight.abs().max() <= 1.01e-6 and idinit_model.head.weight.abs().max() <= 1.01e-6
    # Kaiming (fan_in, relu): std sqrt(2/64) on every matrix, biases 0.
    std = torch.cat([p.flatten() for n, p in kaiming.named_parameters() if n.endswith("weight") and p.shape[0] == 64]).std()
    assert 0.9 * math.sqrt(2 / 64) < std < 1.1 * math.sqrt(2 / 64)
    assert all((p == 0).all() for n, p in kaiming.named_parameters() if n.endswith("bias"))


def test_bn_reestimation_ignores_stale_statistics_and_leaves_the_model_alone(digits):
    from idinit.lab.data import DeviceLoader

    x_train, y_train, x_test, y_test = small(digits, 256, 128)
    torch.manual_seed(0)
    model = CifarResNet(depth=8, in_channels=1)
    train_eval = DeviceLoader(x_train, y_train, 128, train=False, mean=(0.3,), std=(0.4,))
    test = DeviceLoader(x_test, y_test, 128, train=False, mean=(0.3,), std=(0.4,))
    reference = demo._bn_reestimated_accuracy(model, train_eval, test)
    for module in model.modules():  # planted fault: running statistics far from the data's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(50.0)
            module.running_var.fill_(1e-6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert demo._bn_reestimated_accuracy(model, train_eval, test) == reference
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        stale = sum((model(x).argmax(1) == y).sum().item() for x, y in test.epoch()) / test.n
    assert stale != reference


def tiny_demo(out_dir):
    return demo.run_demo(out_dir=out_dir, epochs=1, seeds=1, depths=(1, 3), depth_lrs=(0.05,), depth_epochs=1)


def test_run_demo_writes_and_prints_what_it_measured(tmp_path, digits, monkeypatch, capsys):
    monkeypatch.setattr(demo, "load_digits_split", lambda: small(digits, 192, 100))
    result = tiny_demo(tmp_path)
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["digits"]["summary"] == result["digits"]
    assert record["depth_sweep"]["results"] == json.loads(json.dumps(result["depth_sweep"]))
    assert record["reading"] == result["reading"] and len(result["reading"]) == 2
    out = capsys.readouterr().out
    assert all(line in out for line in result["reading"])
    # IDInit's IDIZ head (eps 1e-6): logits start at the 1e-6 scale; Kaiming's are O(1).
    assert result["digits"]["idinit"]["init_logit_std"] < 1e-4 < 0.1 < result["digits"]["kaiming"]["init_logit_std"]
    assert (tmp_path / "demo.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.png"]


def test_run_demo_writes_atomically(tmp_path, digits, monkeypatch):
    # Planted fault: every final rename fails. The previous run's files stay whole and no
    # temporary file is left behind.
    monkeypatch.setattr(demo, "load_digits_split", lambda: small(digits, 128, 64))
    (tmp_path / "demo.json").write_text('{"previous": true}\n')
    (tmp_path / "demo.png").write_bytes(b"previous png")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        demo.run_demo(out_dir=tmp_path, epochs=1, seeds=1, depths=(1,), depth_lrs=(0.05,), depth_epochs=1)
    assert (tmp_path / "demo.json").read_text() == '{"previous": true}\n'
    assert (tmp_path / "demo.png").read_bytes() == b"previous png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.png"]


@pytest.mark.parametrize("kwargs, word", [({"depths": (0, 8)}, "depths"), ({"depths": ()}, "depths"),
                                          ({"depth_lrs": (0.01, -1.0)}, "learning rates"),
                                          ({"depth_epochs": 0}, "depth epochs"), ({"seeds": 0}, "seeds"),
                                          ({"epochs": 1.5}, "epochs")])
def test_bad_settings_raise_before_anything_is_written(tmp_path, kwargs, word):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=word):
        demo.run_demo(out_dir=out, **kwargs)
    assert not out.exists()
