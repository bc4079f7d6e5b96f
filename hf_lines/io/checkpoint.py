"""A checkpoint folder read lazily, one tensor at a time.

Each read maps just that tensor's bytes of its shard (copy-on-write, so nothing can reach
the file) and the mapping goes when the tensor does, so the resident memory of a run is
bounded by the tensors alive, not by the shards touched. Shard headers are parsed once;
a read is then one ``mmap`` call, a tenth of what reopening the shard with ``safe_open``
costs, which matters for the hundreds of small norm and bias tensors of a model.
"""
from __future__ import annotations

import json
import mmap
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors import safe_open

from hf_lines.errors import CheckpointError
from hf_lines.io.confine import confined_file, read_confined_text
from hf_lines.io.resolve import ModelRef, read_config, resolve
from hf_lines.redact import scrub

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _data_offsets(path: Path, infos: dict[str, TensorInfo]) -> dict[str, int]:
    """name -> absolute offset of its bytes in a safetensors file (the header safe_open has checked)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: 8 + n + header[k]["data_offsets"][0] for k in infos}


def _map_tensor(path: Path, offset: int, info: TensorInfo) -> torch.Tensor:
    """The tensor at ``offset`` of ``path``, mapped copy-on-write: writes to it never reach the file."""
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    fd = os.open(path, os.O_RDONLY)
    try:
        mapped = mmap.mmap(fd, offset - start + info.nbytes, access=mmap.ACCESS_COPY, offset=start)
    finally:
        os.close(fd)
    at = offset - start  # the mapping is page-aligned, so the data pointer has the phase of ``at``
    if at % info.dtype.itemsize == 0:
        # the tensor holds the mapping; it is unmapped when the last view of the tensor goes
        return torch.frombuffer(mapped, dtype=info.dtype, count=info.numel, offset=at).view(info.shape)
    # A file from a writer that does not align its tensors (safetensors and ours do): typed
    # code (the kernels, BLAS) may assume aligned elements, so copy the bytes into fresh,
    # aligned memory. As bytes: no code reads a misaligned element, not even the copy.
    raw = torch.frombuffer(mapped, dtype=torch.uint8, count=info.nbytes, offset=at)
    return raw.clone().view(info.dtype).view(info.shape)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``layers.2`` before ``layers.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@runtime_checkable
class TensorSource(Protocol):
    """What every input of a run is read through: a model folder (``Checkpoint``), a LoRA adapter
    seen as the fine-tune it defines (``adapters.AdapterCheckpoint``), a Hub repo's headers
    (``adapters.base_headers.HubHeaders``). Names and infos come without reading any weight."""

    path: Path
    label: str
    config: dict[str, Any]

    def names(self) -> list[str]: ...
    def info(self, name: str) -> TensorInfo: ...
    def get(self, name: str) -> torch.Tensor: ...
    def __contains__(self, name: str) -> bool: ...


class TensorIndex:
    """Names and infos of a source from its headers (``_infos``), in natural order: ``layers.2`` before ``layers.10``."""

    _infos: dict[str, TensorInfo]

    def names(self) -> list[str]:
        return sorted(self._infos, key=natural_key)

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]


class Checkpoint(TensorIndex):
    """Weights of one local model folder: names, shapes and dtypes from headers; tensors on demand."""

    def __init__(self, path: str | Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path} is not a folder; pass a model folder or a Hub repo id")
        self._offsets: dict[str, int] = {}  # safetensors: name -> absolute byte offset of its data
        self._files, self._infos = self._scan()

    # ------------------------------------------------------------ discovery
    def _weight_files(self) -> tuple[dict[str, Path], str]:
        """name -> file from the index if there is one, else from every weight file; and the format."""
        for index_name, fmt in ((SAFE_INDEX, "safetensors"), (BIN_INDEX, "bin")):
            text = read_confined_text(self.path, index_name)
            if text is not None:
                index = self.path / index_name
                try:
                    weight_map = json.loads(text)["weight_map"]
                    if not all(isinstance(f, str) for f in weight_map.values()):
                        raise ValueError("weight_map values must be file names")
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise CheckpointError(f"{index}: not a valid index file ({e}); re-download the checkpoint") from e
                # Each shard once (an index names the same shard for many tensors), checked before any read.
                shard_of = {f: n for n, f in weight_map.items()}
                checked = {
                    f: confined_file(self.path, f, what=f"{index} entry {f!r} (tensor {n!r})")
                    for f, n in shard_of.items()
                }
                missing = sorted(str(self.path / f) for f, p in checked.items() if p is None)
                if missing:
                    raise CheckpointError(
                        f"{index} lists shard(s) that are missing: {', '.join(missing[:5])}; "
                        "re-download the checkpoint (huggingface-cli download) or fix the index"
                    )
                return {n: checked[f] for n, f in weight_map.items()}, fmt
        safes = sorted(self.path.glob("*.safetensors"))
        safes = [f for f in safes if not f.name.startswith("adapter_model")]
        if safes:
            return {f"\0{f.name}": self._checked(f) for f in safes}, "safetensors"
        bins = sorted(p for p in self.path.glob("*.bin") if p.name.startswith("pytorch_model"))
        if bins:
            return {f"\0{f.name}": self._checked(f) for f in bins}, "bin"
        raise CheckpointError(
            f"{self.path} holds no model weights (no *.safetensors, no pytorch_model*.bin); "
            "point to the folder that save_pretrained wrote"
        )

    def _checked(self, file: Path) -> Path:
        """A weight file found by name, under the rule of ``confine``; a dangling link is refused too."""
        path = confined_file(self.path, file.name)
        if path is None:
            raise CheckpointError(f"{file} is a link to a file that does not exist; re-download the checkpoint")
        return path

    def _scan(self) -> tuple[dict[str, Path], dict[str, TensorInfo]]:
        listed, self.format = self._weight_files()
        files: dict[str, Path] = {}
        infos: dict[str, TensorInfo] = {}
        for path in sorted(set(listed.values())):
            for name, info in self._read_header(path).items():
                if name in files:
                    raise CheckpointError(f"tensor {name!r} is stored twice, in {files[name]} and {path}")
                files[name] = path
                infos[name] = info
        absent = [n for n, f in listed.items() if not n.startswith("\0") and n not in files]
        if absent:
            raise CheckpointError(
                f"{self.path}: the index lists tensors that no shard holds, e.g. {absent[:3]}; "
                "a shard is truncated or from another checkpoint: re-download it"
            )
        return files, infos

    def _read_header(self, path: Path) -> dict[str, TensorInfo]:
        if self.format == "safetensors":
            try:
                # safe_open validates the header (offsets, sizes, dtypes) as safetensors defines it
                with safe_open(str(path), framework="pt") as f:
                    out = {}
                    for k in f.keys():
                        s = f.get_slice(k)
                        out[k] = TensorInfo(tuple(s.get_shape()), SAFETENSORS_DTYPES[s.get_dtype()])
            except Exception as e:  # safetensors raises its own error types per failure
                raise CheckpointError(
                    f"{path}: cannot read the safetensors header ({e}); the file is truncated or corrupt: re-download it"
                ) from e
            self._offsets.update(_data_offsets(path, out))
            return out
        state = self._load_bin(path)
        return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in state.items()}

    def _load_bin(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(
                f"{path}: cannot load with torch.load(weights_only=True) ({e}); "
                "convert it to safetensors or re-download it"
            ) from e

    # -------------------------------------------------------------- access
    def file_of(self, name: str) -> Path:
        return self._files[name]

    def get(self, name: str) -> torch.Tensor:
        """The tensor, memory-mapped; treat it as read-only."""
        path = self._files.get(name)
        if path is None:
            raise CheckpointError(f"tensor {name!r} is not in {self.label}")
        try:
            if self.format == "safetensors":
                return _map_tensor(path, self._offsets[name], self._infos[name])
            return self._bin_cache(path)[name]
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read tensor {name!r} ({e}); the shard may be truncated") from e

    def _bin_cache(self, path: Path) -> dict[str, torch.Tensor]:
        # Keep one .bin shard loaded (memory-mapped) at a time.
        if getattr(self, "_bin_path", None) != path:
            self._bin_state = self._load_bin(path)
            self._bin_path = path
        return self._bin_state

    @cached_property
    def config(self) -> dict[str, Any]:
        return read_config(self.path)


    def __repr__(self) -> str:
        return f"Checkpoint({self.label!r}, {len(self._infos)} tensors)"


def read_names_and_config(spec: str, *, token: str | bool | None = None) -> tuple[list[str], dict[str, Any]]:
    """Tensor names and config without reading any weights (Hub: safetensors headers by range request)."""
    ref = ModelRef.parse(spec)
    if ref.is_hub:
        from huggingface_hub import HfApi

        folder = resolve(spec, token=token, weights=False)
        config = read_config(folder)
        try:
            meta = HfApi(token=token).get_safetensors_metadata(ref.repo_id, revision=ref.revision)
        except Exception as e:  # not chained: the original's text may hold the token (see resolve)
            raise CheckpointError(
                f"cannot read the safetensors headers of {ref.repo_id!r}: {type(e).__name__}: {scrub(str(e), token)}"
            ) from None
        return sorted(meta.weight_map), config
    ckpt = Checkpoint(resolve(spec))
    return ckpt.names(), ckpt.config
