"""Keep outputs larger than the free disk from filling it: punch holes in the bytes already written.

    python benchmarks/reclaim.py FOLDER --stop-file F [--keep NAME ...] [--lag-mb 256] [--stats out.json]

Benchmarks only. A 3-output 7B soup writes 40 GB next to 40 GB of inputs; where the disk
holds less, this runs beside the writer (hf-lines or the I/O floor alike): every
``interval`` seconds it finds the ``*.safetensors`` files under FOLDER (staging folders
included; files are tracked by inode, so a folder moved into place is followed) and
deallocates, with ``fallocate(PUNCH_HOLE | KEEP_SIZE)``, what lies more than ``lag`` bytes
behind each file's end. The writer's bytes have reached the disk by then (direct I/O), so
the run does all of its writing; the file keeps its length, and reads of a punched range
return zeros. Kept: the header and the first ``keep_head`` bytes of the ``--keep`` tensors (all
tensors without ``--keep``), so their first rows can still be checked after the run. Each
``fallocate`` call costs milliseconds (ext4 here is mounted with ``discard``), so holes are
punched in steps of at least ``--step-mb`` and only a few tensors are kept.

It stops when the stop file appears and writes its statistics (bytes punched, time spent
in fallocate, the most output bytes allocated at once) as JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import struct
import sys
import time
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
ALIGN = 1 << 20  # punch whole MiB: block-aligned on any filesystem

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch(fd: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def keep_ranges(path: Path, size: int, keep_head: int, names: set[str] | None = None) -> list[tuple[int, int]] | None:
    """[(start, end)] to keep: the header and each tensor's first bytes; None while the header is not on disk."""
    if size < 8:
        return None
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if size < 8 + n:
            return None
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return None  # not flushed yet (zeros)
    header.pop("__metadata__", None)
    start = 8 + n
    out = [(0, start)]
    for name, v in header.items():
        if names is not None and name not in names:
            continue
        b, e = v["data_offsets"]
        out.append((start + b, start + min(e, b + keep_head)))
    return sorted(out)


def holes(lo: int, hi: int, keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Aligned ranges inside [lo, hi) that miss every kept range."""
    out, cur = [], lo
    for a, b in keep:
        if b <= cur:
            continue
        if a >= hi:
            break
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < hi:
        out.append((cur, hi))
    aligned = []
    for a, b in out:
        a, b = -(-a // ALIGN) * ALIGN, b // ALIGN * ALIGN
        if b > a:
            aligned.append((a, b))
    return aligned


class Reclaimer:
    def __init__(self, folder: Path, lag: int, keep_head: int, names: set[str] | None = None, step: int = 512 << 20):
        self.folder, self.lag, self.keep_head, self.names, self.step = Path(folder), lag, keep_head, names, step
        self.files: dict[tuple[int, int], dict] = {}
        self.stats = {"punched_bytes": 0, "calls": 0, "fallocate_s": 0.0, "max_allocated_bytes": 0, "errors": []}

    def scan(self, final: bool = False) -> None:
        allocated = 0
        for path in self.folder.rglob("*.safetensors"):
            try:
                st = path.stat()
            except OSError:
                continue  # moved or removed meanwhile
            allocated += st.st_blocks * 512
            key = (st.st_dev, st.st_ino)
            state = self.files.setdefault(key, {"done": 0, "keep": None})
            if state["keep"] is None:
                state["keep"] = keep_ranges(path, st.st_size, self.keep_head, self.names)
                if state["keep"] is None:
                    continue
            frontier = st.st_size if final else st.st_size - self.lag
            if frontier - state["done"] < (0 if final else self.step):
                continue
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError:
                continue
            try:
                for a, b in holes(state["done"], frontier, state["keep"]):
                    t0 = time.perf_counter()
                    punch(fd, a, b - a)
                    self.stats["fallocate_s"] += time.perf_counter() - t0
                    self.stats["calls"] += 1
                    self.stats["punched_bytes"] += b - a
                state["done"] = max(state["done"], frontier // ALIGN * ALIGN)
            except OSError as e:
                self.stats["errors"].append(f"{path}: {e}")
            finally:
                os.close(fd)
        self.stats["max_allocated_bytes"] = max(self.stats["max_allocated_bytes"], allocated)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--stop-file", type=Path, required=True)
    ap.add_argument("--lag-mb", type=int, default=256)
    ap.add_argument("--keep-head-kb", type=int, default=1024)
    ap.add_argument("--keep", action="append", default=None, help="tensor whose first bytes stay (repeat; default all)")
    ap.add_argument("--step-mb", type=int, default=512, help="punch once this much more is written behind the lag")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--stats", type=Path, default=None)
    args = ap.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    r = Reclaimer(args.folder, args.lag_mb << 20, args.keep_head_kb << 10,
                  set(args.keep) if args.keep else None, args.step_mb << 20)
    while not args.stop_file.exists():
        r.scan()
        time.sleep(args.interval)
    r.scan(final=True)
    if args.stats:
        args.stats.write_text(json.dumps(r.stats) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
