"""Writing one chat completions answer, whole or as an SSE stream, shaped by the request's faults.

The stream is ``stream.send_events`` with this format's events (``ChatEvents``: a role chunk,
one chunk per token, the finish chunk, usage, ``[DONE]``); a whole answer takes as long as its
stream would. The request itself is followed by ``exchange.Exchange``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from holynb.server.exchange import JSON, Answer, Exchange
from holynb.server.stream import send_events
from holynb.server.wire import ChunkRenderer, completion_body, error_body

__all__ = ["ChatEvents", "send_stream", "send_whole"]


async def send_whole(ex: Exchange, answer: Answer) -> web.StreamResponse:
    """A non-streamed answer; its generation takes as long as the stream would."""
    fault = ex.faults
    wait = len(answer.pieces) / answer.tokens_per_second if answer.tokens_per_second else 0.0
    if "stall" in fault:
        wait += fault["stall"]["seconds"]
    if wait:
        await asyncio.sleep(wait)
    if ex.client_gone():
        ex.finish(499, "client_disconnected")
        return web.Response(status=499)
    if "error_event" in fault:
        ex.finish(200, "error_event")
        payload = error_body(fault["error_event"]["message"], "server_error")
        return web.Response(body=payload, content_type=JSON, headers=ex.headers)
    no_usage = fault.get("no_usage")
    payload = completion_body(
        answer.completion_id,
        answer.created,
        answer.model,
        "".join(answer.pieces),
        answer.finish_reason,
        None if no_usage else answer.usage(),
        with_usage=no_usage is None or no_usage["null"],
    )
    if "cut_stream" in fault:
        response = web.StreamResponse(headers=ex.headers)
        response.content_type = JSON
        response.content_length = len(payload)
        ex.finish(200, "cut")
        try:
            await response.prepare(ex.request)
            await response.write(payload[: len(payload) // 2])
        except ConnectionError:
            pass
        ex.close_connection()
        return response
    if "trickle" in fault:
        return await _trickle(ex, answer, payload, fault["trickle"]["seconds"])
    ex.finish(
        200,
        "complete",
        completed=True,
        prompt=answer.prompt_tokens,
        completion=len(answer.pieces),
    )
    return web.Response(body=payload, content_type=JSON, headers=ex.headers)


async def _trickle(
    ex: Exchange, answer: Answer, payload: bytes, seconds: float
) -> web.StreamResponse:
    """``payload`` written one byte every ``seconds`` (the ``trickle`` fault)."""
    response = web.StreamResponse(headers=ex.headers)
    response.content_type = JSON
    response.content_length = len(payload)
    try:
        await response.prepare(ex.request)
        for i in range(len(payload)):
            if ex.client_gone():
                raise ConnectionResetError
            await response.write(payload[i : i + 1])
            await asyncio.sleep(seconds)
    except ConnectionError:
        ex.finish(200, "client_disconnected")
        return response
    tokens = {"prompt": answer.prompt_tokens, "completion": len(answer.pieces)}
    ex.finish(200, "complete", completed=True, **tokens)
    return response


class ChatEvents:
    """The chunks of one chat completions stream (``stream.StreamEvents``): a role chunk, one
    content chunk per delta, the finish chunk and usage as the request and faults say, then
    ``data: [DONE]``; with ``keepalive_comments`` every event follows a ``: keep-alive`` line."""

    def __init__(self, answer: Answer, faults: dict[str, Any], include_usage: bool) -> None:
        self.answer = answer
        self.faults = faults
        self.include_usage = include_usage
        self.no_usage = faults.get("no_usage")
        self.render = render = ChunkRenderer(
            answer.completion_id,
            answer.created,
            answer.model,
            include_usage and not self.no_usage,
        )
        self.keep = keep = ChunkRenderer.COMMENT if "keepalive_comments" in faults else b""
        content = render.content
        self.delta = (lambda text: keep + content(text)) if keep else content

    def opening(self) -> bytes:
        """The role chunk."""
        return self.keep + self.render.role()

    def garbled(self) -> bytes:
        """A content chunk of "café " in Latin-1: 0xE9 is not valid UTF-8."""
        return self.keep + self.render.content("café ").replace("é".encode(), b"\xe9")

    def closing(self, tokens: int) -> bytes:
        """Finish chunk, usage (in its own chunk, in the finish chunk, null or none) and
        ``[DONE]``."""
        keep, render, answer = self.keep, self.render, self.answer
        reason = answer.finish_reason
        if self.no_usage is not None:
            out = keep + render.finish(reason)
            if self.no_usage["null"] and self.include_usage:
                out += keep + render.usage(None)
        elif "usage_in_finish_chunk" in self.faults:
            out = keep + render.finish(reason, answer.usage(tokens))
        else:
            out = keep + render.finish(reason)
            if self.include_usage:
                out += keep + render.usage(answer.usage(tokens))
        if "no_done" not in self.faults:
            out += keep + render.DONE
        return out

    def error(self, message: str) -> bytes:
        """``data: {"error": ...}``."""
        return self.keep + self.render.error(message)


async def send_stream(ex: Exchange, answer: Answer, include_usage: bool) -> web.StreamResponse:
    """An SSE stream: role chunk, one chunk per token, finish, usage, ``[DONE]`` (faults aside)."""
    return await send_events(ex, answer, ChatEvents(answer, ex.faults, include_usage))
