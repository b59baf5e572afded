"""Networks beyond residual ones with BN (paper appendix C.1, C.2, C.6): AllConv, Linear-5 and
Res-112 without BN, their initialisation through build_model, one training epoch of each through
the lab's loop (MNIST for Linear-5), the grids, the output-std record, the curves of a run folder,
and the runner's one-GPU-per-worker assignment."""
import json
import math
import pathlib
import subprocess

import numpy as np
import pytest
import torch

from idinit.lab.experiments import get_experiment
from idinit.lab.experiments.curves import first_epochs_table, plot_curves
from idinit.lab.experiments.runner import worker_devices
from idinit.lab.models import AllConv, FixupRes112, Linear5, Res112, build_model
from idinit.lab.models.res112 import weighted_layers
from idinit.lab.train import RunConfig, read_records, train_run
from idinit.lab.train.loop import evaluate_with_output_std
from idinit.lab.data import DeviceLoader
from lab_fixtures import fake_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def convs(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_allconv_is_all_cnn_c():
    model = AllConv()
    layers = convs(model)
    assert [c.out_channels for c in layers] == [96, 96, 96, 192, 192, 192, 192, 192, 10]
    assert [c.stride[0] for c in layers] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [c.kernel_size[0] for c in layers] == [3] * 7 + [1, 1]
    sizes, x = [], torch.zeros(1, 3, 32, 32)
    for conv in layers:
        x = conv(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 32, 16, 16, 16, 8, 6, 6, 6]  # conv7 is 'valid': 8x8 -> 6x6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_allconv_inits_patch_and_channel_identity():
    patch = build_model("allconv", "idinit")
    channel = build_model("allconv", "idinit", init_options={"conv": "channel"})
    for conv_p, conv_c in zip(convs(patch), convs(channel)):
        # no residual branch, so no zero-preserving layer: every conv is an identity pattern
        assert torch.count_nonzero(conv_p.weight) >= min(conv_p.weight.shape[0], conv_p.weight[0].numel())
        if conv_c.kernel_size == (3, 3):  # channel-maintain: only the centre tap carries the identity
            off_centre = conv_c.weight.clone()
            off_centre[:, :, 1, 1] = 0
            assert torch.count_nonzero(off_centre) == 0
    # patch-maintain (IDIC): output channel m reads input channel m // 9 at tap m % 9
    w = convs(patch)[1].weight  # 96 -> 96, 3x3
    assert w[10, 1, 0, 1].item() == pytest.approx(1.0, abs=1e-4) and torch.count_nonzero(w[10]) == 1
    # the stem of a ReLU network has gain sqrt(2) (paper appendix B)
    assert convs(patch)[0].weight.abs().max().item() == pytest.approx(math.sqrt(2), abs=1e-4)


@pytest.mark.parametrize("activation, gain", [("tanh", 1.0), ("relu", math.sqrt(2))])
def test_linear5_shape_and_idinit(activation, gain):
    model = build_model(f"linear5-{activation}", "idinit", in_channels=1, image_size=28)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 512)] + [(512, 512)] * 3 + [(512, 10)]
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.Tanh, torch.nn.ReLU))]
    assert len(acts) == 4 and all(type(a).__name__.lower() == activation for a in acts)
    first, head = linears[0].weight, linears[-1].weight
    torch.testing.assert_close(first[:, :512], gain * torch.eye(512), atol=1e-4, rtol=0)
    assert torch.count_nonzero(first[:, 512:]) == 0
    # non-residual: the head is IDI too (SPEC section 4), not zero-preserving
    torch.testing.assert_close(head[:, :10], torch.eye(10), atol=1e-4, rtol=0)
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    with pytest.raises(ValueError, match="activation"):
        Linear5(activation="sigmoid")


def test_res112_layout():
    model = Res112()
    assert weighted_layers(model) == 112
    stem = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
            and (name.startswith("layer") or name == "stem_end")]
    assert len(stem) == 109  # "109 layers in the residual stem" (appendix C.6)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert weighted_layers(FixupRes112()) == 112
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("init", ["idinit", "fixup"])
def test_res112_linear_conv2_feeds_the_pool_without_a_relu(init):
    """The other reading of Table 10: conv2's output reaches the pool as it is, negative values included; the
    lab's res112 puts a ReLU there. Same weights, float64: the head's inputs differ exactly by that ReLU."""
    torch.manual_seed(0)
    linear = build_model("res112-linear-conv2", init, shortcut="B").double()
    relu = build_model("res112", init, shortcut="B").double()
    relu.load_state_dict(linear.state_dict())
    with torch.no_grad():
        linear.conv2.weight.normal_(0, 0.05)  # a conv2 with negative outputs (IDInit's starts as a near-identity)
        relu.conv2.weight.copy_(linear.conv2.weight)
    seen = {}
    for name, model in (("linear", linear), ("relu", relu)):
        model.fc.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    linear(x), relu(x)
    conv2 = linear.conv2(linear.features(x))
    bias = linear.bias2 if init == "fixup" else 0.0
    assert torch.equal(seen["linear"], conv2.mean((2, 3)) + bias)
    assert torch.equal(seen["relu"], torch.relu(conv2).mean((2, 3)) + bias)
    assert (conv2 < 0).any() and not torch.equal(seen["linear"], seen["relu"])


def test_res112_stem_signal_at_init():
    """Kaiming without BN doubles the variance at every one of the 54 blocks; IDInit and Fixup start
    every block at (nearly) the identity, so the stem keeps the input's scale (option B)."""
    x = torch.randn(4, 3, 32, 32)
    stds = {}
    for init in ("kaiming", "idinit", "fixup"):
        torch.manual_seed(0)
        with torch.no_grad():
            stds[init] = build_model("res112", init, shortcut="B").features(x).std().item()
    assert stds["kaiming"] > 1e5  # measured ~5e7: sqrt(2)^54 ~ 1.3e8
    assert 0.1 < stds["idinit"] < 10 and 0.01 < stds["fixup"] < 10  # measured 0.76 and 0.06
    torch.manual_seed(0)
    fixup = build_model("res112", "fixup", shortcut="B")
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in fixup.modules() if hasattr(b, "scale"))


def test_res112_centred_option_a_starts_idinit_with_a_dead_stem():
    """The centred option A puts zero-filled channels at 0-15 of the last stage; stem_end's IDIC kernel
    reads input channels 0-7 only (output m reads channel m // 9), so IDInit's stem output is ~0.
    With the zeros appended after (option A, Fixup code base) the stem is alive."""
    torch.manual_seed(0)
    model = build_model("res112", "idinit", shortcut="A-centred")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        stage3 = model.layer3(model.layer2(model.layer1(torch.relu(model.conv1(x)))))
        assert stage3.std() > 0.1 and stage3[:, :16].abs().max() < 1e-3
        assert model.features(x).std() < 1e-9  # measured 4e-13
    channel = build_model("res112", "idinit", shortcut="A-centred", init_options={"conv": "channel"})
    after = build_model("res112", "idinit", shortcut="A")
    with torch.no_grad():
        assert channel.features(x).std() > 0.1  # channel-maintain passes channel m to channel m
        assert after.features(x).std() > 0.1


def test_other_arch_errors_are_named():
    with pytest.raises(ValueError, match="allconv.*fixup"):
        build_model("allconv", "fixup")
    with pytest.raises(ValueError, match="linear5-tanh"):
        build_model("linear5-sigmoid", "idinit")
    with pytest.raises(ValueError, match="no options"):
        build_model("res112", "fixup", init_options={"loose": 0.0})


def test_dataset_field_keeps_old_run_folders_resumable():
    old = RunConfig(name="x").to_dict()
    assert "dataset" not in old  # a config.json written before the field existed equals this
    assert RunConfig.from_dict(old).dataset == "cifar10"
    mnist = RunConfig(name="x", dataset="mnist")
    assert mnist.to_dict()["dataset"] == "mnist" and RunConfig.from_dict(mnist.to_dict()) == mnist
    with pytest.raises(ValueError, match="dataset must be one of"):
        RunConfig(dataset="svhn")
    with pytest.raises(ValueError, match="train_chunks"):
        RunConfig(dataset="mnist", train_chunks=[3])


def test_output_std_is_the_std_of_all_logits():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    data = fake_data(n_train=8, n_eval=50, size=4)
    loader = DeviceLoader(data.x_eval, data.y_eval, 16, train=False)
    acc, std = evaluate_with_output_std(model, loader, amp=False)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in loader.epoch()])
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader.epoch())
    assert std == pytest.approx(logits.double().std(unbiased=False).item(), rel=1e-9)
    assert acc == correct / 50


def test_linear5_trains_an_epoch_on_mnist(tmp_path):
    config = RunConfig(name="l5", arch="linear5-relu", init="idinit", dataset="mnist", lr=0.1, batch_size=64,
                       epochs=1, train_limit=1024, eval_limit=500, target_accuracy=0.5)
    summary = train_run(config, tmp_path / "run", log=lambda m: None)
    (record,) = read_records(tmp_path / "run" / "records.jsonl")
    assert summary["finished"] and "test1k_acc" not in record
    assert record["eval_acc"] > 0.5  # 16 steps of SGD on MNIST: far above chance (0.1)
    assert 0 < record["eval_output_std"] < 100


@pytest.mark.parametrize("arch, init", [("allconv", "idinit"), ("res112", "fixup"), ("res112", "idinit")])
def test_cifar_networks_train_an_epoch(tmp_path, arch, init):
    config = RunConfig(name="t", arch=arch, init=init, lr=0.05, batch_size=8, epochs=1, eval_batch_size=16)
    data = fake_data(n_train=16, n_eval=16, size=16, test1k=False)
    summary = train_run(config, tmp_path / "run", data=data, log=lambda m: None)
    (record,) = read_records(tmp_path / "run" / "records.jsonl")
    assert summary["finished"] and math.isfinite(record["train_loss"])
    assert record["eval_output_std"] is not None and record["eval_output_std"] >= 0


def test_grids_match_the_paper_settings():
    linear5 = get_experiment("linear5")
    assert sorted(c.name for c in linear5.configs) == sorted(
        f"{i}-{a}" for i in ("default", "idinit", "kaiming") for a in ("tanh", "relu"))
    for c in linear5.configs:
        assert (c.dataset, c.optimizer, c.lr, c.momentum, c.weight_decay, c.epochs, c.warmup_epochs) == \
            ("mnist", "sgd", 0.1, 0.9, 5e-4, 30, 0)
    assert linear5.paper["idinit-relu"]["acc"] == "98.40" and "kaiming-tanh" not in linear5.paper
    allconv = get_experiment("allconv")
    assert len(allconv.configs) == 21
    assert sorted({c.warmup_epochs for c in allconv.configs}) == [0, 10, 20, 30, 40, 50, 60]
    assert {c.epochs for c in allconv.configs} == {300} and {c.lr for c in allconv.configs} == {0.1}
    channel = [c for c in allconv.configs if c.name.startswith("idinit-channel")]
    assert len(channel) == 7 and all(c.init_options == {"conv": "channel"} for c in channel)
    short = get_experiment("allconv-short")
    assert {c.epochs for c in short.configs} == {30} and sorted({c.warmup_epochs for c in short.configs}) == list(range(7))
    assert "REDUCED" in short.notes[0]
    res112 = get_experiment("res112")
    assert [c.init for c in res112.configs] == ["kaiming", "fixup", "idinit"]
    for c in res112.configs:
        assert (c.arch, c.shortcut, c.lr, c.weight_decay, c.batch_size, c.epochs, c.warmup_epochs) == \
            ("res112", "B", 0.2, 1e-8, 768, 35, 0)
    assert {c.warmup_epochs for c in get_experiment("res112-warmup5").configs} == {5}
    assert {c.shortcut for c in get_experiment("res112-optionA").configs} == {"A"}
    assert {c.shortcut for c in get_experiment("res112-A-centred").configs} == {"A-centred"}
    assert {c.arch for c in get_experiment("res112-linear-conv2").configs} == {"res112-linear-conv2"}


def test_curves_and_first_epochs_table(tmp_path):
    data = fake_data(n_train=64, n_eval=32)
    for name in ("a", "b"):
        config = RunConfig(name=name, arch="resnet8", init="fixup", batch_size=32, epochs=2, lr=0.05)
        train_run(config, tmp_path / name / "seed0", data=data, log=lambda m: None)
    # a diverged run: its last record has no finite loss
    records = read_records(tmp_path / "b" / "seed0" / "records.jsonl")
    records[-1]["train_loss"] = None
    (tmp_path / "b" / "seed0" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    png = plot_curves(tmp_path, tmp_path / "curves.png")
    assert png.stat().st_size > 10_000
    table = first_epochs_table(tmp_path, first=3).splitlines()
    assert len(table) == 4 and table[2].startswith("| a/seed0 |") and table[2].count("/") >= 3
    assert "diverged" in table[3] and table[3].endswith("| — |")


def test_workers_spread_over_gpus_only_for_bare_cuda(monkeypatch):
    assert worker_devices("cpu", 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert worker_devices("cuda", 6) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_devices("cuda", 2) == ["cuda", "cuda"]


def test_gpu_script_is_valid_bash():
    script = ROOT / "scripts" / "gpu_beyond_residual.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for exp in ("res112", "res112-warmup5", "res112-optionA", "allconv-short", "allconv"):
        assert exp in text
        get_experiment(exp)  # every experiment the script accepts exists
