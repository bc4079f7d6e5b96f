"""File contents by sha256 on disk, shared by every repo, like the Hub's LFS bucket.

Files stay on disk (not in memory) because tests push real checkpoints and the 10 MB+ files of the LFS tests.
Uploads are checked against their announced sha256 and size before they count, as the Hub's storage does.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from .model import HubError


class BlobStore:
    """Content-addressed storage in a temporary folder, removed by `close()`."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="hf-hub-emulator-"))
        (self.root / "blobs").mkdir()
        (self.root / "tmp").mkdir()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        path = self.path(sha256)
        return path.exists() and (size is None or path.stat().st_size == size)

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            tmp = self._tmp()
            tmp.write_bytes(data)
            os.replace(tmp, self.path(sha))
        return sha

    def put_checked(self, oid: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store an upload under `oid` only if its sha256 and size are the ones announced."""
        tmp = self._tmp()
        digest, written = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    f.write(chunk)
            if written != size or digest.hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match: expected sha256 {oid} and size {size}, "
                                    f"got {digest.hexdigest()} and {written}")
            os.replace(tmp, self.path(oid))
        finally:
            tmp.unlink(missing_ok=True)

    # -- multipart uploads: parts wait in tmp/ until the completion request names them with their etags
    def put_part(self, oid: str, number: int, data: bytes) -> str:
        """Keep one part of a multipart upload; returns its ETag (quoted md5, as S3 answers)."""
        part_dir = self._part_dir(oid)
        part_dir.mkdir(exist_ok=True)
        (part_dir / str(number)).write_bytes(data)
        return f'"{hashlib.md5(data).hexdigest()}"'

    def join_parts(self, oid: str, size: int, parts: list[tuple[int, str]]) -> None:
        """Assemble the (number, etag) parts in order into the object `oid`, then drop them."""
        part_dir = self._part_dir(oid)
        ordered = sorted(parts, key=lambda part: part[0])
        for number, etag in ordered:
            path = part_dir / str(number)
            if not path.exists() or f'"{hashlib.md5(path.read_bytes()).hexdigest()}"' != etag:
                raise HubError(400, f"Part {number} is missing or its etag does not match")
        self.put_checked(oid, size, ((part_dir / str(n)).read_bytes() for n, _ in ordered))
        shutil.rmtree(part_dir, ignore_errors=True)

    def _part_dir(self, oid: str) -> Path:
        return self.root / "tmp" / f"parts-{oid}"

    def _tmp(self) -> Path:
        return self.root / "tmp" / secrets.token_hex(8)
