"""One chat request on the local server from arrival to its last byte: ``Exchange`` and ``Answer``.

An ``Exchange`` records how a request ended (counters and request log) exactly once; an
``Answer`` is what the model said, cut to the request's limit. Both wire formats (chat
completions in ``answer``, Anthropic's Messages in ``messages``) send from these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from aiohttp import web

from holynb.server.faults import Fault
from holynb.server.stats import Recorder
from holynb.server.wire import RequestError, usage

__all__ = [
    "JSON",
    "REDACTED",
    "Answer",
    "Delivered",
    "Exchange",
    "delivered",
    "error_response",
    "log_entry",
    "redact",
]

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
class CacheUse:
    """The prompt-cache tokens of one Messages answer: written now, or read from an earlier
    request's write within its ttl."""

    written: int = 0
    read: int = 0
    ttl: str = "5m"


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
    service_tier: str | None = None  # the tier the answer reports (None: says none)
    cache: CacheUse | None = None  # Anthropic's format: the prompt cache's writes and reads

    def usage(self, completion: int | None = None) -> dict[str, Any]:
        """The usage object for this answer (``completion`` tokens when only part was sent)."""
        return usage(self.prompt_tokens, len(self.pieces) if completion is None else completion)
