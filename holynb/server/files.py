"""The local server's ``/v1/files``: uploads for the Batch API, and the files it writes back.

Files live in memory for the server's lifetime. ``POST /v1/files`` takes multipart form data
(``file`` and ``purpose=batch``), as OpenAI does; ``GET /v1/files``, ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}`` answer in OpenAI's shapes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from holynb.server.answer import JSON, error_response
from holynb.server.wire import RequestError

CheckAuth = Callable[[web.Request], RequestError | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_FILE_BYTES = 200 * 2**20  # OpenAI's limit for a batch input file
UPLOAD_PURPOSES = ("batch",)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredFile:
    """One file the server keeps: its bytes and OpenAI's metadata."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def info(self) -> dict[str, Any]:
        """The ``file`` object OpenAI returns for it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


class FileStore:
    """The files of one server, by id; safe to use from several threads.

    ``max_file_bytes`` limits uploads (settable while the server runs).
    """

    def __init__(self, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.max_file_bytes = max_file_bytes
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Keep ``content`` under a fresh ``file-...`` id."""
        stored = StoredFile("file-" + uuid.uuid4().hex[:24], filename, purpose, content)
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with this id, or None."""
        with self._lock:
            return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        """Forget a file; whether it existed."""
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def all(self) -> list[StoredFile]:
        """Every file, newest first."""
        with self._lock:
            files = list(self._files.values())
        return files[::-1]


def no_such_file(file_id: str) -> RequestError:
    """The 404 OpenAI answers for an unknown file id."""
    return RequestError(404, f"No such File object: {file_id}", param="id")


def json_response(payload: Any, status: int = 200) -> web.Response:
    """``payload`` as a JSON response."""
    return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON)


def guarded(check_auth: CheckAuth, handler: Handler) -> Handler:
    """``handler`` behind the server's key check, with RequestErrors turned into responses."""

    async def run(request: web.Request) -> web.StreamResponse:
        err = check_auth(request)
        if err is not None:
            return error_response(err)
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc)

    return run


class FileRoutes:
    """The ``/v1/files`` handlers over one FileStore."""

    def __init__(self, store: FileStore) -> None:
        self.store = store

    def add_to(self, app: web.Application, check_auth: CheckAuth) -> None:
        """Register the routes on ``app`` (before any catch-all route)."""
        add = app.router.add_route
        add("POST", "/v1/files", guarded(check_auth, self.upload))
        add("GET", "/v1/files", guarded(check_auth, self.list))
        add("GET", "/v1/files/{id}", guarded(check_auth, self.info))
        add("DELETE", "/v1/files/{id}", guarded(check_auth, self.delete))
        add("GET", "/v1/files/{id}/content", guarded(check_auth, self.content))

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise RequestError(
                400,
                "Upload the file as multipart/form-data with the fields 'file' and 'purpose' "
                f"(got content type {request.content_type!r}).",
            )
        reader = await request.multipart()
        purpose: str | None = None
        filename, content = "upload.jsonl", None
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or filename
                content = await self._read_limited(part)
            else:
                await part.release()
        if content is None:
            raise RequestError(
                400, "Missing required parameter: 'file'.", code="missing_required_parameter"
            )
        if purpose not in UPLOAD_PURPOSES:
            shown = "missing" if purpose is None else repr(purpose)
            raise RequestError(
                400,
                f"Invalid value for 'purpose' ({shown}): the local server keeps files for the "
                "Batch API only, so use purpose='batch'.",
                code="invalid_value",
                param="purpose",
            )
        return json_response(self.store.add(filename, purpose, content).info())

    async def _read_limited(self, part: BodyPartReader) -> bytes:
        limit = self.store.max_file_bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    413,
                    f"The file is larger than the limit of {limit} bytes: split it into smaller "
                    "files (holynb does this with max_bytes_per_file=).",
                    code="file_too_large",
                    param="file",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def list(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        data = [f.info() for f in self.store.all() if purpose in (None, f.purpose)]
        return json_response({"object": "list", "data": data, "has_more": False})

    def _file(self, request: web.Request) -> StoredFile:
        file_id = request.match_info["id"]
        stored = self.store.get(file_id)
        if stored is None:
            raise no_such_file(file_id)
        return stored

    async def info(self, request: web.Request) -> web.Response:
        return json_response(self._file(request).info())

    async def content(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if not self.store.delete(file_id):
            raise no_such_file(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})
