"""Anthropic's Messages API on the local server: request checks, answers, stream events, errors.

``POST /v1/messages`` answers with the same offline models as chat completions: the request is
checked the way Anthropic checks it (``max_tokens`` required, unknown fields refused), turned
into OpenAI-shaped messages for the model (``system`` first; ``image`` blocks become
``image_url`` parts, so a model reads images the same way in both formats), and the answer is
sent as a ``message`` or as Anthropic's SSE events (``message_start``, ``content_block_*``,
``message_delta``, ``message_stop``, ``ping``). Errors have Anthropic's shape:
``{"type": "error", "error": {"type": ..., "message": ...}}``.

Faults apply as for chat completions where they make sense: status codes (529 answers
``overloaded_error``), ``error_event`` (an ``error`` event after HTTP 200), ``cut_stream``,
``stall``, ``coalesce`` (several tokens a text delta), ``keepalive_comments`` (``ping``
events), ``no_done`` (no ``message_stop``), ``no_usage`` (zero counts), ``raw_body`` and
``delay``/``drop`` (handled before the format matters).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from holynb.server.exchange import JSON, Answer, Exchange
from holynb.server.stream import send_body, send_events
from holynb.server.wire import RequestError

# Anthropic's error type for each HTTP status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_PARAMS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "max_tokens": (int,),
    "system": (str, list),
    "stop_sequences": (list,),
    "stream": (bool,),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "metadata": (dict,),
    "tools": (list,),
    "tool_choice": (dict,),
    "thinking": (dict,),
    "service_tier": (str,),
}
_ROLES = ("user", "assistant")
_BLOCK_TYPES = (
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
)  # fmt: skip
_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(message: str, kind: str) -> bytes:
    """``{"type": "error", "error": {"type": kind, "message": message}}`` as bytes."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def error_response(err: RequestError, headers: dict[str, str] | None = None) -> web.Response:
    """``err`` as an Anthropic-style JSON error response."""
    body = error_body(err.message, error_type(err.status))
    return web.Response(body=body, status=err.status, content_type=JSON, headers=headers)


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def require_version(headers: Any) -> None:
    """Refuse a request without ``anthropic-version``, as Anthropic does (any value is taken)."""
    if not headers.get("anthropic-version"):
        raise _bad("anthropic-version: header is required")


def parse_messages_request(raw: bytes) -> dict[str, Any]:
    """The request body as a dict, or a RequestError (400) saying what is wrong with it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    for key, value in body.items():
        if key not in _PARAMS:
            raise _bad(f"{key}: Extra inputs are not permitted")
        if value is not None and (
            not isinstance(value, _PARAMS[key]) or isinstance(value, bool) != (key == "stream")
        ):
            raise _bad(f"{key}: Input should be a valid {_PARAMS[key][0].__name__}")
    for key in ("model", "messages", "max_tokens"):
        if body.get(key) is None:
            raise _bad(f"{key}: Field required")
    if body["max_tokens"] < 1:
        raise _bad("max_tokens: Input should be greater than or equal to 1")
    if not body["messages"]:
        raise _bad("messages: at least one message is required")
    for i, message in enumerate(body["messages"]):
        _check_message(message, f"messages.{i}")
    return body


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _bad(f"{where}: Input should be a valid dictionary")
    if message.get("role") not in _ROLES:
        raise _bad(
            f"{where}.role: Input should be 'user' or 'assistant' (system prompts go in the "
            f"top-level 'system' field), got {message.get('role')!r}"
        )
    content = message.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{where}.content: Input should be a valid string or list of content blocks")
    for j, block in enumerate(content):
        _check_block(block, f"{where}.content.{j}")


def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        kind = block.get("type") if isinstance(block, dict) else block
        raise _bad(f"{where}.type: Input tag {kind!r} does not match any of the expected tags")
    if block["type"] == "text" and not isinstance(block.get("text"), str):
        raise _bad(f"{where}.text: Field required")
    if block["type"] == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            source = {}
        kind = source.get("type")
        if kind == "base64":
            if source.get("media_type") not in _MEDIA_TYPES:
                raise _bad(
                    f"{where}.source.media_type: Input should be one of {', '.join(_MEDIA_TYPES)}"
                )
            if not isinstance(source.get("data"), str):
                raise _bad(f"{where}.source.data: Field required")
        elif kind == "url":
            if not isinstance(source.get("url"), str):
                raise _bad(f"{where}.source.url: Field required")
        else:
            raise _bad(f"{where}.source: an image needs a 'base64' or 'url' source")


def model_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request as the OpenAI-shaped messages the offline models read: ``system`` first,
    image blocks as ``image_url`` parts (a base64 source as a ``data:`` URL)."""
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    if system:
        out.append({"role": "system", "content": system})
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, list):
            content = [_part(block) for block in content]
        out.append({"role": message["role"], "content": content})
    return out


def _part(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "image":
        source = block["source"]
        if source["type"] == "base64":
            url = f"data:{source['media_type']};base64,{source['data']}"
        else:
            url = source["url"]
        return {"type": "image_url", "image_url": {"url": url}}
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    text = block.get("text") or block.get("content")
    return {"type": "text", "text": text if isinstance(text, str) else ""}


# -- answers -----------------------------------------------------------------------------------


def usage(answer: Answer, output: int) -> dict[str, Any]:
    """Anthropic's usage object: ``input_tokens`` without the prompt cache's writes and reads
    (see ``prompt_cache``), and the tier the answer was served on when asked."""
    cache = answer.cache
    written, read = (cache.written, cache.read) if cache is not None else (0, 0)
    out: dict[str, Any] = {
        "input_tokens": max(answer.prompt_tokens - written - read, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    }
    if cache is not None:
        long = written if cache.ttl == "1h" else 0
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": written - long,
            "ephemeral_1h_input_tokens": long,
        }
    if answer.service_tier is not None:
        out["service_tier"] = answer.service_tier
    return out


def _message(answer: Answer, content: list[dict[str, Any]], reason: str | None, out: int) -> dict:
    return {
        "id": answer.completion_id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage(answer, out),
    }


def batch_message(answer: Answer) -> dict[str, Any]:
    """The whole ``message`` of a Message Batch's succeeded result."""
    content = [{"type": "text", "text": "".join(answer.pieces)}]
    return _message(answer, content, _stop_reason(answer), len(answer.pieces))


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _stop_reason(answer: Answer) -> str:
    return STOP_REASONS.get(answer.finish_reason, answer.finish_reason)


async def send_message(ex: Exchange, answer: Answer) -> web.StreamResponse:
    """A non-streamed ``message`` answer; its generation takes as long as the stream would."""
    out = 0 if "no_usage" in ex.faults else len(answer.pieces)

    def payload() -> bytes:
        content = [{"type": "text", "text": "".join(answer.pieces)}]
        return orjson.dumps(_message(answer, content, _stop_reason(answer), out))

    def error(message: str) -> bytes:
        return error_body(message, "api_error")

    return await send_body(ex, answer, payload, error, completion=out, trickle=False)


class MessageEvents:
    """The SSE events of one Messages stream (``stream.StreamEvents``); a text delta costs one
    small ``orjson.dumps``. ``no_usage`` zeroes the counts, ``keepalive_comments`` sends a
    ``ping`` before every delta, ``no_done`` leaves out ``message_stop``."""

    PING = _event("ping", {"type": "ping"})
    STOP = _event("message_stop", {"type": "message_stop"})
    DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    DELTA += b'"delta":{"type":"text_delta","text":'

    def __init__(self, answer: Answer, faults: dict[str, Any]) -> None:
        self.answer = answer
        self.with_usage = "no_usage" not in faults
        self.stop = "no_done" not in faults
        head, dumps = self.DELTA, orjson.dumps
        if "keepalive_comments" in faults:
            head = self.PING + head
        self.delta = lambda text: head + dumps(text) + b"}}\n\n"

    def opening(self) -> bytes:
        """``message_start``, ``content_block_start`` and a ``ping``."""
        with_usage = self.with_usage
        message = _message(self.answer, [], None, 1 if with_usage else 0)
        if not with_usage:
            message["usage"]["input_tokens"] = 0
        block = {"type": "text", "text": ""}
        start = _event("message_start", {"type": "message_start", "message": message})
        return (
            start
            + _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            + self.PING
        )

    def garbled(self) -> None:
        """No ``invalid_utf8`` fault in this format."""
        return None

    def closing(self, tokens: int) -> bytes:
        """``content_block_stop``, ``message_delta`` (stop reason, output tokens) and
        ``message_stop``."""
        stop = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(self.answer), "stop_sequence": None},
            "usage": {"output_tokens": tokens if self.with_usage else 0},
        }
        return stop + _event("message_delta", delta) + (self.STOP if self.stop else b"")

    @staticmethod
    def error(message: str, kind: str = "api_error") -> bytes:
        """An ``error`` event."""
        return _event("error", {"type": "error", "error": {"type": kind, "message": message}})


async def send_message_stream(ex: Exchange, answer: Answer) -> web.StreamResponse:
    """Anthropic's SSE events: message_start, one text delta per token, message_delta (stop
    reason, cumulative usage), message_stop; faults aside."""
    return await send_events(ex, answer, MessageEvents(answer, ex.faults))
