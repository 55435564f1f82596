"""The team database: schema created and migrated forward, and clear connection errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from holynb.errors import ConfigurationError, StoreError
from holynb.team.database import Database, redact
from holynb.team.schema import MIGRATIONS, SCHEMA_VERSION
from tests.pg import PASSWORD

pytest.importorskip("psycopg")


def _versions(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM holynb_schema_version ORDER BY version")
        return [r[0] for r in rows]


def test_a_new_database_gets_every_migration_once_recorded(pg_url: str) -> None:
    Database(pg_url).ensure().close()
    Database(pg_url).ensure().close()  # opening again changes nothing
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))


def test_an_older_schema_is_migrated_forward_keeping_its_rows(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # as holynb's first version left it
        conn.execute(
            "CREATE TABLE holynb_schema_version (version integer PRIMARY KEY,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[0])  # type: ignore[arg-type]
        conn.execute("INSERT INTO holynb_schema_version (version) VALUES (1)")
        conn.execute(
            'INSERT INTO holynb_calls (ts, model, kind, ok, "user", session)'
            " VALUES (now(), 'm', 'chat', true, 'alice', 's1')"
        )
    Database(pg_url).ensure().close()
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM holynb_calls").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM holynb_budgets").fetchone() == (0,)


def test_a_newer_schema_is_refused_with_what_to_do(pg_url: str) -> None:
    Database(pg_url).ensure().close()
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO holynb_schema_version (version) VALUES (999)")
    with pytest.raises(ConfigurationError, match=r"newer than this holynb knows.*upgrade"):
        Database(pg_url).ensure()


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Database(pg_url).ensure().close()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _versions(pg_url) == list(range(1, SCHEMA_VERSION + 1))


def test_a_wrong_password_names_the_database_never_the_password(pg_cluster: Any) -> None:
    url = pg_cluster.url_for(password="not-" + PASSWORD)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        Database(url).ensure()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"127.0.0.1:{pg_cluster.port}/holynb" in message
    assert "password authentication failed" in message
    assert PASSWORD not in message and "not-" + PASSWORD not in message
    assert PASSWORD not in repr(Database(url))


def test_a_missing_database_is_named(pg_cluster: Any) -> None:
    with pytest.raises(StoreError, match=f"127.0.0.1:{pg_cluster.port}/nosuchdb"):
        Database(pg_cluster.url_for("nosuchdb")).ensure()


def test_a_database_that_is_down_fails_within_seconds() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed: nothing listens there
    url = f"postgresql://holynb:{PASSWORD}@127.0.0.1:{port}/team"
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}/team") as caught:
        Database(url).ensure()
    assert time.monotonic() - started < 5
    assert PASSWORD not in str(caught.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def test_a_hung_database_fails_by_its_connect_timeout(silent_port: int) -> None:
    url = f"postgresql://holynb:{PASSWORD}@127.0.0.1:{silent_port}/team?connect_timeout=1"
    db = Database(url)
    db.connect_timeout = 1
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{silent_port}/team"):
        db.ensure()
    assert time.monotonic() - started < 5


def test_a_url_that_is_not_postgresql_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="postgresql://") as caught:
        Database(f"mysql://u:{PASSWORD}@h/db")
    assert PASSWORD not in str(caught.value)


def test_redact_hides_passwords_in_urls_and_keywords() -> None:
    text = f"postgresql://u:{PASSWORD}@h/db and password={PASSWORD} and {PASSWORD}"
    assert PASSWORD not in redact(text, PASSWORD)
    assert PASSWORD not in redact(f"postgresql://u:{PASSWORD}@h/db")
