"""How the local server sends an answer, in every wire format: one streaming loop, one whole body.

``send_events`` writes an answer as SSE with the events of one wire format (``StreamEvents``:
chat completions chunks in ``answer``, Anthropic's Messages events in ``messages``): the
opening events, one text delta per token (``coalesce``: several), the closing events.
Unpaced streams are written in batches of about ``FLUSH_BYTES``; paced ones follow a schedule
(``start + i / tokens_per_second``), so a slow event loop sends what is due together instead of
drifting. Faults shape it the same way in both formats: ``stall``, ``cut_stream``,
``error_event``, ``invalid_utf8`` (where the format has a garbled delta), and the format's own
(keep-alives, usage, ``no_done``) in its events. A client that goes away, and what it was sent,
are counted exactly once.

``send_body`` sends a whole (non-streamed) answer the same way for every format: it takes as
long as its stream would, and ``stall``, ``error_event``, ``cut_stream`` and ``trickle`` (where
the format has it) shape it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from holynb.server.exchange import JSON, Answer, Exchange, delivered

__all__ = ["FLUSH_BYTES", "StreamEvents", "Writer", "chunks", "send_body", "send_events"]

FLUSH_BYTES = 64 * 1024  # unpaced streams go out in writes of about this size


class StreamEvents(Protocol):
    """The SSE events of one wire format for one answer, faults already taken into account."""

    delta: Callable[[str], bytes]
    """The event(s) carrying one text delta (an attribute: the loop calls it once a chunk)."""

    def opening(self) -> bytes:
        """The events before the first text delta."""
        ...

    def garbled(self) -> bytes | None:
        """A delta that is not valid UTF-8 (the ``invalid_utf8`` fault), or None: not in this
        format."""
        ...

    def closing(self, tokens: int) -> bytes:
        """The events that end a complete answer of which ``tokens`` tokens were sent."""
        ...

    def error(self, message: str) -> bytes:
        """The error event that ends a stream after HTTP 200 (the ``error_event`` fault)."""
        ...


class Writer:
    """Buffers SSE events and writes them in batches, counting the content tokens sent."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.buffer: list[bytes] = []
        self.size = 0
        self.pending_tokens = 0
        self.sent_tokens = 0

    def add(self, event: bytes, tokens: int = 0) -> None:
        """Queue ``event``, which carries ``tokens`` content tokens."""
        self.buffer.append(event)
        self.size += len(event)
        self.pending_tokens += tokens

    async def flush(self) -> None:
        """Write what is queued (ConnectionError if the client has gone)."""
        if not self.buffer:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        self.size = 0
        await self.response.write(data)
        self.sent_tokens += self.pending_tokens
        self.pending_tokens = 0


def chunks(pieces: list[str], size: int) -> tuple[list[str], list[int]]:
    """The text deltas to send, ``size`` tokens each (``coalesce``), and their token counts."""
    if size == 1:
        return pieces, [1] * len(pieces)
    starts = range(0, len(pieces), size)
    return ["".join(pieces[i : i + size]) for i in starts], [
        len(pieces[i : i + size]) for i in starts
    ]


async def send_events(ex: Exchange, answer: Answer, events: StreamEvents) -> web.StreamResponse:
    """``answer`` as an SSE stream of ``events``: opening, one delta per chunk, closing (or an
    error event, or a cut connection, as the request's faults say)."""
    fault = ex.faults
    response = web.StreamResponse(headers=ex.headers)
    response.content_type = "text/event-stream"
    response.headers["cache-control"] = "no-cache"
    writer = Writer(response)
    texts, tokens = chunks(answer.pieces, fault["coalesce"]["tokens"] if "coalesce" in fault else 1)
    stop_at, ending = len(texts), "complete"
    for kind in ("error_event", "cut_stream"):
        if kind in fault:
            stop_at, ending = min(stop_at, fault[kind]["after_chunks"]), kind
    garbled = events.garbled() if "invalid_utf8" in fault else None
    bad_at = fault["invalid_utf8"]["after_chunks"] if garbled is not None else -1
    stall = fault.get("stall")
    stall_at, stall_s = (stall["after_chunks"], stall["seconds"]) if stall else (-1, 0.0)
    interval = 1.0 / answer.tokens_per_second if answer.tokens_per_second else 0.0
    delta = events.delta
    add = writer.add

    loop = asyncio.get_running_loop()
    try:
        await response.prepare(ex.request)
        add(events.opening())
        if stall_at == 0:
            await writer.flush()
            await asyncio.sleep(stall_s)
        start = loop.time()
        for i in range(stop_at):
            if i == bad_at and garbled is not None:
                add(garbled, 1)
            if interval:
                wait = start + i * interval - loop.time()
                if wait > 0:
                    await writer.flush()
                    await asyncio.sleep(wait)
            add(delta(texts[i]), tokens[i])
            if i + 1 == stall_at:
                await writer.flush()
                await asyncio.sleep(stall_s)
                start += stall_s
            elif writer.size >= FLUSH_BYTES:
                await writer.flush()
        if ending == "cut_stream":
            await writer.flush()
            ex.finish(200, "cut", **delivered(answer, writer.sent_tokens))
            ex.close_connection()
            return response
    except ConnectionError:
        ex.finish(200, "client_disconnected", **delivered(answer, writer.sent_tokens))
        return response

    completed = ending == "complete"
    if ending == "error_event":
        add(events.error(fault["error_event"]["message"]))
    else:
        add(events.closing(sum(tokens[:stop_at])))
    # Count before the last write: a client that has read the last event must find it counted.
    unsent = writer.pending_tokens
    ex.finish(
        200,
        "complete" if completed else "error_event",
        completed=completed,
        **delivered(answer, writer.sent_tokens + unsent),
    )
    try:
        await writer.flush()
    except ConnectionError:
        ex.recorder.correct(ex.epoch, completed=-completed, completion_tokens=-unsent)
    return response


async def send_body(
    ex: Exchange,
    answer: Answer,
    payload: Callable[[], bytes],
    error: Callable[[str], bytes],
    *,
    completion: int,
    trickle: bool = True,
) -> web.StreamResponse:
    """A non-streamed answer whose body is ``payload()`` (``completion`` tokens counted); its
    generation takes as long as the stream would. ``error(message)`` is the body of the
    ``error_event`` fault; ``trickle=False``: the format ignores the ``trickle`` fault."""
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
        body = error(fault["error_event"]["message"])
        return web.Response(body=body, content_type=JSON, headers=ex.headers)
    body = payload()
    if "cut_stream" in fault:
        response = web.StreamResponse(headers=ex.headers)
        response.content_type = JSON
        response.content_length = len(body)
        ex.finish(200, "cut")
        try:
            await response.prepare(ex.request)
            await response.write(body[: len(body) // 2])
        except ConnectionError:
            pass
        ex.close_connection()
        return response
    if trickle and "trickle" in fault:
        return await _trickle(ex, answer, body, fault["trickle"]["seconds"], completion)
    ex.finish(200, "complete", completed=True, prompt=answer.prompt_tokens, completion=completion)
    return web.Response(body=body, content_type=JSON, headers=ex.headers)


async def _trickle(
    ex: Exchange, answer: Answer, payload: bytes, seconds: float, completion: int
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
    ex.finish(200, "complete", completed=True, prompt=answer.prompt_tokens, completion=completion)
    return response
