"""One call, as plain data: what is sent, how it is recorded, where its answer may come from.

A ``Call`` is built once (by ``Caller.call``: the prompt's messages, images attached,
parameters merged into the final body) and then only read: the meter prices its body, the
cache keys it, the client sends it. A call that asks for a ``response_format`` an endpoint may
refuse names it in ``probe`` and carries the ``fallback`` to send instead (the same request
with instructions in the prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["Call", "CallCache"]

CallCache = bool | Literal["refresh"] | None  # a call's cache= argument


@dataclass(frozen=True, slots=True)
class Call:
    """One request and how to account for it."""

    body: dict[str, Any]  # the final request body (OpenAI-shaped; the wire translates it)
    kind: str = "chat"  # the ledger's kind: chat, stream, map, compare, interpret, batch, ...
    tag: str | None = None  # the ledger's tag
    cache: CallCache = None  # None: the session's cache; False: skip it; "refresh": ask again
    batch: bool = False  # priced at batch rates
    probe: str | None = None  # the response_format type this call asks for, if any
    fallback: Call | None = None  # sent instead where ``probe`` is refused
    # told why (a refusal's message) when this call's refusal sends the fallback instead
    on_fallback: Callable[[str], None] | None = field(default=None, compare=False)

    @property
    def model(self) -> str:
        """The model asked for."""
        return str(self.body["model"])

    def but(self, **changes: Any) -> Call:
        """A copy with some fields changed."""
        return replace(self, **changes)
