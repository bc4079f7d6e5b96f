"""Which paths a repo accepts and which files go to LFS, by the Hub's rules (plain functions, no state)."""
from __future__ import annotations

import fnmatch
from typing import Any

from .model import HubError

# The Hub refuses regular (non-LFS) files above 10 MB; preupload sends bigger ones to LFS.
REGULAR_FILE_MAX_SIZE = 10 * 1024 * 1024

# What huggingface.co puts in `.gitattributes` of a new model repo: preupload routes matching files to LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)


def matches_git_pattern(path: str, pattern: str) -> bool:
    """Enough of gitattributes/gitignore matching: bare patterns match any basename, others the whole path."""
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) or f"/{pattern}" in f"/{path}"
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in path.split("/"))
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


def wants_lfs(gitattributes: str, path: str, size: int, sample: bytes) -> bool:
    """Preupload's decision: LFS for .gitattributes matches, files over 10 MB and binary content."""
    if size == 0:
        return False
    for line in gitattributes.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:] \
                and matches_git_pattern(path, parts[0]):
            return True
    return size > REGULAR_FILE_MAX_SIZE or b"\0" in sample


def ignore_patterns(gitignore: str | None) -> list[str]:
    """The patterns of a .gitignore that exclude (negations and comments are skipped)."""
    return [line.strip() for line in (gitignore or "").splitlines()
            if line.strip() and not line.strip().startswith(("#", "!"))]


def validate_repo_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path
