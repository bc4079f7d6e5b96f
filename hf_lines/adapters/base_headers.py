"""The base of an adapter-out run, read from headers only: config, tensor names and shapes.

Scaling an adapter touches only the adapter's own tensors, plus the base tensors of
whole saved modules (``modules_to_save``, saved embedding copies). A local base is a
``Checkpoint`` (headers read, tensors memory-mapped on demand); a Hub base is read from
its safetensors headers by range request, and a shard is downloaded only when one of
its tensors is asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hf_lines.errors import CheckpointError
from hf_lines.redact import scrub
from hf_lines.io import Checkpoint, ModelRef, resolve
from hf_lines.io.resolve import read_config
from hf_lines.io.checkpoint import SAFETENSORS_DTYPES, TensorIndex, TensorInfo


class HubHeaders(TensorIndex):
    """A Hub model's config and safetensors headers; tensors are fetched shard by shard on demand."""

    def __init__(self, spec: str, token: str | bool | None = None):
        from huggingface_hub import HfApi

        self.ref = ModelRef.parse(spec)
        self.label = spec
        self.token = token
        self.path: Path = resolve(spec, token=token, weights=False)  # config and other small files
        self.config: dict[str, Any] = read_config(self.path)
        # Pin the commit that was just resolved, so headers and any shard fetched later agree.
        self.revision = self.path.name if self.path.parent.name == "snapshots" else self.ref.revision
        try:
            meta = HfApi(token=token).get_safetensors_metadata(self.ref.repo_id, revision=self.revision)
        except Exception as e:  # not chained: a server's reply may echo the token (see sources.resolve)
            raise CheckpointError(
                f"cannot read the safetensors headers of {self.ref.repo_id!r}: "
                f"{type(e).__name__}: {scrub(str(e), token)}"
            ) from None
        self._file_of = dict(meta.weight_map)
        self._infos = {
            name: TensorInfo(tuple(t.shape), SAFETENSORS_DTYPES[t.dtype])
            for f in meta.files_metadata.values()
            for name, t in f.tensors.items()
        }

    def get(self, name: str) -> torch.Tensor:
        from huggingface_hub import hf_hub_download
        from safetensors import safe_open

        if name not in self._file_of:
            raise CheckpointError(f"tensor {name!r} is not in {self.label}")
        try:
            path = hf_hub_download(self.ref.repo_id, self._file_of[name], revision=self.revision, token=self.token)
        except Exception as e:  # not chained: a server's reply may echo the token (see sources.resolve)
            raise CheckpointError(
                f"cannot download {self._file_of[name]} of {self.ref.repo_id!r}: "
                f"{type(e).__name__}: {scrub(str(e), self.token)}"
            ) from None
        with safe_open(path, framework="pt") as f:
            return f.get_tensor(name)


def open_base_headers(spec: str | Path, token: str | bool | None = None) -> Checkpoint | HubHeaders:
    """A base read from headers only: a local folder as a ``Checkpoint``, a Hub repo as ``HubHeaders``."""
    ref = ModelRef.parse(spec)
    if ref.is_hub:
        return HubHeaders(str(spec), token=token)
    return Checkpoint(resolve(spec), label=str(spec))
