"""What a prompt is: a string or a list of ``{"role", "content"}`` messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Prompt", "build_messages"]

Prompt = str | Sequence[dict[str, Any]]


def build_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages from a prompt string or a list of ``{"role", "content"}`` dicts."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and all(isinstance(m, dict) for m in prompt):
        messages = [dict(m) for m in prompt if isinstance(m, dict)]
        for i, m in enumerate(messages):
            if "role" not in m or "content" not in m:
                raise ValueError(
                    f"Message {i} needs 'role' and 'content' keys, got {sorted(m)}: e.g. "
                    '{"role": "user", "content": "Hi"}.'
                )
    else:
        raise TypeError(
            "prompt must be a string or a list of messages like "
            f'[{{"role": "user", "content": "Hi"}}], got {type(prompt).__name__}.'
        )
    if not messages:
        raise ValueError("The prompt has no messages: give at least one user message.")
    if system and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages
