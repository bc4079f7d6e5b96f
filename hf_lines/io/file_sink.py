"""Sequential output files written with direct I/O where the filesystem allows it.

A multi-gigabyte output written through the page cache costs a kernel copy into freshly
allocated cache pages; on virtual machines whose host reclaims idle guest memory (as
Firecracker's balloon and free page reporting do) that allocation dominates: 2.2 GB took
5.5-7 s of CPU here, against 0.9 s of wall time and 0.08 s of CPU with ``O_DIRECT``. Direct
writes also leave the inputs' cached pages in place and the output on disk (fsynced) when
the run ends, so a finished folder is a durable one.

Direct I/O needs block-aligned buffers, offsets and lengths. A large buffer that starts at
the file position's alignment (the engine allocates its outputs so) goes to disk from its
own memory; other bytes are copied into one of two page-aligned staging buffers, and a full
one goes to disk on a background thread while the other fills. The last block is padded and
the file is truncated to its true length. Where ``O_DIRECT`` is missing (macOS,
Windows) or refused (some network filesystems) the sink writes through the page cache
instead, as a plain file would.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

WriteMode = Literal["auto", "direct", "buffered"]
WRITE_MODES: tuple[str, ...] = ("auto", "direct", "buffered")
ALIGN = 4096  # covers the logical block size of every common disk (512 or 4096 bytes)
STAGING_BYTES = 8 << 20
_GIL_FREE_COPY = 1 << 20  # pieces this large are copied by ctypes.memmove, which releases the GIL
_ZERO_COPY = 1 << 20  # aligned pieces this large are written from their own memory


class Staging:
    """Two page-aligned buffers and one flushing thread, shared by the sinks of one writer.

    Reused across files, so their pages are touched once; one file is written at a time.
    """

    def __init__(self, size: int = STAGING_BYTES):
        self.size = max(ALIGN, size - size % ALIGN)
        self._maps = [mmap.mmap(-1, self.size) for _ in range(2)]  # anonymous mappings are page-aligned
        self.buffers = [memoryview(m) for m in self._maps]
        self.addresses = [_address(b) for b in self.buffers]
        self.pending: list[Future | None] = [None, None]
        self.flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-lines-flush")

    def wait(self, k: int) -> None:
        """Block until buffer ``k`` is free again, raising the error of its flush if it failed."""
        fut, self.pending[k] = self.pending[k], None
        if fut is not None:
            fut.result()

    def close(self) -> None:
        for k in range(2):
            try:
                self.wait(k)
            except OSError:
                pass  # already raised to the sink that wrote it
        self.flusher.shutdown(wait=True)
        for view, m in zip(self.buffers, self._maps):
            try:
                view.release()
                m.close()
            except BufferError:  # a slice still held by a traceback being raised: the GC unmaps it later
                pass


def _address(view: memoryview) -> int | None:
    """The address of a writable, contiguous buffer's first byte (None for read-only ones)."""
    if view.readonly or not view.contiguous or not view.nbytes:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class FileSink:
    """Writes one file front to back; ``mode="auto"`` uses ``O_DIRECT`` where it works."""

    def __init__(self, path: str | Path, mode: WriteMode = "auto", staging: Staging | None = None):
        if mode not in WRITE_MODES:
            raise ValueError(f"unknown write mode {mode!r}; use one of {list(WRITE_MODES)}")
        self.path = Path(path)
        self.size = 0  # bytes accepted so far
        self._fd: int | None = None
        self.direct = False
        if mode != "buffered" and hasattr(os, "O_DIRECT"):
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
                self.direct = True
            except OSError as e:
                if mode == "direct" or e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        if self._fd is None:
            if mode == "direct":
                raise OSError(errno.EOPNOTSUPP, "O_DIRECT is not available on this platform", str(self.path))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._staging = staging
        self._owns_staging = False
        if self.direct and staging is None:
            self._staging = Staging()
            self._owns_staging = True
        self._k = 0  # the staging buffer being filled
        self._filled = 0  # bytes waiting in it
        self._queued = 0  # file offset up to which bytes are written or handed to the flusher
        self._checked = False  # whether one direct write has succeeded (alignment accepted)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (any buffer of bytes).

        A large writable buffer whose address sits at the file position modulo ``ALIGN`` (see
        ``ShardedWriter.phases`` and ``OutputBuffers``) goes to disk straight from its own
        memory: only its unaligned head and tail pass through the staging buffer. It must
        not change until this call returns.
        """
        view = memoryview(data).cast("B")
        if self.direct and len(view) >= _ZERO_COPY:
            address = _address(view)
            if address is not None and address % ALIGN == self.size % ALIGN:
                self._write_in_place(view)
                return
        self._stage(view)

    def _stage(self, view: memoryview) -> None:
        self.size += len(view)
        while len(view) and self.direct:
            st = self._staging
            assert st is not None
            if self._filled == 0:
                st.wait(self._k)  # its previous flush must be done before it is overwritten
            take = min(len(view), st.size - self._filled)
            source = _address(view) if take >= _GIL_FREE_COPY else None
            if source is not None:  # a plain slice copy would hold the GIL that the compute threads need
                ctypes.memmove(st.addresses[self._k] + self._filled, source, take)
            else:
                st.buffers[self._k][self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == st.size:
                self._queue(self._filled)
        if len(view):
            self._pwrite_all(view, self._queued)
            self._queued += len(view)

    def _write_in_place(self, view: memoryview) -> None:
        head = (-self.size) % ALIGN  # bytes up to the next block boundary
        self._stage(view[:head])
        if self._filled:  # the staged bytes end on a block boundary now: send them first
            self._queue(self._filled)
        if not self.direct:  # that first direct write was refused: the page cache takes the rest
            self._stage(view[head:])
            return
        middle = (len(view) - head) // ALIGN * ALIGN
        self._first_or_pwrite(view[head : head + middle], self._queued)
        self._queued += middle
        self.size += middle
        self._stage(view[head + middle :])

    def close(self) -> None:
        """Write what is staged, set the true length, and make the file durable (direct mode)."""
        if self._fd is None:
            return
        try:
            if self._filled:
                st = self._staging
                assert st is not None
                padded = -(-self._filled // ALIGN) * ALIGN
                st.buffers[self._k][self._filled : padded] = bytes(padded - self._filled)
                self._queue(padded)
            if self._staging is not None:
                self._staging.wait(0)
                self._staging.wait(1)
            if self._queued != self.size:
                os.ftruncate(self._fd, self.size)
            if self.direct:
                os.fsync(self._fd)  # the data is on disk already; this settles the length and metadata
        finally:
            self._release()

    def abort(self) -> None:
        """Stop without finishing the file (the caller removes it)."""
        if self._staging is not None:
            for k in range(2):
                try:
                    self._staging.wait(k)
                except OSError:
                    pass
        self._release()

    def _queue(self, length: int) -> None:
        """Hand the current buffer's first ``length`` bytes to disk and switch buffers."""
        st = self._staging
        assert st is not None
        view, offset = st.buffers[self._k][:length], self._queued
        if self._checked:
            st.pending[self._k] = st.flusher.submit(self._pwrite_all, view, offset)
        else:
            self._first_or_pwrite(view, offset)
        self._queued += length
        self._filled = 0
        self._k = 1 - self._k

    def _first_or_pwrite(self, view: memoryview, offset: int) -> None:
        """A synchronous write; the first direct one falls back to the page cache if refused.

        Some filesystems accept O_DIRECT at open but not this alignment: that shows here,
        before anything runs in the background.
        """
        if self._checked:
            self._pwrite_all(view, offset)
            return
        try:
            self._pwrite_all(view, offset)
        except OSError as e:
            if e.errno != errno.EINVAL or offset:
                raise
            self._fall_back()
            self._pwrite_all(view, offset)
        self._checked = True

    def _fall_back(self) -> None:
        import fcntl

        assert self._fd is not None
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def _pwrite_all(self, view: memoryview, offset: int) -> None:
        assert self._fd is not None
        while len(view):
            try:
                n = os.pwrite(self._fd, view, offset)
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(self.path)) from e
            if n <= 0:
                raise OSError(errno.EIO, f"short write at offset {offset}", str(self.path))
            view, offset = view[n:], offset + n

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._owns_staging and self._staging is not None:
            self._staging.close()
            self._staging = None

    def __enter__(self) -> "FileSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
