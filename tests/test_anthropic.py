"""Anthropic's Messages API as a second wire format: holynb's client, the local server's
``/v1/messages`` route, and the official anthropic SDK against it."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import orjson
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import holynb
from holynb._wire.anthropic import DEFAULT_MAX_TOKENS, to_messages_request, usage_from_anthropic
from holynb.notebook import magics
from holynb.results import Usage
from holynb.server import LocalServer, faults
from tests.helpers import session_for

PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgo="
PRICES = {"claude-test": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}}


def claude(local: LocalServer, **kwargs) -> holynb.Session:
    return session_for(local, api="anthropic", **kwargs)


def last_request(local: LocalServer) -> dict:
    return local.requests_log[-1]


def canned_message(**usage) -> dict:
    """A whole Messages answer, as a provider with prompt caching sends it."""
    return {
        "id": "msg_canned",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Cached "}, {"type": "text", "text": "answer."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


class Canned:
    """A provider with prompt caching, which the local server does not have: it answers every
    POST with the body (and content type) it was given, and keeps what it was sent."""

    def __init__(self) -> None:
        self.body = b""
        self.content_type = "application/json"
        self.requests: list[tuple[str, dict]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers["content-length"]))
                canned.requests.append((self.path, orjson.loads(sent)))
                self.send_response(200)
                self.send_header("content-type", canned.content_type)
                self.send_header("content-length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, payload: dict | str) -> None:
        if isinstance(payload, str):
            self.body, self.content_type = payload.encode(), "text/event-stream"
        else:
            self.body, self.content_type = orjson.dumps(payload), "application/json"

    def session(self) -> holynb.Session:
        return holynb.Session(
            api="anthropic", model="claude-test", base_url=self.base_url, prices=PRICES
        )


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def sse(*events: dict) -> str:
    return "".join(f"event: {e['type']}\ndata: {orjson.dumps(e).decode()}\n\n" for e in events)


# -- requests ------------------------------------------------------------------------------------


def test_chat_posts_to_messages_with_x_api_key_and_version(local):
    s = claude(local)  # the local server's token, sent by itself
    r = s.chat("hello")
    assert r.text.startswith("You said: hello.")
    assert r.finish_reason == "stop"
    entry = last_request(local)
    assert entry["path"] == "/v1/messages"
    headers = entry["headers"]
    assert headers["x-api-key"] == "<redacted>" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


def test_bearer_option_also_sends_authorization(local):
    s = claude(local, bearer=True)
    s.chat("hello")
    headers = last_request(local)["headers"]
    assert headers["authorization"] == "<redacted>" and headers["x-api-key"] == "<redacted>"


def test_answer_and_usage_match_the_openai_format(local):
    a = claude(local).chat("same prompt", system="Be brief.", max_tokens=500)
    o = session_for(local).chat("same prompt", system="Be brief.", max_tokens=500)
    assert a.text == o.text
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (
        o.usage.prompt_tokens,
        o.usage.completion_tokens,
    )
    assert not a.usage.estimated


def test_system_is_top_level_and_max_tokens_always_sent(local):
    claude(local).chat([{"role": "system", "content": "Rules."}, {"role": "user", "content": "q"}])
    body = last_request(local)["body"]
    assert body["system"] == "Rules."
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS


def test_system_blocks_keep_cache_control(local):
    cached = {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral"}}
    messages = [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": [cached]},
        {"role": "user", "content": "q"},
    ]
    assert claude(local).chat(messages).text.startswith("You said: q.")
    assert last_request(local)["body"]["system"] == [{"type": "text", "text": "Rules."}, cached]


def test_max_tokens_cut_is_finish_reason_length(local):
    r = claude(local).chat("hello", max_tokens=3)
    assert r.finish_reason == "length" and r.usage.completion_tokens == 3


@pytest.mark.parametrize("suffix", ["/v1", ""])
def test_base_url_with_or_without_v1(local, suffix):
    root = local.base_url.removesuffix("/v1")
    s = holynb.Session(api="anthropic", model="local/echo", base_url=root + suffix)
    assert s.chat("hi").text.startswith("You said: hi.")
    assert last_request(local)["path"] == "/v1/messages"
    assert "local/echo" in s.models()


def test_api_from_the_environment_and_a_bad_name(local, monkeypatch):
    monkeypatch.setenv("HOLYNB_API", "anthropic")
    assert session_for(local).api == "anthropic"
    with pytest.raises(holynb.ConfigurationError, match="openai"):
        session_for(local, api="claude")


def test_image_parts_become_image_blocks(local):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    r = claude(local).chat([{"role": "user", "content": content}])
    assert r.text.startswith("You said: What is this? [2 images].")
    blocks = last_request(local)["body"]["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


def test_openai_parameters_are_translated():
    body = to_messages_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "q"}],
            "stop": "END",
            "max_completion_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u1",
        }
    )
    assert body == {
        "model": "m",
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u1"},
        "messages": [{"role": "user", "content": "q"}],
        "max_tokens": 7,
    }


# -- usage and cost ------------------------------------------------------------------------------


def test_usage_adds_cache_reads_and_writes_to_the_prompt():
    u = usage_from_anthropic(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 50,
        }
    )
    assert u == Usage(
        prompt_tokens=1300, completion_tokens=50, cached_tokens=1000, cache_write_tokens=200
    )


def test_cumulative_usage_takes_the_last_value_never_the_sum():
    start = usage_from_anthropic(
        {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}
    )
    end = usage_from_anthropic({"output_tokens": 40}, start)
    assert (end.prompt_tokens, end.cached_tokens, end.completion_tokens) == (15, 5, 40)
    again = usage_from_anthropic({"input_tokens": 10, "output_tokens": 41}, end)
    assert (again.prompt_tokens, again.completion_tokens) == (15, 41)


def test_cost_prices_cache_reads_and_writes(canned):
    usage = {
        "input_tokens": 1000,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 2000,
        "output_tokens": 500,
    }
    canned.answer(canned_message(**usage))
    r = canned.session().chat("hi")
    assert r.text == "Cached answer."
    assert (r.usage.prompt_tokens, r.usage.cached_tokens, r.usage.cache_write_tokens) == (
        13_000,
        10_000,
        2000,
    )
    expected = (1000 * 3.0 + 10_000 * 0.3 + 2000 * 3.75 + 500 * 15.0) / 1e6
    assert r.cost_usd == pytest.approx(expected)
    assert r.request_id == "msg_canned"  # no request-id header: the message id
    assert canned.requests[-1][0] == "/v1/messages"


def test_cache_writes_cost_125_percent_of_input_without_their_own_price(canned):
    usage = {"input_tokens": 0, "cache_creation_input_tokens": 1_000_000, "output_tokens": 0}
    canned.answer(canned_message(**usage))
    s = canned.session()
    s.prices.set("claude-test", input=3.0, output=15.0)
    assert s.chat("hi").cost_usd == pytest.approx(3.75)


def test_official_prices_charge_cache_writes():
    table = holynb.PriceTable()
    usage = Usage(prompt_tokens=100_000, cache_write_tokens=100_000)  # below the 200k tier
    price = table.lookup("claude-sonnet-4-5")
    assert price.cache_write == pytest.approx(1.25 * price.input)
    assert table.cost("claude-sonnet-4-5", usage) == pytest.approx(price.cache_write / 10)


def test_stream_usage_from_message_start_and_cumulative_message_delta(canned):
    start_usage = {
        "input_tokens": 20,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 100,
        "output_tokens": 1,
    }
    body = sse(
        {"type": "message_start", "message": {**canned_message(**start_usage), "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "!"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use"}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta"}},
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"input_tokens": 20, "output_tokens": 12},
        },
        {"type": "message_stop"},
    )
    canned.answer(body)
    s = canned.session()
    assert list(s.stream("hi")) == ["Hi", "!"]
    r = s.last_result
    assert r.finish_reason == "tool_calls"
    assert r.usage == Usage(
        prompt_tokens=1120, completion_tokens=12, cached_tokens=1000, cache_write_tokens=100
    )
    expected = (20 * 3.0 + 1000 * 0.3 + 100 * 3.75 + 12 * 15.0) / 1e6
    assert r.cost_usd == pytest.approx(expected)


def test_anthropic_ratelimit_headers_saying_zero_left_pause_the_next_request(local):
    from datetime import UTC, datetime, timedelta

    reset = (datetime.now(UTC) + timedelta(seconds=0.8)).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
    }
    local.faults.push(faults.status(429, headers=headers))
    s = claude(local)  # backoff alone would wait ~10 ms
    t0 = time.monotonic()
    assert s.chat("first").attempts == 2
    assert time.monotonic() - t0 >= 0.5


def test_stream_without_input_tokens_counts_the_prompt_itself(canned):
    body = sse(
        {"type": "message_start", "message": {**canned_message(), "content": []}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    )
    canned.answer(body)
    s = canned.session()
    assert list(s.stream("a prompt of several words")) == ["Hi"]
    usage = s.last_result.usage
    assert usage.estimated and usage.prompt_tokens > 0 and usage.completion_tokens == 7


# -- streaming -----------------------------------------------------------------------------------


def test_stream_matches_the_whole_answer_and_is_recorded(local):
    s = claude(local)
    whole = s.chat("tell me")
    parts = list(s.stream("tell me"))
    assert len(parts) > 10 and "".join(parts) == whole.text
    r = s.last_result
    assert r.finish_reason == "stop" and r.ttft_ms is not None
    assert r.usage.completion_tokens == whole.usage.completion_tokens == len(parts)
    assert r.usage.prompt_tokens == whole.usage.prompt_tokens
    row = s.records[-1]
    assert row.kind == "stream" and row.ok and row.completion_tokens == len(parts)


async def test_async_stream(local):
    async with claude(local) as s:
        parts = [t async for t in s.astream("async hello")]
    assert "".join(parts).startswith("You said: async hello.")


def test_pings_are_ignored(local):
    local.faults.push(faults.keepalive_comments())
    s = claude(local)
    assert "".join(s.stream("hi")).startswith("You said: hi.")


def test_error_event_after_200_raises_with_partial_and_is_not_resent(local):
    local.faults.push(faults.error_event(after_chunks=3, message="Overloaded"))
    s = claude(local)
    got = []
    with pytest.raises(holynb.StreamError) as info:
        for text in s.stream("hello"):
            got.append(text)
    err = info.value
    assert "Overloaded" in err.message and "api_error" in err.message
    assert err.partial is not None and err.partial.text == "".join(got) and len(got) == 3
    assert local.stats.requests == 1
    assert not s.records[-1].ok


def test_error_event_before_any_text_is_retried(local):
    local.faults.push(faults.error_event(after_chunks=0, message="warming up"))
    r_text = "".join(claude(local).stream("hello"))
    assert r_text.startswith("You said: hello.")
    assert local.stats.requests == 2


@pytest.mark.parametrize("fault", [faults.cut_stream(after_chunks=4), faults.no_done()])
def test_stream_without_message_stop_raises_with_partial(local, fault):
    local.faults.push(fault)
    s = claude(local)
    with pytest.raises(holynb.StreamError) as info:
        list(s.stream("hello"))
    partial = info.value.partial
    assert partial is not None and partial.text.startswith("You said")
    assert partial.interrupted
    assert local.stats.requests == 1


LONG = "word " * 400  # 400 tokens from the local server, 400 from holynb's estimate


def _long(local: LocalServer) -> str:
    local.register_model("local/long-400", lambda m, p: LONG)
    return "local/long-400"


@pytest.mark.parametrize(
    "fault",
    [faults.cut_stream(after_chunks=8), faults.error_event(after_chunks=8)],
    ids=["connection-cut", "error-event"],
)
def test_an_interrupted_stream_is_charged_at_least_the_text_received(local, fault):
    model = _long(local)
    local.faults.push([faults.coalesce(25), fault])  # 8 chunks of 25 tokens: 200 tokens
    s = claude(local, model=model, prices={model: {"input": 3.0, "output": 15.0}})
    with pytest.raises(holynb.StreamError) as info:
        list(s.stream("hello"))
    sent = local.stats.completion_tokens
    assert sent == 200  # message_start said output_tokens=1, and nothing more came
    row, partial = s.records[-1], info.value.partial
    assert abs(row.completion_tokens - sent) <= 0.1 * sent
    assert row.usage_estimated and partial.usage.estimated
    assert row.prompt_tokens == local.stats.prompt_tokens  # the reported input is kept
    assert row.cost_usd == pytest.approx(
        (row.prompt_tokens * 3.0 + row.completion_tokens * 15.0) / 1e6
    )
    assert partial.usage.completion_tokens == row.completion_tokens
    assert partial.cost_usd == row.cost_usd


def test_a_stopped_stream_is_charged_at_least_the_text_received(local):
    model = _long(local)
    local.faults.push([faults.coalesce(25), faults.stall(seconds=5, after_chunks=4)])
    s = claude(local, model=model, prices={model: {"input": 3.0, "output": 15.0}})
    stream = s.stream("hello")
    for got, _text in enumerate(stream, 1):
        if got == 4:
            break
    assert stream.result.interrupted
    assert abs(stream.result.usage.completion_tokens - 100) <= 10 and s.records[-1].usage_estimated


def test_a_complete_stream_is_charged_the_reported_usage(local):
    model = _long(local)
    local.faults.push(faults.coalesce(25))
    s = claude(local, model=model, prices={model: {"input": 3.0, "output": 15.0}})
    assert "".join(s.stream("hello")) == LONG
    row = s.records[-1]
    assert row.completion_tokens == local.stats.completion_tokens >= 400
    assert not row.usage_estimated


def test_cut_non_streamed_answer_is_a_connection_error(local):
    local.faults.push(faults.cut_stream())
    with pytest.raises(holynb.APIConnectionError):
        claude(local, max_retries=0).chat("hello")


# -- errors and retries --------------------------------------------------------------------------


def test_529_overloaded_is_retried_like_503(local):
    local.faults.push(faults.status(529), times=2)
    r = claude(local).chat("hello")
    assert r.attempts == 3 and local.stats.requests == 3


def test_529_when_retries_run_out_is_a_readable_server_error(local):
    local.faults.push(faults.status(529, message="Overloaded"), times=3)
    with pytest.raises(holynb.ServerError) as info:
        claude(local).chat("hello")
    err = info.value
    assert err.status == 529 and err.attempts == 3
    assert "Overloaded (overloaded_error)" in err.message
    assert orjson.loads(err.body)["error"]["type"] == "overloaded_error"


def test_unknown_model_is_not_found_in_anthropic_shape(local):
    with pytest.raises(holynb.NotFoundError) as info:
        claude(local, model="claude-nope").chat("hello")
    err = info.value
    assert "claude-nope" in err.message and "(not_found_error)" in err.message
    assert orjson.loads(err.body)["type"] == "error"


def test_bad_request_names_the_parameter(local):
    with pytest.raises(holynb.BadRequestError) as info:
        claude(local).chat("hello", seed=1)
    assert "seed: Extra inputs are not permitted" in info.value.message
    assert local.stats.requests == 1


def test_wrong_key_is_authentication_error():
    with LocalServer(api_key="sk-right-key-0123456789") as server:
        s = holynb.Session(
            api="anthropic",
            model="local/echo",
            base_url=server.base_url,
            api_key="sk-wrong-key-0123456789",
        )
        with pytest.raises(holynb.AuthenticationError) as info:
            s.chat("hello")
        err = info.value
        assert "(authentication_error)" in err.message and "sk-wrong" not in str(err)
        ok = holynb.Session(
            api="anthropic",
            model="local/echo",
            base_url=server.base_url,
            api_key="sk-right-key-0123456789",
        )
        assert ok.chat("hello").text.startswith("You said: hello.")


def test_litellm_no_db_connection_400_is_an_authentication_error(local):
    body = {"error": {"message": "No connected db.", "type": "no_db_connection", "code": "400"}}
    local.faults.push(faults.status(400, body=body))
    with pytest.raises(holynb.AuthenticationError) as info:
        claude(local).chat("hello")
    assert info.value.status == 400 and "No connected db." in info.value.message


def test_unreadable_message_is_an_api_response_error_with_the_text_found(canned):
    message = canned_message(input_tokens=5, output_tokens=5)
    message["content"].append({"type": "text", "text": 5})
    canned.answer(message)
    with pytest.raises(holynb.APIResponseError) as info:
        canned.session().chat("hi")
    assert info.value.partial.text == ""  # the blocks cannot be joined
    assert len(canned.requests) == 1  # answered, maybe billed: not sent again


def test_unreadable_stream_event_is_an_api_response_error(canned):
    canned.answer(sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": 1}}))
    with pytest.raises(holynb.APIResponseError):
        list(canned.session().stream("hi"))


# -- the local server's route --------------------------------------------------------------------


def raw_post(server: LocalServer, headers: dict[str, str], body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/v1/messages", orjson.dumps(body), headers)
        r = conn.getresponse()
        return r.status, orjson.loads(r.read())
    finally:
        conn.close()


def test_messages_route_is_guarded_like_chat(local):
    body = {"model": "local/echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    key = {"x-api-key": local.api_key.get(), "anthropic-version": "2023-06-01"}
    assert raw_post(local, {**key, "content-type": "application/json"}, body)[0] == 200
    assert raw_post(local, {**key, "content-type": "text/plain"}, body)[0] == 415
    status, _ = raw_post(local, {**key, "content-type": "application/json", "origin": "x"}, body)
    assert status == 403
    status, error = raw_post(local, {"content-type": "application/json"}, body)
    assert status == 401 and error["error"]["type"] == "authentication_error"


def test_messages_route_keeps_code_models_off_unless_enabled():
    with LocalServer() as server:
        s = holynb.Session(api="anthropic", model="local/python", base_url=server.base_url)
        with pytest.raises(holynb.PermissionDeniedError) as info:
            s.chat("print(1)")
        assert "(permission_error)" in info.value.message


def test_messages_route_refuses_a_missing_max_tokens_or_version(local):
    key = {"x-api-key": local.api_key.get(), "content-type": "application/json"}
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "x"}]}
    status, error = raw_post(local, {**key, "anthropic-version": "2023-06-01"}, body)
    assert status == 400 and error == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    status, error = raw_post(local, key, {**body, "max_tokens": 5})
    assert status == 400 and error["error"]["message"] == "anthropic-version: header is required"


# -- everything built on a session ---------------------------------------------------------------


def test_interpreter_works_without_response_format(local):
    s = claude(local, model="local/python")
    r = holynb.CodeInterpreter(s).run("print(6 * 7)")
    assert (r.success, r.output) == (True, "42\n")
    body = last_request(local)["body"]
    assert "response_format" not in body and body["system"]


def test_ledger_and_budget_count_anthropic_calls(local):
    prices = {"local/echo": {"input": 1000.0, "output": 1000.0}}
    s = claude(local, prices=prices, budget_usd=1.0)
    r = s.chat("hello", max_tokens=20)
    assert r.cost_usd == pytest.approx((r.usage.prompt_tokens + 20) * 1000 / 1e6)
    assert s.total_cost_usd == pytest.approx(r.cost_usd)
    with pytest.raises(holynb.BudgetExceededError):
        s.chat("hello")  # max_tokens defaults to 4096: the worst case is over the budget


def test_llm_config_shows_and_switches_the_format(local, capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext holynb")
    magics.set_default_session(session_for(local))
    try:
        shell.run_cell("%llm config")
        assert "openai (chat completions)" in capsys.readouterr().out
        shell.run_cell("%llm config api=anthropic")
        assert "anthropic (messages)" in capsys.readouterr().out
        shell.run_cell("%llm hi there")
        assert shell.user_ns["_llm"].startswith("You said: hi there")
        assert last_request(local)["path"] == "/v1/messages"
        result = shell.run_cell("%llm config api=claude")
        assert isinstance(result.error_in_exec, UsageError)
        assert magics.get_default_session().api == "anthropic"  # unchanged
    finally:
        shell.run_cell("%llm --new")


# -- the official anthropic SDK against the local server ----------------------------------------


@pytest.fixture
def sdk(server: LocalServer):
    root = server.base_url.removesuffix("/v1")
    key = server.api_key.get()  # the server's token, sent as x-api-key
    with anthropic.Anthropic(base_url=root, api_key=key, max_retries=0) as client:
        yield client


def test_sdk_messages_create(sdk, local):
    m = sdk.messages.create(
        model="local/echo",
        max_tokens=500,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello from the SDK"}],
    )
    assert m.content[0].text.startswith("You said: hello from the SDK.")
    assert m.stop_reason == "end_turn" and m.usage.output_tokens > 0
    assert m.id.startswith("msg_")


def test_sdk_messages_stream(sdk, local):
    with sdk.messages.stream(
        model="local/echo",
        max_tokens=5,
        messages=[{"role": "user", "content": "hello from the SDK"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and text.startswith("You said: hello")
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5


def test_sdk_sees_typed_errors(sdk, local):
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    local.faults.push(faults.status(529))
    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(
            model="local/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"


def test_sdk_async_stream_sees_error_event(server, local):
    async def run() -> str:
        root = server.base_url.removesuffix("/v1")
        key = server.api_key.get()
        client = anthropic.AsyncAnthropic(base_url=root, api_key=key, max_retries=0)
        got = ""
        try:
            async with client.messages.stream(
                model="local/echo", max_tokens=50, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                async for text in stream.text_stream:
                    got += text
        finally:
            await client.close()
        return got

    local.faults.push(faults.error_event(after_chunks=2, message="Overloaded"))
    with pytest.raises(anthropic.APIStatusError):
        asyncio.run(run())
