"""Where each parent of an output came from, found offline: its Hub id and commit, or a cheap fingerprint.

Nothing here makes a network call: a Hub parent was already downloaded into the HF cache, whose
folder layout (``models--org--name/snapshots/<commit>``) names the repo and the commit, and a local
parent is identified by a fingerprint of its weight files that reads a few kilobytes per file.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hf_lines.io.checkpoint import BIN_INDEX, SAFE_INDEX, WEIGHT_SUFFIXES

FINGERPRINT_SAMPLES = 16
FINGERPRINT_SAMPLE_BYTES = 4096
FINGERPRINT_COVERS = (
    "sha256 over each weight file's name and size, its safetensors header (tensor names, dtypes, shapes) "
    f"and {FINGERPRINT_SAMPLES} evenly spaced {FINGERPRINT_SAMPLE_BYTES // 1024} KiB samples of its bytes, "
    "plus the shard index; it tells checkpoints apart cheaply but is not a hash of every byte"
)
# The license fields of a card that travel together.
LICENSE_KEYS = ("license", "license_name", "license_link")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors caps headers at 100 MB; more means a corrupt file


@dataclass(frozen=True)
class ParentInfo:
    """One input model as the card shows it."""

    role: str  # "base", "fine-tuned" or "adapter"
    hub_id: str | None  # Hub repo id, when known without asking the Hub
    revision: str | None  # the revision asked for (branch, tag or commit), if any
    commit: str | None  # the commit the files came from (HF cache snapshot), if known
    path: str | None  # local folder, for parents that are not on the Hub
    fingerprint: str | None  # FINGERPRINT_COVERS, for local parents
    weight: float | None = None
    license: str | None = None

    @property
    def name(self) -> str:
        """The Hub id, else the local path: what ``base_model`` lists."""
        return self.hub_id or self.path or "unknown"

    def metadata(self) -> dict[str, Any]:
        """The card metadata entry: Hub id and commit, or local path and fingerprint (unset fields left out)."""
        revision = self.revision if self.revision != self.commit else None  # a pinned commit is said once
        fields = {"role": self.role, "id": self.hub_id, "revision": revision, "commit": self.commit,
                  "path": self.path, "fingerprint": self.fingerprint, "weight": self.weight}
        return {k: v for k, v in fields.items() if v is not None}

    @property
    def pinned(self) -> str:
        """A reference that reproduces exactly these files: ``repo@commit`` when known."""
        if self.hub_id:
            rev = self.commit or self.revision
            return f"{self.hub_id}@{rev}" if rev else self.hub_id
        return self.path or "unknown"


def hub_snapshot(folder: str | Path | None) -> tuple[str, str] | None:
    """(repo id, commit) for a folder inside the HF cache (``.../models--org--name/snapshots/<commit>``)."""
    if folder is None:
        return None
    folder = Path(folder)
    repo_dir = folder.parent.parent
    if folder.parent.name != "snapshots" or not repo_dir.name.startswith("models--"):
        return None
    # Repo names cannot contain "--", so the cache folder name splits back unambiguously.
    repo_id = "/".join(repo_dir.name[len("models--"):].split("--"))
    commit = folder.name if _COMMIT.match(folder.name) else None
    return (repo_id, commit) if repo_id and commit else None


def weights_fingerprint(folder: str | Path) -> str | None:
    """A short hex digest of the weight files of ``folder`` (see FINGERPRINT_COVERS); None without weights."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.name.endswith(WEIGHT_SUFFIXES) or p.name in (SAFE_INDEX, BIN_INDEX))
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if path.name in (SAFE_INDEX, BIN_INDEX):
                digest.update(f.read())
                continue
            start = 0
            if path.suffix == ".safetensors" and size >= 8:
                n = int.from_bytes(f.read(8), "little")
                if 0 < n <= min(_MAX_HEADER, size - 8):
                    digest.update(f.read(n))
                    start = 8 + n
            # The header alone is the same for every fine-tune of one base: sample the data too.
            span = max(size - start - FINGERPRINT_SAMPLE_BYTES, 0)
            for k in range(FINGERPRINT_SAMPLES):
                f.seek(start + span * k // (FINGERPRINT_SAMPLES - 1))
                digest.update(f.read(FINGERPRINT_SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def card_license(folder: str | Path | None) -> dict[str, str]:
    """License fields of the README.md front matter in ``folder`` (empty when there is none)."""
    if folder is None or not (Path(folder) / "README.md").is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(Path(folder) / "README.md", ignore_metadata_errors=True).data.to_dict()
    except Exception as e:  # a broken parent card must not stop the output; say so and carry on
        logging.getLogger(__name__).warning("cannot read the card of %s (%s); no license inherited", folder, e)
        return {}
    return {k: data[k] for k in LICENSE_KEYS if isinstance(data.get(k), str)}


def parent_info(role: str, entry: Mapping[str, Any] | str, folder: str | Path | None = None) -> ParentInfo:
    """A ParentInfo from a record entry and the parent's local folder (None: the entry's path, if local).

    Entries are ``describe()`` entries ({repo_id, revision, path[, weight]}), a bare spec string
    (``org/name@rev`` or a path), or {"adapter": spec, "weight": w}.
    """
    entry = _normalize(entry)
    if folder is None and entry.get("path") and Path(entry["path"]).is_dir():
        folder = entry["path"]
    hub_id, revision = entry.get("repo_id"), entry.get("revision")
    commit = None
    cached = hub_snapshot(folder)
    if cached:
        if hub_id is None or hub_id == cached[0]:
            hub_id, commit = cached
    if revision and _COMMIT.match(revision):
        commit = revision
    path = None if hub_id else str(entry.get("path") or folder or "") or None
    fingerprint = weights_fingerprint(folder) if (folder and not commit and Path(folder).is_dir()) else None
    weight = entry.get("weight")
    return ParentInfo(
        role=role,
        hub_id=hub_id,
        revision=revision,
        commit=commit,
        path=path,
        fingerprint=fingerprint,
        weight=float(weight) if weight is not None else None,
        license=card_license(folder).get("license"),
    )


def _normalize(entry: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(entry, Mapping) and "repo_id" in entry:
        return dict(entry)
    extra: dict[str, Any] = {}
    if isinstance(entry, Mapping):
        extra = {k: v for k, v in entry.items() if k == "weight"}
        entry = next((str(v) for k, v in entry.items() if k in ("adapter", "model", "spec", "path")), "")
    from hf_lines.io.resolve import ModelRef

    try:
        ref = ModelRef.parse(entry)
    except Exception:  # an unparsable spec is still worth showing as given
        return {"repo_id": None, "revision": None, "path": str(entry), **extra}
    if ref.is_hub:
        return {"repo_id": ref.repo_id, "revision": ref.revision, "path": None, **extra}
    return {"repo_id": None, "revision": None, "path": str(Path(ref.spec).expanduser()), **extra}
