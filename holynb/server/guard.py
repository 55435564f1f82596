"""What keeps web pages away from the local server: ``Origin``, ``Host`` and ``Content-Type``.

A page in the user's browser can send a "simple" cross-origin POST to 127.0.0.1 without a CORS
preflight (``Content-Type: text/plain``), or rebind its own domain name to 127.0.0.1. The local
server answers programs on this machine only, so ``guard`` (an aiohttp middleware) refuses:

- every request carrying an ``Origin`` header (browsers send one on cross-origin requests; the
  openai SDK, holynb and curl never do): 403;
- a ``Host`` header naming anything but a loopback name (``localhost``, ``127.x.x.x``,
  ``[::1]``), which is what DNS rebinding looks like: 403 (skipped when the server was
  started with ``allow_remote=True``, where the token is the only protection);
- a POST to a JSON route (a handler marked with ``@json_body``) whose ``Content-Type`` is not
  ``application/json``: 415. Routes that take uploads (multipart) are simply not marked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from holynb.server.exchange import error_response
from holynb.server.wire import RequestError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])
JSON_TYPE = "application/json"


def json_body(handler: H) -> H:
    """Mark a handler whose requests must carry ``Content-Type: application/json``."""
    handler.json_body = True  # type: ignore[attr-defined]
    return handler


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header value (``name[:port]``) names this machine's loopback."""
    try:
        name = urlsplit("//" + host).hostname or ""
    except ValueError:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(request: web.Request, *, check_host: bool) -> RequestError | None:
    """Why ``request`` is refused before it reaches its handler, or None."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return RequestError(
            403,
            f"Refused: the request carries an Origin header ({origin!r}), so it comes from a "
            "web page. holynb's local server answers programs on this machine only (holynb, "
            "the openai SDK, curl), never a browser page, so that no web site can use it.",
            code="origin_not_allowed",
        )
    host = request.headers.get("Host")
    if check_host and host is not None and not is_loopback_host(host):
        return RequestError(
            403,
            f"Refused: the Host header {host!r} is not a loopback name. The local server "
            "answers requests addressed to localhost, 127.0.0.1 or [::1] only (this stops DNS "
            "rebinding); use http://127.0.0.1:<port>/v1 as the base URL.",
            code="host_not_allowed",
        )
    if getattr(request.match_info.handler, "json_body", False):
        sent = request.headers.get("Content-Type")
        if (sent is not None or request.body_exists) and request.content_type != JSON_TYPE:
            return RequestError(
                415,
                f"{request.method} {request.path} takes a JSON body: send "
                f"'Content-Type: application/json' (got {sent or 'none'!r}).",
                code="unsupported_media_type",
            )
    return None


def guard(check_host: bool = True) -> Middleware:
    """The middleware refusing what ``refusal`` refuses, as an OpenAI-style JSON error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        err = refusal(request, check_host=check_host)
        if err is not None:
            return error_response(err)
        return await handler(request)

    return middleware
