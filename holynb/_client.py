"""The async chat client: requests, retries, limits, streaming. Knows nothing of cost.

One ``ChatClient`` serves a Session. It keeps the HTTP clients of each event loop apart (an
aiohttp pool cannot cross loops; see ``_transport``): the sync facade's background loop has
them, and a notebook's own loop gets its own the first time ``await session.achat(...)`` runs
there. Rate limits are shared by all of them (see ``_pacing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2 as httpx
import orjson

from holynb._config import Settings, is_loopback_url
from holynb._loop import in_default_loop
from holynb._pacing import Pacer, parse_reset
from holynb._retry import plan_retry
from holynb._sse import SSEDecoder
from holynb._transport import LoopHTTP, transport_errors
from holynb._wire import UNREADABLE, error_status, wire_for
from holynb.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    StreamError,
    StreamWarning,
    status_error_class,
)
from holynb.results import ChatResult, Usage

_BODY_EXCERPT = 500


@dataclass
class StreamState:
    """What a stream has delivered so far; complete or not, it becomes a ChatResult."""

    model: str
    started: float = field(default_factory=time.perf_counter)
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    attempts: int = 0
    ttft_ms: float | None = None
    chunks: int = 0
    done: bool = False
    warning: str | None = None  # what had to be repaired (bytes that were not UTF-8)
    # told (error, retry number, most retries, wait in seconds) before each retry's wait
    on_retry: Callable[[APIError, int, int, float], None] | None = None

    def retrying(self, err: APIError, retry: int, most: int, wait: float) -> None:
        """Tell ``on_retry`` that retry ``retry`` of ``most`` starts in ``wait`` seconds."""
        if self.on_retry is not None:
            with contextlib.suppress(Exception):  # a display problem must not stop the call
                self.on_retry(err, retry, most, wait)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self.parts)

    def result(self, *, interrupted: bool = False) -> ChatResult:
        """The ChatResult for what has arrived, charged by ``stream_usage``."""
        text = self.text
        return ChatResult(
            text=text,
            model=self.model,
            finish_reason=self.finish_reason,
            usage=stream_usage(self.usage, text, self.chunks, finished=self.done),
            latency_ms=(time.perf_counter() - self.started) * 1000.0,
            ttft_ms=self.ttft_ms,
            attempts=max(1, self.attempts),
            request_id=self.request_id,
            interrupted=interrupted,
            warning=self.warning,
        )


def stream_usage(reported: Usage | None, text: str, chunks: int, *, finished: bool) -> Usage:
    """What a stream is charged, in either wire format.

    A stream that finished with usage: the usage the server reported. Otherwise (no usage
    sent, or the stream was cut, stopped or ended by an error event before its final usage,
    when Anthropic's count is still message_start's placeholder of 1): the reported counts with
    ``completion_tokens`` at least the estimate of ``text`` (and at least a token a chunk),
    marked ``estimated``. The text received was generated, so it is paid for.

    >>> cut = stream_usage(Usage(9, completion_tokens=1), "Hello, world!", 1, finished=False)
    >>> cut.prompt_tokens, cut.completion_tokens, cut.estimated
    (9, 4, True)
    """
    if reported is not None and finished:
        return reported
    from holynb.tokens import estimate_tokens

    received = max(chunks, estimate_tokens(text))
    if reported is None:
        return Usage(completion_tokens=received, estimated=True)
    completion = max(reported.completion_tokens, received)
    return replace(reported, completion_tokens=completion, estimated=True)


class _LoopState:
    """A loop's pool and semaphore, and a started async generator that closes the pool.

    The loop tracks started async generators and closes them in ``shutdown_asyncgens()``,
    which ``asyncio.run`` (and holynb's loop thread) call before the loop closes; the loop also
    closes them when they are garbage-collected. So a pool is closed when its loop ends or its
    Session is dropped, without the user having to remember ``aclose()``.
    """

    __slots__ = ("closer", "http", "semaphore")

    def __init__(self, http: LoopHTTP, concurrency: int) -> None:
        self.http = http
        self.semaphore = asyncio.Semaphore(concurrency)
        self.closer = _close_on_shutdown(http)


async def _close_on_shutdown(http: LoopHTTP) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        await http.aclose()


class ChatClient:
    """Chat calls over one shared pool per event loop, in the settings' wire format (OpenAI's
    chat completions or Anthropic's messages; see ``holynb._wire``).

    >>> client = ChatClient(settings)
    >>> result = await client.complete({"model": "gpt-4.1", "messages": [...]})
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._states_lock = threading.Lock()
        limits = settings.limits
        self._rpm = Pacer(limits.rpm) if limits.rpm else None
        self._tpm = Pacer(limits.tpm) if limits.tpm else None
        self._server_pause = Pacer(per_minute=1e9)  # only its block_for() is used
        self._no_stream_options: set[str] = set()
        self.wire = wire_for(settings.api)
        self._chat_url = self.wire.url(settings.base_url)
        self._secret = settings.api_key.get() if settings.api_key else ""

    # -- plumbing ------------------------------------------------------------------------------

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            with self._states_lock:
                headers = {}
                if self.settings.api_key:
                    headers = self.wire.auth_headers(self._secret, self.settings.bearer)
                concurrency = self.settings.limits.concurrency
                t = self.settings.timeout
                timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=None)
                http = LoopHTTP(
                    self.settings.base_url,
                    headers,
                    concurrency,
                    timeout,
                    plain_first=in_default_loop(),  # a sync call; maybe a script's only one
                )
                state = self._states[loop] = _LoopState(http, concurrency)
            await state.closer.__anext__()
        return state

    async def aclose(self) -> None:
        """Close the pool of the running loop (others close when their loop shuts down)."""
        loop = asyncio.get_running_loop()
        with self._states_lock:
            state = self._states.pop(loop, None)
        if state is not None:
            await state.closer.aclose()

    def redact(self, text: str) -> str:
        """``text`` with the API key blotted out, for anything that may be shown or stored."""
        key = self.settings.api_key
        return key.redact(text) if key else text

    async def _pace(self, body: dict[str, Any]) -> float:
        pause = self._server_pause.reserve(0)
        if pause > 0:
            await asyncio.sleep(pause)
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is None:
            return 0.0
        estimate = _estimate_request_tokens(body)
        await self._tpm.acquire(estimate)
        return estimate

    def _settle_tokens(self, estimate: float, usage: Usage | None) -> None:
        if self._tpm is not None and usage is not None:
            self._tpm.adjust(usage.total_tokens - estimate)

    def _note_rate_headers(self, headers: httpx.Headers) -> None:
        if headers.get("x-ratelimit-remaining-requests") == "0":
            reset = parse_reset(headers.get("x-ratelimit-reset-requests"))
            if reset:
                self._server_pause.block_for(min(reset, 60.0))
        elif headers.get("anthropic-ratelimit-requests-remaining") == "0":
            reset = parse_reset(headers.get("anthropic-ratelimit-requests-reset"))
            if reset:
                self._server_pause.block_for(min(reset, 60.0))

    async def _open(
        self,
        state: _LoopState,
        body: dict[str, Any],
        idempotency_key: str,
        attempts: int,
        *,
        stream: bool,
    ) -> httpx.Response:
        """Send one attempt (``stream``: of a streamed call); the response on 2xx, a typed
        error otherwise."""
        http = state.http.client(stream=stream)
        request = http.build_request(
            "POST",
            self._chat_url,
            content=orjson.dumps(body),
            headers={"content-type": "application/json", "idempotency-key": idempotency_key},
        )
        try:
            response = await http.send(request, stream=True)
        except transport_errors() as exc:
            raise self._transport_error(exc, attempts) from None
        if response.status_code < 400:
            return response
        try:
            raw = await response.aread()
        except transport_errors():
            raw = b""
        finally:
            await response.aclose()
        self._note_rate_headers(response.headers)
        raise self._status_error(response, raw, attempts)

    def _transport_error(self, exc: BaseException, attempts: int) -> APIConnectionError:
        chain: list[BaseException] = []
        cur: BaseException | None = exc
        while cur is not None and len(chain) < 8:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        root = chain[-1]
        detail = self.redact(f"{type(root).__name__}: {root}".rstrip(": "))
        where = self.settings.base_url
        if any(isinstance(e, TimeoutError) for e in chain) or (
            isinstance(exc, httpx.TimeoutException) and len(chain) == 1
        ):
            return APITimeoutError(
                f"No answer from {where} within the timeout ({detail}).", attempts=attempts
            )
        return APIConnectionError(f"Could not talk to {where}: {detail}.", attempts=attempts)

    def _status_error(self, response: httpx.Response, raw: bytes, attempts: int) -> APIStatusError:
        status = response.status_code
        message = _error_message(raw) or response.reason_phrase or "error"
        err = self._typed_error(
            status,
            f"HTTP {status} from {self.settings.base_url}: {message}",
            request_id=_request_id(response.headers),
            body=raw[:_BODY_EXCERPT].decode("utf-8", "replace") or None,
            attempts=attempts,
            # LiteLLM's proxy answers a wrong key with a 400 no_db_connection (REFERENCE.md)
            auth=status == 400 and b"no_db_connection" in raw,
        )
        err.headers = dict(response.headers)  # type: ignore[attr-defined]
        return err

    def _typed_error(
        self,
        status: int,
        message: str,
        *,
        request_id: str | None,
        body: str | None,
        attempts: int,
        auth: bool = False,
    ) -> APIStatusError:
        """The error class for ``status`` (``auth``: an AuthenticationError whatever the
        status), its message and body redacted, with the hint that says what to do."""
        cls = AuthenticationError if auth else status_error_class(status)
        hint = _auth_hint(self.settings) if cls is AuthenticationError else None
        if status == 402:
            hint = "The account behind the key is out of credit or quota: check its billing."
        return cls(
            self.redact(message),
            status=status,
            request_id=request_id,
            body=self.redact(body) if body else None,
            hint=hint,
            attempts=attempts,
        )

    def _retry_or_raise(self, err: APIError, retries_done: int, deadline: float | None) -> float:
        """The wait before the next attempt, or raise ``err`` when no retry is due."""
        if isinstance(err, APIResponseError):
            raise err  # answered (and maybe billed): sending it again could pay twice
        headers = getattr(err, "headers", None)
        status = err.status if isinstance(err, APIStatusError) else None
        ok, wait = plan_retry(self.settings.retry, retries_done, status=status, headers=headers)
        if not ok:
            if wait:
                err.retry_after = wait
            raise err
        if deadline is not None and time.monotonic() + wait > deadline:
            raise err
        return wait

    def _deadline(self) -> float | None:
        """When the call must be over; taken when its request is first sent, so time spent
        queueing for a concurrency slot or for pacing does not count."""
        total = self.settings.timeout.total
        return None if total is None else time.monotonic() + total

    def _past_total(self, attempts: int) -> APITimeoutError:
        return APITimeoutError(
            f"No complete answer from {self.settings.base_url} within the total timeout of "
            f"{self.settings.timeout.total:g} s.",
            attempts=attempts,
        )

    async def _open_within(
        self,
        state: _LoopState,
        body: dict[str, Any],
        idempotency_key: str,
        attempts: int,
        deadline: float | None,
    ) -> httpx.Response:
        """``_open``, given up when the call's total timeout runs out."""
        try:
            async with asyncio.timeout(_time_left(deadline)):
                return await self._open(state, body, idempotency_key, attempts, stream=True)
        except TimeoutError:
            raise self._past_total(attempts) from None

    async def _fetch_within(
        self,
        state: _LoopState,
        body: dict[str, Any],
        idempotency_key: str,
        attempts: int,
        deadline: float | None,
    ) -> tuple[httpx.Response, bytes]:
        """One attempt of a non-streamed call and its whole body, within the total timeout
        (a server trickling a byte at a time never trips the read timeout)."""
        try:
            async with asyncio.timeout(_time_left(deadline)):
                response = await self._open(state, body, idempotency_key, attempts, stream=False)
                try:
                    raw = await response.aread()
                except transport_errors() as exc:
                    raise self._transport_error(exc, attempts) from None
                finally:
                    await response.aclose()
        except TimeoutError:
            raise self._past_total(attempts) from None
        return response, raw

    def _drop_stream_options(self, body: dict[str, Any], err: APIError) -> bool:
        """A server that rejects ``stream_options`` (a 400 that names it, or a 422): forget it
        for this model. Any other 400 (a wrong model name, say) is not worth a second request."""
        if "stream_options" not in body or err.status not in (400, 422):
            return False
        said = f"{err.message} {err.body or ''}".lower()
        if err.status == 400 and "stream_options" not in said and "include_usage" not in said:
            return False
        self._no_stream_options.add(body.get("model", ""))
        del body["stream_options"]
        return True

    # -- calls ---------------------------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        """One non-streamed chat completion, retried per the policy."""
        state = await self._state()
        started = time.perf_counter()
        deadline: float | None = None
        idempotency_key = f"holynb-{uuid.uuid4().hex}"
        retries = 0
        sent = self.wire.request(body)
        async with state.semaphore:
            while True:
                attempts = retries + 1
                estimate = await self._pace(body)
                if deadline is None:
                    deadline = self._deadline()
                try:
                    response, raw = await self._fetch_within(
                        state, sent, idempotency_key, attempts, deadline
                    )
                    self._note_rate_headers(response.headers)
                    result = self._parse_completion(raw, response, started, attempts, body)
                    self._settle_tokens(estimate, result.usage)
                    return result
                except APIError as err:
                    err.attempts = attempts
                    wait = self._retry_or_raise(err, retries, deadline)
                    retries += 1
                    if wait:
                        await asyncio.sleep(wait)

    def _parse_completion(
        self,
        raw: bytes,
        response: httpx.Response,
        started: float,
        attempts: int,
        body: dict[str, Any],
    ) -> ChatResult:
        request_id = _request_id(response.headers)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(
                f"The API at {self.settings.base_url} answered with something that is not JSON.",
                status=response.status_code,
                request_id=request_id,
                body=self.redact(raw[:_BODY_EXCERPT].decode("utf-8", "replace")),
                hint="Check that the base URL is an OpenAI-compatible endpoint ending in /v1.",
                attempts=attempts,
            ) from None
        error = self.wire.error_in(payload)
        if error:
            message = f"The API reported an error: {_error_message(raw)}"
            excerpt = raw[:_BODY_EXCERPT].decode("utf-8", "replace")
            status = error_status(error)
            if status is not None:  # as if it had come with that status (see _stream_error)
                raise self._typed_error(
                    status, message, request_id=request_id, body=excerpt, attempts=attempts
                )
            raise APIError(
                self.redact(message),
                status=response.status_code,
                request_id=request_id,
                body=self.redact(excerpt),
                attempts=attempts,
            )
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            text, model, finish_reason, usage, answer_id = self.wire.read_completion(payload, body)
            return ChatResult(
                text=text,
                model=model,
                finish_reason=finish_reason,
                usage=usage or Usage(estimated=True),
                latency_ms=latency_ms,
                ttft_ms=None,
                attempts=attempts,
                request_id=request_id or answer_id,
            )
        except UNREADABLE as exc:
            partial = ChatResult(
                text=self.wire.salvage_text(payload),
                model=body.get("model", ""),
                usage=Usage(estimated=True),
                latency_ms=latency_ms,
                attempts=attempts,
                request_id=request_id,
            )
            raise self._unreadable(raw, exc, request_id, attempts, partial) from None

    def _unreadable(
        self,
        raw: bytes,
        exc: BaseException,
        request_id: str | None,
        attempts: int,
        partial: ChatResult | None = None,
    ) -> APIResponseError:
        return APIResponseError(
            self.redact(
                f"The API at {self.settings.base_url} answered 200 with a body holynb cannot "
                f"read ({type(exc).__name__}: {exc})."
            ),
            status=200,
            request_id=request_id,
            body=self.redact(raw[:_BODY_EXCERPT].decode("utf-8", "replace")),
            attempts=attempts,
            partial=partial,
        )

    async def stream(self, body: dict[str, Any], progress: StreamState) -> AsyncIterator[str]:
        """Text deltas of a streamed completion; ``progress`` fills in as they arrive.

        Retried only while nothing has been handed to the caller: once text has been yielded,
        a failure raises StreamError with the partial result instead of re-sending.
        """
        body = dict(body, stream=True)
        if self.wire.name == "openai" and body.get("model", "") not in self._no_stream_options:
            body["stream_options"] = {"include_usage": True}
        state = await self._state()
        deadline: float | None = None
        idempotency_key = f"holynb-{uuid.uuid4().hex}"
        retries = 0
        async with state.semaphore:
            while True:
                progress.attempts = retries + 1
                estimate = await self._pace(body)
                if deadline is None:
                    deadline = self._deadline()
                try:
                    response = await self._open_within(
                        state, self.wire.request(body), idempotency_key, progress.attempts, deadline
                    )
                except APIError as err:
                    if self._drop_stream_options(body, err):
                        continue
                    wait = self._retry_or_raise(err, retries, deadline)
                    retries += 1
                    progress.retrying(err, retries, self.settings.retry.max_retries, wait)
                    if wait:
                        await asyncio.sleep(wait)
                    continue
                progress.request_id = _request_id(response.headers)
                self._note_rate_headers(response.headers)
                try:
                    async for text in self._read_events(response, progress, deadline):
                        yield text
                    self._settle_tokens(estimate, progress.usage)
                    return
                except APIError as err:
                    if progress.parts:
                        err.partial = progress.result(interrupted=True)
                        raise
                    wait = self._retry_or_raise(err, retries, deadline)
                    retries += 1
                    progress.retrying(err, retries, self.settings.retry.max_retries, wait)
                    progress.chunks = 0
                    progress.usage = progress.finish_reason = None
                    if wait:
                        await asyncio.sleep(wait)
                finally:
                    await response.aclose()

    async def _read_events(
        self, response: httpx.Response, progress: StreamState, deadline: float | None
    ) -> AsyncIterator[str]:
        decoder = SSEDecoder(self.settings.limits.max_event_bytes)
        loads = orjson.loads
        parts = progress.parts
        read_chunk, is_end = self.wire.read_chunk, self.wire.is_end
        try:
            async for chunk in response.aiter_raw():
                for data in decoder.feed(chunk):
                    if data == b"[DONE]":
                        progress.done = True
                        return
                    try:
                        event = loads(data)
                    except orjson.JSONDecodeError:
                        event = _with_bad_bytes_replaced(data, progress)
                        if event is None:
                            continue  # not JSON: some relays send stray lines; skip them
                    try:
                        error, text, reason, usage, model = read_chunk(event, progress.usage)
                    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
                        raise self._unreadable(
                            data, exc, progress.request_id, progress.attempts
                        ) from None
                    if error:
                        raise self._stream_error(error, progress)
                    if text:
                        if progress.ttft_ms is None:
                            progress.ttft_ms = (time.perf_counter() - progress.started) * 1000.0
                        parts.append(text)
                        progress.chunks += 1
                        yield text
                    if reason:
                        progress.finish_reason = reason
                    if usage:
                        progress.usage = usage
                    if model:
                        progress.model = model
                    if is_end(event):
                        progress.done = True
                        return
                if deadline is not None and time.monotonic() > deadline:
                    raise APITimeoutError(
                        "The stream went on past the call's total timeout.",
                        request_id=progress.request_id,
                        attempts=progress.attempts,
                    )
        except transport_errors() as exc:
            err = self._transport_error(exc, progress.attempts)
            raise StreamError(
                f"The stream broke after {progress.chunks} chunks: {err.message}",
                request_id=progress.request_id,
                attempts=progress.attempts,
            ) from None
        for data in decoder.flush():
            if data == b"[DONE]":
                progress.done = True
                return
            try:
                if is_end(loads(data)):
                    progress.done = True
                    return
            except (orjson.JSONDecodeError, AttributeError):
                pass
        if self.wire.stream_has_end_event:
            raise StreamError(
                f"The stream ended after {progress.chunks} chunks without finishing "
                "(no message_stop event).",
                request_id=progress.request_id,
                attempts=progress.attempts,
            )
        if progress.finish_reason is None:
            raise StreamError(
                f"The stream ended after {progress.chunks} chunks without finishing "
                "(no finish_reason, no [DONE]).",
                request_id=progress.request_id,
                attempts=progress.attempts,
            )
        progress.done = True  # some servers close without [DONE] after a finish_reason

    def _stream_error(self, error: Any, progress: StreamState) -> APIError:
        """The error for an error event. Before any text it is the API's answer to the request,
        sent after HTTP 200: when it names a status (``error_status``) it gets that status's
        error class, and so its retry rule (an ``invalid_request_error`` is a BadRequestError,
        raised at once; an ``overloaded_error`` a ServerError, retried). Otherwise, and after
        text, it is a StreamError: the stream broke."""
        if isinstance(error, dict):
            message = error.get("message") or str(error)
            code = error.get("code") or error.get("type")
        else:
            message, code = str(error), None
        label = f" ({code})" if code else ""
        status = None if progress.parts else error_status(error)
        if status is not None:
            kind = error.get("type")  # a status is only read from an object
            label = f" ({kind})" if isinstance(kind, str) and kind else label
            return self._typed_error(
                status,
                f"The API refused the call in its stream, before any text{label}: {message}",
                request_id=progress.request_id,
                body=None,
                attempts=progress.attempts,
            )
        return StreamError(
            self.redact(f"The API sent an error mid-stream{label}: {message}"),
            request_id=progress.request_id,
            attempts=progress.attempts,
        )

    async def get_json(self, path: str) -> Any:
        """GET ``base_url/path`` and return its JSON (e.g. ``models``)."""
        state = await self._state()
        url = f"{self.wire.root(self.settings.base_url)}/{path.lstrip('/')}"
        try:
            response = await state.http.client(stream=False).get(url)
        except transport_errors() as exc:
            raise self._transport_error(exc, 1) from None
        if response.status_code >= 400:
            raise self._status_error(response, response.content, 1)
        return orjson.loads(response.content)

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to ``base_url/path``, not retried; a typed error on 4xx/5xx.

        ``kwargs`` go to httpx: ``json=`` for a JSON body, ``files=``/``data=`` for multipart.
        """
        state = await self._state()
        url = f"{self.settings.base_url}/{path.lstrip('/')}"
        try:
            response = await state.http.client(stream=False).request(method, url, **kwargs)
        except transport_errors() as exc:
            raise self._transport_error(exc, 1) from None
        if response.status_code >= 400:
            raise self._status_error(response, response.content, 1)
        return response


def _time_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _with_bad_bytes_replaced(data: bytes, progress: StreamState) -> Any:
    """An event that is JSON once its invalid UTF-8 is replaced by U+FFFD, else None.

    The text is kept rather than dropped (a relay that mangles one byte should not lose a
    word of the answer), and the repair is flagged: a StreamWarning, and ``warning`` on the
    result, which the ledger shows as the call's error.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return None  # valid UTF-8 that is not JSON: a stray line
    try:
        event = orjson.loads(data.decode("utf-8", "replace"))
    except orjson.JSONDecodeError:
        return None
    if progress.warning is None:
        progress.warning = (
            "StreamWarning: the stream carried bytes that are not valid UTF-8; they were "
            "replaced by U+FFFD in the answer"
        )
        warnings.warn(
            "The stream carried bytes that are not valid UTF-8; they were replaced by U+FFFD "
            "(\ufffd) in the answer. The server or a relay in between mangles text.",
            StreamWarning,
            stacklevel=2,
        )
    return event


def _request_id(headers: httpx.Headers) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else a short excerpt."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:200].decode("utf-8", "replace").strip()
        return " ".join(text.split())
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("detail") or error)
            if payload.get("type") == "error" and error.get("type"):  # Anthropic's shape
                message = f"{message} ({error['type']})"
            return message
        return str(error)
    return str(payload)[:200]


def _auth_hint(settings: Settings) -> str:
    """Why a 401 probably happened, from the shapes of the key and the base URL."""
    base = settings.base_url
    key = settings.api_key.get() if settings.api_key else ""
    if not key:
        return "No key was sent: set HOLYSHEEP_API_KEY (or HOLYNB_API_KEY)."
    if key != key.strip() or key[:1] in "'\"" or " " in key:
        return "The key contains spaces or quotes: copy it again without them."
    if key.startswith("sk-ant-") and "anthropic.com" not in base:
        return (
            f"This looks like an Anthropic key, but the base URL is {base}: use the key that "
            "belongs to this endpoint."
        )
    if key.startswith(("sk-proj-", "sk-svcacct-")) and "openai.com" not in base:
        return (
            f"This looks like an OpenAI key, but the base URL is {base}: set "
            "HOLYNB_BASE_URL=https://api.openai.com/v1 or use your HolySheep key."
        )
    if is_loopback_url(base):
        return "The local server was started with a key: pass the same key as api_key=."
    return (
        f"The key was rejected by {base}: check HOLYSHEEP_API_KEY (or HOLYNB_API_KEY) and "
        "that HOLYNB_BASE_URL is the endpoint the key belongs to."
    )


def _estimate_request_tokens(body: dict[str, Any]) -> float:
    """A rough token count for pacing by tokens per minute: 4 characters a token."""
    chars = 0
    for message in body.get("messages", ()):
        content = message.get("content")
        chars += len(content) if isinstance(content, str) else len(str(content))
    out = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    return chars / 4.0 + float(out)
