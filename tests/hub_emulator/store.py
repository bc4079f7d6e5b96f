"""The Hub's state: repos, their branches, pull requests, commits and LFS objects. Plain Python, no HTTP.

The HTTP layer answers on many threads (snapshot_download opens 8 connections at once), so whoever reads or
changes repos holds `lock`, which is re-entrant.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time

from .blobs import BlobStore
from .model import Commit, FileOp, HubError, PullRequest, Repo, RepoFileEntry, git_blob_oid, now, pr_number
from .paths import DEFAULT_GITATTRIBUTES, REGULAR_FILE_MAX_SIZE, validate_repo_path, wants_lfs


class HubStore:
    """Every repo of the emulated Hub, keyed by (repo type, repo id); commits are authored by `author`."""

    def __init__(self, author: str):
        self.author = author
        self.blobs = BlobStore()
        self.lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._counter = 0

    def close(self) -> None:
        self.blobs.close()

    # -- lookup ---------------------------------------------------------------------------------------------
    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (repo_type, repo_id) in self._repos

    def get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    @staticmethod
    def revision(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def text(self, commit: Commit, path: str) -> str | None:
        """A file of `commit` as text, or None when the commit has no such file."""
        entry = commit.files.get(path)
        return None if entry is None else self.blobs.path(entry.sha256).read_text(errors="replace")

    def unique_repo_id(self, name: str) -> str:
        """A repo id in the author's namespace that no other caller gets."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "repo"
        return f"{self.author}/{name}-{self._next_number()}"

    # -- repos and branches ---------------------------------------------------------------------------------
    def create(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        """The repo, created with the Hub's initial `.gitattributes` commit unless it already exists."""
        with self.lock:
            key = (repo_type, repo_id)
            if key not in self._repos:
                repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now())
                files = {".gitattributes": self._regular(".gitattributes", DEFAULT_GITATTRIBUTES.encode())}
                repo.branches["main"] = self._new_commit(repo, None, files, "initial commit", "").oid
                self._repos[key] = repo
            return self._repos[key]

    def create_branch(self, repo: Repo, branch: str, starting_point: str) -> None:
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if pr_number(branch) is not None or branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
                raise HubError(400, f"Invalid branch name: {branch}")
            repo.branches[branch] = self.revision(repo, starting_point).oid

    # -- commits --------------------------------------------------------------------------------------------
    def seed(self, repo_id: str, files: dict[str, bytes | str], message: str) -> Commit:
        """Commit `files` to main of a model repo (created if missing), routed to LFS as preupload would."""
        with self.lock:
            repo = self.create("model", repo_id)
            parent = self.revision(repo, "main")
            new_files = dict(parent.files)
            for path, data in files.items():
                data = data.encode() if isinstance(data, str) else data
                if self.wants_lfs(parent, path, len(data), data[:512]):
                    sha = self.blobs.put(data)
                    repo.lfs_oids.add(sha)
                    new_files[path] = RepoFileEntry.lfs_file(path, sha, len(data))
                else:
                    new_files[path] = self._regular(path, data)
            commit = self._new_commit(repo, parent, new_files, message, "")
            repo.branches["main"] = commit.oid
            return commit

    def commit(self, repo: Repo, revision: str, title: str, description: str, parent_oid: str | None,
               ops: list[FileOp], create_pr: bool) -> tuple[Commit, PullRequest | None]:
        """Commit `ops` to a branch or refs/pr/N, or, with `create_pr`, open a pull request on a branch."""
        with self.lock:
            if create_pr:
                if revision not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {revision} (pull requests target a branch)",
                                   code="RevisionNotFound")
                base = self.revision(repo, parent_oid) if parent_oid else repo.commits[repo.branches[revision]]
            else:
                if revision not in repo.branches and pr_number(revision) not in repo.pr_heads:
                    raise HubError(404, f"Invalid rev id: {revision} (commit to a branch or a pull request ref)",
                                   code="RevisionNotFound")
                base = self.revision(repo, revision)
                if parent_oid and not base.oid.startswith(parent_oid):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            commit = self._new_commit(repo, base, self._apply(repo, base, ops), title, description)
            pr = None
            if create_pr:
                pr = PullRequest(num=len(repo.pull_requests) + 1, title=title, description=description,
                                 target_branch=revision, author=self.author)
                repo.pull_requests.append(pr)
                repo.pr_heads[pr.num] = commit.oid
            elif pr_number(revision) is not None:
                repo.pr_heads[pr_number(revision)] = commit.oid
            else:
                repo.branches[revision] = commit.oid
            return commit, pr

    def _apply(self, repo: Repo, base: Commit, ops: list[FileOp]) -> dict[str, RepoFileEntry]:
        files = dict(base.files)
        for op in ops:
            path = validate_repo_path(op.path)
            if op.data is not None:
                if len(op.data) > REGULAR_FILE_MAX_SIZE:
                    raise HubError(422, f"{path} is larger than 10 MB: it must be uploaded with LFS")
                files[path] = self._regular(path, op.data)
                continue
            if not self.has_lfs(repo, op.oid):
                raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                    f"does not exist. Offending file: {path}")
            size = self.blobs.size(op.oid)
            if op.size is not None and op.size != size:
                raise HubError(422, f"Size mismatch for LFS file {path}")
            files[path] = RepoFileEntry.lfs_file(path, op.oid, size)
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        clash = folders & set(files)
        if clash:
            raise HubError(422, f"A path is both a file and a folder: {sorted(clash)[0]}")
        return files

    def _regular(self, path: str, data: bytes) -> RepoFileEntry:
        return RepoFileEntry(path, len(data), self.blobs.put(data), git_blob_oid(data), False)

    def _new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, RepoFileEntry], title: str,
                    description: str) -> Commit:
        seed = f"{repo.repo_id}\0{self._next_number()}\0{parent.oid if parent else ''}\0{title}\0{time.time_ns()}"
        commit = Commit(oid=hashlib.sha1(seed.encode()).hexdigest(), parents=(parent.oid,) if parent else (),
                        title=title, description=description, author=self.author, date=now(), files=files)
        repo.commits[commit.oid] = commit
        return commit

    def _next_number(self) -> int:
        with self.lock:
            self._counter += 1
            return self._counter

    # -- uploads --------------------------------------------------------------------------------------------
    def wants_lfs(self, commit: Commit, path: str, size: int, sample: bytes) -> bool:
        """Preupload's routing, by the commit's own `.gitattributes` (the Hub's default when it has none)."""
        return wants_lfs(self.text(commit, ".gitattributes") or DEFAULT_GITATTRIBUTES, path, size, sample)

    def has_lfs(self, repo: Repo, oid: str | None, size: int | None = None) -> bool:
        """Whether `oid` was uploaded to this repo (LFS objects are stored once but owned per repo)."""
        with self.lock:
            return oid in repo.lfs_oids and self.blobs.has(oid, size)

    def own_lfs(self, repo: Repo, oid: str) -> None:
        with self.lock:
            repo.lfs_oids.add(oid)

    # -- listings -------------------------------------------------------------------------------------------
    @staticmethod
    def tree(commit: Commit, prefix: str, recursive: bool) -> tuple[list[str], list[str]]:
        """Sorted (folders, files) under `prefix`: its direct children, or everything below it."""
        dirs: set[str] = set()
        files: list[str] = []
        base = [prefix] if prefix else []
        for p in commit.files:
            if prefix and not p.startswith(prefix + "/"):
                continue
            rel_parts = (p[len(prefix) + 1:] if prefix else p).split("/")
            if recursive:
                files.append(p)
                dirs.update("/".join(base + rel_parts[:i]) for i in range(1, len(rel_parts)))
            elif len(rel_parts) == 1:
                files.append(p)
            else:
                dirs.add("/".join(base + rel_parts[:1]))
        return sorted(dirs), sorted(files)
