"""Fixtures shared by the lab's test files: learnable fake CIFAR-like data, a tiny run, a fake
official CIFAR-10 folder, and the scripts/ of the repository loaded as modules."""
import importlib.util
import pathlib
import pickle

import numpy as np

from idinit.lab.data import CIFAR10


SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_data(n_train=192, n_eval=96, size=16, seed=0, test1k=True):
    """Learnable fake images: the class sets the balance of the red and green channels."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, size, size, 3))
        x[..., 0] += (80 + 15 * y)[:, None, None]
        x[..., 1] += (215 - 15 * y)[:, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    xt, yt = make(n_train)
    xe, ye = make(n_eval)
    x1, y1 = make(64) if test1k else (None, None)
    return CIFAR10(xt, yt, xe, ye, x1, y1, "shared")


# A tiny run of the training loop: Fixup ResNet-8 (no BN), 3 steps per epoch on fake_data().
TINY = dict(arch="resnet8", init="fixup", batch_size=64, epochs=3, lr=0.05, eval_batch_size=128)


def write_fake_official(folder, n_per_batch=6, seed=0):
    """A cifar-10-batches-py folder in the real format: pickled dicts, data (N, 3072) as R|G|B planes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        nhwc = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        planes = nhwc.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": planes, b"labels": labels, b"batch_label": name.encode()}, handle)
        batches[name] = (nhwc, labels)
    return batches


def write_fake_mnist(folder, train_labels=None):
    """mnist-train.npz / mnist-test.npz in the real shapes (60k / 10k images of 28x28): the digit
    sets the brightness of the top-left 4x4 patch, so a linear model learns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 60000), ("test", 10000)):
        y = rng.integers(0, 10, count)
        if split == "train" and train_labels is not None:
            y[:len(train_labels)] = train_labels
        x = np.zeros((count, 28, 28), np.uint8)
        x[:, :4, :4] = (25 * (y % 10))[:, None, None]
        np.savez(folder / f"mnist-{split}.npz", x=x, y=y)


def write_fake_shared_cifar(folder, chunks=(3, 4)):
    """The shared protocol's files (xz chunks of 10,000 zero images, labels, test1k) for ``chunks``."""
    import lzma

    folder.mkdir(parents=True, exist_ok=True)
    raw = lzma.compress(bytes(10000 * 32 * 32 * 3), preset=0)
    for c in chunks:
        (folder / f"cifar10-train-{c}.u8.xz").write_bytes(raw)
    rng = np.random.default_rng(0)
    np.savez(folder / "cifar10-train-labels.npz", y=rng.integers(0, 10, 50000))
    np.savez(folder / "cifar10-test1k-lossless.npz", x=np.zeros((1000, 32, 32, 3), np.uint8),
             y=rng.integers(0, 10, 1000))
