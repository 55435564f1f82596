"""OpenAI's chat completions: ``POST {base_url}/chat/completions``, ``Authorization: Bearer``.

The body goes out as the session built it; answers and ``chat.completion.chunk`` events are read
without ever indexing ``choices[0]`` of a usage chunk blindly (it has ``choices: []``).
"""

from __future__ import annotations

from typing import Any

from holynb._wire import Chunk, Completion
from holynb.results import Usage


class OpenAIWire:
    """The OpenAI-compatible chat-completions format (holynb's default)."""

    name = "openai"
    stream_has_end_event = False  # [DONE] is optional: a finish_reason completes a stream

    def url(self, base_url: str) -> str:
        return base_url + "/chat/completions"

    def root(self, base_url: str) -> str:
        return base_url

    def auth_headers(self, key: str, bearer: bool | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return body  # already in this format

    def error_in(self, payload: Any) -> Any:
        if not isinstance(payload, dict):
            return payload or "the body is not a JSON object"
        return payload.get("error")

    def read_completion(self, payload: dict[str, Any], body: dict[str, Any]) -> Completion:
        choices = payload.get("choices") or [{}]
        choice = choices[0] or {}
        message = choice.get("message") or {}
        return (
            message.get("content") or "",
            payload.get("model") or body.get("model", ""),
            choice.get("finish_reason"),
            Usage.from_api(payload.get("usage")),
            payload.get("id"),
        )

    def read_chunk(self, event: Any, usage: Usage | None) -> Chunk:
        text = reason = None
        choices = event.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
            reason = choice.get("finish_reason")
        return (
            event.get("error"),
            text,
            reason,
            Usage.from_api(event.get("usage")),
            event.get("model"),
        )

    def is_end(self, event: Any) -> bool:
        return False  # the end is the [DONE] line, seen before JSON decoding


OPENAI = OpenAIWire()
