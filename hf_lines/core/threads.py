"""torch's intra-op thread count for the length of a run, shared safely by runs in threads of one process.

A worker pool already computes several tensors at once, and torch's own threads on top
oversubscribe the cores (6x slower measured on 2 cores); LoRA factors are so small that
thread start-up costs more than the work. But ``torch.set_num_threads`` is process-wide:
two merges in threads that each set and restore it would undo each other. Here the first
run in sets it and the last one out restores what it was before any of them.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

import torch

_lock = threading.Lock()
_users = 0
_before = 0


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (at least 1); restored when no run needs it."""
    global _users, _before
    with _lock:
        if _users == 0:
            _before = torch.get_num_threads()
        _users += 1
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_before)


def per_worker(workers: int) -> int:
    """Intra-op threads that leave each of ``workers`` pool threads its share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))
