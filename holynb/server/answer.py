"""Writing one chat answer, whole or as an SSE stream, shaped by the request's faults.

An ``Exchange`` follows a chat request from arrival to its last byte and records how it ended
(counters and request log) exactly once. Unpaced streams are written in batches of about
``FLUSH_BYTES``; paced ones follow a schedule (``start + i / tokens_per_second``), so a slow
event loop sends what is due together instead of drifting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from aiohttp import web

from holynb.server.faults import Fault
from holynb.server.stats import Recorder
from holynb.server.wire import ChunkRenderer, RequestError, completion_body, error_body, usage

FLUSH_BYTES = 64 * 1024  # unpaced streams go out in writes of about this size
REDACTED = "<redacted>"
JSON = "application/json"
_SECRET_HEADERS = ("authorization", "x-api-key")


def error_response(err: RequestError, headers: dict[str, str] | None = None) -> web.Response:
    """``err`` as an OpenAI-style JSON error response."""
    return web.Response(body=err.body(), status=err.status, content_type=JSON, headers=headers)


def redact(headers: Any) -> dict[str, str]:
    """Headers as a plain dict, names lower-cased, ``authorization``/``x-api-key`` blotted out."""
    lowered = ((k.lower(), v) for k, v in headers.items())
    return {k: (REDACTED if k in _SECRET_HEADERS else v) for k, v in lowered}


def log_entry(
    request: web.Request,
    *,
    received: float,
    status: int,
    outcome: str,
    body: Any = None,
    model: str | None = None,
    stream: bool = False,
    request_id: str | None = None,
    faults: list[str] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    """One entry of the request log; header names lower-cased, secret ones replaced by a marker."""
    return {
        "time": received,
        "method": request.method,
        "path": request.path,
        "model": model,
        "stream": stream,
        "headers": redact(request.headers),
        "body": body,
        "status": status,
        "outcome": outcome,
        "request_id": request_id,
        "faults": faults or [],
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "duration_ms": round((time.time() - received) * 1000, 3),
    }


class Delivered(TypedDict):
    """The token counts of an answer that ended part-way (``Exchange.finish`` keywords)."""

    prompt: int
    completion: int


def delivered(answer: Answer, tokens: int) -> Delivered:
    """What was delivered once ``tokens`` completion tokens went out (no prompt if none did)."""
    return {"prompt": answer.prompt_tokens if tokens else 0, "completion": tokens}


@dataclass
class Exchange:
    """One chat request on its way through: what to log and count when it ends."""

    request: web.Request
    recorder: Recorder
    epoch: int
    request_id: str
    received: float
    raw: bytes = b""
    faults: dict[str, Fault] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    anthropic: bool = False  # the request came to /v1/messages: errors in Anthropic's shape
    render_error: Callable[[RequestError, dict[str, str]], web.Response] = error_response

    @property
    def headers(self) -> dict[str, str]:
        """Fresh response headers for this request (its ``x-request-id``)."""
        return {"x-request-id": self.request_id}

    def finish(
        self,
        status: int,
        outcome: str,
        *,
        completed: bool = False,
        prompt: int = 0,
        completion: int = 0,
    ) -> None:
        """Count the outcome and log the request."""
        self.recorder.outcome(
            self.epoch,
            status,
            completed=completed,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        body: Any = self.body
        if body is None:
            body = self.raw[:10_000].decode("utf-8", "replace")
        self.recorder.log(
            self.epoch,
            log_entry(
                self.request,
                received=self.received,
                status=status,
                outcome=outcome,
                body=body,
                model=self.body.get("model") if self.body else None,
                stream=bool(self.body.get("stream")) if self.body else False,
                request_id=self.request_id,
                faults=[f.spec for f in self.faults.values()],
                prompt_tokens=prompt,
                completion_tokens=completion,
            ),
        )

    def fail(self, err: RequestError, outcome: str = "error") -> web.Response:
        """Record ``err`` as the outcome and return it as a response."""
        self.finish(err.status, outcome)
        return self.render_error(err, self.headers)

    def client_gone(self) -> bool:
        """Whether the client has closed its connection already."""
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def close_connection(self) -> None:
        """Close the TCP connection at once (what is written so far still goes out)."""
        transport = self.request.transport
        if transport is not None:
            transport.close()


@dataclass(frozen=True)
class Answer:
    """What the model said, cut to the request's limit, and what is needed to send it."""

    completion_id: str
    created: int
    model: str
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    tokens_per_second: float | None

    def usage(self, completion: int | None = None) -> dict[str, Any]:
        """The usage object for this answer (``completion`` tokens when only part was sent)."""
        return usage(self.prompt_tokens, len(self.pieces) if completion is None else completion)


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


class _Writer:
    """Buffers SSE events and writes them in batches, counting the content tokens sent."""

    def __init__(self, response: web.StreamResponse, keepalive: bool) -> None:
        self.response = response
        self.keepalive = keepalive
        self.buffer: list[bytes] = []
        self.size = 0
        self.pending_tokens = 0
        self.sent_tokens = 0

    def add(self, event: bytes, tokens: int = 0) -> None:
        if self.keepalive:
            self.buffer.append(ChunkRenderer.COMMENT)
        self.buffer.append(event)
        self.size += len(event)
        self.pending_tokens += tokens

    async def flush(self) -> None:
        if not self.buffer:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        self.size = 0
        await self.response.write(data)
        self.sent_tokens += self.pending_tokens
        self.pending_tokens = 0


async def send_stream(ex: Exchange, answer: Answer, include_usage: bool) -> web.StreamResponse:
    """An SSE stream: role chunk, one chunk per token, finish, usage, ``[DONE]`` (faults aside)."""
    fault = ex.faults
    response = web.StreamResponse(headers=ex.headers)
    response.content_type = "text/event-stream"
    response.headers["cache-control"] = "no-cache"
    no_usage = fault.get("no_usage")
    render = ChunkRenderer(
        answer.completion_id, answer.created, answer.model, include_usage and not no_usage
    )
    writer = _Writer(response, keepalive="keepalive_comments" in fault)
    size = fault["coalesce"]["tokens"] if "coalesce" in fault else 1
    pieces = [answer.pieces[i : i + size] for i in range(0, len(answer.pieces), size)]
    stop_at, ending = len(pieces), "complete"
    for kind in ("error_event", "cut_stream"):
        if kind in fault:
            stop_at, ending = min(stop_at, fault[kind]["after_chunks"]), kind
    bad = fault.get("invalid_utf8")
    bad_at = bad["after_chunks"] if bad else -1
    stall = fault.get("stall")
    stall_at, stall_s = (stall["after_chunks"], stall["seconds"]) if stall else (-1, 0.0)
    interval = 1.0 / answer.tokens_per_second if answer.tokens_per_second else 0.0

    loop = asyncio.get_running_loop()
    try:
        await response.prepare(ex.request)
        writer.add(render.role())
        if stall_at == 0:
            await writer.flush()
            await asyncio.sleep(stall_s)
        start = loop.time()
        for i in range(stop_at):
            if i == bad_at:  # "café " in Latin-1: 0xE9 is not valid UTF-8
                writer.add(render.content("café ").replace("é".encode(), b"\xe9"), 1)
            if interval:
                wait = start + i * interval - loop.time()
                if wait > 0:
                    await writer.flush()
                    await asyncio.sleep(wait)
            writer.add(render.content("".join(pieces[i])), len(pieces[i]))
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
    stop_at = sum(len(chunk) for chunk in pieces[:stop_at])  # in tokens from here on
    if ending == "error_event":
        writer.add(render.error(fault["error_event"]["message"]))
    elif no_usage is not None:
        writer.add(render.finish(answer.finish_reason))
        if no_usage["null"] and include_usage:
            writer.add(render.usage(None))
    elif "usage_in_finish_chunk" in fault:
        writer.add(render.finish(answer.finish_reason, answer.usage(stop_at)))
    else:
        writer.add(render.finish(answer.finish_reason))
        if include_usage:
            writer.add(render.usage(answer.usage(stop_at)))
    if completed and "no_done" not in fault:
        writer.add(render.DONE)
    # Count before the last write: a client that has read [DONE] must find it counted.
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
