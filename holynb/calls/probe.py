"""Which ``response_format`` an endpoint and model accept, found out once and remembered.

Structured answers ask for ``json_schema`` and the code interpreter for ``json_object``; an
endpoint that refuses one says so with a 400. The first request per (format, endpoint, model)
finds out while the others wait for its verdict (so a map of 300 rows is not refused 300
times), and the verdict is kept for the session.

>>> probe = Probe()
>>> probe.verdict("json_schema", url, "gpt-4.1-mini")     # None: not asked yet
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from holynb.errors import BadRequestError

__all__ = ["JSON_OBJECT", "JSON_SCHEMA", "Probe", "refusal_of"]

JSON_SCHEMA = "json_schema"  # what structured answers ask for
JSON_OBJECT = "json_object"  # what the code interpreter asks for (JSON mode)

Key = tuple[str, str, str]  # (response_format type, endpoint, model)

_UNSUPPORTED = (
    "not supported", "unsupported", "unrecognized", "unknown", "not permitted", "not allowed",
    "extra inputs", "extra_forbidden",
)  # fmt: skip


class Probe:
    """The verdicts of one session: True (accepted), False (refused), absent (not asked)."""

    def __init__(self) -> None:
        self.known: dict[Key, bool] = {}
        self._locks: dict[tuple[int, Key], asyncio.Lock] = {}

    def verdict(self, kind: str, endpoint: str, model: str) -> bool | None:
        """Whether ``kind`` is accepted there: True, False, or None when not asked yet."""
        return self.known.get((kind, endpoint, model))

    def learn(self, kind: str, endpoint: str, model: str, accepted: bool) -> None:
        """Keep the verdict (the first one stands)."""
        self.known.setdefault((kind, endpoint, model), accepted)

    def lock(self, kind: str, endpoint: str, model: str) -> asyncio.Lock:
        """The lock the first request holds while it finds out (one per event loop)."""
        key = (id(asyncio.get_running_loop()), (kind, endpoint, model))
        return self._locks.setdefault(key, asyncio.Lock())


def refusal_of(err: BadRequestError, kind: str) -> str | None:
    """Why a 400/422 refused a request that asked for ``response_format`` ``kind``:
    ``"unsupported"`` (the endpoint and model do not take it: remember), ``"refused"`` (they
    do, but not this request's, e.g. a schema strict mode cannot express: fall back for this
    call only) or None (about something else: raise)."""
    text = f"{err.message} {err.body or ''}".lower()
    if "response_format" not in text and kind not in text and "json mode" not in text:
        return None
    return "unsupported" if any(word in text for word in _UNSUPPORTED) else "refused"
