"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

import holynb
from holynb import RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


def session_for(server: Any, **kwargs: Any) -> holynb.Session:
    """A Session on the local server with fast retries unless told otherwise."""
    kwargs.setdefault("model", "local/echo")
    kwargs.setdefault("retry", FAST_RETRY)
    return holynb.Session(base_url=server.base_url, **kwargs)
