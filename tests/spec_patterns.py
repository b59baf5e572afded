"""Reference patterns written from SPEC's formulas (float64, loops, no library code), shared by the tests that
compare the library's output to them exactly."""
import warnings

import torch

EPS = 1e-6


def idi(rows: int, cols: int) -> torch.Tensor:
    """SPEC §1 (Eq. 3), tau = 1: W[m, j] = 1 where m = j (mod cols)."""
    w = torch.zeros(rows, cols, dtype=torch.float64)
    for m in range(rows):
        w[m, m % cols] = 1.0
    return w


def idiz(rows: int, cols: int, eps: float = EPS) -> torch.Tensor:
    """SPEC §3 (Eq. 12): [eps I | -eps IDI] when rows < cols, else +eps / -eps on a cyclic shift."""
    w = torch.zeros(rows, cols, dtype=torch.float64)
    for m in range(rows):
        if cols == 1:
            w[m, 0] = eps * (-1) ** m
        elif rows < cols:
            w[m, m] = eps
            w[m, rows + m % (cols - rows)] = -eps
        else:
            w[m, m % cols] = eps
            w[m, (m + 1) % cols] = -eps
    return w


def quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its warnings silenced (planning names what it leaves to the model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
