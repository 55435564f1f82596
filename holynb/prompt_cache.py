"""Prompt caching in Anthropic's format: the stable prefix of a request marked for the cache.

``prompt_cache="5m"`` or ``"1h"`` (on a call, or ``Session(prompt_cache=)``) puts
``cache_control: {"type": "ephemeral", "ttl": ...}`` on the end of the system prompt and on the
end of the conversation's stable prefix (every message before the last user turn), within
Anthropic's limit of 4 breakpoints (marks already in the messages count). Anthropic bills a
cache write at 1.25x the input price (5 minutes) or 2x (1 hour), a read at 0.1x; see
``holynb.prices``. In OpenAI's format caching is automatic and nothing is marked.

>>> mark([{"role": "system", "content": "Long rules"}, {"role": "user", "content": "Hi"}], "1h")
[{'role': 'system', 'content': [{'type': 'text', 'text': 'Long rules',
  'cache_control': {'type': 'ephemeral', 'ttl': '1h'}}]}, {'role': 'user', 'content': 'Hi'}]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from holynb.errors import ConfigurationError

__all__ = ["MAX_BREAKPOINTS", "TTLS", "check_ttl", "mark", "ttl_of"]

TTLS = ("5m", "1h")
MAX_BREAKPOINTS = 4  # Anthropic's limit of cache_control marks per request
_SYSTEM_ROLES = ("system", "developer")


def check_ttl(value: Any) -> str | None:
    """``value`` as a prompt cache ttl (``"5m"``, ``"1h"`` or None); ConfigurationError
    (a ValueError) for anything else, before anything is sent."""
    if value is None or value in TTLS:
        return value
    raise ConfigurationError(
        f"prompt_cache must be '5m', '1h' or None (how long Anthropic keeps the cached "
        f"prefix), got {value!r}."
    )


def mark(messages: list[dict[str, Any]], ttl: str) -> list[dict[str, Any]]:
    """``messages`` with the end of the system prompt and of the stable conversation prefix
    marked for the cache (new lists and dicts; the given ones are not changed)."""
    control = {"type": "ephemeral", "ttl": ttl}
    room = MAX_BREAKPOINTS - sum(_marks(m) for m in messages)
    out = list(messages)
    system = [i for i, m in enumerate(out) if m.get("role") in _SYSTEM_ROLES]
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    targets: list[int] = []
    if system:
        targets.append(system[-1])
    last_user = users[-1] if users else len(out)
    prefix_end = max((i for i in range(last_user) if i not in system), default=None)
    if prefix_end is not None:
        targets.append(prefix_end)
    for index in targets:
        if room <= 0:
            break
        marked = _marked(out[index], control)
        if marked is not out[index]:  # already marked there: no breakpoint spent
            out[index] = marked
            room -= 1
    return out


def ttl_of(body: Mapping[str, Any]) -> str | None:
    """The longest ttl of the cache marks in a request body (``"1h"``, ``"5m"``), or None:
    what a cache write in its answer costs at most."""
    found: str | None = None
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for part in content:
            control = part.get("cache_control") if isinstance(part, Mapping) else None
            if isinstance(control, Mapping):
                if control.get("ttl") == "1h":
                    return "1h"
                found = "5m"
    return found


def _marks(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, Mapping) and "cache_control" in p)


def _marked(message: dict[str, Any], control: dict[str, str]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return message
        parts: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content:
        parts = list(content)
    else:
        return message
    last = parts[-1]
    if isinstance(last, str):
        last = {"type": "text", "text": last}
    if not isinstance(last, dict) or "cache_control" in last:
        return message
    parts[-1] = {**last, "cache_control": dict(control)}
    return {**message, "content": parts}
