"""The emulator object tests hold: serves the store over HTTP on 127.0.0.1 and gives tests direct access.

One request runs: route -> authenticate -> injected failure? -> handler, and every answer is logged, errors
included, so tests can count what the client sent. An exception in a handler is an emulator bug: it is
answered with 500 and kept in `server_errors` for the test to see.
"""
from __future__ import annotations

import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .auth import DEFAULT_TOKEN, DEFAULT_USER, Credentials
from .journal import RequestJournal, RequestRecord
from .model import URL_PREFIX, Commit, HubError, PullRequest, Repo, RepoFileEntry
from .routes import route
from .store import HubStore
from .wire import Request, error_response, write_response

# Endpoints that carry no token: public ones, and pre-signed URLs (checked by signature instead).
_NO_TOKEN_ENDPOINTS = {"unknown", "validate_yaml", "lfs_upload", "lfs_upload_part", "lfs_complete", "cdn"}


class HubEmulator(RequestJournal):
    """A Hugging Face Hub on 127.0.0.1, good enough for the real huggingface_hub client.

    Knobs (plain attributes, change them at any time):
        tree_page_size           page size of tree listings (the Hub uses 1000)
        lfs_multipart_chunk_size if set, LFS uploads above it use the multipart transfer with this chunk size
        redirect_lfs_downloads   serve LFS files through a 302 to a "CDN" URL (another origin), as the Hub does
    """

    def __init__(self, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER):
        super().__init__()
        self.credentials = Credentials(token, user)
        self.store = HubStore(author=user)
        self.tree_page_size = 1000
        self.lfs_multipart_chunk_size: int | None = None
        self.redirect_lfs_downloads = False
        self._server: _Server | None = None

    @property
    def token(self) -> str:
        return self.credentials.token

    @property
    def user(self) -> str:
        return self.credentials.user

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> HubEmulator:
        if self._server is None:
            handler = type("HubEmulatorHandler", (_Handler,), {"emulator": self})
            self._server = _Server(("127.0.0.1", 0), handler)
            threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.store.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HubEmulator is not started")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{URL_PREFIX[repo_type]}{repo_id}"

    # -- direct access for tests (model repos, no HTTP) -----------------------------------------------------
    def new_repo_id(self, name: str = "repo") -> str:
        """A repo id in the user's namespace that no other test uses."""
        return self.store.unique_repo_id(name)

    def repo_exists(self, repo_id: str) -> bool:
        return self.store.exists("model", repo_id)

    def create_repo(self, repo_id: str) -> Repo:
        """Create a repo (with the Hub's initial `.gitattributes` commit), or return the existing one."""
        return self.store.create("model", repo_id)

    def add_commit(self, repo_id: str, files: dict[str, bytes | str], message: str = "Seed files") -> Commit:
        """Commit `files` to main (the repo is created if missing), e.g. to seed a source model."""
        return self.store.seed(repo_id, files, message)

    def head(self, repo_id: str, revision: str = "main") -> Commit:
        with self.store.lock:
            return self.store.revision(self.store.get("model", repo_id), revision)

    def list_files(self, repo_id: str, revision: str = "main") -> list[str]:
        return sorted(self.head(repo_id, revision).files)

    def file_entry(self, repo_id: str, path: str, revision: str = "main") -> RepoFileEntry:
        return self.head(repo_id, revision).files[path]

    def read_file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        return self.store.blobs.read(self.file_entry(repo_id, path, revision).sha256)

    def pull_requests(self, repo_id: str) -> list[PullRequest]:
        return list(self.store.get("model", repo_id).pull_requests)

    # -- serving --------------------------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        req = Request(handler, method)
        record = RequestRecord(method, req.raw_path, "unknown")
        try:
            record.endpoint, answer = route(self, req)
            self.credentials.check(req.headers.get("Authorization"), record.endpoint not in _NO_TOKEN_ENDPOINTS)
            self.maybe_fail(record.endpoint)
            response = answer()
        except HubError as err:
            response = error_response(err)
        except Exception:  # an emulator bug: report it to the client and keep it for the test to see
            self.server_errors.append(traceback.format_exc())
            response = error_response(HubError(500, "Hub emulator crashed: " + traceback.format_exc(limit=1)))
        self.record(record)
        try:
            req.drain()
            write_response(handler, method, response)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    emulator: HubEmulator

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.emulator.handle(self, "GET")

    def do_HEAD(self):  # noqa: N802
        self.emulator.handle(self, "HEAD")

    def do_POST(self):  # noqa: N802
        self.emulator.handle(self, "POST")

    def do_PUT(self):  # noqa: N802
        self.emulator.handle(self, "PUT")

    def log_message(self, format, *args):  # noqa: A002 - silence per-request stderr logging
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # snapshot_download opens 8 connections at once
