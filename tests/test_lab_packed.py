"""Packed training: N runs in one grouped network give the runs train_run gives, one by one."""
import copy
import json
import shutil

import pytest
import torch

from idinit.lab.models import CifarResNet, build_model
from idinit.lab.models.packed_resnet import PackedCifarResNet
from idinit.lab.train import RunConfig, read_records, train_run
from idinit.lab.train.packed import pack_key, packable, plan_packs, train_packed
from lab_fixtures import fake_data

TINY = dict(arch="resnet8", batch_size=64, epochs=2, eval_batch_size=128)
QUIET = dict(log=lambda m: None)
EXACT = dict(QUIET, dtype=torch.float64)  # trainings compared with each other: see the pack test


@pytest.mark.parametrize("variant,dense", [(dict(shortcut="A"), 0), (dict(shortcut="B"), 0),
                                           (dict(shortcut="A", gate=True), 0), (dict(shortcut="B", norm=False, gate=True), 0),
                                           (dict(shortcut="A"), 16), (dict(shortcut="B", norm=False, gate=True), 64)])
def test_packed_forward_equals_each_member_alone(variant, dense):
    """Grouped or dense block-diagonal convolutions (``dense``), the pack computes each member."""
    torch.manual_seed(0)
    members = [CifarResNet(8, **variant).double() for _ in range(3)]
    for m in members:
        for p in m.parameters():
            p.data.normal_(0, 0.3)  # gates and heads non-zero, so every path shows in the output
    alone = [copy.deepcopy(m) for m in members]
    packed = PackedCifarResNet(members, dense_channels=dense)
    xs = [torch.randn(5, 3, 16, 16, dtype=torch.float64) for _ in members]
    for mode in ("train", "eval"):
        getattr(packed, mode)()
        out = packed(torch.cat(xs, 1))
        assert out.shape == (5, 3, 10)
        for i, m in enumerate(alone):
            getattr(m, mode)()
            torch.testing.assert_close(out[:, i], m(xs[i]), rtol=1e-12, atol=1e-12)
        if mode == "train":  # BN running statistics reach the members
            packed.sync_members(steps_taken=1)
            for mine, ref in zip(members, alone):
                for (name, b), (_, b_ref) in zip(mine.named_buffers(), ref.named_buffers()):
                    torch.testing.assert_close(b, b_ref, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("dense", [0, 16, 64])
def test_packed_gradients_reach_each_member_as_if_alone(dense):
    torch.manual_seed(1)
    members = [CifarResNet(8, shortcut="A").double() for _ in range(2)]
    alone = [copy.deepcopy(m) for m in members]
    xs = [torch.randn(4, 3, 8, 8, dtype=torch.float64) for _ in members]
    PackedCifarResNet(members, dense_channels=dense)(torch.cat(xs, 1)).square().sum().backward()
    for mine, ref, x in zip(members, alone, xs):
        ref(x).square().sum().backward()
        for (name, p), (_, p_ref) in zip(mine.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_the_dense_kernel_is_block_diagonal():
    """Member i's kernel in rows and columns i of the dense kernel, exact zeros elsewhere; a
    member's non-finite kernel stays in its own block."""
    members = [CifarResNet(8) for _ in range(3)]
    members[1].conv1.weight.data[0, 0, 0, 0] = float("inf")
    packed = PackedCifarResNet(members, dense_channels=16)
    dense = packed._block_diagonal("conv1")  # (3*16, 3*3, 3, 3)
    assert dense.shape == (48, 9, 3, 3)
    for i in range(3):
        for j in range(3):
            block = dense[16 * i:16 * (i + 1), 3 * j:3 * (j + 1)]
            if i == j:
                assert torch.equal(block, members[i].conv1.weight)
            else:
                assert torch.equal(block, torch.zeros_like(block))


@pytest.mark.parametrize("dense", [0, 64])
def test_a_channels_last_pack_stays_channels_last(dense):
    """The option-A shortcut pads each member's channels without leaving the layout (a 5-D
    pad-and-reshape made every later layer contiguous, ~2x slower convolutions on a GPU)."""
    members = [CifarResNet(20).to(memory_format=torch.channels_last) for _ in range(2)]
    packed = PackedCifarResNet(members, dense_channels=dense, memory_format=torch.channels_last)
    layouts = []
    for path in ("layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer3.2"):
        block = members[0].get_submodule(path)
        x = torch.randn(2, 2 * block.conv1.in_channels, 8, 8).contiguous(memory_format=torch.channels_last)
        out = packed._block(path, block, x)
        layouts.append(out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous())
    assert layouts == [True] * 5
    with pytest.raises(ValueError, match="dense_channels must be >= 0"):
        PackedCifarResNet(members, dense_channels=-1)


def test_a_dense_pack_trains_every_member_as_train_run_would(tmp_path):
    data = fake_data(n_train=128, n_eval=64)
    tiny = dict(TINY, epochs=1)
    configs = [RunConfig(name=f"m{s}", init="kaiming", lr=0.05, seed=s, **tiny) for s in (0, 1)]
    packed = train_packed(configs, [tmp_path / "pack" / c.name for c in configs], data=data, dense_channels=16,
                          **EXACT)
    for config, summary in zip(configs, packed):
        alone = train_run(config, tmp_path / "alone" / config.name, data=data, **EXACT)
        assert summary["final_eval_acc"] == alone["final_eval_acc"]
        assert summary["dense_channels"] == 16 and "dense_channels" not in alone
        w_pack = torch.load(tmp_path / "pack" / config.name / "checkpoint.pt", weights_only=True)["model"]
        w_alone = torch.load(tmp_path / "alone" / config.name / "checkpoint.pt", weights_only=True)["model"]
        for key in w_alone:
            torch.testing.assert_close(w_pack[key], w_alone[key], rtol=1e-9, atol=1e-11, msg=key)


def test_a_pack_trains_every_member_as_train_run_would(tmp_path):
    """In float64 the pack and the single runs differ only by summation order (grouped vs plain
    convolutions), so after two epochs they agree to ~1e-12 on any CPU and thread count; a member
    mixed up with another's data or optimiser would be off by ~1e-2."""
    data = fake_data()
    configs = [
        RunConfig(name="kaiming-sgd", init="kaiming", optimizer="sgd", lr=0.05, seed=0, mixup_alpha=1.0,
                  warmup_epochs=1, **TINY),
        RunConfig(name="idinit-adam", init="idinit", optimizer="adam", lr=1e-3, seed=1, **TINY),
        RunConfig(name="zero-sgd", init="zero_gamma", optimizer="sgd", lr=0.1, seed=2, label_smoothing=0.1, **TINY),
    ]
    packed = train_packed(configs, [tmp_path / "pack" / c.name for c in configs], data=data, **EXACT)
    for config, summary in zip(configs, packed):
        single = train_run(config, tmp_path / "single" / config.name, data=data, **EXACT)
        assert summary["finished"] and summary["packed"] == 3 and summary["epochs"] == 2
        got = read_records(tmp_path / "pack" / config.name / "records.jsonl")
        ref = read_records(tmp_path / "single" / config.name / "records.jsonl")
        assert [r["epoch"] for r in got] == [1, 2]
        for a, b in zip(got, ref):
            assert a["lr"] == b["lr"]
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
            assert a["eval_acc"] == b["eval_acc"] and a["test1k_acc"] == b["test1k_acc"]
        assert summary["final_eval_acc"] == single["final_eval_acc"]
        w_pack = torch.load(tmp_path / "pack" / config.name / "checkpoint.pt", weights_only=True)["model"]
        w_single = torch.load(tmp_path / "single" / config.name / "checkpoint.pt", weights_only=True)["model"]
        assert w_pack.keys() == w_single.keys()
        for key in w_pack:
            assert w_pack[key].dtype == w_single[key].dtype
            torch.testing.assert_close(w_pack[key], w_single[key], rtol=1e-9, atol=1e-11, msg=key)


def test_a_stopped_pack_resumes_to_the_same_end(tmp_path):
    data = fake_data()
    configs = [RunConfig(name=f"m{s}", init="kaiming", lr=0.05, seed=s, mixup_alpha=1.0, **TINY) for s in (0, 1)]
    dirs = [tmp_path / "stopped" / c.name for c in configs]
    first = train_packed(configs, dirs, data=data, stop_after_epoch=1, **EXACT)
    assert not any(s["finished"] for s in first)
    assert all(len(read_records(d / "records.jsonl")) == 1 for d in dirs)
    # resumed elsewhere, as scripts/gpu_collect.sh's resume.tgz is on the next machine: no lock, a new path
    shutil.copytree(tmp_path / "stopped", tmp_path / "moved", ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(tmp_path / "stopped")
    dirs = [tmp_path / "moved" / c.name for c in configs]
    resumed = train_packed(configs, dirs, data=data, **EXACT)
    straight = train_packed(configs, [tmp_path / "straight" / c.name for c in configs], data=data, **EXACT)
    for a, b in zip(resumed, straight):
        assert a["finished"] and a["final_eval_acc"] == b["final_eval_acc"]
    for config in configs:
        got = read_records(tmp_path / "moved" / config.name / "records.jsonl")
        ref = read_records(tmp_path / "straight" / config.name / "records.jsonl")
        assert [r["epoch"] for r in got] == [1, 2]
        assert [r["train_loss"] for r in got] == pytest.approx([r["train_loss"] for r in ref], rel=1e-12)
        w_got = torch.load(tmp_path / "moved" / config.name / "checkpoint.pt", weights_only=True)["model"]
        w_ref = torch.load(tmp_path / "straight" / config.name / "checkpoint.pt", weights_only=True)["model"]
        for key in w_ref:
            torch.testing.assert_close(w_got[key], w_ref[key], rtol=1e-12, atol=1e-14, msg=key)


def test_packs_refuse_members_that_cannot_share_a_network(tmp_path):
    base = RunConfig(name="a", init="kaiming", **TINY)
    assert pack_key(base) == pack_key(base.replace(init="idinit", optimizer="adam", seed=3, warmup_epochs=1))
    assert pack_key(base) != pack_key(base.replace(init="skipinit"))  # no BN: another architecture
    assert pack_key(base) != pack_key(base.replace(batch_size=32))
    assert not packable(base.replace(arch="allconv")) and not packable(base.replace(init="fixup"))
    assert [len(p) for p in plan_packs([base, base.replace(arch="allconv"), base.replace(seed=1)], 8)] == [2, 1]
    with pytest.raises(ValueError, match="cannot share a pack"):
        train_packed([base, base.replace(name="b", init="skipinit")], [tmp_path / "a", tmp_path / "b"], **QUIET)
    with pytest.raises(ValueError, match="cannot share a pack"):
        train_packed([base.replace(init="fixup")], [tmp_path / "f"], **QUIET)
    with pytest.raises(TypeError, match="only CifarResNet"):
        PackedCifarResNet([build_model("resnet8", "fixup")])
    with pytest.raises(ValueError, match="differs in architecture"):
        PackedCifarResNet([CifarResNet(8), CifarResNet(8, shortcut="B")])


def test_the_runner_packs_what_it_can_and_trains_the_rest_alone(tmp_path):
    """`idinit run --pack N` on real CIFAR-10 (tiny cut): packable runs share a pack, Fixup runs alone."""
    from idinit.lab.experiments.runner import run_configs

    tiny = dict(arch="resnet8", batch_size=64, epochs=1, train_limit=256, eval_limit=128, lr=0.05)
    runs = [RunConfig(name="idinit", init="idinit", **tiny), RunConfig(name="kaiming", init="kaiming", **tiny),
            RunConfig(name="fixup", init="fixup", **tiny)]
    run_configs(runs, tmp_path, pack=4, **QUIET)
    summaries = {r.name: json.loads((tmp_path / r.run_id / "summary.json").read_text()) for r in runs}
    assert all(s["finished"] and s["epochs"] == 1 for s in summaries.values())
    assert summaries["idinit"]["packed"] == summaries["kaiming"]["packed"] == 2
    assert "packed" not in summaries["fixup"]



def test_packs_go_one_per_gpu(monkeypatch):
    from idinit.lab.experiments.runner import plan_workers

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert plan_workers("cuda", 1, 8, tasks=6) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert plan_workers("cuda", 1, 8, tasks=2) == ["cuda:0", "cuda:1"]  # no idle worker
    assert plan_workers("cuda:2", 1, 8, tasks=6) == ["cuda:2"]  # a named GPU: this process
    assert len(plan_workers("cuda", 1, 1, tasks=6)) == 1  # no packs: workers only when asked
    assert plan_workers("cuda", 8, 8, tasks=3) == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert plan_workers("cuda", 1, 8, tasks=6) == ["cuda"]
    assert plan_workers("cpu", 2, 8, tasks=6) == ["cpu", "cpu"]


def test_an_mnist_resnet_pack_trains_like_its_runs_alone(tmp_path):
    """Packed members are built with the dataset's input shape (one channel for MNIST) and its
    normalisation, as the runs alone are; float64 makes the two agree to ~1e-12."""
    cifar = fake_data(n_train=128, n_eval=64, test1k=False)
    gray = cifar._replace(x_train=cifar.x_train[..., :1], x_eval=cifar.x_eval[..., :1], protocol="mnist")
    tiny = dict(TINY, dataset="mnist", epochs=1)
    configs = [RunConfig(name=f"m{s}", init="kaiming", lr=0.05, seed=s, **tiny) for s in (0, 1)]
    packed = train_packed(configs, [tmp_path / "pack" / c.name for c in configs], data=gray, **EXACT)
    for config, summary in zip(configs, packed):
        alone = train_run(config, tmp_path / "alone" / config.name, data=gray, **EXACT)
        assert summary["packed"] == 2 and summary["final_eval_acc"] == alone["final_eval_acc"]
        w_pack = torch.load(tmp_path / "pack" / config.name / "checkpoint.pt", weights_only=True)["model"]
        w_alone = torch.load(tmp_path / "alone" / config.name / "checkpoint.pt", weights_only=True)["model"]
        assert w_pack["conv1.weight"].shape[1] == 1
        for key in w_alone:
            torch.testing.assert_close(w_pack[key], w_alone[key], rtol=1e-9, atol=1e-11, msg=key)
