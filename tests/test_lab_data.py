"""Data locator, loaders (on a tiny fake cifar-10-batches-py folder) and the device-resident loader."""
import numpy as np
import pytest
import torch

from idinit.lab.data import DeviceLoader, data_root, load_cifar10, load_mnist
from lab_fixtures import write_fake_official


def test_official_protocol_reads_pickles_as_nhwc(tmp_path):
    batches = write_fake_official(tmp_path / "cifar-10-batches-py")
    # Both the folder itself and its parent are accepted.
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_cifar10(root, protocol="official")
        assert data.protocol == "official" and data.x_test1k is None
        assert data.x_train.shape == (30, 32, 32, 3) and data.x_train.dtype == np.uint8
        np.testing.assert_array_equal(data.x_train[6:12], batches["data_batch_2"][0])
        np.testing.assert_array_equal(data.y_train[6:12], batches["data_batch_2"][1])
        np.testing.assert_array_equal(data.x_eval, batches["test_batch"][0])
        assert data.y_eval.dtype == np.int64


def test_official_protocol_names_missing_files(tmp_path):
    write_fake_official(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path, protocol="official")


def test_bad_protocol_and_chunks_are_named():
    with pytest.raises(ValueError, match="protocol"):
        load_cifar10(protocol="imagenet")
    with pytest.raises(ValueError, match="train_chunks"):
        load_cifar10(train_chunks=(4,))


def test_data_root_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    monkeypatch.setenv("IDINIT_DATA", str(env))
    assert data_root(explicit) == explicit.resolve()
    assert data_root() == env.resolve()
    with pytest.raises(FileNotFoundError, match="given explicitly"):
        data_root(tmp_path / "nope")
    monkeypatch.setenv("IDINIT_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="IDINIT_DATA"):
        data_root()
    # Upward search from the current directory finds <ancestor>/shared/data.
    monkeypatch.delenv("IDINIT_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert data_root() == (tmp_path / "shared" / "data").resolve()


def test_shared_data_is_found_and_mnist_loads():
    root = data_root()
    assert (root / "mnist-train.npz").is_file()
    x_train, y_train, x_test, y_test = load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_test.shape == (10000,) and y_test.dtype == np.int64 and set(np.unique(y_test)) == set(range(10))


def test_shared_cifar10_one_chunk():
    data = load_cifar10(train_chunks=(3,))
    assert data.x_train.shape == (10000, 32, 32, 3) and data.x_eval.shape == (10000, 32, 32, 3)
    assert data.x_test1k.shape == (1000, 32, 32, 3) and data.y_test1k.shape == (1000,)
    # Classes are roughly balanced in every chunk (about 1000 each).
    counts = np.bincount(data.y_eval, minlength=10)
    assert counts.min() > 900 and counts.max() < 1100


def _identity_loader(n=40, batch=8, **kw):
    # Random images with label = index, so every batch image can be traced back to its source.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n)
    return images, labels, DeviceLoader(images, labels, batch, mean=(0, 0, 0), std=(1 / 255,) * 3, **kw)


def test_train_batches_are_crops_or_flipped_crops_of_their_source():
    images, labels, loader = _identity_loader(seed=3)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    seen, shifts, flips = [], set(), 0
    for x, y in loader.epoch(5):
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        for img, label in zip(x.permute(0, 2, 3, 1).round().to(torch.uint8).numpy(), y.tolist()):
            seen.append(label)
            matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                       if np.array_equal(img, (padded[label, dy:dy + 32, dx:dx + 32][:, ::-1] if f
                                               else padded[label, dy:dy + 32, dx:dx + 32]))]
            assert matches, f"batch image of label {label} is no crop of its source"
            shifts.add(matches[0][:2])
            flips += matches[0][2]
    assert sorted(seen) == list(range(40))  # one epoch: each image once
    assert len(shifts) > 10 and 5 < flips < 35


def test_epoch_order_depends_on_seed_and_epoch_only():
    _, _, a = _identity_loader(seed=1)
    _, _, b = _identity_loader(seed=1)
    _, _, c = _identity_loader(seed=2)
    ya = torch.cat([y for _, y in a.epoch(4)])
    assert torch.equal(ya, torch.cat([y for _, y in b.epoch(4)]))
    assert not torch.equal(ya, torch.cat([y for _, y in a.epoch(5)]))
    assert not torch.equal(ya, torch.cat([y for _, y in c.epoch(4)]))


def test_eval_loader_keeps_order_and_every_image():
    images, labels = np.full((10, 32, 32, 3), 255, np.uint8), np.arange(10)
    loader = DeviceLoader(images, labels, 4, train=False, channels_last=True)
    batches = list(loader.epoch())
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    x = batches[0][0]
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (1.0 - 0.4914) / 0.2470
    assert abs(x[0, 0, 5, 5].item() - expected) < 1e-4


def test_loader_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(np.zeros((4, 32, 32, 3), np.float32), np.zeros(4), 2)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3), 2)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), 8)
