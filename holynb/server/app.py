"""The local server's HTTP handlers (aiohttp.web): the OpenAI endpoints and the control API.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``,
``POST /v1/messages`` (Anthropic's format, see ``messages``), ``GET /health``; the control API
for ``holynb serve`` users: ``GET|POST|DELETE /_holynb/faults``, ``GET /_holynb/stats``,
``POST /_holynb/reset``. Every response carries ``x-request-id``. Per-request test headers:
``x-holynb-fault`` (a compact fault spec), ``x-holynb-latency-ms`` and
``x-holynb-tokens-per-second``. Before any handler, ``guard`` refuses requests from web pages,
with a non-loopback ``Host`` or a non-JSON body on JSON routes.
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import math
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

import holynb.server.faults as faultlib
import holynb.server.messages as anthropic_wire
from holynb.server.answer import send_stream, send_whole
from holynb.server.batches import BatchStore, add_routes
from holynb.server.exchange import JSON, Answer, Exchange, error_response, log_entry
from holynb.server.faults import Fault, FaultQueue
from holynb.server.guard import guard, json_body
from holynb.server.message_batches import MessageBatchStore, add_routes as add_message_batches
from holynb.server.prompt_cache import PromptCache
from holynb.server.registry import Model, ModelRegistry, generate
from holynb.server.stats import Recorder
from holynb.server.tokens import prompt_tokens
from holynb.server.wire import (
    RequestError,
    error_body,
    parse_chat_request,
)

MAX_BODY_BYTES = 64 * 1024 * 1024  # base64 images make big requests
_KNOWN_PATHS = {
    "/health": "GET",
    "/v1/models": "GET",
    "/v1/chat/completions": "POST",
    "/v1/messages": "POST",
    "/_holynb/stats": "GET",
    "/_holynb/reset": "POST",
    "/_holynb/faults": "GET, POST, DELETE",
}
# status -> (error type, code, message) for injected status faults
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to use this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "The request timed out."),
    409: ("conflict", None, "The request conflicts with another one; try again."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway: the upstream server sent an invalid response."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout: the upstream server did not answer in time."),
    529: ("overloaded_error", None, "The API is temporarily overloaded."),
}


@dataclass
class ServerState:
    """What the handlers share: settings (read per request, so they can change live), the
    models, the fault queue and the counters. ``python`` enables the models that run code;
    ``check_host`` refuses Host headers that are not loopback names (see ``guard``)."""

    models: ModelRegistry
    faults: FaultQueue = field(default_factory=FaultQueue)
    recorder: Recorder = field(default_factory=Recorder)
    api_key: str | None = None
    python: bool = False
    check_host: bool = True
    latency_ms: float = 0.0
    tokens_per_second: float | None = None
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    message_batches: MessageBatchStore = field(default_factory=MessageBatchStore)
    created: int = field(default_factory=lambda: int(time.time()))
    batches: BatchStore = field(default_factory=BatchStore)
    serve_batches: bool = True  # False: no /v1/files, /v1/batches (404), as many endpoints


def _phrase(code: int) -> str:
    """The standard reason phrase of an HTTP status code ("Error" for unknown codes)."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def build_app(state: ServerState) -> web.Application:
    """The aiohttp application serving ``state``."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[guard(check_host=state.check_host)]
    )
    h = _Handlers(state)
    add = app.router.add_route
    add("GET", "/health", h.health)
    add("GET", "/v1/models", h.list_models)
    add("GET", "/v1/models/{name:.+}", h.get_model)
    add("POST", "/v1/chat/completions", h.chat)
    add("POST", "/v1/messages", h.messages)
    add("GET", "/_holynb/stats", h.stats)
    add("POST", "/_holynb/reset", h.reset)
    add("GET", "/_holynb/faults", h.list_faults)
    add("POST", "/_holynb/faults", h.push_faults)
    add("DELETE", "/_holynb/faults", h.clear_faults)
    if state.serve_batches:
        add_routes(app, state.batches, state.models, h._autherror_response)
        add_message_batches(
            app, state.message_batches, state.batches, state.models,
            h._autherror_response,
        )  # fmt: skip
    add("*", "/{tail:.*}", h.not_found)
    app.on_response_prepare.append(_stamp_request_id)
    return app


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if "x-request-id" not in response.headers:
        response.headers["x-request-id"] = new_request_id()


def _runs_code(model: Model) -> bool:
    return model.runs_code or bool(getattr(model.respond, "runs_code", False))


def _served_tier(body: dict[str, Any], fault: dict[str, Fault], anthropic: bool) -> str | None:
    """The service tier an answer reports: the ``service_tier`` fault's, else the one asked
    for (OpenAI's ``auto`` is served on ``default``); Anthropic's answers say it in usage."""
    if "service_tier" in fault:
        return str(fault["service_tier"]["tier"])
    asked = body.get("service_tier")
    if not isinstance(asked, str):
        return None
    if anthropic:
        return "standard"  # auto and standard_only: the local server has no priority tier
    return "default" if asked == "auto" else asked


def new_request_id() -> str:
    """A fresh ``req_...`` id."""
    return "req_" + uuid.uuid4().hex


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON, headers=headers
    )


def _number_header(request: web.Request, name: str) -> float | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise RequestError(400, f"Header {name} must be a number, not {value!r}.") from None
    if number < 0 or math.isnan(number):
        raise RequestError(400, f"Header {name} cannot be negative.")
    return number


class _Handlers:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    # -- auth ----------------------------------------------------------------------------------

    def _autherror_response(self, request: web.Request) -> RequestError | None:
        key = self.state.api_key
        if not key:
            return None
        auth = request.headers.get("authorization", "")
        candidates = [auth[7:].strip()] if auth[:7].lower() == "bearer " else []
        candidates.append(request.headers.get("x-api-key", ""))
        expected = key.encode()
        if any(c and hmac.compare_digest(c.encode(), expected) for c in candidates):
            return None
        if not any(candidates):
            message = (
                "You didn't provide an API key. The local server was started with one: send it "
                "as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')."
            )
            return RequestError(401, message, code="missing_api_key")
        message = "Incorrect API key provided. Use the key the local server was started with."
        return RequestError(401, message, code="invalid_api_key")

    def _log_plain(self, request: web.Request, status: int) -> None:
        recorder = self.state.recorder
        entry = log_entry(
            request,
            received=time.time(),
            status=status,
            outcome="complete" if status < 400 else "error",
            model=request.match_info.get("name"),
        )
        recorder.log(recorder.epoch, entry)

    # -- plain endpoints -----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "models": self.state.models.names()})

    def _model_info(self, name: str, owned_by: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.state.created, "owned_by": owned_by}

    async def list_models(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            self._log_plain(request, err.status)
            return error_response(err)
        data = [self._model_info(m.name, m.owned_by) for m in self.state.models]
        self._log_plain(request, 200)
        return _json({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        name = request.match_info["name"]
        model = self.state.models.get(name)
        if err is None and model is None:
            err = self._unknown_model(name)
        if err is not None:
            self._log_plain(request, err.status)
            return error_response(err)
        assert model is not None
        self._log_plain(request, 200)
        return _json(self._model_info(model.name, model.owned_by))

    def _unknown_model(self, name: str) -> RequestError:
        available = ", ".join(self.state.models.names())
        return RequestError(
            404,
            f"The model `{name}` does not exist or you do not have access to it. "
            f"Available models: {available}.",
            code="model_not_found",
            param="model",
        )

    async def not_found(self, request: web.Request) -> web.Response:
        allowed = _KNOWN_PATHS.get(request.path)
        self._log_plain(request, 405 if allowed else 404)
        message = f"Invalid URL ({request.method} {request.path})"
        if allowed:
            err = RequestError(405, f"{message}: use {allowed}.", code="method_not_allowed")
            return error_response(err, {"allow": allowed})
        return error_response(RequestError(404, message, code="unknown_url"))

    # -- control API ---------------------------------------------------------------------------

    async def stats(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            return error_response(err)
        data = self.state.recorder.snapshot().as_dict()
        data["pending_faults"] = self.state.faults.pending()
        return _json(data)

    @json_body
    async def reset(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            return error_response(err)
        self.state.recorder.reset()
        self.state.faults.clear()
        self.state.prompt_cache.clear()
        return _json({"reset": True})

    async def list_faults(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            return error_response(err)
        return _json({"pending": self.state.faults.pending()})

    @json_body
    async def push_faults(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            return error_response(err)
        try:
            items = orjson.loads(await request.read())
            if not isinstance(items, list):
                items = [items]
            parsed = [faultlib.from_json(item) for item in items]
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            message = (
                f"Could not read the faults: {exc}. "
                "Send a JSON list such as ['429:retry_after=1', 'drop']."
            )
            return error_response(RequestError(400, message))
        for group, times in parsed:
            self.state.faults.push(group, times=times)
        return _json({"pending": self.state.faults.pending()})

    async def clear_faults(self, request: web.Request) -> web.Response:
        err = self._autherror_response(request)
        if err is not None:
            return error_response(err)
        self.state.faults.clear()
        return _json({"pending": []})

    # -- chat ----------------------------------------------------------------------------------

    @json_body
    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: the chat handler speaking Anthropic's format."""
        return await self.chat(request, anthropic=True)

    @json_body
    async def chat(self, request: web.Request, anthropic: bool = False) -> web.StreamResponse:
        state = self.state
        ex = Exchange(
            request=request,
            recorder=state.recorder,
            epoch=state.recorder.request(),
            request_id=new_request_id(),
            received=time.time(),
            anthropic=anthropic,
            render_error=anthropic_wire.error_response if anthropic else error_response,
        )
        queued = state.faults.take()
        ex.faults = {f.kind: f for f in queued}
        ex.raw = await request.read()
        spec = request.headers.get("x-holynb-fault")
        if spec:
            try:
                ex.faults.update((f.kind, f) for f in faultlib.parse(spec))
            except ValueError as exc:
                return ex.fail(RequestError(400, f"Bad x-holynb-fault header: {exc}"))
        fault = ex.faults
        if "delay" in fault:
            await asyncio.sleep(fault["delay"]["seconds"])
        if "drop" in fault:
            ex.finish(0, "dropped")
            ex.close_connection()
            return web.Response(status=204)  # never sent: the connection is gone
        if "status" in fault:
            return self._injected_status(ex, fault["status"])
        if "raw_body" in fault:
            return self._raw_body(ex, fault["raw_body"]["body"])
        try:
            return await self._answer(ex)
        except RequestError as err:
            return ex.fail(err)

    def _raw_body(self, ex: Exchange, body: str) -> web.Response:
        """200 with ``body`` as it is: an event stream when the request asked for one."""
        try:
            ex.body = parse_chat_request(ex.raw)
        except RequestError as err:
            return ex.fail(err)
        streamed = bool(ex.body.get("stream"))
        content_type = "text/event-stream" if streamed else JSON
        ex.finish(200, "raw_body")
        return web.Response(body=body.encode(), content_type=content_type, headers=ex.headers)

    def _injected_status(self, ex: Exchange, fault: Fault) -> web.Response:
        code: int = fault["code"]
        headers = ex.headers
        retry_after = fault["retry_after"]
        if retry_after is not None:
            if fault["retry_after_date"]:
                when = math.ceil(time.time() + retry_after)
                headers["retry-after"] = email.utils.formatdate(when, usegmt=True)
            else:
                headers["retry-after"] = f"{retry_after:g}"
        if fault["retry_after_ms"] is not None:
            headers["retry-after-ms"] = str(fault["retry_after_ms"])
        if fault["should_retry"] is not None:
            headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
        headers.update(fault["headers"] or {})
        body = fault["body"]
        if body is None:
            default = _STATUS_ERRORS.get(code)
            if default is None:
                kind = "server_error" if code >= 500 else "invalid_request_error"
                default = (kind, None, _phrase(code))
            kind, error_code, message = default
            if ex.anthropic:
                payload = anthropic_wire.error_body(
                    fault["message"] or message, anthropic_wire.error_type(code)
                )
            else:
                payload = error_body(fault["message"] or message, kind, error_code)
            content_type = JSON
        elif isinstance(body, dict | list):
            payload, content_type = orjson.dumps(body), JSON
        else:
            payload = body if isinstance(body, bytes) else str(body).encode()
            html = payload.lstrip()[:1] == b"<"
            content_type = "text/html" if html else "text/plain"
        ex.finish(code, "injected_status")
        return web.Response(body=payload, status=code, content_type=content_type, headers=headers)

    async def _answer(self, ex: Exchange) -> web.StreamResponse:
        state, request, fault = self.state, ex.request, ex.faults
        auth = self._autherror_response(request)
        if auth is not None:
            raise auth
        if ex.anthropic:
            anthropic_wire.require_version(request.headers)
            body = ex.body = anthropic_wire.parse_messages_request(ex.raw)
            messages = anthropic_wire.model_messages(body)
        else:
            body = ex.body = parse_chat_request(ex.raw)
            messages = body["messages"]
        model = state.models.get(body["model"])
        if model is None:
            raise self._unknown_model(body["model"])
        if _runs_code(model) and not state.python:
            raise RequestError(
                403,
                f"The model `{model.name}` runs the code it is sent on this machine, so it is "
                "off unless enabled: start the server with `holynb serve --enable-python` or "
                "`LocalServer(python=True)`; in a notebook use "
                "`holynb.local_session(python=True)` or "
                "`holynb.offline.auto_session(python=True)`.",
                code="model_disabled",
                param="model",
            )
        reject = fault.get("reject_stream_options")
        if reject is not None and "stream_options" in body:
            raise RequestError(
                reject["status"],
                "Unrecognized request argument supplied: stream_options",
                param="stream_options",
            )
        latency_ms = _number_header(request, "x-holynb-latency-ms")
        tps = _number_header(request, "x-holynb-tokens-per-second")
        if latency_ms is None:
            latency_ms = state.latency_ms + model.latency_ms
        if tps is None:
            tps = model.tokens_per_second or state.tokens_per_second
        pieces, finish_reason = await generate(model, messages, body)
        prompt = prompt_tokens(messages, "anthropic" if ex.anthropic else "openai")
        answer = Answer(
            completion_id=("msg_" if ex.anthropic else "chatcmpl-") + ex.request_id[4:],
            created=int(time.time()),
            model=model.name,
            pieces=pieces,
            finish_reason=finish_reason,
            prompt_tokens=prompt,
            tokens_per_second=tps or None,
            service_tier=_served_tier(body, fault, ex.anthropic),
            cache=state.prompt_cache.use(body, prompt) if ex.anthropic else None,
        )
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if ex.anthropic:
            if body.get("stream"):
                return await anthropic_wire.send_message_stream(ex, answer)
            return await anthropic_wire.send_message(ex, answer)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await send_stream(ex, answer, include_usage)
        return await send_whole(ex, answer)
