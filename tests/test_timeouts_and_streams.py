"""Total timeouts, queueing, invalid UTF-8 in streams, long SSE lines, stream_options fallback."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

import holynb
from holynb._sse import SSEDecoder
from holynb.server import faults
from tests.helpers import session_for

# -- the total timeout ---------------------------------------------------------------------------


def test_total_timeout_bounds_a_trickled_non_streamed_body(local):
    # One byte every 0.2 s never trips the read timeout; only the total can stop it.
    local.faults.push(faults.trickle(seconds=0.2))
    s = session_for(local, timeout=holynb.Timeout(connect=2, read=2, total=1.5))
    started = time.monotonic()
    with pytest.raises(holynb.APITimeoutError, match=r"total timeout of 1\.5 s"):
        s.chat("hello")
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 4.0
    assert local.stats.requests == 1  # the deadline has passed: not sent again
    assert s.records[-1].error.startswith("APITimeoutError")


def test_trickled_body_within_the_total_arrives_whole(local):
    local.faults.push(faults.trickle(seconds=0))
    s = session_for(local, timeout=holynb.Timeout(connect=2, read=2, total=30))
    assert s.chat("hello").text.startswith("You said: hello")


async def test_queueing_for_a_slot_does_not_eat_the_total(local):
    # concurrency=1: the stream waits ~1.5 s for the slow first call, then needs ~2 s itself.
    # Its total (3 s) starts when it is sent, so it is neither cut off nor charged for a stub
    # (counted from the call, the total ran out mid-stream, after its first chunk).
    local.faults.push(faults.delay(1.5))
    local.faults.push(faults.stall(seconds=2.0, after_chunks=1))
    s = session_for(local, concurrency=1, timeout=holynb.Timeout(connect=2, read=5, total=3.0))

    async def streamed() -> str:
        return "".join([t async for t in s.astream("second")])

    first, second = await asyncio.gather(s.achat("first"), streamed())
    assert first.text.startswith("You said: first")
    assert second.startswith("You said: second")
    assert local.stats.requests == 2
    assert all(r.ok for r in s.records)
    await s.aclose()


def test_total_still_counts_retries_after_sending(local):
    local.faults.push(faults.delay(0.6), times=5)
    policy = holynb.RetryPolicy(max_retries=5, initial_delay=0.01, max_delay=0.01)
    s = session_for(local, retry=policy, timeout=holynb.Timeout(connect=1, read=0.3, total=1.0))
    with pytest.raises(holynb.APITimeoutError):
        s.chat("hello")
    assert local.stats.requests <= 4


# -- invalid UTF-8 in a stream -------------------------------------------------------------------


def test_invalid_utf8_in_a_stream_is_replaced_and_flagged(local):
    local.faults.push(faults.invalid_utf8(after_chunks=2))
    s = session_for(local)
    with pytest.warns(holynb.StreamWarning, match="not valid UTF-8"):
        text = "".join(s.stream("hello"))
    assert "caf\ufffd " in text  # the word is kept, its bad byte shown as U+FFFD
    plain = s.chat("hello").text
    assert text.replace("caf\ufffd ", "", 1) == plain
    streamed = s.records[-2]
    assert s.last_result.warning is None  # the chat call after it had nothing to repair
    assert not streamed.ok
    assert streamed.error.startswith("StreamWarning")
    assert s.records[-1].ok


def test_invalid_utf8_warning_is_on_the_result(local):
    local.faults.push("bad_utf8:0")
    s = session_for(local)
    with pytest.warns(holynb.StreamWarning):
        list(s.stream("hello"))
    assert "UTF-8" in s.last_result.warning
    assert s.last_result.text.startswith("caf\ufffd You said")


# -- the SSE decoder: linear buffering and a size limit -----------------------------------------


def test_sse_long_line_in_small_chunks_is_linear():
    # 8 MB in 2 KB chunks: re-joining the buffer per chunk copies ~16 GB (tens of seconds);
    # linear buffering takes a few milliseconds.
    size, step = 8 * 1024 * 1024, 2048
    piece = b"x" * step
    d = SSEDecoder()
    started = time.perf_counter()
    assert d.feed(b"data: ") == []
    for _ in range(size // step):
        assert d.feed(piece) == []
    (event,) = d.feed(b"\n\ndata: next\n\n")[:1]
    elapsed = time.perf_counter() - started
    assert len(event) == size
    assert elapsed < 3.0, f"{elapsed:.1f} s for an 8 MB line: buffering is not linear"


def test_sse_line_cut_across_chunks_keeps_its_bytes():
    d = SSEDecoder()
    assert d.feed(b"data: ab") == []
    assert d.feed(b"cd") == []
    assert d.feed(b"ef\r") == []
    assert d.feed(b"\n\ndata: x\n\ndata: y") == [b"abcdef", b"x"]
    assert d.flush() == [b"y"]


def test_sse_event_above_the_limit_raises_stream_error():
    d = SSEDecoder(max_event_bytes=1000)
    d.feed(b"data: " + b"x" * 500)
    with pytest.raises(holynb.StreamError, match="larger than"):
        for _ in range(10):
            d.feed(b"x" * 100)
    # many data lines adding up to too much count as one event
    d = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(holynb.StreamError):
        d.feed(b"data: " + b"y" * 400 + b"\n" + b"data: " + b"y" * 700 + b"\n")


def test_stream_with_an_oversized_event_raises(local):
    local.faults.push(faults.no_usage())
    s = session_for(local)
    s.settings = dataclasses.replace(s.settings, limits=holynb.Limits(max_event_bytes=100))
    with pytest.raises(holynb.StreamError, match="larger than"):
        list(s.stream("hello"))


def test_limits_check_max_event_bytes():
    with pytest.raises(holynb.ConfigurationError, match="max_event_bytes"):
        holynb.Limits(max_event_bytes=0)


# -- stream_options fallback only for errors about it -------------------------------------------


def test_a_400_not_about_stream_options_is_sent_once(local):
    local.faults.push(faults.status(400, message="Invalid model name passed in model=gpt-x"))
    s = session_for(local)
    with pytest.raises(holynb.BadRequestError, match="Invalid model name"):
        list(s.stream("hello"))
    assert local.stats.requests == 1
    list(s.stream("again"))  # stream_options is still sent: the server never objected to it
    assert local.requests_log[-1]["body"].get("stream_options") == {"include_usage": True}


def test_a_422_falls_back_without_stream_options(local):
    local.faults.push(faults.reject_stream_options(422))
    s = session_for(local)
    assert "".join(s.stream("hello")).startswith("You said")
    assert local.stats.requests == 2
