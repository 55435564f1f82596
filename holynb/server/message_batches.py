"""The local server's ``/v1/messages/batches``: Anthropic's Message Batches answered offline.

``POST /v1/messages/batches`` takes ``{"requests": [{"custom_id", "params"}]}`` (at most
100,000 requests, ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and unique) and processes
them in the background with the offline models: ``processing_status`` goes ``in_progress`` ->
``ended`` (``canceling`` -> ``ended`` after ``POST .../{id}/cancel``). ``GET .../{id}``,
``GET /v1/messages/batches`` (newest first, ``limit``, ``after_id``) and, once ended,
``GET .../{id}/results`` (JSONL: one ``{"custom_id", "result"}`` line per request, result type
``succeeded`` with the ``message``, ``errored`` with the error, ``canceled`` or ``expired``).

Knobs, shared with ``/v1/batches`` (``LocalServer.batches.settings``): ``seconds_per_request``,
``expire_after`` (requests after that many expire), ``shuffle_results`` (results in a random
order, as Anthropic warns they may come).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

import holynb.server.messages as anthropic_wire
from holynb.server.batches import BatchSettings, BatchStore
from holynb.server.exchange import Answer
from holynb.server.files import CheckAuth
from holynb.server.keeper import Keeper
from holynb.server.registry import ModelRegistry, generate
from holynb.server.tokens import prompt_tokens
from holynb.server.wire import RequestError

__all__ = ["MAX_MESSAGE_BATCH_REQUESTS", "MessageBatch", "MessageBatchStore", "add_routes"]

MAX_MESSAGE_BATCH_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


def _stamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class MessageBatch:
    """One Message Batch: its requests, where it stands, and its results so far."""

    id: str
    requests: list[dict[str, Any]]
    status: str = "in_progress"  # in_progress | canceling | ended
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # custom_id -> result

    def counts(self) -> dict[str, int]:
        """``request_counts``: processing and one count per result type."""
        out = dict.fromkeys(_RESULT_TYPES, 0)
        for result in self.results.values():
            out[result["type"]] += 1
        return {"processing": len(self.requests) - len(self.results), **out}

    def as_json(self) -> dict[str, Any]:
        """The ``message_batch`` object."""
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "created_at": _stamp(self.created_at),
            "ended_at": _stamp(self.ended_at),
            "expires_at": _stamp(self.created_at + 24 * 3600),
            "archived_at": None,
            "cancel_initiated_at": _stamp(self.cancel_initiated_at),
            "results_url": f"/v1/messages/batches/{self.id}/results" if ended else None,
        }


class MessageBatchStore(Keeper[MessageBatch]):
    """The Message Batches of one server and their background tasks. Thread-safe."""


def _error(err: RequestError) -> web.Response:
    return anthropic_wire.error_response(err)


class MessageBatchRoutes:
    """The ``/v1/messages/batches`` handlers and the processing of each batch."""

    def __init__(
        self, store: MessageBatchStore, batches: BatchStore, models: ModelRegistry
    ) -> None:
        self.store = store
        self.batches = batches  # its settings, read per use: tests replace them
        self.models = models

    @property
    def settings(self) -> BatchSettings:
        """The processing knobs, shared with ``/v1/batches``."""
        return self.batches.settings

    def add_to(self, app: web.Application, check_auth: CheckAuth) -> None:
        """Register the routes on ``app`` (before any catch-all route)."""

        def guarded(handler: Any) -> Any:
            async def run(request: web.Request) -> web.StreamResponse:
                err = check_auth(request)
                if err is not None:
                    return _error(err)
                try:
                    return await handler(request)
                except RequestError as exc:
                    return _error(exc)

            return run

        add = app.router.add_route
        root = "/v1/messages/batches"
        add("POST", root, guarded(self.create))
        add("GET", root, guarded(self.list))
        add("GET", root + "/{id}", guarded(self.retrieve))
        add("GET", root + "/{id}/results", guarded(self.results))
        add("POST", root + "/{id}/cancel", guarded(self.cancel))

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise RequestError(400, "The request body is not valid JSON.") from None
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise RequestError(400, "requests: at least one request is required")
        if len(requests) > MAX_MESSAGE_BATCH_REQUESTS:
            raise RequestError(
                413, f"requests: at most {MAX_MESSAGE_BATCH_REQUESTS:,} requests per batch"
            )
        seen: set[str] = set()
        for i, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                raise RequestError(
                    400, f"requests.{i}.custom_id: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'"
                )  # fmt: skip
            if cid in seen:
                raise RequestError(400, f"requests.{i}.custom_id: duplicate custom_id {cid!r}")
            seen.add(cid)
            if not isinstance(item.get("params"), dict):
                raise RequestError(400, f"requests.{i}.params: Field required")
        batch = MessageBatch(id="msgbatch_" + uuid.uuid4().hex[:24], requests=requests)
        self.store.add(batch)
        self.store.start(self._process(batch))
        return web.json_response(batch.as_json())

    async def retrieve(self, request: web.Request) -> web.Response:
        return web.json_response(self._batch(request).as_json())

    async def list(self, request: web.Request) -> web.Response:
        batches = self.store.all()
        after = request.query.get("after_id")
        if after:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = max(1, min(int(request.query.get("limit", "20")), 1000))
        except ValueError:
            raise RequestError(400, "limit: Input should be a valid integer") from None
        page = batches[:limit]
        return web.json_response(
            {
                "data": [b.as_json() for b in page],
                "has_more": len(batches) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def results(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if batch.status != "ended":
            raise RequestError(
                400, f"Batch {batch.id} has not ended yet; its results are not available."
            )
        lines = [{"custom_id": cid, "result": r} for cid, r in batch.results.items()]
        if self.settings.shuffle_results:
            random.shuffle(lines)
        content = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        return web.Response(body=content, content_type="application/x-jsonl")

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_initiated_at = time.time()
        return web.json_response(batch.as_json())

    def _batch(self, request: web.Request) -> MessageBatch:
        batch_id = request.match_info["id"]
        batch = self.store.get(batch_id)
        if batch is None:
            raise RequestError(404, f"No such message batch: {batch_id}")
        return batch

    # -- processing ----------------------------------------------------------------------------

    async def _process(self, batch: MessageBatch) -> None:
        try:
            for i, item in enumerate(batch.requests):
                cid = item["custom_id"]
                if batch.status == "canceling":
                    batch.results[cid] = {"type": "canceled"}
                    continue
                expire = self.settings.expire_after
                if expire is not None and i >= expire:
                    batch.results[cid] = {"type": "expired"}
                    continue
                pause = self.settings.seconds_per_request
                await asyncio.sleep(pause) if pause > 0 else await asyncio.sleep(0)
                batch.results[cid] = await self._run(item["params"])
        finally:
            for item in batch.requests:  # a bug must not leave the batch in progress
                batch.results.setdefault(item["custom_id"], {"type": "canceled"})
            batch.status = "ended"
            batch.ended_at = time.time()

    async def _run(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            body = anthropic_wire.parse_messages_request(orjson.dumps(params))
            if body.get("stream"):
                raise RequestError(400, "stream: batch requests cannot stream")
            model = self.models.get(body["model"])
            if model is None:
                raise RequestError(404, f"model: {body['model']}")
            messages = anthropic_wire.model_messages(body)
            pieces, finish_reason = await generate(model, messages, body)
        except RequestError as err:
            kind = anthropic_wire.error_type(err.status)
            error = {"type": kind, "message": err.message}
            return {"type": "errored", "error": {"type": "error", "error": error}}
        answer = Answer(
            completion_id="msg_" + uuid.uuid4().hex[:24],
            created=int(time.time()),
            model=model.name,
            pieces=pieces,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens(messages, "anthropic"),
            tokens_per_second=None,
            service_tier="batch",
        )
        return {"type": "succeeded", "message": anthropic_wire.batch_message(answer)}


def add_routes(
    app: web.Application,
    store: MessageBatchStore,
    batches: BatchStore,
    models: ModelRegistry,
    check_auth: CheckAuth,
) -> None:
    """Register ``/v1/messages/batches`` on ``app``."""
    MessageBatchRoutes(store, batches, models).add_to(app, check_auth)
