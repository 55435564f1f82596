"""The keyed store of finished answers: keys of exact requests, crash-safe SQLite rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from holynb.errors import ConfigurationError
from holynb.keystore import CallerIdentity, KeyStore, request_key
from holynb.results import ChatResult, Usage
from holynb.store import LedgerStore

URL = "https://api.example.com/v1"
ME = CallerIdentity(URL, "openai", "fingerprint-of-my-key")
BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}


def answer(text: str = "Hello") -> ChatResult:
    usage = Usage(prompt_tokens=9, completion_tokens=2, cached_tokens=1, reasoning_tokens=0)
    return ChatResult(
        text=text, model="gpt-4.1", finish_reason="stop", usage=usage, latency_ms=321.5,
        ttft_ms=120.0, attempts=2, request_id="req_1", cost_usd=0.00012,
    )  # fmt: skip


def test_the_key_ignores_order_and_delivery_but_not_content() -> None:
    key = request_key(BODY, ME)
    assert request_key(dict(reversed(BODY.items())), ME) == key
    assert request_key({**BODY, "stream": True, "stream_options": {"x": 1}}, ME) == key
    assert request_key(BODY, CallerIdentity(URL + "/", ME.api, ME.credential)) == key
    assert (
        request_key(BODY, CallerIdentity("https://other.example.com/v1", ME.api, ME.credential))
        != key
    )
    assert request_key({**BODY, "temperature": 0.1}, ME) != key
    assert request_key({**BODY, "seed": 1}, ME) != key
    other = {**BODY, "messages": [{"role": "user", "content": "Hi!"}]}
    assert request_key(other, ME) != key


def test_the_key_covers_the_wire_format_and_the_credential() -> None:
    key = request_key(BODY, ME)
    assert request_key(BODY, CallerIdentity(URL, "anthropic", ME.credential)) != key
    assert request_key(BODY, CallerIdentity(URL, "openai", "fingerprint-of-another")) != key
    assert request_key(BODY, CallerIdentity(URL, "openai", "")) != key


def test_an_answer_comes_back_equal(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "a.sqlite") as store:
        store.put("k", answer())
        assert store.get("k") == answer()
        assert store.get("missing") is None
        assert "k" in store and len(store) == 1


def test_get_many_finds_the_stored_among_thousands(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "a.sqlite") as store:
        for i in range(0, 1200, 2):
            store.put(f"k{i}", answer(f"a{i}"))
        found = store.get_many(f"k{i}" for i in range(1200))
    assert len(found) == 600 and found["k1198"].text == "a1198"


def test_put_replaces_and_clear_forgets(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "a.sqlite") as store:
        store.put("k", answer("old"))
        store.put("k", answer("new"))
        assert store.get("k").text == "new" and len(store) == 1
        assert store.stats()["models"] == {"gpt-4.1": 1}
        assert store.delete("k") and not store.delete("k")
        store.put("k", answer())
        assert store.clear() == 1 and len(store) == 0


def test_the_file_is_wal_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with KeyStore(path) as store:
        store.put("k", answer())
        assert store._connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with KeyStore(path) as store:
        assert store.get("k") == answer()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_ledger_log_or_a_text_file_is_refused(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "log.sqlite").close()
    with pytest.raises(ConfigurationError, match="answer store"):
        KeyStore(tmp_path / "log.sqlite")
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    with pytest.raises(ConfigurationError, match="answer store"):
        KeyStore(tmp_path / "notes.txt")


def test_fields_a_newer_holynb_stores_are_ignored(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "a.sqlite") as store:
        store.put("k", answer())
        store._connect().execute(
            "UPDATE answers SET value = json_set(value, '$.parsed', json('{\"a\": 1}'))"
        )
        raw = store._connect().execute("SELECT value FROM answers").fetchone()[0]
        assert '"parsed":{"a":1}' in raw
        assert store.get("k") == answer()


def test_the_stored_json_is_the_results_fields_but_its_cache_flags() -> None:
    import json
    from dataclasses import asdict

    from holynb.keystore import result_to_json

    usage = Usage(prompt_tokens=7, completion_tokens=3, cached_tokens=2, service_tier="flex",
                  cache_write_tokens=5, cache_ttl="1h")  # fmt: skip
    result = ChatResult(text='say "hi"\n', model="m", finish_reason="stop", usage=usage,
                        latency_ms=12.5, ttft_ms=None, request_id="req-1", cost_usd=0.002,
                        warning="repaired", parsed={"a": 1}, cache_hit=True, saved_usd=0.1,
                        interrupted=True)  # fmt: skip
    expected = {k: v for k, v in asdict(result).items()
                if k not in {"cache_hit", "saved_usd", "interrupted", "parsed"}}  # fmt: skip
    assert json.loads(result_to_json(result)) == expected
