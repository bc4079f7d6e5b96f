"""The I/O floor: read every input tensor by tensor and write one checkpoint, with no arithmetic.

    python benchmarks/io_floor.py BASE [FINETUNED ...] -o OUT [-o OUT2 ...] [--read-passes K]
                                  [--reader pread|safe_open] [--write-mode auto|buffered]

Any merge tool has to at least read all N+1 inputs and write one output, so its wall
time over this one is the cost of everything else (arithmetic, planning, imports). The
output has the base's sharding and is the base's bytes; the config files are copied.
Several ``-o`` write several outputs from the one read pass (a rewarded soup's floor: each
tensor read once, written to every output). ``--read-passes K`` reads every input K - 1
times more before the writing pass, for work whose math needs that many passes (auto
alpha's statistics pass: K = 2).

Readers:
- ``pread`` (default): plain positional reads of each tensor's byte range into one reused
  buffer per input; no mmap, so the RSS stays at a few tensors.
- ``safe_open``: what a safetensors-based tool does; the file is opened per tensor because
  a long-lived mmap keeps every page it touched in the RSS.
- ``mmap``: each tensor's bytes mapped only while used and their pages touched in order, as
  hf-lines' ``Checkpoint.get`` reads (page faults and kernel readahead do the reading, with
  no copy out of the page cache); the base tensor is written from its mapping.

``--overlap`` (pread only): a second thread reads the next tensor of every input while the
first writes the current one (two buffers, as hf-lines' workers read ahead of its writer), and
the read-only passes read two tensors at once; without it, reading and writing take turns in
one thread, which is slower than a tool that overlaps them.

The output goes through hf-lines' own ``FileSink`` with the same write mode hf-lines uses
(``auto``: direct I/O where the filesystem allows it), so the floor is not slower than
hf-lines at the part both do alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import shutil
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from safetensors_stream import StreamingSafetensorsWriter, checkpoint_files  # noqa: E402
from safetensors import safe_open  # noqa: E402

SMALL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


def _header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def _tensor_locations(folder: Path) -> dict[str, tuple[Path, int, int]]:
    """name -> (file, absolute byte offset, size) for a checkpoint folder."""
    out = {}
    for fname, names in checkpoint_files(folder).items():
        start, header = _header(folder / fname)
        for name in names:
            b, e = header[name]["data_offsets"]
            out[name] = (folder / fname, start + b, e - b)
    return out


def _mapped(path: Path, offset: int, size: int) -> tuple[mmap.mmap, memoryview]:
    """The file's bytes [offset, offset + size) mapped read-only (the map and a view of just those bytes)."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), offset - start + size, access=mmap.ACCESS_READ, offset=start)
    return m, memoryview(m)[offset - start:]


def _touch(path: Path, offset: int, size: int) -> None:
    """Fault in every page of a byte range, as computing on a mapped tensor does; then unmap it."""
    m, view = _mapped(path, offset, size)
    try:
        bytes(view[:: mmap.PAGESIZE])
    finally:
        view.release()
        m.close()


def _pread_tensor(locs: list[dict], name: str, bufs: list[bytearray], slot: int) -> memoryview:
    """Read tensor ``name`` of every input (the first into ``bufs[slot]``, the rest into ``bufs[-1]``); the first's view."""
    views = []
    for k, loc in enumerate(locs):
        path, off, size = loc[name]
        j = slot if k == 0 else -1
        if len(bufs[j]) < size:
            bufs[j] = bytearray(size)
        view = memoryview(bufs[j])[:size]
        fd = os.open(path, os.O_RDONLY)
        try:
            _pread_into(fd, view, off)
        finally:
            os.close(fd)
        views.append(view)
    return views[0]


def read_pass(base: Path, others: list[Path], reader: str = "pread", threads: int = 1) -> int:
    """Read every tensor of every input once, in the writing pass's order; returns the bytes read."""
    locs = [_tensor_locations(p) for p in [base, *others]]
    order = [n for names in checkpoint_files(base).values() for n in names]
    if threads > 1 and reader == "pread":
        from concurrent.futures import ThreadPoolExecutor

        local = threading.local()

        def one(name: str) -> None:
            if not hasattr(local, "bufs"):
                local.bufs = [bytearray(), bytearray()]
            _pread_tensor(locs, name, local.bufs, 0)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, order))
        return sum(loc[n][2] for loc in locs for n in order)
    read_bytes = 0
    scratch = bytearray()
    for _, names in checkpoint_files(base).items():
        for name in names:
            for loc in locs:
                path, off, size = loc[name]
                if reader == "mmap":
                    _touch(path, off, size)
                    read_bytes += size
                    continue
                if len(scratch) < size:
                    scratch = bytearray(size)
                fd = os.open(path, os.O_RDONLY)
                try:
                    _pread_into(fd, memoryview(scratch)[:size], off)
                finally:
                    os.close(fd)
                read_bytes += size
    return read_bytes


class _Tee:
    """One writer's interface over several: each tensor goes to every output."""

    def __init__(self, writers):
        self.writers = writers

    def write_bytes(self, name, view) -> None:
        for w in self.writers:
            w.write_bytes(name, view)

    def write(self, name, tensor) -> None:
        for w in self.writers:
            w.write(name, tensor)


def copy_floor(base: str | os.PathLike, finetuned: list[str | os.PathLike], out: str | os.PathLike | list,
               reader: str = "pread", write_mode: str = "auto", read_passes: int = 1, overlap: bool = False) -> dict:
    base = Path(base)
    outs = [Path(o) for o in out] if isinstance(out, (list, tuple)) else [Path(out)]
    others = [Path(p) for p in finetuned]
    read_bytes = written = 0
    for _ in range(read_passes - 1):
        read_bytes += read_pass(base, others, reader, threads=2 if overlap else 1)
    for o in outs:
        o.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            if (base / name).exists():
                shutil.copyfile(base / name, o / name)
    other_locs = [_tensor_locations(p) for p in others]
    buf = bytearray()
    scratch = bytearray()
    for fname, names in checkpoint_files(base).items():
        start, header = _header(base / fname)
        specs = [(n, header[n]["dtype"], tuple(header[n]["shape"])) for n in names]
        with contextlib.ExitStack() as stack:
            writer = _Tee([stack.enter_context(StreamingSafetensorsWriter(o / fname, specs, write_mode=write_mode))
                           for o in outs])
            if reader == "pread" and overlap:
                from concurrent.futures import ThreadPoolExecutor

                locs = [{n: (base / fname, start + header[n]["data_offsets"][0],
                             header[n]["data_offsets"][1] - header[n]["data_offsets"][0]) for n in names}, *other_locs]
                bufs = [bytearray(), bytearray(), bytearray()]  # two for the base (ping-pong), one for the rest
                with ThreadPoolExecutor(1) as pool:
                    ahead = pool.submit(_pread_tensor, locs, names[0], bufs, 0)
                    for i, name in enumerate(names):
                        view = ahead.result()
                        if i + 1 < len(names):  # the other base buffer: free, its write has returned
                            ahead = pool.submit(_pread_tensor, locs, names[i + 1], bufs, (i + 1) % 2)
                        writer.write_bytes(name, view)
                        read_bytes += sum(loc[name][2] for loc in locs)
                        written += len(view) * len(outs)
                        del view
            elif reader == "pread":
                fd = os.open(base / fname, os.O_RDONLY)
                try:
                    for name in names:
                        b, e = header[name]["data_offsets"]
                        if len(buf) < e - b:
                            buf = bytearray(e - b)
                        view = memoryview(buf)[: e - b]
                        _pread_into(fd, view, start + b)
                        for locs in other_locs:
                            path, off, size = locs[name]
                            if len(scratch) < size:
                                scratch = bytearray(size)
                            ofd = os.open(path, os.O_RDONLY)
                            try:
                                _pread_into(ofd, memoryview(scratch)[:size], off)
                            finally:
                                os.close(ofd)
                            read_bytes += size
                        writer.write_bytes(name, view)
                        read_bytes += e - b
                        written += (e - b) * len(outs)
                finally:
                    os.close(fd)
            elif reader == "mmap":
                for name in names:
                    b, e = header[name]["data_offsets"]
                    m, view = _mapped(base / fname, start + b, e - b)
                    try:
                        for locs in other_locs:
                            _touch(*locs[name])
                            read_bytes += locs[name][2]
                        writer.write_bytes(name, view)  # the write faults the base's pages in
                    finally:
                        view.release()
                        m.close()
                    read_bytes += e - b
                    written += (e - b) * len(outs)
            elif reader == "safe_open":
                for name in names:
                    for locs in other_locs:
                        path = locs[name][0]
                        with safe_open(str(path), framework="pt") as f:
                            t = f.get_tensor(name).clone()  # get_tensor is a view of the mmap; clone reads it
                        read_bytes += t.numel() * t.element_size()
                        del t
                    with safe_open(str(base / fname), framework="pt") as f:
                        t = f.get_tensor(name)
                        writer.write(name, t)  # the write itself reads the mapped pages
                    read_bytes += t.numel() * t.element_size()
                    written += t.numel() * t.element_size() * len(outs)
                    del t
            else:
                raise ValueError(f"unknown reader {reader!r}")
    return {"read_bytes": read_bytes, "written_bytes": written}


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise OSError(f"short read at offset {offset + got}")
        got += n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("finetuned", nargs="*")
    ap.add_argument("-o", "--output", required=True, action="append", help="output folder; repeat for several outputs")
    ap.add_argument("--read-passes", type=int, default=1, help="read passes over the inputs (the last one writes)")
    ap.add_argument("--overlap", action="store_true", help="pread: read the next tensor on a second thread while "
                    "the current one is written")
    ap.add_argument("--reader", choices=["pread", "mmap", "safe_open"], default="pread")
    ap.add_argument("--write-mode", choices=["auto", "buffered"], default="auto",
                    help="auto: direct I/O where possible, as hf-lines writes (default); buffered: the page cache")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    outs = [Path(o) for o in args.output]
    for out in outs:
        if out.exists():
            if not args.overwrite:
                ap.error(f"{out} exists (use --overwrite)")
            shutil.rmtree(out)
    t0 = time.perf_counter()
    stats = copy_floor(args.base, args.finetuned, outs, reader=args.reader, write_mode=args.write_mode,
                       read_passes=args.read_passes, overlap=args.overlap)
    dt = time.perf_counter() - t0
    gb = (stats["read_bytes"] + stats["written_bytes"]) / 1e9
    print(f"read {stats['read_bytes'] / 1e9:.2f} GB, wrote {stats['written_bytes'] / 1e9:.2f} GB "
          f"in {dt:.2f}s ({gb / dt:.2f} GB/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
