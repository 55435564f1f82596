"""The pool: an httpx2 client over the aiohttp transport, one per event loop.

httpx2 gives the httpx API (requests, responses, timeouts, errors); the aiohttp transport moves
the bytes (its connection pool stays fast with many requests in flight and its SSE reads are
several times faster than h11's). Chosen by measurement: see bench/README.md. Importing aiohttp
costs ~0.2 s, so ``holynb._transport`` imports this module only when a pool is first needed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx2 as httpx
from httpx_aiohttp.httpx2 import AiohttpTransport


class _Transport(AiohttpTransport):
    """The aiohttp transport on holynb's own aiohttp session factory.

    ``AiohttpTransport.__init__`` builds an SSL context for the session it would make itself,
    and that imports httpcore2 (with trio and anyio) and loads the CA bundle: ~150 ms of a cold
    start, for a context holynb never uses (``make_session`` brings its own). This sets what
    that ``__init__`` sets, minus that work (tests/test_transport.py checks they match).
    """

    def __init__(self, client: Callable[[], aiohttp.ClientSession]) -> None:
        # never used (the sessions come from ``client``); if it were, it trusts no CA at all
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.proxy = None
        self.limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self.retries = 0
        self.socket_options = []
        self.uds = None
        self.local_address = None
        self.client = client


def open_pool_client(
    headers: dict[str, Any], pool_size: int, ssl_context: ssl.SSLContext | None
) -> httpx.AsyncClient:
    """An httpx2 AsyncClient bound to the running loop, its pool sized to ``pool_size``;
    ``ssl_context`` for HTTPS (None: plain HTTP)."""

    def make_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=pool_size,
            limit_per_host=pool_size,
            keepalive_timeout=30.0,
            ssl=ssl_context or False,
        )
        return aiohttp.ClientSession(connector=connector)

    return httpx.AsyncClient(headers=headers, transport=_Transport(make_session), timeout=None)
