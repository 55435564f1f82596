"""Wire formats: how a chat request is sent and its answer read, one adapter per API.

The client builds its requests from an OpenAI-shaped body (``model``, ``messages``,
``max_tokens``, ``temperature``, ``stop``, ``stream``, ...) and hands it to the session's wire
format, which says where to send it, with which headers, as which body, and how to read the
answer (whole or as stream events) back into holynb's ChatResult and StreamState. Like httpx's
``_transports/``: the client keeps retries, limits and timeouts; a wire format only translates.

>>> wire = wire_for("anthropic")
>>> wire.url("https://api.holysheep.ai/v1")
'https://api.holysheep.ai/v1/messages'
"""

from __future__ import annotations

from holynb._config import normalize_api
from holynb._wire.base import (
    ERROR_TYPE_STATUS as ERROR_TYPE_STATUS,
    UNREADABLE as UNREADABLE,
    Chunk as Chunk,
    Completion as Completion,
    Wire as Wire,
    error_status as error_status,
)


def wire_for(api: str) -> Wire:
    """The adapter for ``api`` ("openai" or "anthropic"; anything else: ConfigurationError)."""
    if normalize_api(api) == "anthropic":
        from holynb._wire.anthropic import ANTHROPIC

        return ANTHROPIC
    from holynb._wire.openai import OPENAI

    return OPENAI
