"""Torch intra-op thread count, set for a block of work and restored after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads. Small networks run several times faster on one
    thread when the cores are shared (OpenMP barriers stall), and a result trained on one thread
    does not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
