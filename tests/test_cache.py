"""The response cache: a repeated request is answered from the file; nothing sent or billed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import orjson
import pytest

import holynb
from holynb.server import LocalServer, faults
from holynb.server.models import echo
from tests.helpers import CHILD_ENV, key_env, session_for

PRICES = {"local/echo": {"input": 3.0, "output": 15.0}}


@pytest.fixture
def cached(local, tmp_path):
    s = session_for(local, prices=PRICES, cache=tmp_path / "cache.sqlite")
    yield s
    s.close()


def test_a_repeated_call_is_a_free_hit_that_sends_nothing(local, cached):
    first = cached.chat("Say hi", max_tokens=20)
    second = cached.chat("Say hi", max_tokens=20)
    assert local.stats.requests == 1
    assert not first.cache_hit and first.cost_usd > 0
    assert second.cache_hit and second.text == first.text and second.usage == first.usage
    assert second.cost_usd == 0.0 and second.saved_usd == pytest.approx(first.cost_usd)
    assert second.attempts == 0
    rows = cached.ledger
    assert rows["cache_hit"].tolist() == [False, True]
    assert rows["cost_usd"].iloc[1] == 0.0
    assert rows["saved_usd"].iloc[1] == pytest.approx(first.cost_usd)
    assert cached.total_cost_usd == pytest.approx(first.cost_usd)
    stats = cached.cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (1, 1, 1)
    assert stats["saved_usd"] == pytest.approx(first.cost_usd)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 7},
        {"system": "Be brief."},
        {"model": "local/echo-b"},
        {"prompt": "Say hello"},
        {"top_p": 0.9},
        {"seed": 3},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_parameter_that_changes_the_answer_is_a_miss(local, cached, change):
    local.register_model("local/echo-b", echo)
    base = {"prompt": "Say hi", "temperature": 0.0, "max_tokens": 20}
    cached.chat(base.pop("prompt"), **base)
    args = {"prompt": "Say hi", "temperature": 0.0, "max_tokens": 20, **change}
    again = cached.chat(args.pop("prompt"), **args)
    assert not again.cache_hit
    assert local.stats.requests == 2


def test_a_different_endpoint_is_a_miss(local, tmp_path):
    path = tmp_path / "cache.sqlite"
    session_for(local, cache=path).chat("Say hi")
    other = holynb.Session(base_url=local.url + "/v1/", model="local/echo", cache=path)
    assert other.chat("Say hi").cache_hit  # the same endpoint, spelled differently
    with holynb.Session(base_url="http://localhost:1/v1", model="local/echo", cache=path) as s:
        assert s.cache.lookup(s.caller.body("Say hi")) is None


def test_a_stream_hit_is_replayed_in_pieces(local, cached):
    original = cached.chat("Tell me something long", max_tokens=60)
    pieces = list(cached.stream("Tell me something long", max_tokens=60))
    assert local.stats.requests == 1
    assert len(pieces) > 3 and "".join(pieces) == original.text
    assert cached.last_result.cache_hit
    assert cached.ledger["kind"].tolist() == ["chat", "stream"]


def test_a_streamed_answer_is_stored_and_answers_a_chat(local, cached):
    text = "".join(cached.stream("stream me", max_tokens=30))
    assert cached.chat("stream me", max_tokens=30).text == text
    assert local.stats.requests == 1


def test_no_cache_and_refresh_per_call(local, cached):
    first = cached.chat("Say hi")
    assert not cached.chat("Say hi", cache=False).cache_hit
    refreshed = cached.chat("Say hi", cache="refresh")
    assert not refreshed.cache_hit and local.stats.requests == 3
    assert cached.chat("Say hi").request_id == refreshed.request_id != first.request_id


def test_only_complete_successful_answers_are_stored(local, cached):
    local.faults.push(faults.cut_stream(after_chunks=2))
    with pytest.raises(holynb.StreamError):
        list(cached.stream("cut me"))
    for _ in cached.stream("break me", model="local/slow", max_tokens=50):
        break
    local.faults.push(faults.status(400))
    with pytest.raises(holynb.BadRequestError):
        cached.chat("refused")
    assert len(cached.cache) == 0
    assert not cached.chat("cut me").cache_hit


def test_clear_forgets_everything(local, cached):
    cached.chat("one")
    cached.chat("two")
    assert cached.cache.clear() == 2
    assert not cached.chat("one").cache_hit


def test_cache_true_lives_under_holynb_home(local, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path / "home"))
    with session_for(local, cache=True) as s:
        assert s.cache.path == tmp_path / "home" / "cache.sqlite"


def test_the_environment_turns_the_cache_on(local, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLYNB_CACHE", str(tmp_path / "env.sqlite"))
    with session_for(local) as s:
        assert s.cache.path == tmp_path / "env.sqlite"
    monkeypatch.setenv("HOLYNB_CACHE", "0")
    assert session_for(local).cache is None
    monkeypatch.delenv("HOLYNB_CACHE")
    assert session_for(local).cache is None
    with pytest.raises(holynb.ConfigurationError, match="cache must be"):
        session_for(local, cache=3)


def test_two_processes_writing_one_cache_file_lose_nothing(local, tmp_path):
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        """
        import sys, holynb
        name, url, path = sys.argv[1:]
        s = holynb.Session(base_url=url, model="local/echo", cache=path, concurrency=16)
        mine = [f"{name} item {i}" for i in range(150)]
        shared = [f"shared item {i}" for i in range(100)]
        df = s.map(mine + shared, progress=False, max_tokens=8)
        assert df["ok"].all(), df[~df["ok"]]
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, name, local.base_url, str(path)], env=key_env(local)
        )
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with session_for(local, cache=path) as s:
        assert len(s.cache) == 150 + 150 + 100
        before = local.stats.requests
        df = s.map([f"a item {i}" for i in range(150)], progress=False, max_tokens=8)
        assert df["cache_hit"].all() and local.stats.requests == before


def test_the_cache_file_never_holds_the_api_key(tmp_path):
    from tests.conftest import PLANTED_KEY

    path = tmp_path / "cache.sqlite"
    with (
        LocalServer(api_key=PLANTED_KEY).start() as server,
        session_for(server, api_key=PLANTED_KEY, cache=path) as s,
    ):
        s.chat("Say hi")
        "".join(s.stream("Say hi again"))
    for file in tmp_path.iterdir():
        assert PLANTED_KEY.encode() not in file.read_bytes()


def test_the_summary_counts_hits_apart_from_what_was_sent(local, cached):
    first = cached.chat("Say hi", max_tokens=20)
    for _ in range(3):
        cached.chat("Say hi", max_tokens=20)
    row = cached.summary().iloc[0]
    assert row["calls"] == 4 and row["cache_hits"] == 3
    assert row["prompt_tokens"] == first.usage.prompt_tokens  # billed once
    assert row["saved_usd"] == pytest.approx(3 * first.cost_usd)
    assert row["latency_p50_ms"] == pytest.approx(first.latency_ms, rel=0.01)


# -- whose answers: the endpoint, the wire format and the credential ----------------------------


@pytest.fixture(scope="module")
def open_server():
    """A local server that takes any key (auth=False): two tenants on one endpoint."""
    with LocalServer(auth=False) as srv:
        yield srv


def test_two_keys_on_one_endpoint_do_not_share_answers(open_server, tmp_path):
    path = tmp_path / "shared.sqlite"
    before = open_server.stats.requests
    with session_for(open_server, api_key="sk-tenant-AAAAAA", cache=path) as alice:
        alice.chat("private question", max_tokens=20)
    with session_for(open_server, api_key="sk-tenant-BBBBBB", cache=path) as bob:
        answer = bob.chat("private question", max_tokens=20)
    assert not answer.cache_hit
    assert open_server.stats.requests == before + 2


def test_the_same_key_on_the_same_endpoint_still_hits(open_server, tmp_path):
    path = tmp_path / "shared.sqlite"
    with session_for(open_server, api_key="sk-tenant-AAAAAA", cache=path) as first:
        first.chat("my question", max_tokens=20)
    before = open_server.stats.requests
    with session_for(open_server, api_key="sk-tenant-AAAAAA", cache=path) as again:
        assert again.chat("my question", max_tokens=20).cache_hit
    assert open_server.stats.requests == before


def test_a_checkpoint_is_not_shared_between_keys_either(open_server, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    items = ["one", "two", "three"]
    with session_for(open_server, api_key="sk-tenant-AAAAAA") as alice:
        alice.map(items, checkpoint=ckpt, progress=False, max_tokens=6)
    with session_for(open_server, api_key="sk-tenant-BBBBBB") as bob:
        df = bob.map(items, checkpoint=ckpt, progress=False, max_tokens=6)
    assert not df["cache_hit"].any()


def test_an_anthropic_session_does_not_get_an_answer_stored_from_chat_completions(local, tmp_path):
    path = tmp_path / "cache.sqlite"
    with session_for(local, cache=path) as openai_format:
        openai_format.chat("Say hi", max_tokens=20)
    with session_for(local, api="anthropic", cache=path) as anthropic_format:
        answer = anthropic_format.chat("Say hi", max_tokens=20)
        assert not answer.cache_hit
        assert anthropic_format.chat("Say hi", max_tokens=20).cache_hit  # its own answer
    assert [e["path"] for e in local.requests_log] == ["/v1/chat/completions", "/v1/messages"]


def test_the_identity_never_holds_the_key_nor_its_plain_hash():
    import hashlib

    from holynb.keystore import CallerIdentity

    key = "sk-short"
    s = holynb.Session(base_url="https://api.example.com/v1", api_key=key, log_path="")
    identity = CallerIdentity.of(s.settings)
    assert key not in repr(identity) and key not in identity.credential
    assert identity.credential != hashlib.sha256(key.encode()).hexdigest()
    assert identity == CallerIdentity.of(s.derive(model="other").settings)
    assert identity != CallerIdentity.of(s.derive(api_key="sk-other").settings)


# -- holynb's own offline server: one identity whatever its port and token ---------------------


def test_two_local_servers_share_cache_hits(tmp_path):
    path = tmp_path / "cache.sqlite"
    with LocalServer() as first, session_for(first, cache=path) as s:
        s.chat("Say hi", max_tokens=20)
        s.map(["a", "b"], checkpoint=tmp_path / "run.sqlite", progress=False, max_tokens=5)
    with LocalServer() as second, session_for(second, cache=path) as s:
        assert second.port != first.port and second.api_key != first.api_key
        assert s.chat("Say hi", max_tokens=20).cache_hit
        df = s.map(["a", "b"], checkpoint=tmp_path / "run.sqlite", progress=False, max_tokens=5)
        assert df["cache_hit"].all()
        assert second.stats.requests == 0


def test_two_processes_with_local_sessions_share_the_cache(tmp_path):
    script = textwrap.dedent(
        """
        import sys, holynb
        s = holynb.local_session(cache=sys.argv[1])
        print(s.chat("Say hi", max_tokens=20).cache_hit)
        """
    )
    path = str(tmp_path / "cache.sqlite")
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, path], env=CHILD_ENV, capture_output=True,
            text=True, timeout=120,
        )
        for _ in range(2)
    ]  # fmt: skip
    assert [r.stdout.strip() for r in runs] == ["False", "True"], [r.stderr for r in runs]


# -- only clean, complete answers are stored ----------------------------------------------------


def _completion(content: str, finish_reason: str) -> str:
    return orjson.dumps(
        {
            "id": "chatcmpl-filtered", "object": "chat.completion", "created": 0,
            "model": "local/echo",
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
        }
    ).decode()  # fmt: skip


def test_a_stream_mangled_to_replacement_characters_is_not_stored(local, cached):
    local.faults.push(faults.invalid_utf8(after_chunks=1))
    with pytest.warns(holynb.StreamWarning):
        mangled = "".join(cached.stream("Tell me about cafés", max_tokens=30))
    assert "\ufffd" in mangled and cached.last_result.warning
    assert len(cached.cache) == 0
    again = cached.chat("Tell me about cafés", max_tokens=30)
    assert not again.cache_hit and "\ufffd" not in again.text


def test_an_empty_content_filter_answer_is_not_stored(local, cached):
    local.faults.push(faults.raw_body(_completion("", "content_filter")))
    filtered = cached.chat("Say something risky", max_tokens=20)
    assert filtered.text == "" and filtered.finish_reason == "content_filter"
    assert len(cached.cache) == 0
    assert not cached.chat("Say something risky", max_tokens=20).cache_hit


def test_a_content_filter_answer_with_some_text_is_not_stored(local, cached):
    local.faults.push(faults.raw_body(_completion("I can tell you that", "content_filter")))
    assert cached.chat("Say something risky", max_tokens=20).finish_reason == "content_filter"
    assert len(cached.cache) == 0


def test_an_empty_answer_is_not_stored_even_when_it_says_stop(local, cached):
    local.faults.push(faults.raw_body(_completion("", "stop")))
    assert cached.chat("Say nothing", max_tokens=20).text == ""
    assert len(cached.cache) == 0


def test_an_empty_content_filter_stream_is_not_stored(local, cached):
    chunk = {
        "id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 0,
        "model": "local/echo",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": "content_filter"}],
    }  # fmt: skip
    local.faults.push(faults.raw_body(f"data: {orjson.dumps(chunk).decode()}\n\ndata: [DONE]\n\n"))
    assert "".join(cached.stream("Say something risky", max_tokens=20)) == ""
    assert len(cached.cache) == 0


def test_a_mangled_map_answer_is_not_checkpointed(local, tmp_path):
    ckpt = tmp_path / "run.sqlite"
    local.faults.push(faults.raw_body(_completion("", "content_filter")))
    with session_for(local) as s:
        s.map(["risky"], checkpoint=ckpt, progress=False, max_tokens=5, concurrency=1)
        df = s.map(["risky"], checkpoint=ckpt, progress=False, max_tokens=5)
    assert not df["cache_hit"].any() and df["text"].iloc[0] != ""
