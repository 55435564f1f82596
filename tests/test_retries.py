"""Retry rules, checked by counting requests on the server side."""

from __future__ import annotations

import time

import orjson
import pytest

import holynb
from holynb.server import faults
from tests.helpers import session_for


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503])
def test_retryable_status_is_retried_until_success(local, code):
    local.faults.push(faults.status(code), times=2)
    s = session_for(local)
    r = s.chat("hello")
    assert r.text.startswith("You said: hello")
    assert r.attempts == 3
    assert local.stats.requests == 3
    assert s.records[-1].attempts == 3


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(local, code):
    local.faults.push(faults.status(code), times=3)
    s = session_for(local)
    with pytest.raises(holynb.APIStatusError) as info:
        s.chat("hello")
    assert info.value.status == code
    assert local.stats.requests == 1


def test_status_maps_to_typed_error(local):
    expected = {
        400: holynb.BadRequestError,
        401: holynb.AuthenticationError,
        403: holynb.PermissionDeniedError,
        404: holynb.NotFoundError,
        422: holynb.BadRequestError,
    }
    s = session_for(local)
    for code, cls in expected.items():
        local.faults.push(faults.status(code))
        with pytest.raises(cls) as info:
            s.chat("x")
        assert info.value.hint


def test_retries_give_up_after_max_retries(local):
    local.faults.push(faults.status(503), times=10)
    s = session_for(local, max_retries=3)
    with pytest.raises(holynb.ServerError) as info:
        s.chat("hello")
    assert local.stats.requests == 4
    assert info.value.attempts == 4
    row = s.records[-1]
    assert not row.ok and row.attempts == 4 and row.error.startswith("ServerError")


def test_zero_retries_sends_once(local):
    local.faults.push(faults.status(500))
    s = session_for(local, max_retries=0)
    with pytest.raises(holynb.ServerError):
        s.chat("hello")
    assert local.stats.requests == 1


def test_dropped_connection_is_retried(local):
    local.faults.push(faults.drop())
    s = session_for(local)
    r = s.chat("hello")
    assert r.attempts == 2
    assert local.stats.requests == 2


def test_dropped_connections_end_in_connection_error(local):
    local.faults.push(faults.drop(), times=5)
    s = session_for(local, max_retries=1)
    with pytest.raises(holynb.APIConnectionError) as info:
        s.chat("hello")
    assert not isinstance(info.value, holynb.APITimeoutError)
    assert local.stats.requests == 2


def test_should_retry_header_false_stops_retries(local):
    local.faults.push(faults.status(500, should_retry=False), times=3)
    s = session_for(local)
    with pytest.raises(holynb.ServerError):
        s.chat("hello")
    assert local.stats.requests == 1


def test_should_retry_header_true_retries_a_400(local):
    local.faults.push(faults.status(400, should_retry=True))
    s = session_for(local)
    assert s.chat("hello").attempts == 2


def test_retry_after_seconds_is_honoured(local):
    local.faults.push(faults.status(429, retry_after=1))
    s = session_for(local)
    t0 = time.monotonic()
    r = s.chat("hello")
    assert time.monotonic() - t0 >= 0.95
    assert r.attempts == 2


def test_retry_after_ms_is_honoured(local):
    local.faults.push(faults.status(429, retry_after_ms=600))
    s = session_for(local)
    t0 = time.monotonic()
    s.chat("hello")
    elapsed = time.monotonic() - t0
    assert 0.55 <= elapsed < 3


def test_retry_after_http_date_is_honoured(local):
    local.faults.push(faults.status(429, retry_after=2, retry_after_date=True))
    s = session_for(local)
    t0 = time.monotonic()
    s.chat("hello")
    # An HTTP date has one-second resolution: the wait is between 1 and 2 seconds.
    assert time.monotonic() - t0 >= 0.9


def test_retry_after_longer_than_limit_gives_up_at_once(local):
    local.faults.push(faults.status(429, retry_after=600))
    s = session_for(local)
    t0 = time.monotonic()
    with pytest.raises(holynb.RateLimitError) as info:
        s.chat("hello")
    assert time.monotonic() - t0 < 1
    assert info.value.retry_after == pytest.approx(600)
    assert local.stats.requests == 1


def test_backoff_grows_between_attempts(local):
    local.faults.push(faults.status(500), times=2)
    policy = holynb.RetryPolicy(max_retries=2, initial_delay=0.2, max_delay=8)
    s = session_for(local, retry=policy)
    t0 = time.monotonic()
    s.chat("hello")
    # waits 0.2*U(.75,1) then 0.4*U(.75,1): at least 0.45 s in all
    assert time.monotonic() - t0 >= 0.44


def test_failed_calls_are_in_the_ledger(local):
    local.faults.push(faults.status(404))
    s = session_for(local)
    with pytest.raises(holynb.NotFoundError):
        s.chat("hello")
    frame = s.ledger
    assert list(frame["ok"]) == [False]
    assert frame["error"][0].startswith("NotFoundError: HTTP 404")


def test_unknown_model_is_a_not_found_error_with_hint(local):
    s = session_for(local, model="no-such-model")
    with pytest.raises(holynb.NotFoundError) as info:
        s.chat("hello")
    assert "model" in str(info.value).lower()
    assert local.stats.requests == 1


def test_retries_reuse_one_idempotency_key(local):
    local.faults.push(faults.status(500))
    s = session_for(local)
    s.chat("hello")
    s.chat("hello again")
    keys = [entry["headers"].get("idempotency-key") for entry in local.requests_log]
    assert keys[0] == keys[1] and keys[0].startswith("holynb-")
    assert keys[2] != keys[0]


def test_ratelimit_headers_saying_zero_left_pause_the_next_request(local):
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "700ms"}
    local.faults.push(faults.status(429, headers=headers))
    s = session_for(local)  # backoff alone would wait ~10 ms
    t0 = time.monotonic()
    assert s.chat("first").attempts == 2
    assert time.monotonic() - t0 >= 0.6


# -- errors sent inside a 200 stream, before any text ------------------------------------------

_STARTED = {  # Anthropic's message_start, as a real stream opens before its error event
    "type": "message_start",
    "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "local/echo",
        "content": [], "usage": {"input_tokens": 9, "output_tokens": 1},
    },
}  # fmt: skip


def _error_stream(api: str, kind: str, message: str) -> str:
    """A stream whose only news is an error of type ``kind``, in ``api``'s format."""
    if api == "anthropic":
        error = {"type": "error", "error": {"type": kind, "message": message}}
        return (
            f"event: message_start\ndata: {orjson.dumps(_STARTED).decode()}\n\n"
            f"event: error\ndata: {orjson.dumps(error).decode()}\n\n"
        )
    error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return f"data: {orjson.dumps(error).decode()}\n\n"


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_request_error_in_a_stream_is_not_retried_and_says_what_to_do(local, api):
    said = "prompt is too long: 250000 tokens > 200000 maximum"
    local.faults.push(faults.raw_body(_error_stream(api, "invalid_request_error", said)), times=3)
    s = session_for(local, api=api)
    with pytest.raises(holynb.BadRequestError) as info:
        list(s.stream("hello"))
    err = info.value
    assert local.stats.requests == 1 and err.attempts == 1
    assert said in err.message and "invalid_request_error" in err.message
    assert err.status == 400 and err.partial is None
    assert "parameters" in err.hint  # what to change, not "the partial answer is in ..."
    row = s.records[-1]
    assert not row.ok and row.error.startswith("BadRequestError") and row.attempts == 1


@pytest.mark.parametrize("api", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("overloaded_error", holynb.ServerError),
        ("api_error", holynb.ServerError),
        ("rate_limit_error", holynb.RateLimitError),
    ],
)
def test_a_transient_error_in_a_stream_is_retried(local, api, kind, cls):
    local.faults.push(faults.raw_body(_error_stream(api, kind, "try again")), times=5)
    s = session_for(local, api=api)
    with pytest.raises(cls) as info:
        list(s.stream("hello"))
    assert local.stats.requests == 3 and info.value.attempts == 3  # 1 + FAST_RETRY's 2


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_transient_error_in_a_stream_then_an_answer(local, api):
    local.faults.push(faults.raw_body(_error_stream(api, "overloaded_error", "busy")))
    s = session_for(local, api=api)
    assert "".join(s.stream("hello")).startswith("You said: hello")
    assert local.stats.requests == 2 and s.last_result.attempts == 2


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("authentication_error", holynb.AuthenticationError),
        ("permission_error", holynb.PermissionDeniedError),
        ("not_found_error", holynb.NotFoundError),
    ],
)
def test_other_request_errors_in_a_stream_are_typed_and_not_retried(local, kind, cls):
    local.faults.push(faults.raw_body(_error_stream("anthropic", kind, "no")), times=3)
    with pytest.raises(cls):
        list(session_for(local, api="anthropic").stream("hello"))
    assert local.stats.requests == 1


def _error_body(api: str, kind: str, message: str) -> str:
    """A whole 200 answer that is an error of type ``kind``, in ``api``'s format."""
    error = {"type": kind, "message": message}
    wrapped = {"type": "error", "error": error} if api == "anthropic" else {"error": error}
    return orjson.dumps(wrapped).decode()


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_200_answer_that_is_a_request_error_is_typed_and_not_retried(local, api):
    local.faults.push(faults.raw_body(_error_body(api, "invalid_request_error", "bad")), times=3)
    with pytest.raises(holynb.BadRequestError) as info:
        session_for(local, api=api).chat("hello")
    assert local.stats.requests == 1 and "bad" in info.value.message


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_200_answer_that_is_a_transient_error_is_retried(local, api):
    local.faults.push(faults.raw_body(_error_body(api, "overloaded_error", "busy")))
    r = session_for(local, api=api).chat("hello")
    assert r.text.startswith("You said: hello") and r.attempts == 2
    assert local.stats.requests == 2
