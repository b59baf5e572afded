"""MNIST from the offline ``mnist-{train,test}.npz`` files (exact copies of the idx files)."""
from __future__ import annotations

import os

import numpy as np

from .locate import check_labels, data_root, read_npz


def load_mnist(root: str | os.PathLike | None = None):
    """Return ``(x_train, y_train, x_test, y_test)``: uint8 ``(60000, 28, 28)``, int64 ``(60000,)``,
    uint8 ``(10000, 28, 28)``, int64 ``(10000,)``, read from ``mnist-train.npz`` / ``mnist-test.npz``
    in :func:`data_root` ``(root)``."""
    folder = data_root(root)
    arrays = []
    for split, count in (("train", 60000), ("test", 10000)):
        file = folder / f"mnist-{split}.npz"
        if not file.is_file():
            raise FileNotFoundError(f"MNIST file {str(file)!r} not found in data folder {str(folder)!r}")
        x, y = read_npz(file, "x", "y")
        y = check_labels(y, 10, file)
        if x.shape != (count, 28, 28) or x.dtype != np.uint8 or y.shape != (count,):
            raise ValueError(f"{file}: expected uint8 x of shape {(count, 28, 28)} and y of shape "
                             f"{(count,)}, got x {x.dtype}{x.shape}, y {y.shape}")
        arrays += [x, y]
    return tuple(arrays)
