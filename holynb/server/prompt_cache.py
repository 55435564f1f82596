"""The local server's prompt cache for ``/v1/messages``: Anthropic's ``cache_control`` marks.

The prefix of a request up to its last marked block (the system blocks, then the messages'
blocks, in order) is written to the cache the first time it is seen, and read from it when the
same model is sent the same prefix again within the mark's ttl (``"5m"``, the default, or
``"1h"``; a read renews it). Unlike Anthropic's, any length of prefix is cached (Anthropic's
has a minimum of 1,024 to 4,096 tokens), so small tests see writes and reads. More than 4
marks, or a ttl other than ``5m`` / ``1h``, is refused with a 400 as Anthropic refuses it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import orjson

from holynb.server.exchange import CacheUse
from holynb.server.messages import model_messages
from holynb.server.tokens import prompt_tokens
from holynb.server.wire import RequestError

__all__ = ["TTL_SECONDS", "PromptCache"]

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_MARKS = 4


class PromptCache:
    """Which prefixes were written, and until when they can be read. Thread-safe."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._until.clear()

    def use(self, body: dict[str, Any], prompt: int) -> CacheUse | None:
        """The cache's part in answering ``body`` (a write or a read of its marked prefix, at
        most ``prompt`` tokens), or None when nothing in it is marked."""
        found = _prefix(body)
        if found is None:
            return None
        prefix, ttl = found
        tokens = min(_tokens(prefix), prompt)
        key = hashlib.sha256(orjson.dumps([body.get("model"), prefix])).hexdigest()
        now = time.monotonic()
        with self._lock:
            until = self._until.get(key)
            self._until[key] = now + TTL_SECONDS[ttl]
        if until is not None and until > now:
            return CacheUse(read=tokens, ttl=ttl)
        return CacheUse(written=tokens, ttl=ttl)


def _prefix(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The request up to its last marked block, and that mark's ttl."""
    system = body.get("system")
    system_blocks = system if isinstance(system, list) else []
    marks = 0
    last: tuple[str, int, int] | None = None  # ("system", block) or ("messages", i, block)
    ttl = "5m"
    for j, block in enumerate(system_blocks):
        if isinstance(block, dict) and block.get("cache_control") is not None:
            marks += 1
            last, ttl = ("system", 0, j), _ttl(block["cache_control"])
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and block.get("cache_control") is not None:
                marks += 1
                last, ttl = ("messages", i, j), _ttl(block["cache_control"])
    if marks > _MAX_MARKS:
        raise RequestError(
            400, f"A maximum of {_MAX_MARKS} blocks with cache_control may be provided. "
            f"Found {marks}."
        )  # fmt: skip
    if last is None:
        return None
    where, i, j = last
    if where == "system":
        return {"system": system_blocks[: j + 1], "messages": []}, ttl
    messages = list(body["messages"][:i])
    final = body["messages"][i]
    messages.append({**final, "content": final["content"][: j + 1]})
    return {"system": system, "messages": messages}, ttl


def _ttl(control: Any) -> str:
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise RequestError(400, "cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise RequestError(400, f"cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")
    return str(ttl)


def _tokens(prefix: dict[str, Any]) -> int:
    return prompt_tokens(model_messages(prefix), "anthropic")
