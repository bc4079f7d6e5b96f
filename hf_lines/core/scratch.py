"""Per-thread scratch memory: a fresh multi-megabyte tensor per call costs page faults as large as the arithmetic."""
from __future__ import annotations

import threading

import torch


def view_bytes(buffer: torch.Tensor, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The first bytes of a uint8 ``buffer`` seen as a tensor of ``shape`` and ``dtype`` (no copy)."""
    n = 1
    for d in shape:
        n *= d
    return buffer[: n * dtype.itemsize].view(dtype).view(shape)


_scratch = threading.local()


def scratch_like(t: torch.Tensor) -> torch.Tensor:
    """A per-thread temporary shaped like ``t``; valid until this thread asks for the next one."""
    if t.device.type != "cpu":  # accelerator allocators already cache memory
        return torch.empty_like(t)
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < t.numel() * t.element_size():
        buffer = torch.empty(t.numel() * t.element_size(), dtype=torch.uint8)
        _scratch.buffer = buffer
    return view_bytes(buffer, t.shape, t.dtype)
