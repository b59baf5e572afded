"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is fastest here, and immune to oversubscribed CI cores
    (two threads ran tiny CPU steps ~20x slower than one on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
