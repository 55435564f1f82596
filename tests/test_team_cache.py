"""The shared response cache: answers in PostgreSQL, found by every machine of the team."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import holynb
from holynb._config import resolve_settings
from holynb.cache import ResponseCache
from holynb.results import ChatResult
from holynb.team.answers import TeamAnswers
from holynb.team.database import Database
from tests.helpers import key_env, session_for

pytest.importorskip("psycopg")

ASKER = """
import sys, holynb
s = holynb.Session(model="local/echo", base_url=sys.argv[1], database=sys.argv[2], cache=True)
df = s.map(["alpha", "beta", "gamma"], max_tokens=30, progress=False)
print(int(df["cache_hit"].sum()), s.cache.path)
"""


def _ask(local: Any, url: str, home: Any) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", ASKER, local.base_url, url],
        env={**key_env(local), "HOLYNB_HOME": str(home)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    hits, where = done.stdout.strip().split(" ", 1)
    return int(hits), where


def test_a_second_process_sends_nothing_already_asked(
    local: Any, pg_url: str, tmp_path: Any
) -> None:
    from tests.pg import PASSWORD

    assert _ask(local, pg_url, tmp_path / "a")[0] == 0
    assert local.stats.requests == 3
    hits, where = _ask(local, pg_url, tmp_path / "b")  # another machine: another HOLYNB_HOME
    assert hits == 3
    assert local.stats.requests == 3  # nothing sent
    assert "holynb_answers" in where and PASSWORD not in where
    assert not (tmp_path / "b").exists()  # no file of its own


def test_answers_asked_with_another_key_are_not_seen(pg_url: str) -> None:
    store = TeamAnswers(Database.of(pg_url))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    url = "https://relay.example/v1"
    alice = ResponseCache(store, resolve_settings(base_url=url, api_key="sk-alice-key-0001"))
    bob = ResponseCache(store, resolve_settings(base_url=url, api_key="sk-bob-key-000002"))
    answer = ChatResult(text="hello", model="m", finish_reason="stop")
    assert alice.save(body, answer)
    assert alice.lookup(body) is not None
    assert bob.lookup(body) is None
    assert "sk-alice" not in str(store.stats()) and len(store) == 1


def test_stats_and_clear_work_on_the_shared_cache(local: Any, pg_url: str) -> None:
    s = session_for(local, database=pg_url, cache=True)
    s.chat("one", max_tokens=20)
    s.chat("one", max_tokens=20)
    stats = s.cache.stats()  # type: ignore[union-attr]
    assert stats["entries"] == 1 and stats["hits"] == 1 and stats["bytes"] > 0
    assert s.cache.clear() == 1  # type: ignore[union-attr]
    assert len(s.cache) == 0  # type: ignore[arg-type]


def test_an_unreadable_stored_answer_is_asked_again(local: Any, pg_url: str) -> None:
    import psycopg

    s = session_for(local, database=pg_url, cache=True)
    s.chat("one", max_tokens=20)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE holynb_answers SET value = '{\"text\": 5}'")
    with pytest.warns(holynb.StoreWarning, match="cannot be read"):
        again = s.chat("one", max_tokens=20)
    assert not again.cache_hit and local.stats.requests == 2


def test_a_cache_file_path_stays_a_file_with_a_database(
    local: Any, pg_url: str, tmp_path: Any
) -> None:
    s = session_for(local, database=pg_url, cache=tmp_path / "c.sqlite")
    s.chat("one", max_tokens=20)
    assert (tmp_path / "c.sqlite").exists()
    derived = s.derive(model="local/echo")
    assert derived.cache is not None and derived.cache.store is s.cache.store  # type: ignore[union-attr]
