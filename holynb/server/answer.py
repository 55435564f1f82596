"""Writing one chat completions answer, whole or as an SSE stream, shaped by the request's faults.

The stream is ``stream.send_events`` with this format's events (``ChatEvents``: a role chunk,
one chunk per token, the finish chunk, usage, ``[DONE]``); a whole answer takes as long as its
stream would. The request itself is followed by ``exchange.Exchange``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from holynb.server.exchange import Answer, Exchange
from holynb.server.stream import send_body, send_events
from holynb.server.wire import ChunkRenderer, completion_body, error_body

__all__ = ["ChatEvents", "send_stream", "send_whole"]


async def send_whole(ex: Exchange, answer: Answer) -> web.StreamResponse:
    """A non-streamed ``chat.completion``; its generation takes as long as the stream would."""
    no_usage = ex.faults.get("no_usage")

    def payload() -> bytes:
        return completion_body(
            answer.completion_id,
            answer.created,
            answer.model,
            "".join(answer.pieces),
            answer.finish_reason,
            None if no_usage else answer.usage(),
            with_usage=no_usage is None or no_usage["null"],
            service_tier=answer.service_tier,
        )

    def error(message: str) -> bytes:
        return error_body(message, "server_error")

    return await send_body(ex, answer, payload, error, completion=len(answer.pieces))


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
            answer.service_tier,
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
