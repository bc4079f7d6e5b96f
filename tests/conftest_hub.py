"""Pytest fixtures for the local Hub emulator (see the hub_emulator package).

`tests/conftest.py` calls `configure_environment()` before any other import and re-exports these fixtures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from hub_emulator import HubEmulator, configure_environment


@dataclass(frozen=True)
class HubHandle:
    """What a test needs to reach the emulated Hub."""

    endpoint: str
    token: str
    user: str
    emulator: HubEmulator

    def new_repo_id(self, name: str = "repo") -> str:
        return self.emulator.new_repo_id(name)


@pytest.fixture(scope="session")
def hub() -> HubHandle:
    """The session-wide emulated Hub. Repos persist across tests: use `hub_repo_id` for a fresh name."""
    emulator = configure_environment()
    return HubHandle(endpoint=emulator.endpoint, token=emulator.token, user=emulator.user, emulator=emulator)


@pytest.fixture
def hub_repo_id(hub: HubHandle, request: pytest.FixtureRequest):
    """A repo id no other test uses (not created yet); injected failures are cleared around the test."""
    hub.emulator.clear_failures()
    yield hub.new_repo_id(re.sub(r"\W+", "-", request.node.name))
    hub.emulator.clear_failures()
