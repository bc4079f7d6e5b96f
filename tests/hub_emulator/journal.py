"""What tests observe and break: the log of requests the emulator answered, and failures injected on purpose."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from .model import HubError


@dataclass
class RequestRecord:
    method: str
    path: str
    endpoint: str  # the route's name ("commit", "lfs_upload"...), or "unknown" when no route matched


@dataclass
class _Failure:
    status: int
    remaining: int
    message: str


class RequestJournal:
    """Mixin of HubEmulator: `requests` and `server_errors` (tracebacks of emulator bugs, answered with 500)."""

    def __init__(self):
        self.requests: list[RequestRecord] = []
        self.server_errors: list[str] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._journal_lock = threading.Lock()

    def record(self, record: RequestRecord) -> None:
        with self._journal_lock:
            self.requests.append(record)

    def count(self, endpoint: str | None = None) -> int:
        """Number of requests received, optionally only for one endpoint name."""
        with self._journal_lock:
            return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def unhandled(self) -> list[RequestRecord]:
        """Requests for routes the emulator does not know: a sign the client needs something new."""
        return [r for r in self.requests if r.endpoint == "unknown"]

    def reset_requests(self) -> None:
        with self._journal_lock:
            self.requests.clear()

    def inject_failure(self, endpoint: str, status: int = 500, times: int = 1,
                       message: str = "Internal Error - emulated failure") -> None:
        """Answer the next `times` requests to `endpoint` (a RequestRecord.endpoint name) with `status`.

        The client retries 5xx on preupload, LFS batch and LFS uploads (with back-off sleeps), not on commit.
        """
        with self._journal_lock:
            self._failures.setdefault(endpoint, []).append(_Failure(status, times, message))

    def clear_failures(self, endpoint: str | None = None) -> None:
        with self._journal_lock:
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
            self.inject_failure("commit")

    def maybe_fail(self, endpoint: str) -> None:
        """Raise the next failure injected for `endpoint`, if any is left."""
        with self._journal_lock:
            for failure in self._failures.get(endpoint, []):
                if failure.remaining > 0:
                    failure.remaining -= 1
                    raise HubError(failure.status, failure.message)
