"""CIFAR-10 as uint8 NHWC arrays, under one of two protocols.

``"shared"`` (default): the offline chunks in ``shared/data``. Only 1,000 official test images
exist there losslessly, so training uses ``data_batch_1..4`` (40,000 images, chunks 0-3) and the
evaluation set is ``data_batch_5`` (10,000, chunk 4); the exact official test images 0-999 come
along as a second evaluation set (``x_test1k``).

``"official"``: the standard ``cifar-10-batches-py`` folder a user downloads (the pickles
``data_batch_1..5`` and ``test_batch``): 50,000 train, 10,000 official test; ``x_test1k`` is None.
"""
from __future__ import annotations

import lzma
import os
import pathlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .locate import check_labels, data_root, read_npz

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHARED_TRAIN_CHUNKS = (0, 1, 2, 3)
SHARED_EVAL_CHUNK = 4
CHUNK = 10000


class CIFAR10(NamedTuple):
    """Images are uint8 ``(N, 32, 32, 3)`` RGB, labels int64 ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    x_test1k: np.ndarray | None
    y_test1k: np.ndarray | None
    protocol: str


def _read_chunk(file: pathlib.Path) -> np.ndarray:
    # lzma releases the GIL while decoding, so chunks decode in parallel threads.
    try:
        with lzma.open(file) as handle:
            raw = handle.read()
    except (lzma.LZMAError, EOFError, OSError) as err:
        raise ValueError(f"{file}: not a readable .xz chunk ({type(err).__name__}: {err})") from err
    if len(raw) != CHUNK * 32 * 32 * 3:
        raise ValueError(f"{file}: decoded {len(raw)} bytes, expected {CHUNK * 32 * 32 * 3}")
    return np.frombuffer(raw, np.uint8).reshape(CHUNK, 32, 32, 3)


def _load_shared(folder: pathlib.Path, train_chunks) -> CIFAR10:
    train_chunks = tuple(SHARED_TRAIN_CHUNKS if train_chunks is None else train_chunks)
    bad = [c for c in train_chunks if c not in SHARED_TRAIN_CHUNKS]
    if bad or not train_chunks:
        raise ValueError(f"train_chunks must be a non-empty subset of {SHARED_TRAIN_CHUNKS} "
                         f"(chunk {SHARED_EVAL_CHUNK} is the evaluation set), got {train_chunks}")
    files = [folder / f"cifar10-train-{c}.u8.xz" for c in (*train_chunks, SHARED_EVAL_CHUNK)]
    needed = files + [folder / "cifar10-train-labels.npz", folder / "cifar10-test1k-lossless.npz"]
    missing = [str(f.name) for f in needed if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 (shared protocol) files missing from {str(folder)!r}: {missing}")
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        chunks = list(pool.map(_read_chunk, files))
    (labels,) = read_npz(folder / "cifar10-train-labels.npz", "y")
    labels = check_labels(labels, len(CLASSES), folder / "cifar10-train-labels.npz")
    x1k, y1k = read_npz(folder / "cifar10-test1k-lossless.npz", "x", "y")
    y1k = check_labels(y1k, len(CLASSES), folder / "cifar10-test1k-lossless.npz")
    if labels.shape != (5 * CHUNK,):
        raise ValueError(f"cifar10-train-labels.npz: expected 50000 labels, got shape {labels.shape}")
    y_train = np.concatenate([labels[c * CHUNK:(c + 1) * CHUNK] for c in train_chunks])
    y_eval = labels[SHARED_EVAL_CHUNK * CHUNK:]
    x_train = chunks[0] if len(chunks) == 2 else np.concatenate(chunks[:-1])
    return CIFAR10(x_train, y_train, chunks[-1], y_eval, x1k, y1k, "shared")


# What the official pickles hold: a dict of bytes keys, a list of int labels, a list of bytes file
# names and one uint8 numpy array. Rebuilding the array needs these callables of numpy (numpy 1.x
# and 2.x spell the module differently; protocol 5 uses _frombuffer) and, for protocol-2 pickles
# written by Python 3, _codecs.encode for bytes. Every other global is refused.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only the plain data and numpy arrays of a CIFAR-10 batch: nothing
    from a data file is ever executed (a pickle may name any callable, e.g. ``os.system``)."""

    def __init__(self, handle, file: pathlib.Path):
        super().__init__(handle, encoding="bytes")
        self.file = file

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"{self.file}: refused to unpickle {module}.{name}; a CIFAR-10 batch "
                                         "holds only a dict, lists, bytes, ints and a numpy array")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self.file}: refused a persistent id; not a CIFAR-10 batch")


def _read_pickle_batch(file: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as handle:
            batch = _BatchUnpickler(handle, file).load()
    except pickle.UnpicklingError as err:
        raise ValueError(str(err) if str(file) in str(err) else f"{file}: not a CIFAR-10 batch ({err})") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{file}: not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{file}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    data, labels = batch[b"data"], batch[b"labels"]
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise ValueError(f"{file}: expected data (N, 3072) with N labels, got data {data.shape}, "
                         f"{len(labels)} labels")
    labels = check_labels(np.asarray(labels), len(CLASSES), file)
    # The pickles store each image as 3 planes (R, G, B) of 32x32: CHW -> HWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _load_official(folder: pathlib.Path) -> CIFAR10:
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 (official protocol) files missing from {str(folder)!r} "
                                f"(expected a cifar-10-batches-py folder): {missing}")
    parts = [_read_pickle_batch(folder / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return CIFAR10(x_train, y_train, parts[5][0], parts[5][1], None, None, "official")


def load_cifar10(root: str | os.PathLike | None = None, protocol: str = "shared",
                 train_chunks=None) -> CIFAR10:
    """Load CIFAR-10 as uint8 NHWC arrays; see the module docstring for the two protocols.

    ``root`` goes through :func:`data_root` (for ``"official"`` it may be the
    ``cifar-10-batches-py`` folder itself or its parent). ``train_chunks`` (shared protocol only)
    selects a subset of the four training chunks, e.g. ``(3,)`` when only part of the data was
    staged; the default is all four. The evaluation set is always ``data_batch_5``.
    """
    folder = data_root(root)
    if protocol == "shared":
        return _load_shared(folder, train_chunks)
    if protocol == "official":
        if train_chunks is not None:
            raise ValueError("train_chunks applies only to protocol='shared'")
        return _load_official(folder)
    raise ValueError(f"protocol must be 'shared' or 'official', got {protocol!r}")
