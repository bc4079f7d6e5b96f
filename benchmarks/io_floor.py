"""The I/O floor: read every input tensor by tensor and write one checkpoint, with no arithmetic.

    python benchmarks/io_floor.py BASE [FINETUNED ...] -o OUT [--reader pread|safe_open] [--write-mode auto|buffered]

Any merge tool has to at least read all N+1 inputs and write one output, so its wall
time over this one is the cost of everything else (arithmetic, planning, imports). The
output has the base's sharding and is the base's bytes; the config files are copied.

Readers:
- ``pread`` (default): plain positional reads of each tensor's byte range into one reused
  buffer per input; no mmap, so the RSS stays at a few tensors.
- ``safe_open``: what a safetensors-based tool does; the file is opened per tensor because
  a long-lived mmap keeps every page it touched in the RSS.

The output goes through hf-lines' own ``FileSink`` with the same write mode hf-lines uses
(``auto``: direct I/O where the filesystem allows it), so the floor is not slower than
hf-lines at the part both do alike.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
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


def copy_floor(base: str | os.PathLike, finetuned: list[str | os.PathLike], out: str | os.PathLike,
               reader: str = "pread", write_mode: str = "auto") -> dict:
    base, out = Path(base), Path(out)
    others = [Path(p) for p in finetuned]
    out.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (base / name).exists():
            shutil.copyfile(base / name, out / name)
    other_locs = [_tensor_locations(p) for p in others]
    read_bytes = written = 0
    buf = bytearray()
    scratch = bytearray()
    for fname, names in checkpoint_files(base).items():
        start, header = _header(base / fname)
        specs = [(n, header[n]["dtype"], tuple(header[n]["shape"])) for n in names]
        with StreamingSafetensorsWriter(out / fname, specs, write_mode=write_mode) as writer:
            if reader == "pread":
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
                        written += e - b
                finally:
                    os.close(fd)
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
                    written += t.numel() * t.element_size()
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
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--reader", choices=["pread", "safe_open"], default="pread")
    ap.add_argument("--write-mode", choices=["auto", "buffered"], default="auto",
                    help="auto: direct I/O where possible, as hf-lines writes (default); buffered: the page cache")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.output)
    if out.exists():
        if not args.overwrite:
            ap.error(f"{out} exists (use --overwrite)")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    stats = copy_floor(args.base, args.finetuned, out, reader=args.reader, write_mode=args.write_mode)
    dt = time.perf_counter() - t0
    gb = (stats["read_bytes"] + stats["written_bytes"]) / 1e9
    print(f"read {stats['read_bytes'] / 1e9:.2f} GB, wrote {stats['written_bytes'] / 1e9:.2f} GB "
          f"in {dt:.2f}s ({gb / dt:.2f} GB/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
