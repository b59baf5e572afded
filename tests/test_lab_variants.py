"""Every model variant of the lab builds through the library (or its own init), starts as the
method says it should, and trains one step."""
import pytest
import torch

from idinit.lab.models import INITS, BasicBlock, FixupBlock, build_model
from idinit.lab.train import RunConfig, read_records, train_run
from lab_fixtures import fake_data



@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("init", INITS)
def test_variant_builds_and_trains_one_step(init, shortcut, tmp_path):
    config = RunConfig(name=f"{init}-{shortcut}", arch="resnet8", init=init, shortcut=shortcut, batch_size=32,
                       epochs=1, lr=0.05, eval_batch_size=64)
    summary = train_run(config, tmp_path, data=fake_data(n_train=32, n_eval=32), log=lambda m: None)
    records = read_records(tmp_path / "records.jsonl")
    assert len(records) == 1 and records[0]["train_loss"] is not None and summary["finished"]
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    # Same seed, same build: the one SGD step moved the weights of the layers that get gradient.
    torch.manual_seed(0)
    before = build_model("resnet8", init, shortcut).state_dict()
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert any("fc.weight" in k or "fc.bias" in k for k in moved)
    assert any("layer3" in k for k in moved), f"{init}: nothing in the last stage moved"


def _blocks(model, kind=BasicBlock):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_idinit_model_is_near_identity_at_init():
    torch.manual_seed(0)
    model = build_model("resnet20", "idinit").eval()
    x = torch.randn(4, 3, 32, 32)
    for block in _blocks(model):
        inputs = {}

        def keep_input(module, args, output, inputs=inputs):
            inputs["x"] = args[0]  # returns None: the block's output stays as it is

        handle = block.register_forward_hook(keep_input)
        model(x)
        handle.remove()
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(inputs["x"])))))
        skip = block.shortcut(inputs["x"])
        assert branch.norm() < 1e-3 * skip.norm()


def test_variant_specific_starting_points():
    torch.manual_seed(0)
    zero_gamma = build_model("resnet20", "zero_gamma")
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in _blocks(zero_gamma))
    assert all(torch.count_nonzero(b.bn1.weight) == b.bn1.weight.numel() for b in _blocks(zero_gamma))
    for init in ("rezero", "skipinit"):
        model = build_model("resnet20", init)
        assert all(b.alpha.item() == 0.0 for b in _blocks(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build_model("resnet20", "skipinit").modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build_model("resnet20", "rezero").modules())
    fixup = build_model("resnet20", "fixup")
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in _blocks(fixup, FixupBlock))
    # Kaiming (fan-out, ReLU) convs: std sqrt(2 / (c_out * 9)).
    kaiming = build_model("resnet56", "kaiming")
    w = kaiming.layer3[4].conv1.weight
    assert abs(w.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05


def test_init_options_reach_the_library():
    torch.manual_seed(0)
    channel = build_model("resnet20", "idinit", init_options={"conv": "channel", "branch_end": "zero", "loose": 0.0})
    kernel = channel.layer1[0].conv1.weight
    # Channel-maintain: only the centre tap is non-zero, and it is exactly the identity (loose off).
    assert torch.count_nonzero(kernel[:, :, 0]) == 0
    torch.testing.assert_close(kernel[:, :, 1, 1], torch.eye(16), rtol=0, atol=0)
    assert torch.count_nonzero(channel.layer1[0].conv2.weight) == 0
    with pytest.raises(ValueError, match="takes no options"):
        build_model("resnet20", "fixup", init_options={"loose": 0.0})
    with pytest.raises(ValueError, match="unknown init"):
        build_model("resnet20", "lsuv")
