"""HTTP/1.1 on the wire: reading a request (query, body, chunked uploads) and writing an answer.

Answers are (status, headers, body) tuples; a body may be a `FileSlice`, streamed from disk so multi-MB
LFS files and Range reads (safetensors headers) never sit in memory.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, Union
from urllib.parse import parse_qs, unquote, urlsplit

from .model import HubError


@dataclass
class FileSlice:
    path: Path
    start: int
    length: int


Response = tuple[int, dict, Union[bytes, FileSlice]]


class Request:
    """One request: path segments (each unquoted), query, and a body read at most once."""

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
        """Yield the request body, de-chunking `Transfer-Encoding: chunked` (how httpx sends unknown lengths)."""
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
                yield from _read_exactly(rfile, size, chunk_size)
                rfile.readline()
        else:
            yield from _read_exactly(rfile, int(self.headers.get("Content-Length") or 0), chunk_size)

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def drain(self) -> None:
        """Read what is left of the body: on a kept-alive connection the next request starts right after it."""
        for _ in self.iter_body():
            pass


def _read_exactly(rfile, size: int, chunk_size: int) -> Iterator[bytes]:
    while size > 0:
        data = rfile.read(min(size, chunk_size))
        if not data:
            return
        size -= len(data)
        yield data


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(obj).encode()


def error_response(err: HubError) -> Response:
    """The Hub's error shape: a JSON body plus X-Error-Code / X-Error-Message, which the client reads."""
    headers = {"X-Error-Message": _header_safe(err.message), **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return json_response(err.body, err.status, headers)


def _header_safe(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")[:1000]


def file_response(req: Request, path: Path, headers: dict) -> Response:
    """A file download, honouring one `Range: bytes=a-b` (or suffix `-n`) with a 206 answer."""
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
            raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, headers, FileSlice(path, start, end - start + 1)
    return 200, headers, FileSlice(path, 0, size)


def write_response(handler: BaseHTTPRequestHandler, method: str, response: Response) -> None:
    status, headers, body = response
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if "Content-Length" not in headers:
        handler.send_header("Content-Length", str(body.length if isinstance(body, FileSlice) else len(body)))
    handler.end_headers()
    if method == "HEAD":
        return
    if not isinstance(body, FileSlice):
        handler.wfile.write(body)
        return
    with open(body.path, "rb") as f:
        f.seek(body.start)
        remaining = body.length
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 20))
            if not chunk:
                break
            handler.wfile.write(chunk)
            remaining -= len(chunk)
