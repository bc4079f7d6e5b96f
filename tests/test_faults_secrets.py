"""Tokens never reach a message, a traceback or a log line, even from a server that echoes the request headers."""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from hf_lines.adapters.base_headers import HubHeaders
from hf_lines.errors import CheckpointError, PushError
from hf_lines.publish.hub import push_folder
from hf_lines.redact import SecretFilter, install_log_filter, scrub
from hf_lines.io import resolve
from hf_lines.io.checkpoint import read_names_and_config

SECRET = "s3cret-echo-token-value"  # not token-shaped: only passing it to scrub can hide it


class _Echo(BaseHTTPRequestHandler):
    """Fails every request, echoing its headers (Authorization included) in the body and X-Error-Message."""

    status = 400

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        echoed = f"bad request; you sent {dict(self.headers)}"
        body = json.dumps({"error": echoed}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Message", echoed)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = _reply

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _point_hub_at(monkeypatch, endpoint: str) -> None:
    """HfApi reads constants.ENDPOINT when it is made; file URLs come from a template made at import."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def echo(echo_server, monkeypatch) -> str:
    """huggingface_hub pointed at the echo server for one test."""
    endpoint = f"http://127.0.0.1:{echo_server.server_port}"
    _point_hub_at(monkeypatch, endpoint)
    return endpoint


@pytest.fixture
def scrub_logs() -> Iterator[None]:
    """The CLI's setup: a SecretFilter on every handler of the root logger (pytest's capture included), for one test.

    Needed, not decoration: at DEBUG, httpcore logs the response headers, where the server echoed the token.
    """
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    secret_filter = install_log_filter(*handlers)
    yield
    for handler in handlers:
        handler.removeFilter(secret_filter)


def _everything(error: BaseException, caplog, capsys) -> str:
    """All a user could see: the message, the whole traceback (chained errors too), logs, stdout and stderr."""
    out = capsys.readouterr()
    return "".join(traceback.format_exception(error)) + caplog.text + out.out + out.err


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("given", [True, False], ids=["token-argument", "HF_TOKEN"])
def test_download_error_never_shows_the_token(echo, scrub_logs, caplog, capsys, monkeypatch, status, given):
    monkeypatch.setattr(_Echo, "status", status)
    secret = SECRET if given else os.environ["HF_TOKEN"]
    with caplog.at_level(logging.DEBUG), pytest.raises(CheckpointError, match="cannot download") as err:
        resolve(f"echo-org/model-{status}-{given}", token=secret if given else None)
    assert "***" in str(err.value)  # the echoed header is in the message, its value hidden
    assert secret not in _everything(err.value, caplog, capsys)


def _cached_then_echo(hub, family_models, monkeypatch, echo: str) -> str:
    """A repo whose small files are in the cache, so only the header request reaches the echo server."""
    base, _ = family_models("llama")
    repo_id = hub.new_repo_id("echo-headers")
    hub.emulator.add_commit(repo_id, {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()})
    _point_hub_at(monkeypatch, hub.endpoint)
    resolve(repo_id, weights=False)
    _point_hub_at(monkeypatch, echo)
    return repo_id


@pytest.mark.parametrize("read", [read_names_and_config, HubHeaders], ids=["read_names_and_config", "HubHeaders"])
def test_header_read_error_never_shows_the_token(hub, family_models, echo, scrub_logs, caplog, capsys, monkeypatch,
                                                 read):
    repo_id = _cached_then_echo(hub, family_models, monkeypatch, echo)
    with caplog.at_level(logging.DEBUG), pytest.raises(CheckpointError, match="safetensors headers") as err:
        read(repo_id, token=SECRET)
    assert "***" in str(err.value)
    assert SECRET not in _everything(err.value, caplog, capsys)


def test_push_error_never_shows_the_token(echo, scrub_logs, tmp_path, caplog, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError, match="create the repo") as err:
        push_folder(folder, "echo-org/pushed", token=SECRET)
    assert "***" in str(err.value)
    assert SECRET not in _everything(err.value, caplog, capsys)


@pytest.mark.parametrize("echoed", [
    "{'authorization': 'Bearer %s', 'host': 'x'}",   # a dict of headers, printed
    '{"Authorization": "Bearer %s"}',                 # the same as JSON
    "authorization=%s; basic usage",                 # no scheme
    "Proxy-Authorization: Basic %s",
])
def test_scrub_hides_echoed_header_values(echoed):
    text = scrub(echoed % "unknownvalue123")  # a token nobody told scrub about
    assert "unknownvalue123" not in text and "***" in text
    assert ("basic usage" in text) == ("basic usage" in echoed)  # prose is left alone


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """A handler on the root logger, as the CLI's logging.basicConfig makes, removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_log_filter_scrubs_messages_and_tracebacks(root_stream):
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    secret_filter = install_log_filter()  # no argument: the root logger's handlers, as the CLI calls it
    assert all(any(isinstance(f, SecretFilter) for f in h.filters) for h in handlers)  # one each, maybe an earlier one
    log = logging.getLogger("hf_lines.some.module")  # a child logger: the filter sits on the handler
    log.warning("server said: %s", f"{{'authorization': 'Bearer {SECRET}'}}")
    try:
        raise RuntimeError(f"echo of Authorization: Bearer {SECRET} and {os.environ['HF_TOKEN']}")
    except RuntimeError:
        log.exception("download failed")
    written = root_stream.getvalue()
    assert "server said" in written and "download failed" in written and "RuntimeError" in written
    assert SECRET not in written and os.environ["HF_TOKEN"] not in written
    for handler in handlers:
        handler.removeFilter(secret_filter)
