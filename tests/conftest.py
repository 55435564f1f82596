"""Shared fixtures: one local OpenAI-compatible server on 127.0.0.1 for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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


# -- PostgreSQL (team mode) ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see tests/pg.py). It skips, saying why,
    when the cluster cannot start, except in CI (CI=1 or HOLYNB_REQUIRE_POSTGRES=1): then the
    test fails."""
    from tests import pg

    try:
        cluster = pg.start_cluster()
    except pg.PostgresUnavailable as err:
        if pg.required():
            pytest.fail(f"PostgreSQL is required here (CI) but could not start: {err}")
        pytest.skip(f"PostgreSQL could not start, so the team-mode tests skip: {err}")
    yield cluster
    from holynb.team.database import Database

    Database.close_all()  # no pool left retrying a server that is gone
    cluster.stop()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """The URL (with its password) of a fresh, empty database on the test cluster."""
    return str(pg_cluster.create_database(f"t{next(_databases)}"))
