"""Reusable tensor memory for the streaming hot path.

A fresh multi-megabyte tensor is fresh pages from the kernel, and touching them costs
page faults: about 0.6 s per GB on a 2-core machine, as much as the LiNeS arithmetic
itself. Outputs and scratch space are therefore recycled between tensors.
"""
from __future__ import annotations

import queue
import threading

import torch

from hf_lines.core.scratch import view_bytes
from hf_lines.io.file_sink import ALIGN


class OutputBuffers:
    """``count`` byte buffers handed out one per tensor in flight and returned once written.

    ``take`` blocks while all are out, so a pool one larger than the tensors that may be
    in flight never deadlocks. Buffers grow to the largest tensor they have held. With
    ``phases`` (``ShardedWriter.phases()``) each tensor starts where the writer can send it
    to disk without copying it.
    """

    def __init__(self, count: int, phases: dict[str, int] | None = None):
        self._phases = phases or {}
        self._free: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(torch.empty(0, dtype=torch.uint8))
        self._lent: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def take(self, key: str, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor for ``key``; where ``phases`` names it, its address modulo ``ALIGN`` is that phase."""
        buffer = self._free.get()
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        phase = self._phases.get(key)
        room = nbytes + (ALIGN if phase is not None else 0)
        if buffer.numel() < room:
            buffer = torch.empty(room, dtype=torch.uint8)
        with self._lock:
            self._lent[key] = buffer
        start = 0 if phase is None else (phase - buffer.data_ptr()) % ALIGN
        return view_bytes(buffer[start:], shape, dtype)

    def give_back(self, key: str) -> None:
        with self._lock:
            buffer = self._lent.pop(key, None)
        if buffer is not None:
            self._free.put(buffer)
