"""The disk's own limits, from a cold page cache, so the benchmarks' ratios can be explained.

    python benchmarks/disk_probe.py FILE [FILE ...] [--write-gb 4] [--json out.json]

FILEs are large input files (safetensors shards), at best 7 or more: each measurement reads
files no other one has read, because a virtual disk's host may cache what the guest read
(dropping the guest's page cache does not empty the host's); ``read_direct_again`` reads the
first file a second time to show whether it does. Every read starts after
``sync; echo 1 > /proc/sys/vm/drop_caches`` (if that is refused, the result says so):

- ``read_direct``: ``O_DIRECT`` reads of 16 MiB, front to back (``dd iflag=direct bs=16M``):
  the device's sequential read rate without the page cache or readahead in the way;
- ``read_buffered``: plain ``read()`` of 16 MiB through the page cache (kernel readahead);
- ``read_mmap``: the file mapped and its pages touched in order, as a reader that maps each
  tensor (hf-lines' ``Checkpoint.get``) faults them in, plain and with ``MADV_SEQUENTIAL``;
- ``write_direct``: ``O_DIRECT`` writes of 16 MiB of random bytes, then ``fsync``
  (``dd oflag=direct``), into a scratch file next to the first FILE, deleted after;
- ``read_write_direct``: both at once (one reader thread, one writer thread), as a merge
  reads its inputs while it writes its output on the same disk.

Plus the block queue settings (readahead, scheduler, largest request) of the device.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import threading
import time
from pathlib import Path

BLOCK = 16 << 20


def drop_caches() -> str | None:
    """Flush dirty pages and drop the clean page cache; None when done, else why not."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return None
    except OSError as e:
        return f"drop_caches refused: {e.strerror or e}"


def block_device(path: str | os.PathLike) -> str | None:
    """Name of the block device (as in /proc/diskstats) holding ``path``, e.g. ``vda``; None if unknown."""
    st = os.stat(path)
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    try:
        real = sys_dev.resolve()
    except OSError:
        return None
    if not real.exists():
        return None
    # a partition's queue settings live on its parent disk
    return real.parent.name if (real / "partition").exists() else real.name


def queue_settings(dev: str | None) -> dict:
    out: dict = {"device": dev}
    if not dev:
        return out
    q = Path(f"/sys/block/{dev}/queue")
    for key in ("read_ahead_kb", "max_sectors_kb", "max_hw_sectors_kb", "nr_requests", "rotational",
                "logical_block_size", "scheduler"):
        try:
            out[key] = (q / key).read_text().strip()
        except OSError:
            pass
    return out


def disk_counters(dev: str | None) -> dict | None:
    """Bytes read and written by the device so far, and its busy milliseconds (/proc/diskstats)."""
    if not dev:
        return None
    try:
        for line in Path("/proc/diskstats").read_text().splitlines():
            f = line.split()
            if len(f) > 13 and f[2] == dev:
                return {"read_bytes": int(f[5]) * 512, "write_bytes": int(f[9]) * 512, "busy_ms": int(f[12]),
                        "reads": int(f[3]), "writes": int(f[7])}
    except OSError:
        pass
    return None


def _aligned(size: int) -> mmap.mmap:
    return mmap.mmap(-1, size)  # anonymous mappings are page-aligned, as O_DIRECT wants


def read_direct(path: Path, block: int = BLOCK, limit: int | None = None) -> dict:
    buf = _aligned(block)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    total, t0 = 0, time.perf_counter()
    try:
        while limit is None or total < limit:
            n = os.readv(fd, [buf])
            if n <= 0:
                break
            total += n
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    return {"bytes": total, "s": dt, "gb_s": total / dt / 1e9}


def read_buffered(path: Path, block: int = BLOCK) -> dict:
    buf = bytearray(block)
    total, t0 = 0, time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    dt = time.perf_counter() - t0
    return {"bytes": total, "s": dt, "gb_s": total / dt / 1e9}


def read_mmap(path: Path, sequential: bool) -> dict:
    """Touch one byte per page of the mapped file in order (page faults and their readahead do the reading)."""
    size = path.stat().st_size
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        if sequential and hasattr(m, "madvise"):
            m.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(m)
        page = mmap.PAGESIZE
        for start in range(0, size, BLOCK):  # a 16 MiB slice, one byte per page: 4096 faults at most
            bytes(view[start : min(start + BLOCK, size) : page])
        view.release()
        m.close()
    dt = time.perf_counter() - t0
    return {"bytes": size, "s": dt, "gb_s": size / dt / 1e9}


def write_direct(path: Path, nbytes: int, block: int = BLOCK) -> dict:
    buf = _aligned(block)
    buf.write(os.urandom(block))  # random bytes: nothing on the way can compress them
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    total, t0 = 0, time.perf_counter()
    try:
        while total < nbytes:
            total += os.pwritev(fd, [buf], total)
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    return {"bytes": total, "s": dt, "gb_s": total / dt / 1e9}


def read_write_direct(read_path: Path, write_path: Path, nbytes: int) -> dict:
    """One thread reads ``read_path`` (O_DIRECT) while another writes ``nbytes`` (O_DIRECT): each one's rate."""
    out: dict = {}

    def reader() -> None:
        out["read"] = read_direct(read_path, limit=nbytes)

    def writer() -> None:
        out["write"] = write_direct(write_path, nbytes)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    out["combined_gb_s"] = (out["read"]["bytes"] + out["write"]["bytes"]) / dt / 1e9
    return out


def probe(files: list[Path], write_gb: float = 4.0, scratch: Path | None = None) -> dict:
    """Every measurement above on ``files`` (cold cache before each read); results in GB/s (1e9 bytes)."""
    files = [Path(f) for f in files]
    dev = block_device(files[0])
    scratch = scratch or files[0].parent.parent / ".disk-probe-scratch"
    res: dict = {"queue": queue_settings(dev), "files": [str(f) for f in files], "block_bytes": BLOCK}
    note = drop_caches()
    res["cold_cache"] = note is None
    if note:
        res["note"] = note

    def cold(fn, *a, **k) -> dict:
        drop_caches()
        before = disk_counters(dev)
        r = fn(*a, **k)
        after = disk_counters(dev)
        if before and after and "bytes" in r:
            r["disk_read_bytes"] = after["read_bytes"] - before["read_bytes"]
        return r

    pick = lambda k: files[k % len(files)]  # noqa: E731  (fewer files than measurements: some are read again)
    res["read_direct"] = [cold(read_direct, f) for f in files[:3]]
    res["read_direct_again"] = [cold(read_direct, files[0])]
    res["read_buffered"] = [cold(read_buffered, pick(3))]
    res["read_mmap"] = [cold(read_mmap, pick(4), sequential=False)]
    res["read_mmap_sequential"] = [cold(read_mmap, pick(5), sequential=True)]
    nbytes = int(write_gb * 1e9) // BLOCK * BLOCK
    try:
        res["write_direct"] = [write_direct(scratch, nbytes)]
        scratch.unlink()
        drop_caches()
        res["read_write_direct"] = read_write_direct(pick(6), scratch, nbytes)
    finally:
        if scratch.exists():
            scratch.unlink()
    best = lambda key: max(r["gb_s"] for r in res[key])  # noqa: E731
    res["summary"] = {"read_direct_gb_s": best("read_direct"), "read_direct_again_gb_s": best("read_direct_again"),
                      "read_buffered_gb_s": best("read_buffered"),
                      "read_mmap_gb_s": best("read_mmap"), "read_mmap_sequential_gb_s": best("read_mmap_sequential"),
                      "write_direct_gb_s": best("write_direct"),
                      "read_while_writing_gb_s": res["read_write_direct"]["read"]["gb_s"],
                      "write_while_reading_gb_s": res["read_write_direct"]["write"]["gb_s"],
                      "read_plus_write_gb_s": res["read_write_direct"]["combined_gb_s"]}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--write-gb", type=float, default=4.0, help="bytes to write (GB) in the write tests")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = probe(args.files, args.write_gb)
    for k, v in res["summary"].items():
        print(f"{k:<28} {v:6.2f}")
    print(json.dumps(res["queue"]))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
