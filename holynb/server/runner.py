"""Running the local server: ``LocalServer`` in a background thread; ``serve_forever`` (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
import socket
import threading
from typing import Any, Self

from aiohttp import web

from holynb._config import (
    TOKEN_PREFIX,
    Secret,
    register_offline_server,
    unregister_offline_server,
)
from holynb.server.app import ServerState, build_app
from holynb.server.batches import BatchStore
from holynb.server.catalog import default_models
from holynb.server.faults import FaultQueue
from holynb.server.message_batches import MessageBatchStore
from holynb.server.registry import Model, ModelRegistry, Respond
from holynb.server.stats import Recorder, ServerStats

_SHUTDOWN_TIMEOUT = 0.1  # seconds a running handler (e.g. a stalled stream) gets at stop()
_BACKLOG = 1024


def _bind_host(host: str, allow_remote: bool) -> str:
    """The address to bind; refuses anything but loopback unless ``allow_remote``."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ValueError(
            f"The local server only binds to loopback addresses (127.0.0.1, ::1), not {host!r}: "
            "it is a test server. Pass allow_remote=True if you mean it."
        )
    return host


class LocalServer:
    """An OpenAI-compatible server on 127.0.0.1 with offline demo models and fault injection.

    It runs its own event loop in a daemon thread, so it works from scripts, tests and a running
    Jupyter kernel alike.

    >>> with LocalServer() as server:
    ...     holynb.Session(base_url=server.base_url).chat("hi")   # knows the token by itself
    ...     client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key.get())
    ...     client.chat.completions.create(model="local/echo", messages=[...])
    >>> server.faults.push(faults.status(429, retry_after=1))   # the next request gets a 429
    >>> server.stats.requests, server.stats.completion_tokens

    ``latency_ms`` delays the first byte of every answer; ``tokens_per_second`` paces streamed
    chunks (None: as fast as possible). Both can be changed while it runs, and per request with
    the headers ``x-holynb-latency-ms`` and ``x-holynb-tokens-per-second``.

    Security: it requires a key, a random token made per server unless ``api_key`` is given
    (``auth=False`` turns that off), sent as ``Authorization: Bearer`` or ``x-api-key``. Sessions
    of this process on its ``base_url`` send it by themselves; other programs need
    ``server.api_key.get()``. It refuses requests from web pages (an ``Origin`` header), a
    ``Host`` that is not a loopback name, and JSON routes posted with another content type.
    Models that run code (``local/python``, ``local/broken``) answer only with ``python=True``
    (settable while running). ``batches=False`` leaves out ``/v1/files`` and ``/v1/batches``;
    with ``models=single_model("my-model")`` (``holynb serve --only-model``) it stands in for a
    user's own endpoint that serves one model.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency_ms: float = 0.0,
        tokens_per_second: float | None = None,
        *,
        allow_remote: bool = False,
        models: ModelRegistry | None = None,
        log_limit: int = 10_000,
        python: bool = False,
        auth: bool = True,
        batches: bool = True,
    ) -> None:
        self.host = _bind_host(host, allow_remote)
        if api_key is not None and not auth:
            raise ValueError("Pass either api_key= or auth=False, not both.")
        token = (api_key or TOKEN_PREFIX + secrets.token_urlsafe(32)) if auth else None
        self._token = Secret(token) if token else None
        self._requested_port = port
        self._port: int | None = None
        self._state = ServerState(
            models=models if models is not None else default_models(),
            recorder=Recorder(log_limit),
            api_key=token,
            python=bool(python),
            check_host=not allow_remote,
            latency_ms=float(latency_ms),
            tokens_per_second=tokens_per_second or None,
            serve_batches=batches,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening (returns once the port is open) and return the server itself."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self!r} is already running.")
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server(
                (self.host, self._requested_port), family=family, backlog=_BACKLOG
            )
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run,
                args=(sock, ready, failure),
                name=f"holynb-server-{sock.getsockname()[1]}",
                daemon=True,
            )
            thread.start()
            if not ready.wait(timeout=30):
                raise RuntimeError("The local server did not start within 30 s.")
            if failure:
                thread.join(timeout=5)
                raise failure[0]
            self._port = sock.getsockname()[1]
            self._thread = thread
            if self._token is not None:
                register_offline_server(self.base_url, self._token)
        return self

    def stop(self) -> None:
        """Stop the server; a request still running is cut off after a moment."""
        with self._lock:
            thread, loop, stopping = self._thread, self._loop, self._stopping
            if thread is None or loop is None or stopping is None:
                return
            unregister_offline_server(self.base_url)
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stopping.set)
            thread.join(timeout=10)
            self._thread = self._loop = self._stopping = None

    def __enter__(self) -> Self:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(
        self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        # asyncio.run cancels and awaits whatever handlers are still running at the end.
        asyncio.run(self._serve(sock, ready, failure))

    async def _serve(
        self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        loop = asyncio.get_running_loop()
        runner = web.AppRunner(
            build_app(self._state),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        try:
            await runner.setup()
            handler_factory = runner.server
            assert handler_factory is not None
            recorder = self._state.recorder

            def protocol() -> asyncio.Protocol:
                recorder.connection()
                return handler_factory()

            server = await loop.create_server(protocol, sock=sock, backlog=_BACKLOG)
        except BaseException as exc:
            failure.append(exc)
            sock.close()
            ready.set()
            with contextlib.suppress(Exception):
                await runner.cleanup()
            return
        self._loop, self._stopping = loop, asyncio.Event()
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await runner.cleanup()
            await server.wait_closed()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (chosen at start when ``port=0``)."""
        if self._port is None:
            raise RuntimeError("The server is not started yet: call start() first.")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the server's root."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, what OpenAI clients and holynb take as base URL."""
        return self.url + "/v1"

    @property
    def api_key(self) -> Secret | None:
        """The key clients must send (None when started with ``auth=False``); a ``Secret``,
        so it never shows itself: ``server.api_key.get()`` for the openai SDK or curl."""
        return self._token

    @property
    def python(self) -> bool:
        """Whether the models that run code (``local/python``...) answer (settable live)."""
        return self._state.python

    @python.setter
    def python(self, value: bool) -> None:
        self._state.python = bool(value)

    @property
    def running(self) -> bool:
        """Whether it is listening now."""
        return self._thread is not None and self._thread.is_alive()

    # -- settings, models, faults, counters ----------------------------------------------------

    @property
    def latency_ms(self) -> float:
        """Milliseconds before the first byte of every answer (settable while running)."""
        return self._state.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._state.latency_ms = float(value)

    @property
    def tokens_per_second(self) -> float | None:
        """Pace of streamed chunks, None for as fast as possible (settable while running)."""
        return self._state.tokens_per_second

    @tokens_per_second.setter
    def tokens_per_second(self, value: float | None) -> None:
        self._state.tokens_per_second = value or None

    @property
    def models(self) -> ModelRegistry:
        """The models it answers for."""
        return self._state.models

    def register_model(
        self,
        name: str,
        respond: Respond,
        *,
        latency_ms: float = 0.0,
        tokens_per_second: float | None = None,
        runs_code: bool | None = None,
    ) -> Model:
        """Answer for model ``name`` with ``respond(messages, params) -> str`` (works live);
        ``runs_code=True`` for a model that executes code (served only with ``python=True``)."""
        return self._state.models.register(
            name,
            respond,
            latency_ms=latency_ms,
            tokens_per_second=tokens_per_second,
            runs_code=runs_code,
        )

    @property
    def faults(self) -> FaultQueue:
        """The queue of faults for the next chat requests (see ``holynb.server.faults``)."""
        return self._state.faults

    @property
    def batches(self) -> BatchStore:
        """The Batch API's batches and its processing knobs (``batches.settings``)."""
        return self._state.batches

    @property
    def message_batches(self) -> MessageBatchStore:
        """Anthropic's Message Batches (processed with the knobs of ``batches.settings``)."""
        return self._state.message_batches

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the server-side counters (see ``holynb.server.stats``)."""
        return self._state.recorder.snapshot()

    @property
    def requests_log(self) -> list[dict[str, Any]]:
        """The requests received (chat and models), oldest first; secrets replaced by a marker."""
        return self._state.recorder.entries()

    def reset(self) -> None:
        """Clear the counters, the request log, the fault queue and the prompt cache."""
        self._state.faults.clear()
        self._state.recorder.reset()
        self._state.prompt_cache.clear()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None and self.running else "not running"
        auth = ", api_key=set" if self._state.api_key else ", no auth"
        python = ", python=True" if self._state.python else ""
        return f"LocalServer({where}{auth}{python})"


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    latency_ms: float = 0.0,
    tokens_per_second: float | None = None,
    *,
    allow_remote: bool = False,
    auth: bool = True,
    python: bool = False,
    only_model: str | None = None,
    batches: bool = True,
) -> None:
    """Run the local server until Ctrl+C or SIGTERM (the ``holynb serve`` command).

    It prints the base URL and the lines to paste into another shell, with the token it made
    (unless ``api_key`` is given, which it does not echo, or ``auth=False``). ``only_model``
    serves just that model (it answers in prose: ``single_model``); ``batches=False``: no
    Batch API."""
    from holynb.server.catalog import single_model

    server = LocalServer(
        host,
        port,
        api_key,
        latency_ms,
        tokens_per_second,
        allow_remote=allow_remote,
        auth=auth,
        python=python,
        models=single_model(only_model) if only_model else None,
        batches=batches,
    ).start()
    print(serve_banner(server, key_given=api_key is not None), flush=True)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def serve_banner(server: LocalServer, *, key_given: bool = False) -> str:
    """What ``holynb serve`` prints: where it listens and the export lines to paste."""
    code_models = [m.name for m in server.models if m.runs_code]
    if not code_models:
        python = "no code-running models"
    elif server.python:
        python = f"{', '.join(code_models)} ON: they run the code sent to them, as you"
    else:
        python = f"{', '.join(code_models)} off (--enable-python turns them on)"
    lines = [
        f"holynb local server on {server.base_url} "
        f"(models: {', '.join(server.models.names())}; {python}). Ctrl+C stops it.",
        "Point holynb (or any OpenAI client) at it from another shell:",
        f"  export HOLYNB_BASE_URL={server.base_url}",
    ]
    key = server.api_key
    if key is None:
        lines.append(
            "  (--no-auth: no key needed, so any program or user on this machine can use it"
            + (", and run code as you)" if server.python else ")")
        )
    elif key_given:
        lines.append("  export HOLYNB_API_KEY=<the --api-key value>")
    else:
        lines.append(f"  export HOLYNB_API_KEY={key.get()}")
    lines.append(f"  export HOLYNB_MODEL={server.models.names()[0]}")
    return "\n".join(lines)
