"""OpenAI's chat completions: ``POST {base_url}/chat/completions``, ``Authorization: Bearer``.

The body goes out as the session built it; answers and ``chat.completion.chunk`` events are read
without ever indexing ``choices[0]`` of a usage chunk blindly (it has ``choices: []``). The
answer's ``service_tier`` goes into its usage (calls are priced by the tier they were served on).
"""

from __future__ import annotations

from typing import Any

from holynb._wire.base import Chunk, Completion
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
        return payload.get("error") if isinstance(payload, dict) else None

    def read_completion(self, payload: Any, body: dict[str, Any]) -> Completion:
        choices = payload.get("choices") or [{}]
        choice = choices[0] or {}
        message = choice.get("message") or {}
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise TypeError(f"message.content is {type(text).__name__}, not a string")
        reason = choice.get("finish_reason")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"finish_reason is {type(reason).__name__}, not a string")
        model = payload.get("model")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model is {type(model).__name__}, not a string")
        answer_id = payload.get("id")
        return (
            text,
            model or str(body.get("model", "")),
            reason,
            Usage.from_api(payload.get("usage"), payload.get("service_tier")),
            answer_id if isinstance(answer_id, str) else None,
        )

    def salvage_text(self, payload: Any) -> str:
        """The answer's text from a malformed completion, when it can still be found."""
        try:
            text = payload["choices"][0]["message"]["content"]
        except (LookupError, TypeError):
            return ""
        return text if isinstance(text, str) else ""

    def read_chunk(self, event: Any, usage: Usage | None) -> Chunk:
        if not isinstance(event, dict):
            raise TypeError(f"a chunk is {type(event).__name__}, not an object")
        text = reason = None
        choices = event.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text is not None and not isinstance(text, str):
                    raise TypeError(f"delta.content is {type(text).__name__}, not a string")
            reason = choice.get("finish_reason")
        model = event.get("model")
        read = Usage.from_api(event.get("usage"), event.get("service_tier"))
        return event.get("error"), text, reason, read, model

    def is_end(self, event: Any) -> bool:
        return False  # the end is the [DONE] line, seen before JSON decoding


OPENAI = OpenAIWire()
