"""Find the folder that holds the offline datasets, and read its arrays safely.

Order of trust: an explicit path, then ``$IDINIT_DATA``, then a ``shared/data`` folder found by
walking upward from the current directory and from this package's location (the project keeps its
datasets in ``../shared/data`` beside the checkout). Nothing is ever downloaded.
"""
from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

ENV_VAR = "IDINIT_DATA"


def _upward_candidates(start: pathlib.Path) -> list[pathlib.Path]:
    start = start.resolve()
    return [folder / "shared" / "data" for folder in (start, *start.parents)]


def data_root(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the dataset folder as an absolute :class:`pathlib.Path`.

    ``path`` (if given) must exist; it wins. Otherwise ``$IDINIT_DATA`` (if set) must exist; it
    wins. Otherwise the first existing ``shared/data`` folder upward from the current directory,
    then upward from this file. Raises ``FileNotFoundError`` naming every place tried.
    """
    if path is not None:
        root = pathlib.Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {str(root)!r} (given explicitly) does not exist")
        return root.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        root = pathlib.Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {env!r} (from ${ENV_VAR}) does not exist")
        return root.resolve()
    tried: list[pathlib.Path] = []
    for start in (pathlib.Path.cwd(), pathlib.Path(__file__).parent):
        for candidate in _upward_candidates(start):
            if candidate in tried:
                continue
            tried.append(candidate)
            if candidate.is_dir():
                return candidate
    raise FileNotFoundError(
        "no dataset folder found: no explicit path, $" + ENV_VAR + " is not set, and none of these exist: "
        + ", ".join(str(t) for t in tried)
    )


def read_npz(file: pathlib.Path, *keys: str) -> list[np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file, without unpickling anything (``allow_pickle=False``);
    a damaged file, a missing key or an object array raises ``ValueError`` naming the file."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ValueError(f"no array {missing} (it holds {npz.files})")
            return [npz[k] for k in keys]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{file}: not a readable .npz of plain arrays ({type(err).__name__}: {err})") from err


def check_labels(labels: np.ndarray, classes: int, file) -> np.ndarray:
    """``labels`` as int64, refused (``ValueError`` naming ``file``) unless all are in [0, classes)."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{file}: labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise ValueError(f"{file}: {bad.size} label(s) outside [0, {classes}), e.g. {int(labels[bad[0]])} "
                         f"at index {int(bad[0])}")
    return labels.astype(np.int64)
