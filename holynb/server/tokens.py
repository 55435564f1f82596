"""How the local server counts tokens: a documented heuristic, not a real tokenizer.

A token is a run of word characters (``\\w+``) or one other non-space character, with the
whitespace before it attached. Trailing whitespace is one more token, so the tokens of a text
always join back into it:

>>> tokenize("Hello, world!")
['Hello', ',', ' world', '!']

A prompt costs ``sum(tokens(content) + 4 for each message) + 2``; a text part of a content list
counts its text, an image whose data URL can be read counts by the wire format's rule (see
``holynb.image_tokens``), any other part (audio, a file, ...) counts ``NON_TEXT_PART_TOKENS``. A
completion costs one token per streamed content chunk, and the server streams one chunk per
token, so streamed and non-streamed answers report the same usage.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "NON_TEXT_PART_TOKENS",
    "content_text",
    "content_tokens",
    "count_tokens",
    "prompt_tokens",
    "tokenize",
]

NON_TEXT_PART_TOKENS = 85
TOKENS_PER_MESSAGE = 4
TOKENS_PER_PROMPT = 2

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    """The pieces of ``text``, one per token; they join back into ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens ``text`` is (see the module docstring for the rule)."""
    return len(_TOKEN.findall(text))


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def content_tokens(content: Any, api: str = "openai") -> int:
    """Tokens of a message's content: text counted, every non-text part a fixed amount."""
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            total += count_tokens(part["text"])
        elif isinstance(part, dict) and part.get("type") == "image_url":
            from holynb.server.vision import image_part_tokens

            tokens = image_part_tokens(part, api)
            total += NON_TEXT_PART_TOKENS if tokens is None else tokens
        else:
            total += NON_TEXT_PART_TOKENS
    return total


def prompt_tokens(messages: list[dict[str, Any]], api: str = "openai") -> int:
    """Tokens of a whole prompt: each message's content plus 4, plus 2 for the reply's priming."""
    per_message = sum(content_tokens(m.get("content"), api) for m in messages)
    return per_message + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_PROMPT
