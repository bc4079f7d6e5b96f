"""The Hub's nouns as plain data: files, commits, pull requests, repos, and the error the Hub answers with.

No HTTP here. `HubError` carries the status the Hub answers a refusal with, so the HTTP layer maps it one
to one and the store can say "not found" or "conflict" in the Hub's own words.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

# Where each repo type lives on the Hub's website (the API says "models", "datasets").
URL_PREFIX = {"model": "", "dataset": "datasets/"}


class HubError(Exception):
    """A refusal worded as the Hub's: status, message, X-Error-Code (the client maps it to an exception)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.body = body if body is not None else {"error": message}


def now() -> datetime:
    return datetime.now(timezone.utc)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def pr_number(rev: str) -> int | None:
    m = re.fullmatch(r"refs/pr/(\d+)", rev)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class RepoFileEntry:
    """One file in one commit. Content lives in the blob store under `sha256`."""

    path: str
    size: int
    sha256: str
    git_oid: str  # git blob sha1: of the content, or of the LFS pointer for LFS files
    lfs: bool

    @classmethod
    def lfs_file(cls, path: str, sha256: str, size: int) -> "RepoFileEntry":
        """Git stores an LFS file as its pointer, so the git oid is the pointer's."""
        return cls(path, size, sha256, git_blob_oid(lfs_pointer(sha256, size)), True)

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class FileOp:
    """One file a commit adds: inline `data`, or an LFS object uploaded beforehand (`oid`, `size`)."""

    path: str
    data: bytes | None = None
    oid: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Commit:
    oid: str
    parents: tuple[str, ...]
    title: str
    description: str
    author: str
    date: datetime
    files: dict[str, RepoFileEntry]


@dataclass
class PullRequest:
    num: int
    title: str
    description: str
    target_branch: str
    author: str

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.num}"


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    pr_heads: dict[int, str] = field(default_factory=dict)  # PR number -> commit oid of refs/pr/N
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: list[PullRequest] = field(default_factory=list)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo

    def resolve(self, revision: str) -> Commit | None:
        """Commit for a branch, refs/pr/N or a (short) commit oid."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        num = pr_number(revision)
        if num is not None:
            oid = self.pr_heads.get(num)
            return self.commits.get(oid) if oid else None
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def history(self, commit: Commit) -> list[Commit]:
        """First-parent history, newest first."""
        out = [commit]
        while out[-1].parents:
            out.append(self.commits[out[-1].parents[0]])
        return out
