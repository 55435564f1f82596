"""The one request body of a prompt: what ``Caller.body`` sends and ``batch_jsonl`` writes.

>>> request_body("Say hi", model="gpt-4.1-mini", max_tokens=20)
{'model': 'gpt-4.1-mini', 'messages': [{'role': 'user', 'content': 'Say hi'}], 'max_tokens': 20}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from holynb.parameters import body_params
from holynb.prompts import Prompt, build_messages

__all__ = ["request_body"]


def request_body(
    prompt: Prompt,
    *,
    model: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    params: Mapping[str, Any] | None = None,
    default_max_tokens: int | None = None,
) -> dict[str, Any]:
    """The chat request body of ``prompt``: model, messages, the settings given, then ``params``
    (``extra_body``'s fields merged in). ``default_max_tokens`` is sent when no limit is given
    (Anthropic's format needs one; budgets and caches then see it)."""
    params = params or {}
    body: dict[str, Any] = {"model": model, "messages": build_messages(prompt, system)}
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    elif default_max_tokens is not None and "max_completion_tokens" not in params:
        body["max_tokens"] = default_max_tokens
    body.update(body_params(params))
    return body
