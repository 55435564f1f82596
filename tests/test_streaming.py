"""Streaming: SSE variants, cut streams, mid-stream errors, and what gets retried."""

from __future__ import annotations

import asyncio
import time

import pytest

import holynb
from holynb.server import faults
from holynb.tokens import estimate_tokens
from tests.helpers import session_for


def test_stream_text_equals_non_streamed_text(local):
    s = session_for(local)
    streamed = "".join(s.stream("tell me about otters"))
    whole = s.chat("tell me about otters")
    assert streamed == whole.text
    a, b = s.records
    assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)
    assert a.kind == "stream" and b.kind == "chat"


def test_stream_records_usage_and_ttft(local):
    s = session_for(local)
    chunks = list(s.stream("hello"))
    assert len(chunks) > 10
    r = s.last_result
    assert r.text == "".join(chunks)
    assert r.finish_reason == "stop"
    assert r.usage.completion_tokens == local.stats.completion_tokens
    assert not r.usage.estimated
    assert r.ttft_ms is not None and r.ttft_ms <= r.latency_ms


def test_stream_without_done_marker_completes(local):
    local.faults.push(faults.no_done())
    s = session_for(local)
    text = "".join(s.stream("hello"))
    assert text.startswith("You said: hello")
    assert s.records[-1].ok


def test_usage_on_the_finish_chunk_is_read(local):
    local.faults.push(faults.usage_in_finish_chunk())
    s = session_for(local)
    list(s.stream("hello"))
    assert s.last_result.usage.completion_tokens == local.stats.completion_tokens > 0
    assert not s.last_result.usage.estimated


def test_keepalive_comments_are_ignored(local):
    local.faults.push(faults.keepalive_comments())
    s = session_for(local)
    text = "".join(s.stream("hello"))
    assert text == s.chat("hello").text


def test_server_rejecting_stream_options_falls_back_once(local):
    local.faults.push(faults.reject_stream_options(400), times=5)
    s = session_for(local, model="local/echo")
    text = "".join(s.stream("hello"))
    assert text.startswith("You said")
    assert local.stats.requests == 2
    # remembered: the next stream goes out without stream_options at once
    list(s.stream("again"))
    assert local.stats.requests == 3


def test_no_usage_marks_the_estimate(local):
    local.faults.push(faults.no_usage())
    s = session_for(local)
    chunks = list(s.stream("hello"))
    r = s.last_result
    assert r.usage.estimated
    assert r.usage.completion_tokens == max(len(chunks), estimate_tokens(r.text))
    assert s.records[-1].usage_estimated


def test_a_stream_without_usage_is_charged_per_token_not_per_chunk(local):
    # ~100 tokens in 2 chunks (coalesced), no usage: the estimate counts the text
    local.faults.push([faults.no_usage(), faults.coalesce(60)])
    s = session_for(local, prices={"local/echo": {"input": 3.0, "output": 15.0}})
    chunks = list(s.stream("hello"))
    r = s.last_result
    sent = local.stats.completion_tokens
    assert len(chunks) == 2 and sent > 90
    assert r.usage.estimated and abs(r.usage.completion_tokens - sent) <= 0.15 * sent
    assert r.cost_usd == pytest.approx(
        (r.usage.prompt_tokens * 3.0 + r.usage.completion_tokens * 15.0) / 1e6
    )


def test_a_cut_stream_without_usage_is_charged_for_its_text(local):
    local.faults.push([faults.coalesce(30), faults.cut_stream(after_chunks=2)])
    s = session_for(local)
    with pytest.raises(holynb.StreamError) as info:
        list(s.stream("hello"))
    sent = local.stats.completion_tokens
    assert sent == 60
    assert abs(info.value.partial.usage.completion_tokens - sent) <= 9
    assert s.records[-1].completion_tokens == info.value.partial.usage.completion_tokens


def test_a_server_rejecting_stream_options_is_charged_per_token(local):
    local.faults.push([faults.reject_stream_options(), faults.coalesce(50)], times=2)
    s = session_for(local)
    list(s.stream("hello"))
    sent = local.stats.completion_tokens
    assert local.stats.requests == 2 and sent > 90
    assert abs(s.records[-1].completion_tokens - sent) <= 0.15 * sent


def test_cut_stream_raises_with_partial_text_and_is_not_resent(local):
    local.faults.push(faults.cut_stream(after_chunks=5))
    s = session_for(local)
    received = []
    with pytest.raises(holynb.StreamError) as info:
        for text in s.stream("hello"):
            received.append(text)
    assert len(received) == 5
    assert info.value.partial.text == "".join(received)
    assert info.value.partial.cost_usd == 0.0  # priced (local models are free), not unknown
    assert local.stats.requests == 1
    row = s.records[-1]
    assert not row.ok and row.interrupted and row.completion_tokens == 5
    assert row.error.startswith("StreamError")


def test_error_event_mid_stream_raises_with_partial(local):
    local.faults.push(faults.error_event(after_chunks=3, message="upstream overloaded"))
    s = session_for(local)
    received = []
    with pytest.raises(holynb.StreamError, match="upstream overloaded") as info:
        for text in s.stream("hello"):
            received.append(text)
    assert len(received) == 3
    assert info.value.partial.text == "".join(received)
    assert local.stats.requests == 1


def test_error_event_before_first_token_is_retried(local):
    local.faults.push(faults.error_event(after_chunks=0, message="warming up"))
    s = session_for(local)
    text = "".join(s.stream("hello"))
    assert text.startswith("You said")
    assert local.stats.requests == 2
    assert s.last_result.attempts == 2


def test_stream_failing_before_first_token_is_retried(local):
    local.faults.push(faults.status(503))
    local.faults.push(faults.drop())
    s = session_for(local)
    text = "".join(s.stream("hello"))
    assert text.startswith("You said")
    assert local.stats.requests == 3


def test_read_timeout_mid_stream_keeps_partial(local):
    local.faults.push(faults.stall(seconds=3, after_chunks=2))
    s = session_for(local, timeout=holynb.Timeout(connect=2, read=0.5, total=30))
    received = []
    with pytest.raises(holynb.StreamError) as info:
        for text in s.stream("hello"):
            received.append(text)
    assert len(received) == 2
    assert "timeout" in str(info.value).lower()
    assert local.stats.requests == 1


def test_read_timeout_before_answer_is_retried_then_raised(local):
    local.faults.push(faults.delay(seconds=2), times=3)
    s = session_for(local, max_retries=1, timeout=holynb.Timeout(connect=2, read=0.3, total=30))
    with pytest.raises(holynb.APITimeoutError):
        s.chat("hello")
    assert local.stats.requests == 2


def test_total_timeout_bounds_the_whole_call(local):
    local.faults.push(faults.status(500), times=10)
    policy = holynb.RetryPolicy(max_retries=10, initial_delay=0.4, max_delay=0.4)
    s = session_for(local, retry=policy, timeout=holynb.Timeout(connect=1, read=1, total=1.0))
    with pytest.raises(holynb.ServerError):
        s.chat("hello")
    assert local.stats.requests <= 4


async def test_async_stream(local):
    s = session_for(local)
    parts = [t async for t in s.astream("hello")]
    assert "".join(parts) == (await s.achat("hello")).text
    await s.aclose()


async def test_breaking_out_of_a_stream_records_partial(local):
    s = session_for(local)
    got = []
    local.tokens_per_second = 50
    agen = s.astream("hello")
    async for text in agen:
        got.append(text)
        if len(got) == 3:
            break
    await agen.aclose()
    local.tokens_per_second = None
    row = s.records[-1]
    assert row.interrupted and not row.ok
    assert s.last_result.text == "".join(got)
    await s.aclose()


def test_sync_stream_break_records_partial(local):
    local.tokens_per_second = 50  # slow enough that the answer is still arriving
    s = session_for(local)
    got = []
    try:
        for text in s.stream("hello"):
            got.append(text)
            if len(got) == 4:
                break
    finally:
        local.tokens_per_second = None
    assert s.records[-1].interrupted
    assert s.last_result.text == "".join(got)


async def test_cancelling_a_task_mid_stream_records_partial(local):
    local.faults.push(faults.stall(seconds=5, after_chunks=3))
    s = session_for(local)

    async def consume():
        async for _ in s.astream("hello"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = s.records[-1]
    assert row.interrupted and row.completion_tokens == 3
    await s.aclose()


async def test_concurrent_streams_each_keep_their_own_result(local):
    s = session_for(local, concurrency=120, prices={"id": {"input": 0, "output": 0}})
    local.register_model("id", lambda m, p: f"answer {m[-1]['content']} " * 3)

    async def one(i):
        stream = s.astream(f"q{i}", model="id")
        text = "".join([t async for t in stream])
        return i, text, stream.result

    results = await asyncio.gather(*(one(i) for i in range(120)))
    for i, text, result in results:
        assert result.text == text == f"answer q{i} " * 3
    assert len(s.records) == 120
    assert s.last_result in {r for _, _, r in results}  # the most recently finished one
    await s.aclose()


def test_a_sync_stream_carries_its_own_result(local):
    s = session_for(local)
    stream = s.stream("hello")
    assert stream.result is None  # nothing sent before iterating
    text = "".join(stream)
    assert stream.result.text == text and s.records[-1].completion_tokens > 0
    assert stream.result.usage.completion_tokens > 0


def test_a_stopped_sync_stream_keeps_what_arrived_in_its_result(local):
    local.tokens_per_second = 50
    s = session_for(local)
    got = []
    try:
        stream = s.stream("hello")
        for text in stream:
            got.append(text)
            if len(got) == 3:
                stream.close()
                break
    finally:
        local.tokens_per_second = None
    assert stream.result.interrupted and stream.result.text == "".join(got)


# -- leaving a sync loop early stops the request ------------------------------------------------


def _long_slow_model(local) -> str:
    """A model whose answer takes about two seconds to stream (100 tokens at 50 a second)."""
    local.register_model("local/slow-100", lambda m, p: "word " * 100, tokens_per_second=50)
    return "local/slow-100"


def _server_outcome(local, within_s: float = 3.0) -> dict:
    """The request log entry of the one chat request, once the server has finished it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        entries = [e for e in local.requests_log if e["path"] == "/v1/chat/completions"]
        if entries:
            return entries[-1]
        time.sleep(0.02)
    raise AssertionError("the server never finished the request")


def test_break_out_of_a_named_sync_stream_stops_it_and_sets_result_at_once(local):
    model = _long_slow_model(local)
    s = session_for(local, prices={model: {"input": 3.0, "output": 15.0}})
    stream = s.stream("hello", model=model)
    got = []
    for text in stream:
        got.append(text)
        if len(got) == 3:
            break
    result = stream.result  # right after the loop, nothing else in between
    assert result is not None and result.interrupted
    assert result.text.startswith("".join(got)) and result.usage.completion_tokens < 10
    row = s.records[-1]
    assert row.interrupted and not row.ok
    assert row.completion_tokens == result.usage.completion_tokens
    assert row.cost_usd == result.cost_usd > 0
    entry = _server_outcome(local)
    assert entry["outcome"] == "client_disconnected"
    assert local.stats.completed == 0 and local.stats.completion_tokens < 20


def test_break_out_of_a_temporary_sync_stream_stops_it(local):
    model = _long_slow_model(local)
    s = session_for(local)
    for _text in s.stream("hello", model=model):
        break
    assert s.records[-1].interrupted and s.last_result.interrupted
    assert _server_outcome(local)["outcome"] == "client_disconnected"
    assert local.stats.completion_tokens < 20


def test_an_exception_in_the_loop_body_stops_a_sync_stream(local):
    model = _long_slow_model(local)
    s = session_for(local)
    stream = s.stream("hello", model=model)
    with pytest.raises(ZeroDivisionError):
        for _text in stream:
            1 / 0  # noqa: B018
    assert stream.result is not None and stream.result.interrupted
    assert _server_outcome(local)["outcome"] == "client_disconnected"


def test_a_sync_stream_read_to_the_end_is_whole_and_not_interrupted(local):
    s = session_for(local)
    stream = s.stream("hello")
    text = "".join(stream)
    assert stream.result.text == text and not stream.result.interrupted
    assert list(stream) == []  # a finished stream has nothing more to give
    assert len(s.records) == 1 and s.records[-1].ok
