"""Turn a model reference (local folder or Hub ``repo_id[@revision]``) into a local folder."""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_lines.errors import CheckpointError
from hf_lines.redact import scrub
from hf_lines.io.confine import read_confined_text

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
        if local_reason(spec) is not None:
            return cls(spec)
        repo, _, rev = spec.partition("@")
        if not repo:
            raise CheckpointError(f"{spec!r} is neither an existing folder nor a Hub repo id like 'org/name[@revision]'")
        return cls(spec, repo, rev or None)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None


def local_reason(spec: str) -> str | None:
    """Why ``spec`` is a local path (a sentence), or None when it can be a Hub id.

    A mistyped folder must get "does not exist, did you mean ..." rather than a download error,
    so anything that cannot be a Hub id, or that starts inside an existing local folder, is local.
    """
    repo = spec.partition("@")[0]
    if Path(spec).exists():
        return f"{spec!r} exists"
    if spec.startswith((".", "/", "~")):
        return f"{spec!r} is a local path: it starts with {spec[0]!r}"
    if any(sep and sep != "/" and sep in spec for sep in (os.sep, os.altsep)):
        return f"{spec!r} is a local path: it holds the separator {os.sep!r}"
    if repo.count("/") > 1:
        return f"{spec!r} is neither an existing folder nor a Hub repo id like 'org/name[@revision]' (one '/')"
    first = repo.split("/", 1)[0]
    if "/" in repo and first and Path(first).is_dir():
        return (f"{spec!r} is read as a local path because {first}{os.sep} is a local folder; "
                "for the Hub repo of that name, run from a folder without it")
    return None


def _close_paths(path: Path) -> list[str]:
    """Existing paths a typo away: the first missing part of ``path`` swapped for close names in its folder."""
    parts = path.parts
    for i, part in enumerate(parts):
        if Path(*parts[: i + 1]).exists():
            continue
        parent = Path(*parts[:i]) if i else Path(".")
        try:
            names = [p.name for p in parent.iterdir()]
        except OSError:
            return []
        return [str(Path(parent, n, *parts[i + 1:])) for n in difflib.get_close_matches(part, names, n=3, cutoff=0.6)]
    return []


def missing_local_error(spec: str, path: Path) -> CheckpointError:
    """The error for a local-looking ``spec`` whose folder is not there: what is missing, close names, and why local."""
    if path.exists():
        return CheckpointError(f"{path} is not a folder; pass a model folder or a Hub repo id like 'org/name'")
    close = [c for c in _close_paths(path) if Path(c).is_dir()]
    hint = f"; did you mean {' or '.join(close)}?" if close else "; check the path"
    reason = local_reason(spec)
    return CheckpointError(f"{path} does not exist{hint}" + (f" ({reason})" if reason else ""))


def resolve(spec: str | os.PathLike, *, token: str | bool | None = None, weights: bool = True) -> Path:
    """Local folder for ``spec``; Hub repos are downloaded (safetensors preferred) into the HF cache."""
    ref = ModelRef.parse(spec)
    if not ref.is_hub:
        path = Path(ref.spec).expanduser()
        if not path.is_dir():
            raise missing_local_error(ref.spec, path)
        return path
    from huggingface_hub import snapshot_download

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(
                snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns, token=token)
            )
        except Exception as e:
            # A server may echo the request headers, token included, in its reply: the message is
            # scrubbed, and the original error is not chained, since a traceback would print it whole.
            raise CheckpointError(
                f"cannot download {ref.repo_id!r} (revision {ref.revision or 'main'}): "
                f"{type(e).__name__}: {scrub(str(e), token)}. There is no local folder {ref.repo_id!r} either. "
                "Check the repo id and revision, your network and `huggingface-cli login` for private repos"
            ) from None

    path = fetch(SMALL_FILE_PATTERNS)
    if weights:
        path = fetch(SMALL_FILE_PATTERNS + ["*.safetensors"])
        if not any(path.glob("*.safetensors")):
            path = fetch(SMALL_FILE_PATTERNS + ["*.bin"])
    return path


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder ({} without one), read under the rule of ``confine``."""
    text = read_confined_text(folder, "config.json")
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{folder / 'config.json'}: not valid JSON ({e}); re-download the model") from None
