"""The HTTP stack: an httpx2 client over the aiohttp transport, one per event loop.

httpx2 gives the httpx API (requests, responses, timeouts, errors); the aiohttp transport moves
the bytes (its connection pool stays fast with many requests in flight and its SSE reads are
several times faster than h11's). Chosen by measurement: see bench/README.md.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx2 as httpx
from httpx_aiohttp.httpx2 import AiohttpTransport

from holynb._version import version

_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~15 ms; one context serves every loop and thread.
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


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


def open_http_client(base_url: str, headers: dict[str, str], pool_size: int) -> httpx.AsyncClient:
    """An httpx2 AsyncClient bound to the running loop, its pool sized to ``pool_size``."""

    def make_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=pool_size,
            limit_per_host=pool_size,
            keepalive_timeout=30.0,
            ssl=_shared_ssl_context() if base_url.startswith("https") else False,
        )
        return aiohttp.ClientSession(connector=connector)

    transport = _Transport(make_session)
    all_headers: dict[str, Any] = {
        "user-agent": f"holynb/{version()}",
        "accept": "application/json",
        **headers,
    }
    return httpx.AsyncClient(
        headers=all_headers,
        transport=transport,
        timeout=None,
    )
