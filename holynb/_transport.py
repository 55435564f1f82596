"""The HTTP stack: an httpx2 client over the aiohttp transport, one per event loop.

httpx2 gives the httpx API (requests, responses, timeouts, errors); the aiohttp transport moves
the bytes (its connection pool stays fast with many requests in flight and its SSE reads are
several times faster than h11's). Chosen by measurement: see bench/README.md.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import aiohttp
import httpx2 as httpx
from httpx_aiohttp.httpx2 import AiohttpTransport

from holynb import __version__

_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~15 ms; one context serves every loop and thread.
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


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

    transport = AiohttpTransport(client=make_session)
    all_headers: dict[str, Any] = {
        "user-agent": f"holynb/{__version__}",
        "accept": "application/json",
        **headers,
    }
    return httpx.AsyncClient(
        headers=all_headers,
        transport=transport,
        timeout=None,
    )
