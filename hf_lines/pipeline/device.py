"""Moving a tensor's inputs to the compute device and its result back (``--device cuda``).

The inputs are memory-mapped files, so copying them is the read itself (page faults and a
memcpy, on the CPU). On CUDA each worker thread owns a stream and two pinned staging slots of
``CHUNK_BYTES``: it copies the next chunk of the mapping into one slot while the copy engine
sends the other slot's chunk to the device (``non_blocking``), enqueues the arithmetic on
the same stream, and brings the result back the same way into ordinary host memory,
waiting on its own stream only. The pinned memory is two slots per thread, whatever the
model; on the device live the tensors in flight (their inputs, output and the method's
temporaries), never the model.

Other accelerators (mps, xpu) take plain ``.to(device)`` copies. The objects belong to
the thread that made them (``thread_transfer``) and go with it: a run's worker pool ends
with the run.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch

# Bytes per staging slot: large enough that a slot's DMA (~0.5 ms at 30 GB/s) hides behind
# the next slot's read from the page cache, small enough that 2 slots per thread stay cheap.
CHUNK_BYTES = 16 << 20


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 tensor (no copy)."""
    return t.reshape(-1).view(torch.uint8)


def runs_on_device(method: object) -> bool:
    """Whether ``method``'s torch path can compute on an accelerator.

    DARE draws its masks from seeded CPU generators (the masks must not depend on the
    device), and its code applies them where they were drawn: those methods compute on the
    CPU whatever the device asked for.
    """
    return getattr(method, "dare", None) is None


class DeviceTransfer:
    """Plain copies to ``device`` and back: for accelerators without CUDA streams."""

    def __init__(self, device: torch.device):
        self.device = device

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Run a method's torch code here: tensors it creates (thresholds, temporaries) go to the device.

        Host memory made inside must name its device ("cpu"): the default is the accelerator.
        """
        with torch.device(self.device):
            yield

    def upload(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the device."""
        return t.to(self.device)

    def download(self, t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` in host memory (into ``out``, shaped and typed like ``t``, when given), once it is final."""
        return t.cpu() if out is None else out.copy_(t)


class CudaTransfer(DeviceTransfer):
    """One thread's CUDA stream and pinned staging slots; the chunked copies of the module docstring.

    Every call must come from the thread that made the object.
    """

    def __init__(self, device: torch.device, chunk_bytes: int | None = None):
        super().__init__(device)
        self.chunk = chunk_bytes or CHUNK_BYTES
        self.stream = torch.cuda.Stream(device=device)
        self._slots: list[torch.Tensor | None] = [None, None]
        # blocking: a waiting thread sleeps instead of spinning on a core that another worker reads with
        self._done = [torch.cuda.Event(blocking=True), torch.cuda.Event(blocking=True)]
        self._turn = 0

    @contextmanager
    def computing(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(torch.cuda.stream(self.stream))
            stack.enter_context(torch.device(self.device))
            yield

    def _slot(self, n: int) -> tuple[int, torch.Tensor]:
        """The next staging slot, free for the CPU: its last copy on the stream has finished."""
        k, self._turn = self._turn, self._turn ^ 1
        self._done[k].synchronize()  # a never-recorded event returns at once
        if self._slots[k] is None:
            self._slots[k] = torch.empty(self.chunk, dtype=torch.uint8, device="cpu", pin_memory=True)
        return k, self._slots[k][:n]  # type: ignore[index]

    def upload(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cpu":
            return t.to(self.device)
        t = t.contiguous()
        with torch.cuda.stream(self.stream):  # allocated on this stream: reused only after its work
            dev = torch.empty(t.shape, dtype=t.dtype, device=self.device)
            src, dst = _as_bytes(t), _as_bytes(dev)
            for start in range(0, src.numel(), self.chunk):
                n = min(self.chunk, src.numel() - start)
                k, staged = self._slot(n)
                staged.copy_(src[start : start + n])  # the read: page faults of the mapping, on this thread
                dst[start : start + n].copy_(staged, non_blocking=True)
                self._done[k].record(self.stream)
        return dev

    def download(self, t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        t = t.contiguous()
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu") if out is None else out
        src, dst = _as_bytes(t), _as_bytes(out)
        pending: tuple[int, int, int] | None = None  # (slot, start, bytes) on its way back
        with torch.cuda.stream(self.stream):
            for start in range(0, src.numel(), self.chunk):
                n = min(self.chunk, src.numel() - start)
                k, staged = self._slot(n)
                staged.copy_(src[start : start + n], non_blocking=True)
                self._done[k].record(self.stream)
                if pending is not None:  # while this chunk crosses, the one before goes to ``out``
                    self._unstage(pending, dst)
                pending = (k, start, n)
            if pending is not None:
                self._unstage(pending, dst)
            else:  # nothing to copy (no elements): the arithmetic must still be finished
                self.stream.synchronize()
        return out

    def _unstage(self, pending: tuple[int, int, int], dst: torch.Tensor) -> None:
        k, start, n = pending
        self._done[k].synchronize()  # this stream only: the arithmetic before it is done too
        dst[start : start + n].copy_(self._slots[k][:n])  # type: ignore[index]


_local = threading.local()


def thread_transfer(device: torch.device) -> DeviceTransfer:
    """This thread's transfer to ``device``, made on first use (its stream and staging go with the thread)."""
    transfers = getattr(_local, "transfers", None)
    if transfers is None:
        transfers = _local.transfers = {}
    transfer = transfers.get(device)
    if transfer is None:
        transfer = transfers[device] = CudaTransfer(device) if device.type == "cuda" else DeviceTransfer(device)
    return transfer
