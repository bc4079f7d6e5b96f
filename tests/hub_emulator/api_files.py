"""Answers that move file contents: preupload, the LFS batch API and its pre-signed uploads, commits, downloads.

The flow the client follows to push: preupload (regular or LFS per file) -> LFS batch -> PUT each object to
the URL it was given (whole, or in parts then "complete") -> verify -> one ndjson commit.
Downloads go through /resolve, LFS files optionally by a 302 to a "CDN" on another origin.
"""
from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from .model import FileOp, HubError, Repo
from .paths import ignore_patterns, matches_git_pattern, validate_repo_path
from .wire import Request, Response, file_response, json_response

if TYPE_CHECKING:
    from .server import HubEmulator

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def preupload(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
    payload = req.json() or {}
    files = payload.get("files")
    if not isinstance(files, list):
        raise HubError(400, '"files" must be a list')
    with hub.store.lock:
        commit = hub.store.revision(hub.store.get(repo_type, repo_id), revision)
        gitignore = payload.get("gitIgnore")
        ignored = ignore_patterns(gitignore if gitignore is not None else hub.store.text(commit, ".gitignore"))
        answers = []
        for item in files:
            path = validate_repo_path(item.get("path"))
            lfs = hub.store.wants_lfs(commit, path, int(item.get("size") or 0),
                                      base64.b64decode(item.get("sample") or ""))
            existing = commit.files.get(path)
            oid = None  # the remote file's oid, by which the client skips unchanged files
            if existing is not None:
                oid = existing.sha256 if lfs else (None if existing.lfs else existing.git_oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "oid": oid,
                            "shouldIgnore": any(matches_git_pattern(path, p) for p in ignored)})
    return json_response({"files": answers, "commitOid": commit.oid})


def lfs_batch(hub: HubEmulator, req: Request, repo_type: str, repo_id: str) -> Response:
    """Upload actions for the objects the repo lacks: pre-signed PUT URLs, multipart above the chunk size."""
    payload = req.json() or {}
    transfers = payload.get("transfers") or ["basic"]
    chosen = "basic"
    objects = []
    repo = hub.store.get(repo_type, repo_id)
    repo_key = f"{repo_type}:{repo_id}"
    verify = {"href": f"{hub.repo_url(repo_type, repo_id)}.git/info/lfs/objects/verify",
              "header": {"Authorization": req.headers.get("Authorization") or ""}}
    for obj in payload.get("objects") or []:
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
            objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be a sha256 and size an int"}})
            continue
        if hub.store.has_lfs(repo, oid):
            objects.append({"oid": oid, "size": size})  # already there: the client skips the upload
            continue
        sig = hub.credentials.sign("upload", repo_key, oid, str(size))
        query = urlencode({"repo": repo_key, "size": size, "sig": sig})
        chunk = hub.lfs_multipart_chunk_size
        if chunk and size > chunk and "multipart" in transfers:
            chosen = "multipart"
            header = {"chunk_size": str(chunk)}
            for n in range(1, -(-size // chunk) + 1):
                header[f"{n:05d}"] = f"{hub.endpoint}/_emulator/lfs/{oid}/part/{n}?{query}"
            upload = {"href": f"{hub.endpoint}/_emulator/lfs/{oid}/complete?{query}", "header": header}
        else:
            upload = {"href": f"{hub.endpoint}/_emulator/lfs/{oid}?{query}"}
        actions = {"upload": upload, "verify": verify}
        objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
    body = {"transfer": chosen, "objects": objects, "hash_algo": "sha256"}
    return 200, {"Content-Type": "application/vnd.git-lfs+json"}, json.dumps(body).encode()


def _signed_upload_target(hub: HubEmulator, req: Request, oid: str) -> tuple[Repo, int]:
    repo_key, size = req.arg("repo") or "", req.arg("size") or ""
    hub.credentials.check_signature(req.arg("sig"), "upload", repo_key, oid, size)
    repo_type, _, repo_id = repo_key.partition(":")
    return hub.store.get(repo_type, repo_id), int(size)


def lfs_upload(hub: HubEmulator, req: Request, oid: str) -> Response:
    repo, size = _signed_upload_target(hub, req, oid)
    hub.store.blobs.put_checked(oid, size, req.iter_body())
    hub.store.own_lfs(repo, oid)
    return 200, {}, b""


def lfs_upload_part(hub: HubEmulator, req: Request, oid: str, part: str) -> Response:
    _signed_upload_target(hub, req, oid)
    return 200, {"ETag": hub.store.blobs.put_part(oid, int(part), req.body)}, b""


def lfs_complete(hub: HubEmulator, req: Request, oid: str) -> Response:
    repo, size = _signed_upload_target(hub, req, oid)
    parts = [(p["partNumber"], p.get("etag")) for p in (req.json() or {}).get("parts") or []]
    hub.store.blobs.join_parts(oid, size, parts)
    hub.store.own_lfs(repo, oid)
    return json_response({"success": True})


def lfs_verify(hub: HubEmulator, req: Request, repo_type: str, repo_id: str) -> Response:
    payload = req.json() or {}
    oid, size = payload.get("oid"), payload.get("size")
    if size is None or not hub.store.has_lfs(hub.store.get(repo_type, repo_id), oid, size):
        raise HubError(404, f"LFS object {oid} of size {size} was not uploaded")
    return json_response({"success": True})


def commit(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
    """An ndjson commit: a header line (summary, description, parentCommit), then one line per file."""
    lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "Commit payload must be ndjson starting with a header line")
    header = lines[0].get("value") or {}
    title, description = header.get("summary"), header.get("description") or ""
    if not isinstance(title, str) or not title.strip():
        raise HubError(400, "Commit summary must not be empty")
    ops = [_file_op(line) for line in lines[1:]]
    create_pr = req.flag("create_pr")
    repo = hub.store.get(repo_type, repo_id)
    new, pr = hub.store.commit(repo, revision, title, description, header.get("parentCommit"), ops, create_pr)
    url = hub.repo_url(repo_type, repo_id)
    body = {"success": True, "commitOid": new.oid, "hookOutput": "", "commitUrl": f"{url}/commit/{new.oid}"}
    if pr is not None:
        body["pullRequestUrl"] = f"{url}/discussions/{pr.num}"
    return json_response(body)


def _file_op(line: dict) -> FileOp:
    key, value = line.get("key"), line.get("value") or {}
    if key == "file":
        if value.get("encoding", "base64") != "base64":
            raise HubError(400, f"Unsupported encoding for {value.get('path')}: {value.get('encoding')}")
        return FileOp(value.get("path"), data=base64.b64decode(value.get("content") or ""))
    if key == "lfsFile":  # an unknown hash algorithm reads as a missing object, as on the Hub
        oid = value.get("oid") if value.get("algo", "sha256") == "sha256" else None
        return FileOp(value.get("path"), oid=oid, size=value.get("size"))
    raise HubError(400, f"Unknown commit operation: {key!r}")


def resolve(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
    with hub.store.lock:
        commit = hub.store.revision(hub.store.get(repo_type, repo_id), revision)
        entry = commit.files.get(path)
    if entry is None:
        raise HubError(404, f"Entry not found: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
    name = path.split("/")[-1]
    headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.git_oid}"', "Accept-Ranges": "bytes",
               "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}"}
    if entry.lfs:
        headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        if hub.redirect_lfs_downloads:
            # "localhost" is another origin than "127.0.0.1" for the client: it drops the token, as for a real CDN.
            query = urlencode({"sig": hub.credentials.sign("cdn", entry.sha256)})
            cdn_url = f"http://localhost:{hub.port}/_emulator/cdn/{entry.sha256}"
            headers["Location"] = f"{cdn_url}?{query}&filename={quote(name)}"
            return 302, headers, b""
    return file_response(req, hub.store.blobs.path(entry.sha256), headers)


def cdn(hub: HubEmulator, req: Request, sha256: str) -> Response:
    hub.credentials.check_signature(req.arg("sig"), "cdn", sha256)
    if not hub.store.blobs.has(sha256):
        raise HubError(404, "No such object")
    return file_response(req, hub.store.blobs.path(sha256), {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})
