"""Shared fixtures: one local OpenAI-compatible server on 127.0.0.1 for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from holynb.server import LocalServer
from tests.helpers import without_holynb_settings

PLANTED_KEY = "sk-hs-PLANTEDsecret0123456789abcdefXYZ"

# Tests never talk to anything but loopback, never see a real key, and see holynb's defaults.
for _name in set(os.environ) - set(without_holynb_settings(os.environ)):
    del os.environ[_name]


@pytest.fixture(scope="session")
def server() -> Iterator[LocalServer]:
    """The local server, started once, with its code-running models (local/python) turned on.
    It requires its random token: sessions of this process send it by themselves; raw HTTP
    and other processes use ``server.api_key.get()``."""
    srv = LocalServer(python=True).start()
    yield srv
    srv.stop()


@pytest.fixture
def local(server: LocalServer) -> Iterator[LocalServer]:
    """The local server with clean counters and no pending faults."""
    server.reset()
    yield server
    server.reset()
