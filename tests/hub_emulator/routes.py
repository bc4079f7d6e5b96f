"""Which handler answers which URL, and under which endpoint name tests count and fail it.

Repo ids are always "namespace/name": the client sends nothing else to this emulator. Revisions arrive as
one quoted segment ("refs%2Fpr%2F1"), which `Request.segments` unquotes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import api_files as files
from . import api_repos as repos
from .model import URL_PREFIX, HubError
from .wire import Request, Response

if TYPE_CHECKING:
    from .server import HubEmulator

Route = tuple[str, Callable[[], Response]]
_API_TYPES = {f"{repo_type}s": repo_type for repo_type in URL_PREFIX}  # "models" -> "model"
_WEB_TYPES = {prefix.strip("/"): repo_type for repo_type, prefix in URL_PREFIX.items() if prefix}


def _not_found() -> Response:
    raise HubError(404, "Sorry, we can't find the page you are looking for (not emulated).")


UNKNOWN: Route = ("unknown", _not_found)


def route(hub: HubEmulator, req: Request) -> Route:
    """(endpoint name, zero-argument callable answering the request)."""
    segs, m = req.segments, req.method
    if segs[:1] == ["_emulator"]:
        return _presigned(hub, req, segs[1:])
    if segs[:1] == ["api"]:
        return _api(hub, req, segs[1:])
    repo_type, rest = "model", segs
    if rest[:1] and rest[0] in _WEB_TYPES:
        repo_type, rest = _WEB_TYPES[rest[0]], rest[1:]
    if len(rest) > 3 and rest[2] == "resolve" and m in ("GET", "HEAD"):  # {repo}/resolve/{rev}/{path}
        repo_id, rev, path = "/".join(rest[:2]), rest[3], "/".join(rest[4:])
        return "resolve", lambda: files.resolve(hub, req, repo_type, repo_id, rev, path)
    if len(rest) == 6 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"] and m == "POST":
        repo_id = f"{rest[0]}/{rest[1][:-4]}"
        if rest[5] == "batch":
            return "lfs_batch", lambda: files.lfs_batch(hub, req, repo_type, repo_id)
        if rest[5] == "verify":
            return "lfs_verify", lambda: files.lfs_verify(hub, req, repo_type, repo_id)
    return UNKNOWN


def _api(hub: HubEmulator, req: Request, rest: list[str]) -> Route:
    m = req.method
    if rest == ["whoami-v2"] and m == "GET":
        return "whoami", lambda: repos.whoami(hub, req)
    if rest == ["repos", "create"] and m == "POST":
        return "create_repo", lambda: repos.create_repo(hub, req)
    if rest == ["validate-yaml"] and m == "POST":
        return "validate_yaml", lambda: repos.validate_yaml(hub, req)
    if len(rest) >= 3 and rest[0] in _API_TYPES:
        return _repo_api(hub, req, _API_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:])
    return UNKNOWN


def _repo_api(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, rest: list[str]) -> Route:
    """/api/{type}s/{repo_id}/{sub}/{revision...}: most subpaths take the rest as the revision."""
    m, sub, tail = req.method, (rest[0] if rest else ""), "/".join(rest[1:])
    if m == "GET" and not rest:
        return "repo_info", lambda: repos.repo_info(hub, req, repo_type, repo_id, "main")
    if m == "GET" and sub == "refs":
        return "refs", lambda: repos.refs(hub, req, repo_type, repo_id)
    if not tail:
        return UNKNOWN
    if m == "GET" and sub == "revision":
        return "repo_info", lambda: repos.repo_info(hub, req, repo_type, repo_id, tail)
    if m == "GET" and sub == "tree":  # tree/{rev}/{path}
        rev, path = rest[1], "/".join(rest[2:])
        return "tree", lambda: repos.tree(hub, req, repo_type, repo_id, rev, path)
    if m == "GET" and sub == "commits":
        return "commits", lambda: repos.list_commits(hub, req, repo_type, repo_id, tail)
    if m == "POST" and sub == "preupload":
        return "preupload", lambda: files.preupload(hub, req, repo_type, repo_id, tail)
    if m == "POST" and sub == "commit":
        return "commit", lambda: files.commit(hub, req, repo_type, repo_id, tail)
    if m == "POST" and sub == "branch":
        return "create_branch", lambda: repos.create_branch(hub, req, repo_type, repo_id, tail)
    return UNKNOWN


def _presigned(hub: HubEmulator, req: Request, segs: list[str]) -> Route:
    """Pre-signed URLs handed out by the LFS batch API and the download redirect (no token, a signature)."""
    m = req.method
    if segs[:1] == ["lfs"] and len(segs) == 2 and m == "PUT":
        return "lfs_upload", lambda: files.lfs_upload(hub, req, segs[1])
    if segs[:1] == ["lfs"] and len(segs) == 4 and segs[2] == "part" and m == "PUT":
        return "lfs_upload_part", lambda: files.lfs_upload_part(hub, req, segs[1], segs[3])
    if segs[:1] == ["lfs"] and len(segs) == 3 and segs[2] == "complete" and m == "POST":
        return "lfs_complete", lambda: files.lfs_complete(hub, req, segs[1])
    if segs[:1] == ["cdn"] and len(segs) >= 2 and m in ("GET", "HEAD"):
        return "cdn", lambda: files.cdn(hub, req, segs[1])
    return UNKNOWN
