"""Turn a model reference (local folder or Hub ``repo_id[@revision]``) into a local folder."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# Everything a model folder needs besides its weights; weights are fetched in a second step.
SMALL_FILE_PATTERNS = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py", "*.md", "*.yaml", "*.yml"]


@dataclass(frozen=True)
class ModelRef:
    """Where a model came from: a local path, or a Hub id with an optional revision."""

    spec: str
    repo_id: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, spec: str | os.PathLike) -> "ModelRef":
        spec = str(spec)
        if Path(spec).exists() or spec.startswith((".", "/", "~")):
            return cls(spec)
        repo, _, rev = spec.partition("@")
        if repo.count("/") > 1 or not repo:
            raise CheckpointError(f"{spec!r} is neither an existing folder nor a Hub repo id like 'org/name[@revision]'")
        return cls(spec, repo, rev or None)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None


def resolve(spec: str | os.PathLike, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """Local folder for ``spec``; Hub repos are downloaded (safetensors preferred) into the HF cache."""
    ref = ModelRef.parse(spec)
    if not ref.is_hub:
        path = Path(ref.spec).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"{path} does not exist or is not a folder")
        return path
    from huggingface_hub import snapshot_download

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(
                snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns, token=token)
            )
        except Exception as e:
            raise CheckpointError(
                f"cannot download {ref.repo_id!r} (revision {ref.revision or 'main'}): {e}. "
                "Check the repo id and revision, your network and `huggingface-cli login` for private repos"
            ) from e

    path = fetch(SMALL_FILE_PATTERNS)
    if weights:
        path = fetch(SMALL_FILE_PATTERNS + ["*.safetensors"])
        if not any(path.glob("*.safetensors")):
            path = fetch(SMALL_FILE_PATTERNS + ["*.bin"])
    return path


def read_names_and_config(spec: str, *, token: str | bool | None = None) -> tuple[list[str], dict[str, Any]]:
    """Tensor names and config without reading any weights (Hub: safetensors headers by range request)."""
    ref = ModelRef.parse(spec)
    if ref.is_hub:
        from huggingface_hub import HfApi

        folder = resolve(spec, token=token, weights=False)
        config = _read_config(folder)
        try:
            meta = HfApi(token=token).get_safetensors_metadata(ref.repo_id, revision=ref.revision)
        except Exception as e:
            raise CheckpointError(f"cannot read the safetensors headers of {ref.repo_id!r}: {e}") from e
        return sorted(meta.weight_map), config
    from .checkpoint import Checkpoint

    ckpt = Checkpoint(resolve(spec))
    return ckpt.names(), ckpt.config


def _read_config(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.json"
    return json.loads(cfg.read_text()) if cfg.exists() else {}
