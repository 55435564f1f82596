"""Pure pieces: the SSE decoder, Retry-After parsing, backoff, pacing."""

from __future__ import annotations

import email.utils
import time

import pytest
from hypothesis import given, strategies as st

from holynb._config import RetryPolicy
from holynb._pacing import Pacer, parse_reset
from holynb._retry import backoff_seconds, plan_retry, retry_after_seconds
from holynb._sse import SSEDecoder


def test_sse_events_split_across_chunks():
    d = SSEDecoder()
    assert d.feed(b'data: {"a"') == []
    assert d.feed(b": 1}\n") == []
    assert d.feed(b"\ndata: [DONE]\n\n") == [b'{"a": 1}', b"[DONE]"]


def test_sse_crlf_comments_and_fields():
    d = SSEDecoder()
    raw = b": keep-alive\r\n\r\nevent: message\r\nid: 7\r\ndata: x\r\n\r\nretry: 10\r\n\r\n"
    assert d.feed(raw) == [b"x"]


def test_sse_multiline_data_joined_with_newline():
    assert SSEDecoder().feed(b"data: a\ndata: b\n\n") == [b"a\nb"]


def test_sse_data_without_space():
    assert SSEDecoder().feed(b"data:x\n\n") == [b"x"]


def test_sse_flush_returns_unterminated_event():
    d = SSEDecoder()
    assert d.feed(b"data: tail") == []
    assert d.flush() == [b"tail"]


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=30,
        ).map(lambda p: p.lstrip(" ")),
        max_size=20,
    ),
    st.integers(min_value=1, max_value=17),
)
def test_sse_any_chunking_gives_the_same_events(payloads, size):
    wire = b"".join(b"data: " + p.encode() + b"\n\n" for p in payloads)
    d = SSEDecoder()
    out = []
    for i in range(0, len(wire), size):
        out += d.feed(wire[i : i + size])
    out += d.flush()
    assert out == [p.encode() for p in payloads]


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": date}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_is_exponential_capped_and_jittered():
    p = RetryPolicy(initial_delay=0.5, max_delay=8)
    for n, base in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 8.0), (9, 8.0)]:
        for _ in range(50):
            assert 0.75 * base <= backoff_seconds(p, n) <= base


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (None, {}, True),
        (429, {}, True),
        (408, {}, True),
        (409, {}, True),
        (500, {}, True),
        (529, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (422, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
        (429, {"retry-after": "500"}, False),
    ],
)
def test_plan_retry_rules(status, headers, retry):
    ok, _ = plan_retry(RetryPolicy(), 0, status=status, headers=headers)
    assert ok is retry


def test_plan_retry_stops_at_max():
    assert plan_retry(RetryPolicy(max_retries=2), 2, status=500)[0] is False


def test_pacer_spaces_requests_after_the_burst():
    p = Pacer(per_minute=600, burst=2)  # one per 0.1 s, two at once
    waits = [p.reserve() for _ in range(5)]
    assert waits[0] == 0 and waits[1] == 0
    assert waits[2] == pytest.approx(0.1, abs=0.02)
    assert waits[4] == pytest.approx(0.3, abs=0.02)


def test_pacer_block_for():
    p = Pacer(per_minute=1e9)
    p.block_for(0.5)
    assert 0.45 <= p.reserve(0) <= 0.5


def test_parse_reset_durations():
    assert parse_reset("6s") == 6
    assert parse_reset("1m30s") == 90
    assert parse_reset("250ms") == 0.25
    assert parse_reset("2") == 2
    assert parse_reset("") is None


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8765/v1", True),
        ("http://127.1.2.3/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("https://api.holysheep.ai/v1", False),
        ("http://127.example.com/v1", False),
    ],
)
def test_loopback_urls(url, local):
    from holynb._config import is_loopback_url

    assert is_loopback_url(url) is local
