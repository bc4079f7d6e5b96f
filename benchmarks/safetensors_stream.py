"""Streaming safetensors I/O for the benchmarks: write a file tensor by tensor, read without RSS build-up.

The writer computes the header from known shapes first, then appends raw bytes, so
the process never holds more than one tensor. The reader opens the file per tensor
because a long-lived ``safe_open`` keeps every touched mmap page in the RSS.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import importlib.util

from safetensors import safe_open

# torch is imported lazily: the pread I/O floor must not pay for importing it. For the same
# reason hf_lines' FileSink (stdlib only) is loaded from its file, not through hf_lines/__init__.
_spec = importlib.util.spec_from_file_location(
    "hf_lines_file_sink", Path(__file__).resolve().parent.parent / "hf_lines" / "io" / "file_sink.py")
file_sink = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(file_sink)
CODE_SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def nbytes(code: str, shape: Iterable[int]) -> int:
    n = CODE_SIZES[code]
    for d in shape:
        n *= int(d)
    return n


class StreamingSafetensorsWriter:
    """Writes one .safetensors file whose tensors are declared up front and then added in order.

    Usage: ``with StreamingSafetensorsWriter(path, [(name, "BF16", shape), ...]) as w: w.write(name, t)``.
    """

    def __init__(self, path: str | os.PathLike, specs: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None, write_mode: str = "buffered"):
        self.path = Path(path)
        self._order = [name for name, _, _ in specs]
        self._sizes = {}
        header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, code, shape in specs:
            size = nbytes(code, shape)
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._sizes[name] = size
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads the header so the data starts 8-byte aligned
        self._file = file_sink.FileSink(self.path, write_mode)
        self._closed = False
        self._file.write(struct.pack("<Q", len(raw)))
        self._file.write(raw)
        self._next = 0

    def write(self, name: str, tensor) -> None:
        import torch

        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "<end>"
            raise ValueError(f"tensors must be written in declared order: got {name}, expected {expected}")
        self.write_bytes(name, tensor.contiguous().view(torch.uint8).numpy())

    def write_bytes(self, name: str, buf) -> None:
        if self._order[self._next] != name:
            raise ValueError(f"out of order: {name}")
        size = memoryview(buf).nbytes
        if size != self._sizes[name]:
            raise ValueError(f"{name}: {size} bytes, header says {self._sizes[name]}")
        self._file.write(buf)
        self._next += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()
            if self._next != len(self._order):
                raise ValueError(f"{self.path}: only {self._next}/{len(self._order)} tensors written")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            self._file.abort()


def checkpoint_files(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Shard file name -> tensor names (in file order) for a checkpoint folder, sharded or not."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            shards.setdefault(fname, []).append(name)
        return {fname: _file_order(folder / fname, names) for fname, names in sorted(shards.items())}
    single = folder / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"no model.safetensors(.index.json) in {folder}")
    return {"model.safetensors": _file_order(single, None)}


def _file_order(path: Path, names: list[str] | None) -> list[str]:
    """Tensor names sorted by their byte offset, so reads walk each file forwards."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    keys = names if names is not None else list(header)
    return sorted(keys, key=lambda k: header[k]["data_offsets"][0])


def tensor_specs(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype code, shape), read from the header only."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()}


def read_tensor(path: str | os.PathLike, name: str):
    """One tensor, copied out of a freshly opened file so no mmap stays mapped afterwards."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name).clone()


def iter_checkpoint(folder: str | os.PathLike) -> Iterator[tuple[str, str, "torch.Tensor"]]:
    """(shard file name, tensor name, tensor) over a whole checkpoint, one tensor in memory at a time."""
    folder = Path(folder)
    for fname, names in checkpoint_files(folder).items():
        for name in names:
            yield fname, name, read_tensor(folder / fname, name)
