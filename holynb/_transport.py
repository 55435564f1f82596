"""The HTTP stack of one event loop: the aiohttp pool, and a lighter way for a first request.

Every request goes through an httpx2 ``AsyncClient`` (the httpx API: requests, responses,
timeouts, errors). What moves the bytes is chosen per request:

- the **pool** (``holynb._aiohttp_pool``: httpx2 over aiohttp) serves streams, requests in
  flight together, and everything once it is open;
- the **first request of the sync facade's loop** (``s.chat(...)``, not ``await
  s.achat(...)``), when it is not a stream and aiohttp is not loaded yet, goes over the
  standard library's ``http.client`` instead, run in a worker thread. Loading aiohttp costs
  ~0.2 s, more than a script's whole call with raw httpx; a script that asks one question
  should not pay it (bench/coldstart.py). The next request opens the pool. Async callers,
  who mostly send many requests at once, open the pool with their first.

Both raise httpx2's errors; the pool may also raise aiohttp's (``transport_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx2 as httpx

from holynb._version import version

__all__ = ["LoopHTTP", "shared_ssl_context", "transport_errors", "verifying_context"]

_BASE_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError, TimeoutError, OSError)

_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The CA-verifying context every loop and thread shares (``verifying_context``, built once:
    loading a CA bundle costs 15-50 ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = verifying_context()
        return _ssl_context


def verifying_context() -> ssl.SSLContext:
    """A context that verifies servers as httpx2's default does (``SSL_CERT_FILE``, else
    ``SSL_CERT_DIR``, else OpenSSL's compiled-in CA file and folder; the OS's trust store on
    Windows and macOS), built without importing httpcore2 (with h11 and anyio, ~40 ms) where
    the standard library can. tests/test_transport.py checks it against httpcore2's own."""
    if sys.platform in ("win32", "darwin"):
        return httpx.create_ssl_context()
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    paths = ssl.get_default_verify_paths()
    if not os.path.isfile(paths.openssl_cafile):
        return httpx.create_ssl_context()  # httpx2 looks for a CA file elsewhere
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    folder = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    context.load_verify_locations(paths.openssl_cafile, folder)
    return context


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a request can raise when the connection fails: httpx2's transport errors, timeouts
    and OS errors, and aiohttp's client errors once aiohttp is loaded (before, none can occur).
    Meant for an ``except`` clause, which evaluates it only when something was raised."""
    aiohttp = sys.modules.get("aiohttp")
    return _BASE_ERRORS if aiohttp is None else (*_BASE_ERRORS, aiohttp.ClientError)


class LoopHTTP:
    """The HTTP clients of one event loop, opened when first needed, closed by ``aclose``.

    ``plain_first=False`` sends every request over the pool, the first too.

    >>> http = LoopHTTP("https://api.example.com/v1", {"authorization": "..."}, 16, timeout)
    >>> client = http.client(stream=False)  # in a coroutine on that loop
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        pool_size: int,
        timeout: httpx.Timeout,
        *,
        plain_first: bool = True,
    ) -> None:
        self.headers: dict[str, Any] = {
            "user-agent": f"holynb/{version()}",
            "accept": "application/json",
            **headers,
        }
        self.pool_size = pool_size
        self.timeout = timeout
        self._https = base_url.startswith("https")
        self._pool: httpx.AsyncClient | None = None
        self._first: httpx.AsyncClient | None = None
        self._first_used = not plain_first

    def client(self, *, stream: bool) -> httpx.AsyncClient:
        """The client for one request (``stream``: its body is read as it arrives)."""
        if self._pool is None:
            if not (stream or self._first_used or "aiohttp" in sys.modules):
                self._first_used = True
                self._first = self._open(_ThreadedTransport(self._ssl_context()))
                return self._first
            from holynb._aiohttp_pool import open_pool_client

            self._pool = open_pool_client(self.headers, self.pool_size, self._ssl_context())
            self._pool.timeout = self.timeout
        return self._pool

    def _ssl_context(self) -> ssl.SSLContext | None:
        return shared_ssl_context() if self._https else None

    def _open(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self.headers, transport=transport, timeout=self.timeout)

    async def aclose(self) -> None:
        """Close what was opened."""
        for client in (self._first, self._pool):
            if client is not None:
                await client.aclose()


class _ThreadedTransport(httpx.AsyncBaseTransport):
    """One plain request at a time over the standard library's ``http.client``, run whole in a
    daemon thread; its errors become httpx2's.

    ``http.client`` is loaded with httpx2 already, where httpx2's own transport would load
    httpcore2, h11 and anyio first (~50 ms of a cold start). The response comes back read to
    the end, so this serves plain requests, not streams; the connection closes after it. The
    request's connect and read timeouts (httpx2's ``timeout`` extension) bound the thread; a
    caller that gives up (a total timeout, a cancel) leaves it to end on its own, and a daemon
    thread never holds up the interpreter's exit.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        return await _in_thread(lambda: self._fetch(request, content))

    def _fetch(self, request: httpx.Request, content: bytes) -> httpx.Response:
        import http.client

        url, timeouts = request.url, request.extensions.get("timeout", {})
        if url.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.host, url.port, timeout=timeouts.get("connect"), context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(url.host, url.port, timeout=timeouts.get("connect"))
        try:
            try:
                conn.connect()
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(
                    str(exc) or "connect timed out", request=request
                ) from exc
            except OSError as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
            assert conn.sock is not None
            conn.sock.settimeout(timeouts.get("read"))
            try:
                conn.putrequest(
                    request.method, url.raw_path.decode("ascii"), skip_host=True,
                    skip_accept_encoding=True,
                )  # fmt: skip
                for name, value in request.headers.raw:
                    conn.putheader(name, value)
                conn.endheaders(content)
                answer = conn.getresponse()
                body = answer.read()
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
            except http.client.HTTPException as exc:
                raise httpx.RemoteProtocolError(str(exc) or repr(exc), request=request) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc), request=request) from exc
        finally:
            conn.close()
        return httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            content=body,
            request=request,
            extensions={
                "http_version": b"HTTP/1.1" if answer.version == 11 else b"HTTP/1.0",
                "reason_phrase": answer.reason.encode("latin-1", "replace"),
            },
        )


async def _in_thread(work: Callable[[], httpx.Response]) -> httpx.Response:
    """``work()`` in a new daemon thread, its result or exception handed back to this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[httpx.Response] = loop.create_future()

    def settle(result: httpx.Response | None, error: BaseException | None) -> None:
        if future.done():  # the caller gave up
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[httpx.Response | None, BaseException | None] = (work(), None)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="holynb-first-request", daemon=True).start()
    return await future
