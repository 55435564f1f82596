"""The local server's ``/v1/batches``: OpenAI's Batch API answered by the offline models.

``POST /v1/batches`` checks the request as OpenAI does (the input file exists and has purpose
``batch``, ``endpoint`` is ``/v1/chat/completions``, ``completion_window`` is ``24h``, at most 16
metadata pairs) and starts a background task on the server's loop that takes the batch through
``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``. A file with bad lines (broken
JSON, a duplicate ``custom_id``, a wrong method or url, a model differing from the file's, ...)
makes the batch ``failed`` with one entry per problem in ``errors``. A line the model cannot
answer (an unknown model, a bad body, a model that raises) becomes a line of the error file.
``POST /v1/batches/{id}/cancel`` goes through ``cancelling`` to ``cancelled``; lines not run by
then are written to the error file with code ``batch_cancelled`` (``batch_expired`` for expiry).

Memory: the file's lines are counted before any is parsed (a file over ``max_requests`` is
refused at once), then read one at a time, twice (checked, then run), so a batch holds its input
file and its answers as JSONL bytes, never the file as parsed objects. When the batch ends
(completed, failed, cancelled, expired), its input file is freed (see ``holynb.server.files``).

Knobs for tests (``LocalServer.batches.settings``): ``seconds_per_request`` and ``phase_seconds``
slow the processing down, ``expire_after`` expires a batch after that many requests,
``uppercase_status`` answers ``COMPLETED`` etc. as some relays do, ``keep_inputs`` keeps input
files until deleted, as OpenAI does (for tests that read what was sent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from holynb.server.files import (
    CheckAuth,
    FileRoutes,
    FileStore,
    freed_file,
    guarded,
    json_response,
    no_such_file,
)
from holynb.server.keeper import Keeper
from holynb.server.registry import ModelRegistry, generate
from holynb.server.tokens import prompt_tokens
from holynb.server.wire import (
    RequestError,
    completion_body,
    missing_parameter,
    parse_chat_request,
    usage,
)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
MAX_METADATA_PAIRS = 16
MAX_REQUESTS = 50_000
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class BatchSettings:
    """How the local server processes batches; change them while it runs."""

    seconds_per_request: float = 0.0
    phase_seconds: float = 0.0
    expire_after: int | None = None
    uppercase_status: bool = False
    max_requests: int = MAX_REQUESTS
    batches_endpoint: bool = True  # False: /v1/batches answers 404 (files only, like some relays)
    keep_inputs: bool = False  # True: a batch's input file stays until deleted, as on OpenAI
    shuffle_results: bool = False  # True: Message Batch results in a random order


@dataclass
class Batch:
    """One batch and where it stands."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    times: dict[str, int] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    def move(self, status: str) -> None:
        """Enter ``status`` and stamp its ``*_at`` time."""
        self.status = status
        self.times[f"{status}_at"] = int(time.time())

    def as_json(self, uppercase: bool = False) -> dict[str, Any]:
        """The ``batch`` object OpenAI returns."""
        stamp = self.times.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.upper() if uppercase else self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": stamp("in_progress_at"),
            "expires_at": self.created_at + WINDOW_SECONDS,
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "model": self.model,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }


def _problem(line: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


_BLANK = frozenset(b" \t\r\n\x0b\x0c")


def _end_of_requests(content: bytes) -> int:
    """Where the last line that is not blank ends (blank lines at the end are no requests)."""
    end = len(content)
    while end and content[end - 1] in _BLANK:
        end -= 1
    return end


def count_lines(content: bytes) -> int:
    """The number of lines of a batch input file, blank ones at its end left out; no line is
    parsed (a newline count: fast, and nothing is allocated)."""
    end = _end_of_requests(content)
    return content.count(b"\n", 0, end) + 1 if end else 0


def request_lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) for each line of a batch input file, one at a time."""
    end = _end_of_requests(content)
    start, number = 0, 0
    while start < end:
        stop = content.find(b"\n", start, end)
        stop = end if stop < 0 else stop
        number += 1
        yield number, content[start:stop]
        start = stop + 1


def check_lines(content: bytes, endpoint: str, max_requests: int) -> tuple[int, list]:
    """How many requests a batch input file holds, and the problems found in it (OpenAI's
    checks). A file over ``max_requests`` lines is refused before any line is parsed; the
    others are parsed one line at a time and nothing parsed is kept."""
    count = count_lines(content)
    if count > max_requests:
        message = f"The file has {count} requests; a batch takes at most {max_requests}."
        return 0, [_problem(0, "too_many_requests", message)]
    if not count:
        return 0, [_problem(0, "empty_file", "The input file has no requests.")]
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    model: str | None = None
    valid = 0
    for number, text in request_lines(content):
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError:
            problems.append(_problem(number, "invalid_json_line", "This line is not valid JSON."))
            continue
        if not isinstance(item, dict):
            problems.append(_problem(number, "invalid_json_line", "A line must be a JSON object."))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            problems.append(
                _problem(number, "missing_required_parameter", "Missing 'custom_id'.", "custom_id")
            )
        elif custom_id in seen:
            problems.append(
                _problem(
                    number,
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} is already used on line {seen[custom_id]}.",
                    "custom_id",
                )
            )
        else:
            seen[custom_id] = number
        if item.get("method") != "POST":
            problems.append(
                _problem(number, "invalid_method", "'method' must be 'POST'.", "method")
            )
        if item.get("url") != endpoint:
            problems.append(_problem(number, "invalid_url", f"'url' must be {endpoint!r}.", "url"))
        body = item.get("body")
        if not isinstance(body, dict):
            problems.append(
                _problem(number, "missing_required_parameter", "Missing 'body' object.", "body")
            )
            continue
        name = body.get("model")
        if model is None and isinstance(name, str):
            model = name
        elif name != model:
            problems.append(
                _problem(
                    number,
                    "mismatched_model",
                    f"Every line of a batch must use the same model: {name!r} here, {model!r} "
                    "on the first line.",
                    "body.model",
                )
            )
        valid += 1
    return valid, problems


def _requests(content: bytes, skip: int = 0) -> Iterator[dict[str, Any]]:
    """The requests of a checked input file (objects only), one at a time, after ``skip``."""
    for number, text in request_lines(content):
        if number <= skip:
            continue
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(item, dict):
            yield item


class BatchStore(Keeper[Batch]):
    """The batches of one server and their background tasks.

    >>> server.batches.settings.seconds_per_request = 0.01   # slow processing down
    >>> server.batches.files.max_file_bytes = 1000           # a small upload limit
    >>> server.batches.get("batch_...").status
    """

    def __init__(self) -> None:
        super().__init__()
        self.settings = BatchSettings()
        self.files = FileStore()  # uploads and the output files batches write


# JSONL lines, each ending with a newline (spelled out here because BatchRoutes.list shadows the
# builtin in its body)
_Lines = list[bytes]


class BatchRoutes:
    """The ``/v1/batches`` handlers and the processing of each batch."""

    def __init__(self, store: BatchStore, files: FileStore, models: ModelRegistry) -> None:
        self.store = store
        self.files = files
        self.models = models

    def add_to(self, app: web.Application, check_auth: CheckAuth) -> None:
        """Register the routes on ``app`` (before any catch-all route)."""
        add = app.router.add_route
        add("POST", "/v1/batches", guarded(check_auth, self.create))
        add("GET", "/v1/batches", guarded(check_auth, self.list))
        add("GET", "/v1/batches/{id}", guarded(check_auth, self.retrieve))
        add("POST", "/v1/batches/{id}/cancel", guarded(check_auth, self.cancel))

    def _answer(self, batch: Batch) -> web.Response:
        return json_response(batch.as_json(self.store.settings.uppercase_status))

    # -- handlers ------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        if not self.store.settings.batches_endpoint:
            raise RequestError(404, "Invalid URL (POST /v1/batches)", code="not_found")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise RequestError(400, "The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise missing_parameter(name)
        if body["endpoint"] != ENDPOINT:
            raise RequestError(
                400,
                f"Invalid value for 'endpoint': {body['endpoint']!r}. The local server's batches "
                f"support {ENDPOINT!r} only.",
                code="invalid_value",
                param="endpoint",
            )
        if body["completion_window"] != COMPLETION_WINDOW:
            raise RequestError(
                400,
                f"Invalid value for 'completion_window': {body['completion_window']!r}. "
                f"Supported values are: {COMPLETION_WINDOW!r}.",
                code="invalid_value",
                param="completion_window",
            )
        metadata = _check_metadata(body.get("metadata"))
        stored = self.files.get(body["input_file_id"])
        if stored is None:
            raise no_such_file(body["input_file_id"])
        if stored.freed is not None:
            raise freed_file(stored)
        if stored.purpose != "batch":
            raise RequestError(
                400,
                f"The file {stored.id} has purpose {stored.purpose!r}; upload the input with "
                "purpose='batch'.",
                param="input_file_id",
            )
        batch = Batch(
            id="batch_" + uuid.uuid4().hex[:24],
            input_file_id=stored.id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata=metadata,
        )
        self.store.add(batch)
        self.store.start(self._guarded_process(batch, stored.content))
        return self._answer(batch)

    async def retrieve(self, request: web.Request) -> web.Response:
        return self._answer(self._batch(request))

    async def list(self, request: web.Request) -> web.Response:
        limit_text = request.query.get("limit", "20")
        try:
            limit = int(limit_text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            raise RequestError(
                400, f"Invalid 'limit': {limit_text!r}; use 1 to 100.", param="limit"
            )
        batches = self.store.all()
        after = request.query.get("after")
        if after:
            ids = [b.id for b in batches]
            if after not in ids:
                raise RequestError(404, f"No such Batch object: {after}", param="after")
            batches = batches[ids.index(after) + 1 :]
        page = batches[:limit]
        upper = self.store.settings.uppercase_status
        return json_response(
            {
                "object": "list",
                "data": [b.as_json(upper) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(batches) > limit,
            }
        )

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.move("cancelling")
        elif batch.status not in ("cancelling", "cancelled"):
            raise RequestError(
                409,
                f"Cannot cancel a batch with status {batch.status!r}.",
                code="batch_not_cancellable",
            )
        return self._answer(batch)

    def _batch(self, request: web.Request) -> Batch:
        batch_id = request.match_info["id"]
        batch = self.store.get(batch_id)
        if batch is None:
            raise RequestError(404, f"No such Batch object: {batch_id}", param="id")
        return batch

    # -- processing ----------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds) if seconds > 0 else await asyncio.sleep(0)

    async def _phase_pause(self) -> None:
        """Wait ``phase_seconds``, read again while waiting: lowering it ends the wait."""
        started = time.monotonic()
        while (left := self.store.settings.phase_seconds - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(left, 0.05))
        await asyncio.sleep(0)

    async def _guarded_process(self, batch: Batch, content: bytes) -> None:
        try:
            await self._process(batch, content)
        except Exception as exc:  # a bug must not leave the batch in_progress forever
            batch.errors = [_problem(0, "server_error", f"The local server failed: {exc!r}")]
            self._end(batch, "failed")

    def _end(self, batch: Batch, status: str) -> None:
        """Enter a final status, freeing the batch's input file first (after its output and
        error files were written), unless ``keep_inputs``."""
        if not self.store.settings.keep_inputs:
            self.files.free(batch.input_file_id, f"its batch {batch.id} ended ({status})")
        batch.move(status)

    async def _process(self, batch: Batch, content: bytes) -> None:
        settings = self.store.settings
        await self._phase_pause()
        total, problems = check_lines(content, batch.endpoint, settings.max_requests)
        if batch.status == "cancelling":
            await self._finish(batch, [], [], _requests(content), "cancelled")
            return
        if problems:
            batch.errors = problems[:1000]
            self._end(batch, "failed")
            return
        batch.total = total
        batch.model = next(_requests(content))["body"].get("model")
        batch.move("in_progress")
        outputs: _Lines = []
        errors: _Lines = []
        for i, item in enumerate(_requests(content)):
            if batch.status == "cancelling":
                await self._finish(batch, outputs, errors, _requests(content, i), "cancelled")
                return
            if settings.expire_after is not None and i >= settings.expire_after:
                await self._finish(batch, outputs, errors, _requests(content, i), "expired")
                return
            line = await self._run(item)
            response = line["response"]
            if response["status_code"] == 200:
                outputs.append(orjson.dumps(line) + b"\n")
                batch.completed += 1
                spent = response["body"]["usage"]
                batch.input_tokens += spent["prompt_tokens"]
                batch.output_tokens += spent["completion_tokens"]
            else:
                errors.append(orjson.dumps(line) + b"\n")
                batch.failed += 1
            await self._pause(settings.seconds_per_request)
        await self._finish(batch, outputs, errors, iter(()), "completed")

    async def _finish(
        self,
        batch: Batch,
        outputs: _Lines,
        errors: _Lines,
        not_run: Iterator[dict[str, Any]],
        end: str,
    ) -> None:
        if end == "completed":
            batch.move("finalizing")
        await self._pause(self.store.settings.phase_seconds)
        code = {"cancelled": "batch_cancelled", "expired": "batch_expired"}.get(end)
        for item in not_run:
            message = f"This request was not run: the batch was {end}."
            line = _line(item.get("custom_id"), None, {"code": code, "message": message})
            errors.append(orjson.dumps(line) + b"\n")
        if outputs:
            batch.output_file_id = self._write(batch, "output", outputs)
        if errors:
            batch.error_file_id = self._write(batch, "error", errors)
        self._end(batch, end)

    def _write(self, batch: Batch, kind: str, lines: _Lines) -> str:
        content = b"".join(lines)
        lines.clear()
        return self.files.add(f"{batch.id}_{kind}.jsonl", "batch_output", content).id

    async def _run(self, item: dict[str, Any]) -> dict[str, Any]:
        request_id = "req_" + uuid.uuid4().hex
        try:
            body = parse_chat_request(orjson.dumps(item["body"]))
            if body.get("stream"):
                raise RequestError(400, "Batch requests cannot stream.", param="stream")
            answer = await self._complete(body, request_id)
        except RequestError as err:
            return _line(item["custom_id"], _response(err.status, request_id, err.body()), None)
        return _line(item["custom_id"], _response(200, request_id, answer), None)

    async def _complete(self, body: dict[str, Any], request_id: str) -> bytes:
        model = self.models.get(body["model"])
        if model is None:
            raise RequestError(
                404,
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        messages = body["messages"]
        pieces, finish_reason = await generate(model, messages, body)
        prompt = prompt_tokens(messages)
        return completion_body(
            "chatcmpl-" + request_id[4:],
            int(time.time()),
            model.name,
            "".join(pieces),
            finish_reason,
            usage(prompt, len(pieces)),
        )


def _response(status: int, request_id: str, body: bytes) -> dict[str, Any]:
    return {"status_code": status, "request_id": request_id, "body": orjson.loads(body)}


def _line(custom_id: Any, response: dict[str, Any] | None, error: Any) -> dict[str, Any]:
    return {
        "id": "batch_req_" + uuid.uuid4().hex[:24],
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise RequestError(400, "'metadata' must be an object.", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise RequestError(
            400,
            f"Invalid 'metadata': {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
            code="invalid_value",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise RequestError(
                400,
                "Invalid 'metadata': keys are at most 64 characters, values strings of at most "
                f"512 characters (see {key!r}).",
                code="invalid_value",
                param="metadata",
            )
    return metadata


def add_routes(
    app: web.Application, batches: BatchStore, models: ModelRegistry, check_auth: CheckAuth
) -> None:
    """Register ``/v1/files`` and ``/v1/batches`` on ``app``."""
    FileRoutes(batches.files).add_to(app, check_auth)
    BatchRoutes(batches, batches.files, models).add_to(app, check_auth)
