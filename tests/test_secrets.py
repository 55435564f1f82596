"""The API key never appears in an error, a repr, the ledger or a log."""

from __future__ import annotations

import logging
import pickle

import pytest

import holynb
from holynb.server import LocalServer, faults
from tests.conftest import PLANTED_KEY


def _everything_shown(s, err=None):
    texts = [repr(s), str(s), repr(s.settings), s.ledger.to_csv(), repr(s.records)]
    if err is not None:
        texts += [str(err), repr(err), err.body or "", err.hint or "", repr(err.__dict__)]
    return "\n".join(texts)


def test_secret_hides_itself():
    secret = holynb.Secret(PLANTED_KEY)
    assert PLANTED_KEY not in repr(secret)
    assert PLANTED_KEY not in str(secret)
    assert PLANTED_KEY not in f"{secret}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_key_never_shown_on_auth_failure(caplog):
    caplog.set_level(logging.DEBUG)
    with LocalServer(api_key="sk-the-right-key-000000000000").start() as srv:
        s = holynb.Session(model="local/echo", base_url=srv.base_url, api_key=PLANTED_KEY)
        with pytest.raises(holynb.AuthenticationError) as info:
            s.chat("hello")
        assert PLANTED_KEY not in _everything_shown(s, info.value)
        assert PLANTED_KEY not in caplog.text
        assert "same key" in info.value.hint


def test_key_echoed_by_a_server_is_redacted(local):
    body = f'{{"error": {{"message": "bad key {PLANTED_KEY}"}}}}'
    local.faults.push(faults.status(400, body=body))
    s = holynb.Session(model="local/echo", base_url=local.base_url, api_key=PLANTED_KEY)
    with pytest.raises(holynb.BadRequestError) as info:
        s.chat("hello")
    assert PLANTED_KEY not in _everything_shown(s, info.value)
    assert "***" in str(info.value)


def test_key_never_shown_in_stream_errors():
    with LocalServer(api_key=PLANTED_KEY) as srv:
        srv.faults.push(faults.error_event(after_chunks=2, message=f"oops {PLANTED_KEY}"))
        s = holynb.Session(model="local/echo", base_url=srv.base_url, api_key=PLANTED_KEY)
        with pytest.raises(holynb.StreamError) as info:
            list(s.stream("hello"))
    assert PLANTED_KEY not in _everything_shown(s, info.value)


def test_key_is_sent_as_bearer_and_works(local):
    with LocalServer(api_key=PLANTED_KEY).start() as srv:
        s = holynb.Session(model="local/echo", base_url=srv.base_url, api_key=PLANTED_KEY)
        assert s.chat("hello").text.startswith("You said")
        assert PLANTED_KEY not in _everything_shown(s)


def test_missing_key_says_what_to_do(monkeypatch):
    monkeypatch.delenv("HOLYSHEEP_API_KEY", raising=False)
    monkeypatch.delenv("HOLYNB_API_KEY", raising=False)
    s = holynb.Session(base_url="https://api.holysheep.ai/v1")
    with pytest.raises(holynb.MissingAPIKeyError) as info:
        s.chat("hello")
    msg = str(info.value)
    assert "HOLYSHEEP_API_KEY" in msg and "holynb serve" in msg


def test_openai_key_on_the_relay_gets_a_hint():
    from holynb._client import _auth_hint
    from holynb._config import resolve_settings

    settings = resolve_settings(api_key="sk-proj-" + "a" * 40)
    assert "OpenAI key" in _auth_hint(settings)
    assert "sk-proj-aaa" not in _auth_hint(settings)


def test_env_precedence(monkeypatch):
    monkeypatch.setenv("HOLYNB_API_KEY", "sk-from-env-1234567890")
    monkeypatch.setenv("HOLYNB_MODEL", "env-model")
    monkeypatch.setenv("HOLYNB_BASE_URL", "http://127.0.0.1:9/v1/")
    s = holynb.Session()
    assert s.model == "env-model" and s.base_url == "http://127.0.0.1:9/v1"
    assert s.settings.api_key.get() == "sk-from-env-1234567890"
    s2 = holynb.Session(model="explicit", base_url="http://127.0.0.1:10/v1", api_key="sk-x")
    assert s2.model == "explicit" and s2.settings.api_key.get() == "sk-x"


def test_bad_settings_are_clear_errors():
    with pytest.raises(holynb.ConfigurationError, match="base_url"):
        holynb.Session(base_url="api.example.com")
    with pytest.raises(holynb.ConfigurationError, match="concurrency"):
        holynb.Session(concurrency=0)
    with pytest.raises(holynb.ConfigurationError, match="timeout"):
        holynb.Session(timeout=-1)
