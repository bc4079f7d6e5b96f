"""Answers about repos: identity, creation, repo info, tree listings, refs, commit history, branches, cards.

Each function maps one request onto the store and shapes the JSON the client parses; `hub` is the HubEmulator.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .cards import card_metadata, validate_card_metadata
from .model import URL_PREFIX, Commit, HubError
from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .server import HubEmulator

_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_COMMITS_PAGE_SIZE = 50


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def whoami(hub: HubEmulator, req: Request) -> Response:
    return json_response(hub.credentials.whoami())


def create_repo(hub: HubEmulator, req: Request) -> Response:
    payload = req.json() or {}
    name, namespace = payload.get("name"), payload.get("organization") or hub.user
    repo_type = payload.get("type") or "model"
    if repo_type not in URL_PREFIX:
        raise HubError(400, f"Invalid repo type: {repo_type}")
    if not isinstance(name, str) or not _REPO_NAME.match(name) or "--" in name or ".." in name:
        raise HubError(400, f"Invalid repo name: {name!r}")
    hub.credentials.check_namespace(namespace, repo_type)
    repo_id = f"{namespace}/{name}"
    url = hub.repo_url(repo_type, repo_id)
    with hub.store.lock:
        if hub.store.exists(repo_type, repo_id):
            # The client reads "url" from this 409 body when exist_ok=True.
            raise HubError(409, f"You already created this {repo_type} repo", body={
                "error": f"You already created this {repo_type} repo", "url": url})
        private = payload.get("visibility") == "private" if "visibility" in payload else bool(payload.get("private"))
        hub.store.create(repo_type, repo_id, private=private)
    return json_response({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})


def validate_yaml(hub: HubEmulator, req: Request) -> Response:
    content = (req.json() or {}).get("content")
    if not isinstance(content, str):
        raise HubError(400, '"content" must be a string')
    errors, warnings = validate_card_metadata(content)
    if "text/plain" in (req.headers.get("Accept") or ""):  # what ModelCard.validate() asks for
        text = "\n".join(errors or warnings)
        return (400 if errors else 200), {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
    body = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
    return json_response(body, status=400 if errors else 200)


def repo_info(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
    blobs = req.flag("blobs")
    with hub.store.lock:
        repo = hub.store.get(repo_type, repo_id)
        commit = hub.store.revision(repo, revision)
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        card_data = card_metadata(hub.store.text(commit, "README.md") or "")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24], "id": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": iso(commit.date), "createdAt": iso(repo.created_at), "private": repo.private,
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
            config = _config_summary(hub, commit)
            if config:
                info["config"] = config
    return json_response(info)


def _config_summary(hub: HubEmulator, commit: Commit) -> dict:
    """What the Hub shows of config.json in repo info: architectures and model_type."""
    entry = commit.files.get("config.json")
    if entry is None or entry.size > 1 << 20:
        return {}
    try:
        config = json.loads(hub.store.blobs.read(entry.sha256))
    except ValueError:
        return {}
    return {k: config[k] for k in ("architectures", "model_type") if isinstance(config, dict) and k in config}


def tree(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
    with hub.store.lock:
        commit = hub.store.revision(hub.store.get(repo_type, repo_id), revision)
        prefix = path.strip("/")
        dirs, files = hub.store.tree(commit, prefix, req.flag("recursive"))
        if prefix and not files and not dirs:
            raise HubError(404, f"Entry not found: {prefix}", code="EntryNotFound",
                           headers={"X-Repo-Commit": commit.oid})
        items = [_folder_info(commit, d) for d in dirs] + [_file_info(commit, f) for f in files]
    return _paginate(hub, req, items, hub.tree_page_size)


def _folder_info(commit: Commit, path: str) -> dict:
    under = sorted((p, e.git_oid) for p, e in commit.files.items() if p.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1(repr(under).encode()).hexdigest(), "size": 0, "path": path}


def _file_info(commit: Commit, path: str) -> dict:
    entry = commit.files[path]
    info: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return info


def _paginate(hub: HubEmulator, req: Request, items: list, page_size: int) -> Response:
    """One page of `items`, with a `Link: <...>; rel="next"` header while more remain, as the Hub pages."""
    start = int(req.arg("cursor") or 0)
    headers = {}
    if start + page_size < len(items):
        query = {k: v[0] for k, v in req.query.items()}
        query["cursor"] = str(start + page_size)
        headers["Link"] = f'<{hub.endpoint}{req.raw_path}?{urlencode(query)}>; rel="next"'
    return json_response(items[start:start + page_size], headers=headers)


def refs(hub: HubEmulator, req: Request, repo_type: str, repo_id: str) -> Response:
    with hub.store.lock:
        branches = list(hub.store.get(repo_type, repo_id).branches.items())
    return json_response({
        "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in branches],
        "converts": [], "tags": [],
    })


def list_commits(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, revision: str) -> Response:
    with hub.store.lock:
        repo = hub.store.get(repo_type, repo_id)
        history = repo.history(hub.store.revision(repo, revision))
    items = [{"id": c.oid, "title": c.title, "message": c.description, "authors": [{"user": c.author}],
              "date": iso(c.date)} for c in history]
    return _paginate(hub, req, items, _COMMITS_PAGE_SIZE)


def create_branch(hub: HubEmulator, req: Request, repo_type: str, repo_id: str, branch: str) -> Response:
    starting_point = (req.json() or {}).get("startingPoint") or "main"
    with hub.store.lock:
        hub.store.create_branch(hub.store.get(repo_type, repo_id), branch, starting_point)
    return json_response({})
