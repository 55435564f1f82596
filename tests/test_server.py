"""The local server over raw HTTP: the OpenAI wire format, each fault, the counters, the runner."""

from __future__ import annotations

import email.utils
import http.client
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from holynb.server import LocalServer, faults
from holynb.server.tokens import count_tokens, prompt_tokens, tokenize

KEY = "sk-test-local-0123456789"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)

    def events(self) -> list[Any]:
        """The SSE ``data`` payloads, JSON-decoded (``"[DONE]"`` kept as a string)."""
        out = []
        for line in self.raw.decode().split("\n"):
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
        return out

    def content_chunks(self) -> list[str]:
        return [
            e["choices"][0]["delta"]["content"]
            for e in self.events()
            if isinstance(e, dict)
            and e.get("choices")
            and "content" in e["choices"][0]["delta"]
            and "role" not in e["choices"][0]["delta"]
        ]


def auth(server: LocalServer) -> dict[str, str]:
    """The server's token as a header; none for ``keyed``, whose tests send (or omit) KEY."""
    key = server.api_key
    if key is None or key.get() == KEY:
        return {}
    return {"authorization": f"Bearer {key.get()}"}


def request(
    server: LocalServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        sent = {"content-type": "application/json", **auth(server), **(headers or {})}
        conn.request(method, path, data, sent)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def chat_body(content: Any = "hello", **params: Any) -> dict[str, Any]:
    return {"model": "local/echo", "messages": [{"role": "user", "content": content}], **params}


def chat(
    server: LocalServer,
    content: Any = "hello",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Reply:
    return request(server, "POST", "/v1/chat/completions", chat_body(content, **params), headers)


def stream(
    server: LocalServer,
    content: Any = "hello",
    usage: bool = True,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Reply:
    if usage:
        params["stream_options"] = {"include_usage": True}
    return chat(server, content, headers, stream=True, **params)


def open_stream(
    server: LocalServer, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    body = json.dumps(chat_body(stream=True)).encode()
    sent = {"content-type": "application/json", **auth(server), **(headers or {})}
    conn.request("POST", "/v1/chat/completions", body, sent)
    return conn.getresponse()


@pytest.fixture(scope="module")
def keyed() -> Iterator[LocalServer]:
    """A server that requires an API key."""
    with LocalServer(api_key=KEY) as srv:
        yield srv


# -- tokens and models -------------------------------------------------------------------------


def test_tokens_join_back_into_the_text():
    text = "  Hello, world!\n\n- a list item  "
    assert "".join(tokenize(text)) == text
    assert tokenize("Hello, world!") == ["Hello", ",", " world", "!"]


def test_prompt_tokens_are_content_plus_four_per_message_plus_two():
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
            ],
        },
    ]
    assert prompt_tokens(messages) == (3 + 4) + (4 + 85 + 4) + 2


def test_echo_repeats_the_last_user_message(server):
    text = chat(server, "tell me about otters").json()["choices"][0]["message"]["content"]
    assert text.startswith("You said: tell me about otters. ")


def test_echo_is_deterministic_and_depends_on_the_prompt(server):
    def text(prompt: str) -> str:
        return chat(server, prompt).json()["choices"][0]["message"]["content"]

    assert text("otters") == text("otters")
    assert text("otters").split(". ", 1)[1] != text("beavers").split(". ", 1)[1]


def test_echo_passage_is_60_to_120_tokens(server):
    for prompt in ("a", "b", "c", "d", "e"):
        text = chat(server, prompt).json()["choices"][0]["message"]["content"]
        assert 60 <= count_tokens(text) - count_tokens(f"You said: {prompt}.") <= 120


def test_echo_mentions_images_in_the_last_message(server):
    parts = [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    text = chat(server, parts).json()["choices"][0]["message"]["content"]
    assert text.startswith("You said: What is it? [1 image].")


def test_registered_model_answers_and_is_listed(server):
    server.register_model("test/upper", lambda messages, params: messages[-1]["content"].upper())
    reply = chat(server, "shout", model="test/upper").json()
    assert reply["choices"][0]["message"]["content"] == "SHOUT"
    ids = [m["id"] for m in request(server, "GET", "/v1/models").json()["data"]]
    assert "test/upper" in ids


def test_failing_model_is_a_500_naming_it(server):
    server.register_model("test/broken", lambda messages, params: 1 / 0)
    reply = chat(server, model="test/broken")
    assert reply.status == 500
    assert "test/broken" in reply.json()["error"]["message"]


# -- endpoints ---------------------------------------------------------------------------------


def test_health_is_ok(server):
    reply = request(server, "GET", "/health")
    assert reply.status == 200 and reply.json()["status"] == "ok"


def test_models_are_listed_in_openai_format(server):
    reply = request(server, "GET", "/v1/models").json()
    assert reply["object"] == "list"
    ids = {m["id"] for m in reply["data"]}
    assert {"local/echo", "local/slow"} <= ids
    assert all(m["object"] == "model" and m["owned_by"] for m in reply["data"])


def test_one_model_is_retrieved_by_id(server):
    reply = request(server, "GET", "/v1/models/local/echo")
    assert reply.status == 200 and reply.json()["id"] == "local/echo"


def test_chat_completion_has_the_openai_shape(server):
    reply = chat(server)
    body = reply.json()
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "local/echo"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == count_tokens(choice["message"]["content"])


def test_usage_counts_prompt_by_the_documented_rule(server):
    body = chat_body("count me")
    body["messages"].insert(0, {"role": "system", "content": "You are terse."})
    usage = request(server, "POST", "/v1/chat/completions", body).json()["usage"]
    assert usage["prompt_tokens"] == prompt_tokens(body["messages"]) == (4 + 4) + (2 + 4) + 2


def test_every_response_has_a_request_id(server):
    replies = [
        chat(server),
        stream(server),
        request(server, "GET", "/v1/models"),
        request(server, "GET", "/nowhere"),
        chat(server, model="nope"),
        request(server, "GET", "/health"),
    ]
    for reply in replies:
        assert reply.headers["x-request-id"].startswith("req_")


def test_stream_is_event_stream_starting_with_the_role(server):
    reply = stream(server)
    assert reply.headers["content-type"].startswith("text/event-stream")
    first = reply.events()[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_stream_sends_one_chunk_per_token_and_the_same_text(server):
    whole = chat(server, "same text").json()
    chunks = stream(server, "same text").content_chunks()
    text = whole["choices"][0]["message"]["content"]
    assert "".join(chunks) == text
    assert chunks == tokenize(text)


def test_stream_ends_with_finish_usage_and_done(server):
    events = stream(server).events()
    finish, usage_chunk, done = events[-3:]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert done == "[DONE]"


def test_stream_usage_equals_non_stream_usage(server):
    whole = chat(server, "usage please").json()["usage"]
    streamed = stream(server, "usage please").events()[-2]["usage"]
    assert streamed == whole


def test_stream_without_include_usage_sends_no_usage(server):
    events = stream(server, usage=False).events()
    assert all("usage" not in e for e in events if isinstance(e, dict))
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_cuts_the_answer_with_finish_reason_length(server):
    body = chat(server, max_tokens=5).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert len(stream(server, max_tokens=5).content_chunks()) == 5


def test_echo_answers_cut_by_max_tokens_end_on_a_sentence(server):
    whole = chat(server, "Summarise that in one line.").json()["choices"][0]["message"]["content"]
    for cap in (11, 12, 25, 40, 70):  # "You said: Summarise that in one line." is 9 tokens
        body = chat(server, "Summarise that in one line.", max_tokens=cap).json()
        text = body["choices"][0]["message"]["content"]
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == cap
        assert text.startswith("You said: Summarise that in one line.")
        assert text[-1] in ".!?" or text.splitlines()[-1].startswith("- "), text
        assert not whole.startswith(text) or whole[len(text)] in " \n"  # never mid-word


def test_max_completion_tokens_is_honoured(server):
    body = chat(server, max_completion_tokens=3).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


# -- request errors ----------------------------------------------------------------------------


def test_invalid_json_is_a_400_in_openai_format(server):
    reply = request(server, "POST", "/v1/chat/completions", b"{not json")
    assert reply.status == 400
    assert set(reply.json()["error"]) >= {"message", "type", "code"}


def test_missing_messages_is_a_400(server):
    reply = request(server, "POST", "/v1/chat/completions", {"model": "local/echo"})
    assert reply.status == 400 and reply.json()["error"]["param"] == "messages"


def test_wrong_field_type_is_a_400_naming_the_field(server):
    reply = chat(server, max_tokens="ten")
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "invalid_type"


def test_unknown_field_is_a_400(server):
    reply = chat(server, frobnicate=True)
    assert reply.status == 400 and "frobnicate" in reply.json()["error"]["message"]


def test_stream_options_without_stream_is_a_400(server):
    assert chat(server, stream_options={"include_usage": True}).status == 400


def test_unknown_model_is_a_404_listing_available_models(server):
    reply = chat(server, model="gpt-nope")
    assert reply.status == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and "local/echo" in error["message"]


def test_unknown_path_is_a_404(server):
    assert request(server, "GET", "/v1/nowhere").status == 404


def test_wrong_method_is_a_405(server):
    reply = request(server, "GET", "/v1/chat/completions")
    assert reply.status == 405 and reply.headers["allow"] == "POST"


# -- authentication ----------------------------------------------------------------------------


def test_wrong_key_is_a_401(keyed):
    reply = chat(keyed, headers={"authorization": "Bearer sk-wrong"})
    assert reply.status == 401 and reply.json()["error"]["code"] == "invalid_api_key"


def test_missing_key_is_a_401(keyed):
    assert chat(keyed).status == 401
    assert request(keyed, "GET", "/v1/models").status == 401


def test_bearer_key_is_accepted(keyed):
    assert chat(keyed, headers={"authorization": f"Bearer {KEY}"}).status == 200


def test_x_api_key_is_accepted(keyed):
    assert chat(keyed, headers={"x-api-key": KEY}).status == 200


def test_key_never_appears_in_the_request_log(keyed):
    chat(keyed, headers={"authorization": f"Bearer {KEY}"})
    chat(keyed, headers={"x-api-key": KEY})
    assert KEY not in json.dumps(keyed.requests_log)
    assert keyed.requests_log[-1]["headers"]["x-api-key"] == "<redacted>"


def test_health_needs_no_key(keyed):
    assert request(keyed, "GET", "/health").status == 200


# -- pacing ------------------------------------------------------------------------------------


def test_latency_header_delays_the_first_byte(server):
    started = time.perf_counter()
    assert chat(server, headers={"x-holynb-latency-ms": "200"}).status == 200
    assert time.perf_counter() - started >= 0.2


def test_server_latency_applies_to_every_answer():
    with LocalServer(latency_ms=150) as srv:
        started = time.perf_counter()
        chat(srv)
        assert time.perf_counter() - started >= 0.15


def test_tokens_per_second_spaces_stream_chunks(server):
    started = time.perf_counter()
    chunks = stream(server, max_tokens=20, headers={"x-holynb-tokens-per-second": "100"})
    elapsed = time.perf_counter() - started
    assert len(chunks.content_chunks()) == 20
    assert 0.19 - 0.01 <= elapsed < 1.0  # 19 gaps of 10 ms


def test_slow_model_takes_its_time(server):
    started = time.perf_counter()
    assert chat(server, model="local/slow", max_tokens=4).status == 200
    assert time.perf_counter() - started >= 0.4


# -- faults ------------------------------------------------------------------------------------


def test_fault_status_429_sends_retry_after_seconds(local):
    local.faults.push(faults.status(429, retry_after=1))
    reply = chat(local)
    assert reply.status == 429 and reply.headers["retry-after"] == "1"
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"


def test_fault_status_sends_retry_after_as_http_date(local):
    local.faults.push(faults.status(429, retry_after=3, retry_after_date=True))
    when = email.utils.parsedate_to_datetime(chat(local).headers["retry-after"])
    assert 2 <= when.timestamp() - time.time() <= 4


def test_fault_status_sends_retry_after_ms(local):
    local.faults.push(faults.status(429, retry_after_ms=250))
    assert chat(local).headers["retry-after-ms"] == "250"


def test_fault_status_sends_x_should_retry(local):
    local.faults.push(faults.status(500, should_retry=False))
    assert chat(local).headers["x-should-retry"] == "false"


@pytest.mark.parametrize("code", [500, 502, 503])
def test_fault_server_errors_have_openai_error_bodies(local, code):
    local.faults.push(faults.status(code))
    reply = chat(local)
    assert reply.status == code
    assert reply.json()["error"]["type"] == "server_error"


def test_fault_status_with_a_custom_html_body(local):
    local.faults.push(faults.status(502, body="<html>Bad Gateway</html>"))
    reply = chat(local)
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.raw == b"<html>Bad Gateway</html>"


def test_fault_drop_closes_without_a_response(local):
    local.faults.push(faults.drop())
    with pytest.raises(http.client.RemoteDisconnected):
        chat(local)
    assert local.stats.by_status == {0: 1}


def test_fault_cut_stream_closes_after_n_chunks(local):
    local.faults.push(faults.cut_stream(after_chunks=4))
    response = open_stream(local)
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    partial = Reply(200, {}, info.value.partial)
    assert len(partial.content_chunks()) == 4
    assert b'finish_reason":"stop' not in info.value.partial and b"[DONE]" not in partial.raw


def test_fault_cut_on_a_non_stream_request_truncates_the_body(local):
    local.faults.push(faults.cut_stream())
    with pytest.raises(http.client.IncompleteRead):
        chat(local)


def test_fault_error_event_after_n_chunks(local):
    local.faults.push(faults.error_event(after_chunks=2, message="upstream overloaded"))
    reply = stream(local)
    assert reply.status == 200
    assert len(reply.content_chunks()) == 2
    last = reply.events()[-1]
    assert last["error"]["message"] == "upstream overloaded"


def test_fault_no_done_ends_cleanly_without_done(local):
    local.faults.push(faults.no_done())
    events = stream(local).events()
    assert "[DONE]" not in events and events[-1]["choices"] == []


def test_fault_usage_in_finish_chunk(local):
    local.faults.push(faults.usage_in_finish_chunk())
    events = stream(local).events()
    finish = events[-2]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"]["total_tokens"]
    assert all(e["choices"] for e in events if isinstance(e, dict))


def test_fault_no_usage_never_sends_usage(local):
    local.faults.push(faults.no_usage())
    events = stream(local).events()
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)
    assert events[-1] == "[DONE]"


def test_fault_reject_stream_options(local):
    local.faults.push(faults.reject_stream_options(422))
    reply = stream(local)
    assert reply.status == 422 and reply.json()["error"]["param"] == "stream_options"


def test_fault_reject_stream_options_lets_requests_without_them_pass(local):
    local.faults.push(faults.reject_stream_options())
    assert stream(local, usage=False).status == 200


def test_fault_keepalive_comments_are_interleaved(local):
    local.faults.push(faults.keepalive_comments())
    reply = stream(local)
    assert reply.raw.count(b": keep-alive\n\n") == len(reply.events())  # one before each event
    assert reply.content_chunks() == stream(local).content_chunks()


def test_fault_stall_pauses_mid_stream(local):
    local.faults.push(faults.stall(seconds=0.3, after_chunks=2))
    response = open_stream(local)
    arrivals = []
    for line in response:
        if line.startswith(b"data: {"):
            arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps[2] >= 0.29  # role, chunk 1, chunk 2, <stall>, chunk 3
    assert max(gaps[:2] + gaps[3:]) < 0.1


def test_fault_delay_waits_before_answering(local):
    local.faults.push(faults.delay(seconds=0.2))
    started = time.perf_counter()
    assert chat(local).status == 200
    assert time.perf_counter() - started >= 0.2


def test_faults_are_consumed_in_order(local):
    local.faults.push(faults.status(503))
    local.faults.push(faults.status(429))
    assert [chat(local).status for _ in range(3)] == [503, 429, 200]


def test_fault_times_repeats_it(local):
    local.faults.push(faults.status(500), times=2)
    assert [chat(local).status for _ in range(3)] == [500, 500, 200]


def test_faults_pushed_together_apply_to_one_request(local):
    local.faults.push([faults.delay(0.1), faults.status(503)])
    started = time.perf_counter()
    assert chat(local).status == 503
    assert time.perf_counter() - started >= 0.1
    assert chat(local).status == 200


def test_fault_header_applies_to_that_request_only(local):
    assert chat(local, headers={"x-holynb-fault": "429:retry_after=2"}).status == 429
    assert chat(local).status == 200


def test_bad_fault_header_is_a_400(local):
    reply = chat(local, headers={"x-holynb-fault": "explode"})
    assert reply.status == 400 and "explode" in reply.json()["error"]["message"]


def test_fault_spec_strings_parse_to_faults():
    assert faults.parse("429:retry_after=1") == (faults.status(429, retry_after=1),)
    assert faults.parse("cut:5") == (faults.cut_stream(after_chunks=5),)
    assert faults.parse("delay:0.5;drop") == (faults.delay(0.5), faults.drop())
    assert faults.parse("error:2,message=boom") == (faults.error_event(2, "boom"),)
    assert faults.status(429, retry_after=1).spec == "429:retry_after=1"


def test_faults_http_api_pushes_lists_and_clears(local):
    pushed = request(local, "POST", "/_holynb/faults", ["503", {"fault": "drop", "times": 2}])
    assert pushed.json()["pending"] == [
        {"faults": ["503"], "times": 1},
        {"faults": ["drop"], "times": 2},
    ]
    assert request(local, "DELETE", "/_holynb/faults").json() == {"pending": []}
    assert chat(local).status == 200


def test_faults_http_api_accepts_the_object_form(local):
    item = {"kind": "status", "code": 429, "headers": {"x-ratelimit-remaining-requests": "0"}}
    request(local, "POST", "/_holynb/faults", [item])
    reply = chat(local)
    assert reply.status == 429 and reply.headers["x-ratelimit-remaining-requests"] == "0"


def test_faults_http_api_refuses_bad_faults(local):
    assert request(local, "POST", "/_holynb/faults", ["cut:many"]).status == 400


# -- counters and log --------------------------------------------------------------------------


def test_stats_count_requests_and_statuses(local):
    local.faults.push(faults.status(429))
    chat(local)
    chat(local)
    chat(local, model="nope")
    stats = local.stats
    assert stats.requests == 3
    assert stats.by_status == {429: 1, 200: 1, 404: 1}
    assert stats.completed == 1


def test_stats_tokens_match_the_usage_reported(local):
    a = chat(local, "one").json()["usage"]
    b = stream(local, "two").events()[-2]["usage"]
    stats = local.stats
    assert stats.prompt_tokens == a["prompt_tokens"] + b["prompt_tokens"]
    assert stats.completion_tokens == a["completion_tokens"] + b["completion_tokens"]


def test_stats_count_the_tokens_sent_before_a_cut(local):
    local.faults.push(faults.cut_stream(after_chunks=7))
    with pytest.raises(http.client.IncompleteRead):
        open_stream(local).read()
    assert local.stats.completion_tokens == 7
    assert local.stats.completed == 0


def test_stats_count_connections(local):
    for _ in range(3):
        request(local, "GET", "/health")
    assert local.stats.connections == 3


def test_requests_log_records_each_request(local):
    chat(local, "logged")  # with the server's token as Bearer key
    (entry,) = local.requests_log
    assert entry["path"] == "/v1/chat/completions" and entry["model"] == "local/echo"
    assert entry["stream"] is False and entry["status"] == 200
    assert entry["body"]["messages"][0]["content"] == "logged"
    assert entry["headers"]["authorization"] == "<redacted>"
    assert local.api_key.get() not in json.dumps(local.requests_log)
    assert entry["time"] <= time.time()


def test_reset_clears_counters_log_and_faults(local):
    local.faults.push(faults.status(500), times=5)
    chat(local)
    local.reset()
    assert local.stats.requests == 0 and local.requests_log == [] and len(local.faults) == 0
    assert chat(local).status == 200


def test_stats_endpoint_returns_json(local):
    chat(local)
    data = request(local, "GET", "/_holynb/stats").json()
    assert data["requests"] == 1 and data["by_status"] == {"200": 1}
    assert data["pending_faults"] == []


# -- the runner --------------------------------------------------------------------------------


def test_base_url_points_at_v1_on_the_chosen_port(server):
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_refuses_to_bind_beyond_loopback():
    with pytest.raises(ValueError, match="loopback"):
        LocalServer(host="0.0.0.0")


def test_context_manager_stops_the_server():
    with LocalServer() as srv:
        port = srv.port
        assert srv.running
    assert not srv.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stop_is_quick_with_a_stalled_stream():
    srv = LocalServer().start()
    srv.faults.push(faults.stall(seconds=30))
    response = open_stream(srv)
    response.readline()
    started = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - started < 2


def test_serve_forever_prints_the_base_url():
    code = "from holynb.server import serve_forever; serve_forever(port=0)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)] if proc.stdout else []
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert lines[2].startswith("  export HOLYNB_BASE_URL=http://127.0.0.1:")


def test_echo_closing_sentences_have_exactly_the_tokens_they_fill():
    from holynb.server.models import closing_sentence
    from holynb.server.tokens import count_tokens

    for n in range(2, 40):
        assert count_tokens(" " + closing_sentence(n)) == n
