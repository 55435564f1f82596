"""Anthropic's Messages API: ``POST {base_url}/messages`` with ``x-api-key``.

The OpenAI-shaped body is translated: system messages go to the top-level ``system``,
``max_tokens`` is always sent (``DEFAULT_MAX_TOKENS`` when none is given), ``stop`` becomes
``stop_sequences``, and content parts become content blocks (OpenAI ``image_url`` parts become
``image`` blocks: a ``data:`` URL as a base64 source, an http(s) URL as a URL source).

Answers are mapped back: text blocks joined, ``stop_reason`` normalised to OpenAI's finish
reasons, and usage made OpenAI-like. Anthropic's ``input_tokens`` excludes cache reads and
writes, so ``prompt_tokens = input + cache_read + cache_creation``, ``cached_tokens =
cache_read`` and ``cache_write_tokens = cache_creation`` (priced apart, see ``prices``).

Stream events: ``message_start`` (model, initial usage), ``content_block_start``/``delta``
(``text_delta``; other deltas such as ``input_json_delta`` or ``thinking_delta`` are skipped),
``content_block_stop``, ``message_delta`` (stop reason and cumulative usage: the latest value
of each count wins, nothing is added), ``message_stop`` (the end; there is no ``[DONE]``),
``ping``, and ``error`` (which can come after HTTP 200).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from holynb._wire.base import Chunk, Completion
from holynb.results import Usage, tier_name

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
_SYSTEM_ROLES = ("system", "developer")


class AnthropicWire:
    """Anthropic's Messages API format (``Session(api="anthropic")``)."""

    name = "anthropic"
    stream_has_end_event = True  # only message_stop completes a stream

    def url(self, base_url: str) -> str:
        return self.root(base_url) + "/messages"

    def root(self, base_url: str) -> str:
        # the relay's OpenAI-style ".../v1" and the root URL the official SDK takes both work
        return base_url if base_url.endswith("/v1") else base_url + "/v1"

    def auth_headers(self, key: str, bearer: bool | None) -> dict[str, str]:
        headers = {"x-api-key": key, "anthropic-version": VERSION}
        if bearer:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_messages_request(body)

    def error_in(self, payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("type") == "error":
            return payload.get("error") or "error"
        return None

    def read_completion(self, payload: Any, body: dict[str, Any]) -> Completion:
        return (
            _text(payload.get("content") or []),
            str(payload.get("model") or body.get("model", "")),
            finish_reason(payload.get("stop_reason")),
            usage_from_anthropic(payload.get("usage")),
            payload.get("id"),
        )

    def salvage_text(self, payload: Any) -> str:
        """The text blocks of a malformed message, when they can still be found."""
        try:
            return _text(payload["content"])
        except (LookupError, TypeError, AttributeError):
            return ""

    def read_chunk(self, event: Any, usage: Usage | None) -> Chunk:
        if not isinstance(event, dict):
            raise TypeError(f"an event is {type(event).__name__}, not an object")
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if not isinstance(text, str):
                    raise TypeError(f"text_delta.text is {type(text).__name__}, not a string")
                return None, text, None, None, None
            return None, None, None, None, None  # input_json_delta, thinking_delta, ...
        if kind == "message_delta":
            delta = event.get("delta") or {}
            reason = finish_reason(delta.get("stop_reason"))
            return None, None, reason, usage_from_anthropic(event.get("usage"), usage), None
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            text = block.get("text") if block.get("type") == "text" else None
            return None, text, None, None, None
        if kind == "message_start":
            message = event.get("message") or {}
            return (
                None,
                None,
                None,
                usage_from_anthropic(message.get("usage")),
                message.get("model"),
            )
        if kind == "error":
            return event.get("error") or "error", None, None, None, None
        return None, None, None, None, None  # ping, content_block_stop, message_stop, unknown

    def is_end(self, event: Any) -> bool:
        return event.get("type") == "message_stop"


ANTHROPIC = AnthropicWire()


def _text(blocks: Any) -> str:
    """The text blocks of a message's content, joined."""
    texts: list[str] = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise TypeError(f"a text block's text is {type(text).__name__}, not a string")
            texts.append(text)
    return "".join(texts)


def finish_reason(stop_reason: str | None) -> str | None:
    """Anthropic's ``stop_reason`` as an OpenAI finish reason (unknown ones kept as they are)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, stop_reason)


def usage_from_anthropic(
    data: dict[str, Any] | None, previous: Usage | None = None
) -> Usage | None:
    """Usage from an Anthropic ``usage`` object, on top of ``previous`` (a stream's usage so
    far): a count present in ``data`` replaces the earlier one, since Anthropic's counts are
    cumulative; an absent count keeps the earlier one. Until some event has said
    ``input_tokens`` (relays may leave it out) the usage is marked ``estimated``, so the session
    counts the prompt itself instead of charging it as 0."""
    if not data:
        return previous
    old = previous or Usage(estimated=True)
    old_read = old.cached_tokens
    old_write = old.cache_write_tokens
    old_input = old.prompt_tokens - old_read - old_write

    def count(name: str, before: int) -> int:
        value = data.get(name)
        return before if value is None else int(value)

    tier = tier_name(data["service_tier"]) if "service_tier" in data else old.service_tier
    read = count("cache_read_input_tokens", old_read)
    write = count("cache_creation_input_tokens", old_write)
    fresh = count("input_tokens", old_input)
    return replace(
        old,
        prompt_tokens=fresh + read + write,
        completion_tokens=count("output_tokens", old.completion_tokens),
        cached_tokens=read,
        cache_write_tokens=write,
        estimated=old.estimated and data.get("input_tokens") is None,
        service_tier=tier,
    )


def to_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API request from holynb's OpenAI-shaped body.

    Parameters with no Anthropic meaning are left out only when they change nothing
    (``stream_options``, ``n=1``); anything else unknown goes through, for the API to judge.
    """
    out: dict[str, Any] = {}
    system: list[Any] = []  # strings, or lists of text blocks (which may carry cache_control)
    messages: list[dict[str, Any]] = []
    for message in body.get("messages", ()):
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            content = message.get("content")
            system.append(content if isinstance(content, list) else _plain_text(content))
        else:
            messages.append({**message, "content": _blocks(message.get("content"))})
    for key, value in body.items():
        if key in ("messages", "stream_options", "max_completion_tokens"):
            continue
        if key == "n" and value in (None, 1):
            continue
        if key == "stop":
            if value is not None:
                out["stop_sequences"] = [value] if isinstance(value, str) else list(value)
            continue
        if key == "user":
            out["metadata"] = {**(body.get("metadata") or {}), "user_id": value}
            continue
        if key == "system" and isinstance(value, str):
            system.insert(0, value)
            continue
        out[key] = value
    out["messages"] = messages
    if system:
        out["system"] = _system(system)
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    out["max_tokens"] = limit if limit else DEFAULT_MAX_TOKENS
    return out


def _system(parts: list[Any]) -> str | list[Any]:
    """The top-level ``system``: one string, or text blocks when any part came as blocks (so
    ``cache_control`` marks survive for prompt caching)."""
    if all(isinstance(p, str) for p in parts):
        return "\n\n".join(p for p in parts if p)
    blocks: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
        else:
            blocks.extend(_block(b) for b in part)
    return blocks


def _plain_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _blocks(content: Any) -> Any:
    """Message content as Anthropic content: a string stays a string, OpenAI parts become
    blocks, blocks already in Anthropic's shape pass through."""
    if not isinstance(content, list):
        return content
    return [_block(part) for part in content]


def _block(part: Any) -> Any:
    if not isinstance(part, dict):
        return {"type": "text", "text": str(part)} if isinstance(part, str) else part
    if part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    block = {"type": "image", "source": image_source(url if isinstance(url, str) else "")}
    if "cache_control" in part:  # a prompt cache mark (holynb.prompt_cache) stays on it
        block["cache_control"] = part["cache_control"]
    return block


def image_source(url: str) -> dict[str, str]:
    """An Anthropic image ``source`` for an image URL: a ``data:`` URL becomes a base64 source
    (its media type kept), anything else a URL source (fetched by the API, never by us)."""
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].split(";", 1)[0] or "image/png"
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}
