"""An in-process emulator of the Hugging Face Hub HTTP API, for the test suite.

The real ``huggingface_hub`` client talks to it over 127.0.0.1, so tests exercise the same code paths as a
push to huggingface.co: whoami, repo creation, preupload (regular vs LFS), the LFS batch API with upload and
verify, ndjson commits (branches and pull requests), tree listings, ``/resolve`` downloads and card validation.

Stdlib only (``http.server``), plus PyYAML for card metadata, which huggingface_hub already depends on.

The client reads ``HF_ENDPOINT`` and friends when it is first imported, so call :func:`configure_environment`
before anything imports ``huggingface_hub`` (the top of ``tests/conftest.py``).

Simplifications, on purpose: one user and one token (plus organisations listed in ``orgs``), LFS objects
stored once per process but tracked per repo, no Xet (``HF_HUB_DISABLE_XET=1``), no discussions API beyond
what ``create_pr=True`` needs.
"""
from __future__ import annotations

import atexit
import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_TOKEN = "hf_emulator_write_token"
DEFAULT_USER = "emulator-user"
DEFAULT_ORGS = ("emulator-org",)

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

# License ids the Hub accepts in card metadata (https://huggingface.co/docs/hub/repositories-licenses).
KNOWN_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0
    eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research
    lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql
    ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2
    llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other""".split()
)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Segments that follow a repo id in /api/{type}s/{repo_id}/..., used to tell "ns/name" from a bare "name".
_API_SUBPATHS = {"revision", "tree", "paths-info", "refs", "commits", "preupload", "commit", "branch", "tag"}
# Endpoints that carry no token: public ones, and pre-signed URLs (checked by signature instead).
_NO_TOKEN_ENDPOINTS = {"agent_harnesses", "validate_yaml", "lfs_upload", "lfs_upload_part", "lfs_complete", "cdn"}
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class RepoFileEntry:
    """One file in one commit. Content lives in the blob store under `sha256`."""

    path: str
    size: int
    sha256: str
    git_oid: str  # git blob sha1: of the content, or of the LFS pointer for LFS files
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))


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
    status: str = "open"

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.num}"


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tags: dict[str, str] = field(default_factory=dict)
    pr_heads: dict[int, str] = field(default_factory=dict)  # PR number -> commit oid of refs/pr/N
    commits: dict[str, Commit] = field(default_factory=dict)
    pull_requests: list[PullRequest] = field(default_factory=list)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo

    def resolve(self, revision: str) -> Commit | None:
        """Commit for a branch, tag, refs/pr/N, refs/heads/x, refs/tags/x or a (short) commit oid."""
        rev = revision
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/"):]
        elif rev.startswith("refs/tags/"):
            oid = self.tags.get(rev[len("refs/tags/"):])
            return self.commits.get(oid) if oid else None
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.tags:
            return self.commits[self.tags[rev]]
        pr_num = _pr_number(rev)
        if pr_num is not None:
            oid = self.pr_heads.get(pr_num)
            return self.commits.get(oid) if oid else None
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            matches = [c for oid, c in self.commits.items() if oid.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        return None

    def history(self, commit: Commit) -> list[Commit]:
        """First-parent history, newest first."""
        out = [commit]
        while out[-1].parents:
            out.append(self.commits[out[-1].parents[0]])
        return out


@dataclass
class RequestRecord:
    method: str
    path: str
    endpoint: str
    status: int = 0


@dataclass
class _Failure:
    status: int
    remaining: int | None  # None: every time
    message: str


class _HubError(Exception):
    """An HTTP error answer, shaped like the Hub's (JSON body, X-Error-Code / X-Error-Message headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.body = body if body is not None else {"error": message}

    def response(self) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-Error-Message": _header_safe(self.message), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return self.status, headers, json.dumps(self.body).encode()


@dataclass
class _FileSlice:
    path: Path
    start: int
    length: int


# ------------------------------------------------------------------------------------------------ small helpers
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _pr_number(rev: str) -> int | None:
    m = re.fullmatch(r"refs/pr/(\d+)", rev)
    return int(m.group(1)) if m else None


def _header_safe(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")[:1000]


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(obj).encode()


def _gitattributes_lfs_patterns(text: str) -> list[str]:
    patterns = []
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_git_pattern(path: str, pattern: str) -> bool:
    """Enough of gitattributes/gitignore matching: bare patterns match any basename, others the whole path."""
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) or f"/{pattern}" in f"/{path}"
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in path.split("/"))
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


def _validate_repo_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise _HubError(400, f"Invalid path in repo: {path!r}")
    return path


def validate_card_metadata(content: str, known_licenses: Iterable[str] | None = KNOWN_LICENSES
                           ) -> tuple[list[str], list[str]]:
    """The checks behind /api/validate-yaml: (errors, warnings) for a README's YAML front matter."""
    import yaml

    match = _YAML_BLOCK.search(content)
    empty = "Empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards#model-card-metadata)"
    if match is None:
        return [], [empty]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in README.md metadata: {exc}"], []
    if data is None:
        return [], [empty]
    if not isinstance(data, dict):
        return [f"README.md metadata must be a YAML mapping of key: value pairs, got {type(data).__name__}"], []

    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    license_ = data.get("license")
    if license_ is not None:
        if not isinstance(license_, str):
            errors.append(f'"license" must be a string, got {type(license_).__name__}')
        elif known_licenses is not None and license_ not in set(known_licenses):
            errors.append(f'"license" must be one of the licenses supported by the Hub (or "other"), got "{license_}"')
    for key in ("license_name", "license_link", "pipeline_tag", "library_name", "model_name", "thumbnail"):
        if data.get(key) is not None and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string, got {type(data[key]).__name__}')
    for key in ("tags", "language", "datasets", "metrics", "base_model"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) or is_str_list(value)):
            errors.append(f'"{key}" must be a string or a list of strings')
    relation = data.get("base_model_relation")
    if relation is not None and relation not in ("adapter", "merge", "quantized", "finetune"):
        errors.append('"base_model_relation" must be one of "adapter", "merge", "quantized", "finetune"')
    model_index = data.get("model-index")
    if model_index is not None:
        if not isinstance(model_index, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("results"), list)
            for m in model_index
        ):
            errors.append('"model-index" must be a list of {name: str, results: list} entries')
    return errors, []


# --------------------------------------------------------------------------------------------- HTTP plumbing
class _Request:
    def __init__(self, handler: BaseHTTPRequestHandler, method: str):
        self.handler = handler
        self.method = method
        split = urlsplit(handler.path)
        self.raw_path = split.path
        self.segments = [unquote(s) for s in split.path.split("/") if s]
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        self._body: bytes | None = None
        self._consumed = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("1", "true", "yes")

    def iter_body(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the request body, de-chunking `Transfer-Encoding: chunked` (httpx streams file uploads so)."""
        if self._consumed:
            return
        self._consumed = True
        rfile = self.handler.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size > 0:
                    data = rfile.read(min(size, chunk_size))
                    if not data:
                        return
                    size -= len(data)
                    yield data
                rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = rfile.read(min(remaining, chunk_size))
                if not data:
                    return
                remaining -= len(data)
                yield data

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise _HubError(400, "Request body is not valid JSON") from None

    def drain(self) -> None:
        for _ in self.iter_body():
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    emulator: "HubEmulator"

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.emulator._handle(self, "GET")

    def do_HEAD(self):  # noqa: N802
        self.emulator._handle(self, "HEAD")

    def do_POST(self):  # noqa: N802
        self.emulator._handle(self, "POST")

    def do_PUT(self):  # noqa: N802
        self.emulator._handle(self, "PUT")

    def do_DELETE(self):  # noqa: N802
        self.emulator._handle(self, "DELETE")

    def log_message(self, format, *args):  # noqa: A002 - silence per-request stderr logging
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # snapshot_download opens 8 connections at once


# ------------------------------------------------------------------------------------------------- emulator
class HubEmulator:
    """A Hugging Face Hub on 127.0.0.1, good enough for the real huggingface_hub client.

    Knobs (plain attributes, change them at any time):
        token, user, orgs        the only accepted token, its user name and its organisations
        require_token            False lets requests without any Authorization header through
        tree_page_size           page size of tree listings (the Hub uses 1000)
        lfs_multipart_chunk_size if set, LFS uploads above it use the multipart transfer with this chunk size
        redirect_lfs_downloads   serve LFS files through a 302 to a "CDN" URL (another origin), as the Hub does
        known_licenses           licenses accepted by validate-yaml, or None to accept any string
    """

    def __init__(self, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER, orgs: Iterable[str] = DEFAULT_ORGS,
                 storage_dir: str | os.PathLike | None = None):
        self.token = token
        self.user = user
        self.orgs = list(orgs)
        self.require_token = True
        self.tree_page_size = 1000
        self.commits_page_size = 50
        self.lfs_multipart_chunk_size: int | None = None
        self.redirect_lfs_downloads = False
        self.known_licenses: frozenset[str] | None = KNOWN_LICENSES

        self.requests: list[RequestRecord] = []
        self.server_errors: list[str] = []  # tracebacks of emulator bugs (answered with 500)
        self._failures: dict[str, list[_Failure]] = {}
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._counter = 0
        self._secret = secrets.token_bytes(16)
        self._owns_storage = storage_dir is None
        self._storage = Path(storage_dir or tempfile.mkdtemp(prefix="hf-hub-emulator-"))
        (self._storage / "blobs").mkdir(parents=True, exist_ok=True)
        (self._storage / "tmp").mkdir(exist_ok=True)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> "HubEmulator":
        if self._server is None:
            handler = type("HubEmulatorHandler", (_Handler,), {"emulator": self})
            self._server = _Server(("127.0.0.1", 0), handler)
            self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._owns_storage:
            shutil.rmtree(self._storage, ignore_errors=True)

    def __enter__(self) -> "HubEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HubEmulator is not started")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- fault injection and request log ----------------------------------------------------------------------
    def inject_failure(self, endpoint: str, status: int = 500, times: int | None = 1,
                       message: str = "Internal Error - emulated failure") -> None:
        """Answer the next `times` requests to `endpoint` (a RequestRecord.endpoint name) with `status`.

        `times=None` fails every request until `clear_failures()`. Note that the client retries 5xx on
        preupload, LFS batch and LFS uploads (with back-off sleeps), but not on commit.
        """
        with self._lock:
            self._failures.setdefault(endpoint, []).append(_Failure(status, times, message))

    def clear_failures(self, endpoint: str | None = None) -> None:
        with self._lock:
            if endpoint is None:
                self._failures.clear()
            else:
                self._failures.pop(endpoint, None)

    @property
    def fail_next_commit(self) -> bool:
        return any(f.remaining for f in self._failures.get("commit", []))

    @fail_next_commit.setter
    def fail_next_commit(self, value: bool) -> None:
        self.clear_failures("commit")
        if value:
            self.inject_failure("commit", 500, times=1)

    @property
    def fail_all_commits(self) -> bool:
        return any(f.remaining is None for f in self._failures.get("commit", []))

    @fail_all_commits.setter
    def fail_all_commits(self, value: bool) -> None:
        self.clear_failures("commit")
        if value:
            self.inject_failure("commit", 500, times=None)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def count(self, endpoint: str | None = None, method: str | None = None, status: int | None = None) -> int:
        """Number of requests received, optionally only for an endpoint name / method / answer status."""
        with self._lock:
            return sum(1 for r in self.requests if (endpoint is None or r.endpoint == endpoint)
                       and (method is None or r.method == method) and (status is None or r.status == status))

    @property
    def unhandled(self) -> list[RequestRecord]:
        """Requests for routes the emulator does not know: a sign the client needs something new."""
        return [r for r in self.requests if r.endpoint == "unknown"]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- direct access for tests ------------------------------------------------------------------------------
    def new_repo_id(self, name: str = "repo") -> str:
        """A repo id in the user's namespace that no other test uses."""
        with self._lock:
            self._counter += 1
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "repo"
            return f"{self.user}/{name}-{self._counter}"

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise KeyError(f"No {repo_type} repo {repo_id!r} on the emulator")
            return repo

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self._repos

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Commit:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        if commit is None:
            raise KeyError(f"No revision {revision!r} in {repo_id!r}")
        return commit

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        """First-parent history of `revision`, newest first."""
        return self.repo(repo_id, repo_type).history(self.head(repo_id, revision, repo_type))

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        return sorted(self.head(repo_id, revision, repo_type).files)

    def file_entry(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> RepoFileEntry:
        return self.head(repo_id, revision, repo_type).files[path]

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        return self._blob_path(self.file_entry(repo_id, path, revision, repo_type).sha256).read_bytes()

    def pull_requests(self, repo_id: str, repo_type: str = "model") -> list[PullRequest]:
        return list(self.repo(repo_id, repo_type).pull_requests)

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False, exist_ok: bool = True) -> Repo:
        """Create a repo without going through HTTP (with the Hub's initial `.gitattributes` commit)."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if not exist_ok:
                    raise ValueError(f"{repo_type} repo {repo_id!r} already exists")
                return self._repos[key]
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            entry = self._store_regular(".gitattributes", DEFAULT_GITATTRIBUTES.encode())
            commit = self._new_commit(repo, None, {".gitattributes": entry}, "initial commit", "")
            repo.branches["main"] = commit.oid
            self._repos[key] = repo
            return repo

    def add_commit(self, repo_id: str, files: dict[str, bytes | str], message: str = "Seed files",
                   revision: str = "main", repo_type: str = "model", deletions: Iterable[str] = (),
                   lfs: Iterable[str] | None = None) -> Commit:
        """Commit `files` straight into a repo (created if missing), e.g. to seed a source model.

        Files go to LFS by the same rule as preupload unless `lfs` lists the LFS paths explicitly.
        """
        with self._lock:
            repo = self.create_repo(repo_id, repo_type)
            parent = repo.resolve(revision)
            if parent is None or revision not in repo.branches:
                raise KeyError(f"No branch {revision!r} in {repo_id!r}")
            new_files = dict(parent.files)
            for path in deletions:
                new_files.pop(path)
            lfs_paths = set(lfs) if lfs is not None else None
            for path, data in files.items():
                data = data.encode() if isinstance(data, str) else data
                is_lfs = (path in lfs_paths) if lfs_paths is not None else self._wants_lfs(parent, path, len(data), data[:512])
                if is_lfs:
                    sha = self._store_blob(data)
                    repo.lfs_oids.add(sha)
                    new_files[path] = RepoFileEntry(path, len(data), sha, _git_blob_oid(_lfs_pointer(sha, len(data))), True)
                else:
                    new_files[path] = self._store_regular(path, data)
            commit = self._new_commit(repo, parent, new_files, message, "")
            repo.branches[revision] = commit.oid
            return commit

    def delete_all_repos(self) -> None:
        with self._lock:
            self._repos.clear()

    # -- storage ----------------------------------------------------------------------------------------------
    def _blob_path(self, sha256: str) -> Path:
        return self._storage / "blobs" / sha256

    def _store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha)
        if not path.exists():
            tmp = self._storage / "tmp" / secrets.token_hex(8)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def _store_regular(self, path: str, data: bytes) -> RepoFileEntry:
        return RepoFileEntry(path, len(data), self._store_blob(data), _git_blob_oid(data), False)

    def _new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, RepoFileEntry], title: str,
                    description: str) -> Commit:
        with self._lock:
            self._counter += 1
            seed = f"{repo.repo_id}\0{self._counter}\0{parent.oid if parent else ''}\0{title}\0{time.time_ns()}"
        commit = Commit(oid=hashlib.sha1(seed.encode()).hexdigest(), parents=(parent.oid,) if parent else (),
                        title=title, description=description, author=self.user, date=_now(), files=files)
        repo.commits[commit.oid] = commit
        return commit

    def _wants_lfs(self, commit: Commit | None, path: str, size: int, sample: bytes) -> bool:
        """Preupload's decision: LFS for .gitattributes matches, files over 10 MB and binary content."""
        if size == 0:
            return False
        attributes = commit.files.get(".gitattributes") if commit else None
        text = self._blob_path(attributes.sha256).read_text(errors="replace") if attributes else DEFAULT_GITATTRIBUTES
        if any(_matches_git_pattern(path, p) for p in _gitattributes_lfs_patterns(text)):
            return True
        return size > REGULAR_FILE_MAX_SIZE or b"\0" in sample

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    def _check_signature(self, req: _Request, *parts: str) -> None:
        if not hmac.compare_digest(req.arg("sig") or "", self._sign(*parts)):
            raise _HubError(403, "Request signature does not match")

    # -- request handling -------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        req = _Request(handler, method)
        record = RequestRecord(method, req.raw_path, "unknown")
        try:
            endpoint, action = self._route(req)
            record.endpoint = endpoint
            self._authenticate(req, endpoint)
            self._maybe_fail(endpoint)
            status, headers, body = action()
        except _HubError as err:
            status, headers, body = err.response()
        except Exception:  # an emulator bug: report it to the client and keep it for the test to see
            self.server_errors.append(traceback.format_exc())
            status, headers, body = _HubError(500, "Hub emulator crashed: " + traceback.format_exc(limit=1)).response()
        record.status = status
        with self._lock:
            self.requests.append(record)
        try:
            req.drain()  # keep-alive: the next request starts right after this body
            self._write(handler, method, status, headers, body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _write(self, handler: BaseHTTPRequestHandler, method: str, status: int, headers: dict,
               body: bytes | _FileSlice) -> None:
        handler.send_response(status)
        length = body.length if isinstance(body, _FileSlice) else len(body)
        for key, value in headers.items():
            handler.send_header(key, value)
        if "Content-Length" not in headers:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        if method == "HEAD":
            return
        if isinstance(body, _FileSlice):
            with open(body.path, "rb") as f:
                f.seek(body.start)
                remaining = body.length
                while remaining > 0:
                    chunk = f.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    handler.wfile.write(chunk)
                    remaining -= len(chunk)
        else:
            handler.wfile.write(body)

    def _authenticate(self, req: _Request, endpoint: str) -> None:
        header = req.headers.get("Authorization")
        if header is None:
            if endpoint in _NO_TOKEN_ENDPOINTS or endpoint == "unknown" or not self.require_token:
                return
            raise _HubError(401, "Authorization header is required: pass a token (HF_TOKEN)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.token):
            # This exact message makes the client raise a plain HfHubHTTPError, not RepositoryNotFoundError.
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _maybe_fail(self, endpoint: str) -> None:
        with self._lock:
            for failure in self._failures.get(endpoint, []):
                if failure.remaining is None or failure.remaining > 0:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                    raise _HubError(failure.status, failure.message)

    def _route(self, req: _Request):
        """Return (endpoint name, zero-argument callable answering the request)."""
        segs, m = req.segments, req.method
        if segs[:1] == ["_emulator"]:
            return self._route_presigned(req, segs[1:])
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and m == "GET":
                return "whoami", self._whoami
            if rest == ["agent-harnesses"] and m == "GET":
                return "agent_harnesses", lambda: _json({"standardEnvVars": [], "harnesses": {}})
            if rest == ["repos", "create"] and m == "POST":
                return "create_repo", lambda: self._create_repo(req)
            if rest == ["repos", "delete"] and m == "DELETE":
                return "delete_repo", lambda: self._delete_repo(req)
            if rest == ["validate-yaml"] and m == "POST":
                return "validate_yaml", lambda: self._validate_yaml(req)
            if len(rest) >= 2 and rest[0] in _REPO_TYPES:
                return self._route_repo_api(req, _REPO_TYPES[rest[0]], rest[1:])
            return "unknown", self._not_found
        repo_type, rest = ("model", segs)
        if rest[:1] and rest[0] in ("datasets", "spaces"):
            repo_type, rest = _REPO_TYPES[rest[0]], rest[1:]
        for i in (1, 2):
            if len(rest) > i + 1 and rest[i] == "resolve" and m in ("GET", "HEAD"):
                repo_id = "/".join(rest[:i])
                rev, path = self._split_revision(rest[i + 1:])
                return "resolve", lambda: self._resolve(req, repo_type, repo_id, rev, "/".join(path))
        for i in (0, 1):
            if (len(rest) == i + 5 and rest[i].endswith(".git") and rest[i + 1:i + 4] == ["info", "lfs", "objects"]
                    and m == "POST"):
                repo_id = "/".join(rest[:i] + [rest[i][:-4]])
                if rest[i + 4] == "batch":
                    return "lfs_batch", lambda: self._lfs_batch(req, repo_type, repo_id)
                if rest[i + 4] == "verify":
                    return "lfs_verify", lambda: self._lfs_verify(req, repo_type, repo_id)
        return "unknown", self._not_found

    def _route_repo_api(self, req: _Request, repo_type: str, segs: list[str]):
        if len(segs) >= 2 and (segs[1] not in _API_SUBPATHS or (repo_type, f"{segs[0]}/{segs[1]}") in self._repos):
            repo_id, rest = f"{segs[0]}/{segs[1]}", segs[2:]
        else:
            repo_id, rest = segs[0], segs[1:]
        m, sub = req.method, (rest[0] if rest else "")
        if m == "GET" and not rest:
            return "repo_info", lambda: self._repo_info(req, repo_type, repo_id, "main")
        if m == "GET" and sub == "revision" and len(rest) >= 2:
            return "repo_info", lambda: self._repo_info(req, repo_type, repo_id, "/".join(rest[1:]))
        if m == "GET" and sub == "tree" and len(rest) >= 2:
            rev, path = self._split_revision(rest[1:])
            return "tree", lambda: self._tree(req, repo_type, repo_id, rev, "/".join(path))
        if m == "POST" and sub == "paths-info" and len(rest) >= 2:
            return "paths_info", lambda: self._paths_info(req, repo_type, repo_id, "/".join(rest[1:]))
        if m == "GET" and sub == "refs":
            return "refs", lambda: self._refs(req, repo_type, repo_id)
        if m == "GET" and sub == "commits" and len(rest) >= 2:
            return "commits", lambda: self._list_commits(req, repo_type, repo_id, "/".join(rest[1:]))
        if m == "POST" and sub == "preupload" and len(rest) >= 2:
            return "preupload", lambda: self._preupload(req, repo_type, repo_id, "/".join(rest[1:]))
        if m == "POST" and sub == "commit" and len(rest) >= 2:
            return "commit", lambda: self._commit(req, repo_type, repo_id, "/".join(rest[1:]))
        if sub == "branch" and len(rest) >= 2 and m in ("POST", "DELETE"):
            name = "/".join(rest[1:])
            if m == "POST":
                return "create_branch", lambda: self._create_branch(req, repo_type, repo_id, name)
            return "delete_branch", lambda: self._delete_ref(repo_type, repo_id, "branches", name)
        if sub == "tag" and len(rest) >= 2 and m in ("POST", "DELETE"):
            name = "/".join(rest[1:])
            if m == "POST":
                return "create_tag", lambda: self._create_tag(req, repo_type, repo_id, name)
            return "delete_tag", lambda: self._delete_ref(repo_type, repo_id, "tags", name)
        return "unknown", self._not_found

    def _route_presigned(self, req: _Request, segs: list[str]):
        m = req.method
        if segs[:1] == ["lfs"] and len(segs) == 2 and m == "PUT":
            return "lfs_upload", lambda: self._lfs_upload(req, segs[1])
        if segs[:1] == ["lfs"] and len(segs) == 4 and segs[2] == "part" and m == "PUT":
            return "lfs_upload_part", lambda: self._lfs_upload_part(req, segs[1], segs[3])
        if segs[:1] == ["lfs"] and len(segs) == 3 and segs[2] == "complete" and m == "POST":
            return "lfs_complete", lambda: self._lfs_complete(req, segs[1])
        if segs[:1] == ["cdn"] and len(segs) >= 2 and m in ("GET", "HEAD"):
            return "cdn", lambda: self._cdn(req, segs[1])
        return "unknown", self._not_found

    @staticmethod
    def _split_revision(parts: list[str]) -> tuple[str, list[str]]:
        """Revision and the rest; tolerates an unquoted 'refs/pr/1' spread over three segments."""
        if parts[0] == "refs" and len(parts) >= 3 and parts[1] in ("pr", "heads", "tags", "convert"):
            return "/".join(parts[:3]), parts[3:]
        return parts[0], parts[1:]

    @staticmethod
    def _not_found():
        raise _HubError(404, "Sorry, we can't find the page you are looking for (not emulated).")

    # -- repo lookup --------------------------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"

    # -- API endpoints ------------------------------------------------------------------------------------
    def _whoami(self):
        return _json({
            "type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24], "name": self.user,
            "fullname": "Hub Emulator User", "email": f"{self.user}@example.com", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "hub-emulator", "role": "write",
                                                               "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _create_repo(self, req: _Request):
        payload = req.json() or {}
        name, namespace = payload.get("name"), payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HubError(400, f"Invalid repo type: {repo_type}")
        if not isinstance(name, str) or not _REPO_NAME.match(name) or "--" in name or ".." in name:
            raise _HubError(400, f"Invalid repo name: {name!r}")
        if namespace not in (self.user, *self.orgs):
            raise _HubError(403, f"You don't have the rights to create a {repo_type} under the namespace \"{namespace}\"")
        repo_id = f"{namespace}/{name}"
        url = self._repo_url(repo_type, repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # The client reads "url" from this 409 body when exist_ok=True.
                raise _HubError(409, f"You already created this {repo_type} repo", body={
                    "error": f"You already created this {repo_type} repo", "url": url})
            private = payload.get("visibility") == "private" if "visibility" in payload else bool(payload.get("private"))
            repo = self.create_repo(repo_id, repo_type, private=private, exist_ok=False)
            repo.sdk = payload.get("sdk")
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, req: _Request):
        payload = req.json() or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        with self._lock:
            self._get_repo(repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]
        return 200, {}, b""

    def _validate_yaml(self, req: _Request):
        payload = req.json() or {}
        content = payload.get("content")
        if not isinstance(content, str):
            raise _HubError(400, '"content" must be a string')
        errors, warnings = validate_card_metadata(content, self.known_licenses)
        if "text/plain" in (req.headers.get("Accept") or ""):  # what ModelCard.validate() asks for
            text = "\n".join(errors or warnings)
            return (400 if errors else 200), {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
        body = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
        return _json(body, status=400 if errors else 200)

    def _repo_info(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            blobs = req.flag("blobs")
            siblings = []
            for path in sorted(commit.files):
                entry = commit.files[path]
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sibling.update(size=entry.size, blobId=entry.git_oid)
                    if entry.lfs:
                        sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
                siblings.append(sibling)
            card_data = self._card_metadata(commit)
            info: dict[str, Any] = {
                "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
                "author": repo_id.split("/")[0] if "/" in repo_id else None, "sha": commit.oid,
                "lastModified": _iso(commit.date), "createdAt": _iso(repo.created_at), "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": list(card_data.get("tags") or []) if isinstance(card_data.get("tags"), list) else [],
                "siblings": siblings, "cardData": card_data or None,
                "usedStorage": sum(e.size for e in commit.files.values()),
            }
            if repo_type == "model":
                info["modelId"] = repo_id
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card_data.get(key), str):
                        info[key] = card_data[key]
                config = self._config_summary(commit)
                if config:
                    info["config"] = config
            if repo_type == "space":
                info["sdk"] = repo.sdk
        expand = req.query.get("expand", []) + req.query.get("expand[]", [])
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return _json(info)

    def _card_metadata(self, commit: Commit) -> dict:
        entry = commit.files.get("README.md")
        if entry is None:
            return {}
        import yaml

        match = _YAML_BLOCK.search(self._blob_path(entry.sha256).read_text(errors="replace"))
        try:
            data = yaml.safe_load(match.group(2)) if match else None
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    def _config_summary(self, commit: Commit) -> dict:
        entry = commit.files.get("config.json")
        if entry is None or entry.size > 1 << 20:
            return {}
        try:
            config = json.loads(self._blob_path(entry.sha256).read_bytes())
        except ValueError:
            return {}
        return {k: config[k] for k in ("architectures", "model_type") if isinstance(config, dict) and k in config}

    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> dict:
        """The oldest commit, on the first-parent chain, since which `path` (file or folder) is unchanged."""
        def state(c: Commit):
            return {p: e.git_oid for p, e in c.files.items() if p == path or p.startswith(path + "/")}
        current, target = commit, state(commit)
        while current.parents and state(repo.commits[current.parents[0]]) == target:
            current = repo.commits[current.parents[0]]
        return {"id": current.oid, "title": current.title, "date": _iso(current.date)}

    def _path_info(self, repo: Repo, commit: Commit, path: str, is_dir: bool, expand: bool) -> dict:
        if is_dir:
            under = sorted((p, e.git_oid) for p, e in commit.files.items() if p.startswith(path + "/"))
            info: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(repr(under).encode()).hexdigest(),
                                    "size": 0, "path": path}
        else:
            entry = commit.files[path]
            info = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
            if entry.lfs:
                info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            if expand:
                info["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                              "pickleImportScan": None}
        if expand:
            info["lastCommit"] = self._last_commit(repo, commit, path)
        return info

    def _paginate(self, req: _Request, items: list, page_size: int, extra_headers: dict | None = None):
        start = int(req.arg("cursor") or 0)
        page = items[start:start + page_size]
        headers = dict(extra_headers or {})
        if start + page_size < len(items):
            query = {k: v[0] for k, v in req.query.items()}
            query["cursor"] = str(start + page_size)
            headers["Link"] = f'<{self.endpoint}{req.raw_path}?{urlencode(query)}>; rel="next"'
        return _json(page, headers=headers)

    def _tree(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str):
        recursive, expand = req.flag("recursive"), req.flag("expand")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            prefix = path.strip("/")
            dirs: set[str] = set()
            files: list[str] = []
            for p in commit.files:
                if prefix and not p.startswith(prefix + "/"):
                    continue
                rel_parts = (p[len(prefix) + 1:] if prefix else p).split("/")
                base = [prefix] if prefix else []
                if recursive:
                    files.append(p)
                    dirs.update("/".join(base + rel_parts[:i]) for i in range(1, len(rel_parts)))
                elif len(rel_parts) == 1:
                    files.append(p)
                else:
                    dirs.add("/".join(base + rel_parts[:1]))
            if prefix and not files and not dirs:
                raise _HubError(404, f"Entry not found: {prefix}", code="EntryNotFound",
                                headers={"X-Repo-Commit": commit.oid})
            items = [self._path_info(repo, commit, d, True, expand) for d in sorted(dirs)]
            items += [self._path_info(repo, commit, f, False, expand) for f in sorted(files)]
        return self._paginate(req, items, 50 if expand else self.tree_page_size)

    def _paths_info(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        form = parse_qs(req.body.decode(), keep_blank_values=True)
        if not form and req.body.strip().startswith(b"{"):
            form = {k: v if isinstance(v, list) else [v] for k, v in req.json().items()}
        expand = str((form.get("expand") or ["false"])[0]).lower() in ("1", "true")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            out = []
            for path in form.get("paths", []):
                path = str(path).strip("/")
                if path in commit.files:
                    out.append(self._path_info(repo, commit, path, False, expand))
                elif any(p.startswith(path + "/") for p in commit.files):
                    out.append(self._path_info(repo, commit, path, True, expand))
        return _json(out)

    def _refs(self, req: _Request, repo_type: str, repo_id: str):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            body: dict[str, Any] = {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in repo.branches.items()],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o} for n, o in repo.tags.items()],
            }
            if req.flag("include_prs"):
                body["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": o}
                                        for n, o in sorted(repo.pr_heads.items())]
        return _json(body)

    def _list_commits(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            history = repo.history(self._get_commit(repo, revision))
        items = [{"id": c.oid, "title": c.title, "message": c.description, "authors": [{"user": c.author}],
                  "date": _iso(c.date)} for c in history]
        return self._paginate(req, items, self.commits_page_size)

    def _create_branch(self, req: _Request, repo_type: str, repo_id: str, branch: str):
        payload = req.json() or {}
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if branch in repo.branches:
                raise _HubError(409, f"Reference already exists: refs/heads/{branch}")
            if _pr_number(branch) is not None or branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
                raise _HubError(400, f"Invalid branch name: {branch}")
            start = self._get_commit(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return _json({})

    def _create_tag(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        payload = req.json() or {}
        tag = payload.get("tag")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if not isinstance(tag, str) or not tag:
                raise _HubError(400, '"tag" must be a non-empty string')
            if tag in repo.tags:
                raise _HubError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = self._get_commit(repo, revision).oid
        return _json({})

    def _delete_ref(self, repo_type: str, repo_id: str, kind: str, name: str):
        with self._lock:
            refs = getattr(self._get_repo(repo_type, repo_id), kind)
            if name not in refs or (kind == "branches" and name == "main"):
                raise _HubError(404 if name not in refs else 403, f"Cannot delete {kind[:-1]} {name}",
                                code="RevisionNotFound" if name not in refs else None)
            del refs[name]
        return _json({})

    # -- uploads ------------------------------------------------------------------------------------------
    def _preupload(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        payload = req.json() or {}
        files = payload.get("files")
        if not isinstance(files, list):
            raise _HubError(400, '"files" must be a list')
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in commit.files:
                gitignore = self._blob_path(commit.files[".gitignore"].sha256).read_text(errors="replace")
            ignore_patterns = [line.strip() for line in (gitignore or "").splitlines()
                               if line.strip() and not line.strip().startswith(("#", "!"))]
            answers = []
            for item in files:
                path = _validate_repo_path(item.get("path"))
                size = int(item.get("size") or 0)
                sample = base64.b64decode(item.get("sample") or "")
                lfs = self._wants_lfs(commit, path, size, sample)
                existing = commit.files.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if lfs else (None if existing.lfs else existing.git_oid)
                answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "oid": oid,
                                "shouldIgnore": any(_matches_git_pattern(path, p) for p in ignore_patterns)})
        return _json({"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, req: _Request, repo_type: str, repo_id: str):
        payload = req.json() or {}
        operation = payload.get("operation")
        transfers = payload.get("transfers") or ["basic"]
        chosen = "basic"
        objects = []
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            repo_key = f"{repo_type}:{repo_id}"
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
                    objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                    "error": {"code": 422, "message": "oid must be a sha256 and size an int"}})
                    continue
                if operation == "download":
                    if oid not in repo.lfs_oids:
                        objects.append({"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}})
                    else:
                        objects.append({"oid": oid, "size": size, "actions": {"download": {"href": self._cdn_url(oid, oid)}}})
                    continue
                if oid in repo.lfs_oids and self._blob_path(oid).exists():
                    objects.append({"oid": oid, "size": size})  # already there: the client skips the upload
                    continue
                sig = self._sign("upload", repo_key, oid, str(size))
                query = urlencode({"repo": repo_key, "size": size, "sig": sig})
                verify = {"href": f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects/verify",
                          "header": {"Authorization": req.headers.get("Authorization") or ""}}
                chunk = self.lfs_multipart_chunk_size
                if chunk and size > chunk and "multipart" in transfers:
                    chosen = "multipart"
                    nparts = -(-size // chunk)
                    header = {"chunk_size": str(chunk)}
                    for n in range(1, nparts + 1):
                        header[f"{n:05d}"] = f"{self.endpoint}/_emulator/lfs/{oid}/part/{n}?{query}"
                    actions = {"upload": {"href": f"{self.endpoint}/_emulator/lfs/{oid}/complete?{query}",
                                          "header": header}, "verify": verify}
                else:
                    actions = {"upload": {"href": f"{self.endpoint}/_emulator/lfs/{oid}?{query}"}, "verify": verify}
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        body = {"transfer": chosen, "objects": objects, "hash_algo": "sha256"}
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, json.dumps(body).encode()

    def _signed_upload_target(self, req: _Request, oid: str) -> tuple[Repo, int]:
        repo_key, size = req.arg("repo") or "", req.arg("size") or ""
        self._check_signature(req, "upload", repo_key, oid, size)
        repo_type, _, repo_id = repo_key.partition(":")
        with self._lock:
            return self._get_repo(repo_type, repo_id), int(size)

    def _accept_lfs_object(self, repo: Repo, oid: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store an uploaded object after checking its sha256 and size, as the Hub's storage does."""
        tmp = self._storage / "tmp" / secrets.token_hex(8)
        digest, written = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    f.write(chunk)
            if written != size or digest.hexdigest() != oid:
                raise _HubError(400, f"Uploaded content does not match: expected sha256 {oid} and size {size}, "
                                     f"got {digest.hexdigest()} and {written}")
            os.replace(tmp, self._blob_path(oid))
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            repo.lfs_oids.add(oid)

    def _lfs_upload(self, req: _Request, oid: str):
        repo, size = self._signed_upload_target(req, oid)
        self._accept_lfs_object(repo, oid, size, req.iter_body())
        return 200, {}, b""

    def _lfs_upload_part(self, req: _Request, oid: str, part: str):
        self._signed_upload_target(req, oid)
        part_dir = self._storage / "tmp" / f"parts-{oid}"
        part_dir.mkdir(exist_ok=True)
        data = req.body
        (part_dir / str(int(part))).write_bytes(data)
        return 200, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}, b""

    def _lfs_complete(self, req: _Request, oid: str):
        repo, size = self._signed_upload_target(req, oid)
        payload = req.json() or {}
        part_dir = self._storage / "tmp" / f"parts-{oid}"
        parts = sorted(payload.get("parts") or [], key=lambda p: p["partNumber"])
        for p in parts:
            data_path = part_dir / str(p["partNumber"])
            if not data_path.exists() or f'"{hashlib.md5(data_path.read_bytes()).hexdigest()}"' != p.get("etag"):
                raise _HubError(400, f"Part {p['partNumber']} is missing or its etag does not match")
        self._accept_lfs_object(repo, oid, size, ((part_dir / str(p["partNumber"])).read_bytes() for p in parts))
        shutil.rmtree(part_dir, ignore_errors=True)
        return _json({"success": True})

    def _lfs_verify(self, req: _Request, repo_type: str, repo_id: str):
        payload = req.json() or {}
        oid, size = payload.get("oid"), payload.get("size")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            ok = oid in repo.lfs_oids and self._blob_path(oid).exists() and self._blob_path(oid).stat().st_size == size
        if not ok:
            raise _HubError(404, f"LFS object {oid} of size {size} was not uploaded")
        return _json({"success": True})

    def _commit(self, req: _Request, repo_type: str, repo_id: str, revision: str):
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "Commit payload must be ndjson starting with a header line")
        header = lines[0].get("value") or {}
        title, description = header.get("summary"), header.get("description") or ""
        if not isinstance(title, str) or not title.strip():
            raise _HubError(400, "Commit summary must not be empty")
        parent_oid = header.get("parentCommit")
        create_pr = req.flag("create_pr")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if create_pr:
                if revision not in repo.branches:
                    raise _HubError(404, f"Invalid rev id: {revision} (pull requests target a branch)",
                                    code="RevisionNotFound")
                base = self._get_commit(repo, parent_oid) if parent_oid else repo.commits[repo.branches[revision]]
            else:
                pr_num = _pr_number(revision)
                if revision not in repo.branches and pr_num not in repo.pr_heads:
                    raise _HubError(404, f"Invalid rev id: {revision} (commit to a branch or a pull request ref)",
                                    code="RevisionNotFound")
                base = self._get_commit(repo, revision)
                if parent_oid and not base.oid.startswith(parent_oid):
                    raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            files = self._apply_operations(repo, base, lines[1:])
            commit = self._new_commit(repo, base, files, title, description)
            body: dict[str, Any] = {"success": True, "commitOid": commit.oid, "hookOutput": "",
                                    "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{commit.oid}"}
            if create_pr:
                pr = PullRequest(num=len(repo.pull_requests) + 1, title=title, description=description,
                                 target_branch=revision, author=self.user)
                repo.pull_requests.append(pr)
                repo.pr_heads[pr.num] = commit.oid
                body["pullRequestUrl"] = f"{self._repo_url(repo_type, repo_id)}/discussions/{pr.num}"
            elif _pr_number(revision) is not None:
                repo.pr_heads[_pr_number(revision)] = commit.oid
            else:
                repo.branches[revision] = commit.oid
        return _json(body)

    def _apply_operations(self, repo: Repo, base: Commit, operations: list[dict]) -> dict[str, RepoFileEntry]:
        files = dict(base.files)
        for op in operations:
            key, value = op.get("key"), op.get("value") or {}
            if key == "file":
                path = _validate_repo_path(value.get("path"))
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
                data = base64.b64decode(value.get("content") or "")
                if len(data) > REGULAR_FILE_MAX_SIZE:
                    raise _HubError(422, f"{path} is larger than 10 MB: it must be uploaded with LFS")
                files[path] = self._store_regular(path, data)
            elif key == "lfsFile":
                path = _validate_repo_path(value.get("path"))
                oid = value.get("oid")
                if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_oids or not self._blob_path(oid).exists():
                    raise _HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                         f"does not exist. Offending file: {path}")
                size = self._blob_path(oid).stat().st_size
                if value.get("size") is not None and value["size"] != size:
                    raise _HubError(422, f"Size mismatch for LFS file {path}")
                files[path] = RepoFileEntry(path, size, oid, _git_blob_oid(_lfs_pointer(oid, size)), True)
            elif key == "deletedFile":
                path = _validate_repo_path(value.get("path"))
                if files.pop(path, None) is None:
                    raise _HubError(404, f"File not found: {path}", code="EntryNotFound")
            elif key == "deletedFolder":
                folder = str(value.get("path") or "").strip("/")
                doomed = [p for p in files if not folder or p.startswith(folder + "/")]
                if not doomed:
                    raise _HubError(404, f"Folder not found: {folder}", code="EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise _HubError(400, f"Unknown commit operation: {key!r}")
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        clash = folders & set(files)
        if clash:
            raise _HubError(422, f"A path is both a file and a folder: {sorted(clash)[0]}")
        return files

    # -- downloads ----------------------------------------------------------------------------------------
    def _cdn_url(self, sha256: str, name: str) -> str:
        # "localhost" is another origin than "127.0.0.1" for the client, so it drops the token, as for a real CDN.
        return f"http://localhost:{self.port}/_emulator/cdn/{sha256}?{urlencode({'sig': self._sign('cdn', sha256)})}" \
               f"&filename={quote(name)}"

    def _resolve(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str):
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._get_commit(repo, revision)
            entry = commit.files.get(path)
        if entry is None:
            raise _HubError(404, f"Entry not found: {path}", code="EntryNotFound",
                            headers={"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.git_oid}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.split('/')[-1])}"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
            if self.redirect_lfs_downloads:
                headers["Location"] = self._cdn_url(entry.sha256, path.split("/")[-1])
                return 302, headers, b""
        return self._serve_blob(req, entry.sha256, headers)

    def _cdn(self, req: _Request, sha256: str):
        self._check_signature(req, "cdn", sha256)
        if not self._blob_path(sha256).exists():
            raise _HubError(404, "No such object")
        return self._serve_blob(req, sha256, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _serve_blob(self, req: _Request, sha256: str, headers: dict):
        path = self._blob_path(sha256)
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", **headers}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (req.headers.get("Range") or "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(size - int(match.group(2)), 0), size - 1
            if start >= size or end < start:
                raise _HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return 206, headers, _FileSlice(path, start, end - start + 1)
        return 200, headers, _FileSlice(path, 0, size)


# ------------------------------------------------------------------------------------------ test environment
# Kept outside this module's globals so that importing the module twice (as `hub_emulator` and as
# `tests.hub_emulator`) still gives one server per process.
_REGISTRY = sys.modules.setdefault("_hf_hub_emulator_registry", types.ModuleType("_hf_hub_emulator_registry"))
_REGISTRY_LOCK = getattr(_REGISTRY, "lock", None) or threading.Lock()
_REGISTRY.lock = _REGISTRY_LOCK

# Environment variables that would send the client elsewhere (cache, token, offline mode) than the emulator.
_ENV_TO_UNSET = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                 "HUGGINGFACE_ASSETS_CACHE", "HF_TOKEN_PATH", "HF_XET_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
                 "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER")


def active_emulator() -> HubEmulator | None:
    """The emulator started by `configure_environment()`, if any."""
    return getattr(_REGISTRY, "emulator", None)


def configure_environment(token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER) -> HubEmulator:
    """Start the process-wide emulator (once) and point huggingface_hub at it through the environment.

    Must run before huggingface_hub is first imported (it reads these variables at import time).
    """
    with _REGISTRY_LOCK:
        emulator = active_emulator()
        if emulator is None:
            emulator = HubEmulator(token=token, user=user).start()
            atexit.register(emulator.stop)
            hf_home = tempfile.mkdtemp(prefix="hf-emulator-home-")
            atexit.register(shutil.rmtree, hf_home, True)
            for name in _ENV_TO_UNSET:
                os.environ.pop(name, None)
            os.environ.update({
                "HF_ENDPOINT": emulator.endpoint,
                "HF_HUB_DISABLE_XET": "1",
                "HF_TOKEN": emulator.token,
                "HF_HOME": hf_home,
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            })
            for name in ("NO_PROXY", "no_proxy"):
                hosts = [h for h in os.environ.get(name, "").split(",") if h]
                os.environ[name] = ",".join(dict.fromkeys(hosts + ["127.0.0.1", "localhost"]))
            _REGISTRY.emulator = emulator
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "ENDPOINT", None) != emulator.endpoint:
        raise RuntimeError(
            "huggingface_hub was imported before configure_environment(), so it talks to "
            f"{constants.ENDPOINT} instead of the emulator. Call configure_environment() at the very top of "
            "tests/conftest.py, before anything imports huggingface_hub, transformers or peft."
        )
    return emulator
