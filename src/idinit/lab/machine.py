"""The machine a result is measured on, and how many threads the lab's CPU work uses."""
from __future__ import annotations

import contextlib
import os
import platform
import socket

import torch


def machine_description(device) -> dict:
    """Where a result was measured: host, CPU count, platform, python and torch versions, device
    (and its name for CUDA)."""
    info = {"host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_line(info: dict) -> str:
    """:func:`machine_description` in one line, e.g. for a report."""
    name = info.get("device_name") or f"{info['cpu_count']}-core CPU"
    return f"{name}, torch {info['torch']}, python {info['python']}, host {info['host']}"


@contextlib.contextmanager
def torch_threads(count: int):
    """Run a block with ``count`` intra-op threads, then restore the previous setting.

    Tiny problems (10x10 matmuls, 8x8 images) run many times faster on one thread than on several,
    and far faster still when other processes share the cores (two threads ran tiny CPU steps ~20x
    slower than one on a busy 2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
