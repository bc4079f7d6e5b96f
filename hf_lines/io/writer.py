"""Sharded safetensors written tensor by tensor.

``safetensors.save_file`` needs a whole shard in memory; here the header is computed
from the known shapes first and each tensor's bytes follow as soon as it is ready, so
memory is bounded by one tensor. Bytes go to disk through ``FileSink`` (direct I/O where
the filesystem allows it, see ``file_sink``). The shard plan and the index file come from
huggingface_hub's splitter, so the layout is exactly what ``from_pretrained`` expects.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch
from huggingface_hub.serialization import split_state_dict_into_shards_factory

from hf_lines.errors import OutputWriteError
from hf_lines.io.file_sink import ALIGN, FileSink, Staging, WriteMode
from hf_lines.io.checkpoint import SAFETENSORS_DTYPES, TensorInfo

_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
SAFE_PATTERN = "model{suffix}.safetensors"


def aligned_order(names: list[str], infos: dict[str, TensorInfo]) -> list[str]:
    """The names of one shard in file order: largest itemsize first, then in the order of ``infos``.

    Every tensor then starts at a multiple of its itemsize (itemsizes are powers of two and
    the data section starts 8-byte aligned), so a reader can map it and hand the pointer to
    typed code. safetensors' serializer aligns a file the same way: ``prepare`` in its
    ``tensor.rs`` sorts by dtype, descending in an enum listed by increasing alignment
    (U64 > I64 > F64 > F32 > U32 > I32 > BF16 > F16 > ... > U8 > BOOL), then by name.
    Here dtypes of one itemsize share a group and keep the order given, not the name
    order: that is the order the engine streams in, and a shard of one dtype is laid out
    exactly as before.
    """
    position = {n: i for i, n in enumerate(infos)}
    return sorted(names, key=lambda n: (-infos[n].dtype.itemsize, position[n]))


class ShardedWriter:
    """Writes tensors in ``order`` into shards of at most ``max_shard_size`` bytes."""

    def __init__(
        self,
        folder: str | Path,
        infos: dict[str, TensorInfo],
        max_shard_size: int | str = "5GB",
        metadata: dict[str, str] | None = None,
        write_mode: WriteMode = "auto",
    ):
        self.folder = Path(folder)
        self.write_mode = write_mode
        split = split_state_dict_into_shards_factory(
            infos,
            get_storage_size=lambda info: info.nbytes,
            get_storage_id=lambda info: None,
            filename_pattern=SAFE_PATTERN,
            max_shard_size=max_shard_size,
        )
        self._split = split
        self._infos = infos
        self._metadata = {"format": "pt", **(metadata or {})}
        # Output order: shard by shard; inside a shard, see ``aligned_order``.
        self.shards: list[tuple[str, list[str]]] = [
            (fname, aligned_order(names, infos)) for fname, names in split.filename_to_tensors.items()
        ]
        self.order: list[str] = [n for _, names in self.shards for n in names]
        self._next = 0
        self._file: FileSink | None = None
        self._staging: Staging | None = None
        self._shard = -1
        self._left_in_shard = 0

    def _header(self, names: list[str]) -> bytes:
        header: dict[str, object] = {"__metadata__": self._metadata}
        offset = 0
        for n in names:
            info = self._infos[n]
            header[n] = {"dtype": _DTYPE_NAMES[info.dtype], "shape": list(info.shape), "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-(len(raw) + 8) % 8)  # data starts 8-byte aligned, as safetensors writes it

    def phases(self) -> dict[str, int]:
        """Tensor name -> its file offset modulo ``ALIGN``.

        An output buffer that starts at that phase (``OutputBuffers(phases=...)``) is written
        to disk from its own memory, without a copy (see ``FileSink.write``).
        """
        out = {}
        for _, names in self.shards:
            offset = 8 + len(self._header(names))
            for n in names:
                out[n] = offset % ALIGN
                offset += self._infos[n].nbytes
        return out

    def _open_next_shard(self) -> None:
        self._shard += 1
        fname, names = self.shards[self._shard]
        raw = self._header(names)
        if self._staging is None and self.write_mode != "buffered":
            self._staging = Staging()
        self._file = FileSink(self.folder / fname, self.write_mode, self._staging)
        self._file.write(len(raw).to_bytes(8, "little"))
        self._file.write(raw)
        self._left_in_shard = len(names)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor of ``order``; shape and dtype must match the plan."""
        expected = self.order[self._next]
        if name != expected:
            raise RuntimeError(f"writer expected tensor {expected!r} next, got {name!r}")
        info = self._infos[name]
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise RuntimeError(
                f"tensor {name!r}: planned {info.shape} {info.dtype}, got {tuple(tensor.shape)} {tensor.dtype}"
            )
        with self._disk():
            if self._left_in_shard == 0:
                self._open_next_shard()
            assert self._file is not None
            if tensor.numel():
                data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
                self._file.write(memoryview(data))
            self._next += 1
            self._left_in_shard -= 1
            if self._left_in_shard == 0:
                self._file.close()
                self._file = None

    def close(self) -> None:
        """Finish: check every tensor came, write the index when sharded."""
        with self._disk():
            if self._file is not None:
                self._file.close()
                self._file = None
        self._release_staging()
        if self._next != len(self.order):
            raise RuntimeError(f"writer closed after {self._next} of {len(self.order)} tensors")
        if self._split.is_sharded:
            index = {"metadata": {**self._split.metadata, "total_size": sum(i.nbytes for i in self._infos.values())},
                     "weight_map": self._split.tensor_to_filename}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def _disk(self) -> Iterator[None]:
        """OS errors of the output files, as an error that names the file and says what to do."""
        try:
            yield
        except OSError as e:
            where = e.filename or (self._file.path if self._file is not None else self.folder)
            raise OutputWriteError(
                f"writing {where} failed: {e.strerror or e}; free space there or choose another output "
                "folder (the partial output is removed, inputs are untouched)"
            ) from e

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None
        self._release_staging()

    def _release_staging(self) -> None:
        if self._staging is not None:
            self._staging.close()
            self._staging = None
