"""The machine a result is measured on, how many threads the lab's CPU work uses, and worker
processes that end with their parent."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import socket
import sys
import threading
import time

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


def die_with_parent() -> None:
    """Make this process end when its parent does (a worker of ``idinit run --workers N`` must not
    go on training, and holding its run folder's lock, after the grid that started it is killed).

    On Linux the kernel sends SIGTERM at the parent's death (``prctl(PR_SET_PDEATHSIG)``); if the
    parent already died before that call, the process exits now. Elsewhere a daemon thread polls
    the parent's pid once a second."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
