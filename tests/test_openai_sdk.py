"""The official openai SDK works against the local server unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from holynb.server import LocalServer, faults

MESSAGES = [{"role": "user", "content": "hello from the SDK"}]


@pytest.fixture
def client(server: LocalServer) -> Iterator[openai.OpenAI]:
    key = server.api_key.get()  # the server's token: the SDK sends it as Bearer key
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as c:
        yield c


def test_sdk_lists_models(client):
    ids = [m.id for m in client.models.list()]
    assert {"local/echo", "local/slow"} <= set(ids)


def test_sdk_chat_returns_text_and_usage(client):
    r = client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert r.choices[0].message.content.startswith("You said: hello from the SDK.")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r._request_id.startswith("req_")


def test_sdk_stream_matches_the_non_stream_answer(client):
    whole = client.chat.completions.create(model="local/echo", messages=MESSAGES)
    text, usage = [], None
    for chunk in client.chat.completions.create(
        model="local/echo",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == whole.choices[0].message.content
    assert usage == whole.usage


async def test_async_sdk_stream_matches_the_non_stream_answer(server):
    key = server.api_key.get()
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=key) as client:
        whole = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        text, usage = [], None
        stream = await client.chat.completions.create(
            model="local/echo",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
    assert "".join(text) == whole.choices[0].message.content
    assert usage == whole.usage


def test_sdk_honours_retry_after_ms(local):
    local.faults.push(faults.status(429, retry_after_ms=10), times=2)
    key = local.api_key.get()
    with openai.OpenAI(base_url=local.base_url, api_key=key, max_retries=2) as client:
        r = client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert r.choices[0].message.content
    assert local.stats.requests == 3


def test_sdk_raises_on_an_error_event_mid_stream(client, local):
    local.faults.push(faults.error_event(after_chunks=2, message="upstream overloaded"))
    stream = client.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="upstream overloaded"):
        for _ in stream:
            pass


def test_sdk_raises_not_found_for_an_unknown_model(client):
    with pytest.raises(openai.NotFoundError, match="local/echo"):
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES)


def test_sdk_raises_authentication_error_for_a_wrong_key():
    with (
        LocalServer(api_key="sk-right") as srv,
        openai.OpenAI(base_url=srv.base_url, api_key="sk-wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()
