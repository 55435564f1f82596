"""The local server's ``/v1/files``: uploads for the Batch API, and the files it writes back.

Files live in memory, within two limits (both settable while the server runs, on
``LocalServer.batches.files``): ``max_file_bytes`` per upload (200 MB, OpenAI's) and
``max_total_bytes`` for everything held (1 GiB); an upload past either is refused with HTTP 413
while it is read, before it is kept. A batch's input file is freed when the batch ends (its
output and error files stay, and count, until deleted); a freed file is still listed and
deletable, but its content answers 404 saying why. ``POST /v1/files`` takes multipart form data
(``file`` and ``purpose=batch``), as OpenAI does; ``GET /v1/files``, ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}`` answer in OpenAI's shapes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from holynb.server.exchange import JSON, error_response
from holynb.server.wire import RequestError

CheckAuth = Callable[[web.Request], RequestError | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_FILE_BYTES = 200 * 2**20  # OpenAI's limit for a batch input file
MAX_TOTAL_BYTES = 2**30  # what one local server holds in all: five inputs of OpenAI's largest
MAX_FREED_RECORDS = 10_000  # freed files still answered for (their metadata only)
UPLOAD_PURPOSES = ("batch",)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class StoredFile:
    """One file the server keeps: its bytes and OpenAI's metadata. A freed file has no bytes
    left (``content`` is empty) and ``freed`` says why."""

    id: str
    filename: str
    purpose: str
    content: bytes
    size: int
    created_at: int = field(default_factory=lambda: int(time.time()))
    freed: str | None = None

    def info(self) -> dict[str, Any]:
        """The ``file`` object OpenAI returns for it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": self.freed,
            "expires_at": None,
        }


class FileStore:
    """The files of one server, by id; safe to use from several threads.

    ``max_file_bytes`` limits each upload and ``max_total_bytes`` what the server holds in all
    (uploads being read included); both are settable while the server runs.

    >>> server.batches.files.max_total_bytes = 50 * 2**20   # a server that holds 50 MB
    >>> server.batches.files.used_bytes
    """

    def __init__(
        self, max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self._files: dict[str, StoredFile] = {}
        self._held = 0  # bytes of the files' contents
        self._reserved = 0  # bytes of uploads still being read
        self._freed = 0  # how many freed files are remembered
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        """The bytes held: every file's content, and the uploads being read."""
        with self._lock:
            return self._held + self._reserved

    def reserve(self, size: int, *, mine: int = 0) -> None:
        """Hold room for ``size`` more bytes of an upload being read, which already holds
        ``mine``; a 413 RequestError when that would pass ``max_total_bytes``. Give it back
        with :meth:`release`, or pass it on to :meth:`add`."""
        with self._lock:
            used = self._held + self._reserved
            cap = self.max_total_bytes
            if used + size <= cap:
                self._reserved += size
                return
            others = used - mine
            count = sum(1 for f in self._files.values() if f.freed is None)
        raise RequestError(
            413,
            f"The local server keeps at most {cap:,} bytes of files and holds {others:,} bytes "
            f"in {count} file(s), so this upload does not fit. Delete the files you no longer "
            "need (DELETE /v1/files/{id}, client.files.delete(id)): a batch's input is freed "
            "when the batch ends, but its output and error files stay until deleted. Or raise "
            "the cap: LocalServer.batches.files.max_total_bytes.",
            code="storage_limit_exceeded",
            param="file",
        )

    def release(self, size: int) -> None:
        """Give back room held with :meth:`reserve`."""
        with self._lock:
            self._reserved -= size

    def add(self, filename: str, purpose: str, content: bytes, *, reserved: int = 0) -> StoredFile:
        """Keep ``content`` under a fresh ``file-...`` id, taking over ``reserved`` bytes held
        for it by :meth:`reserve` (files the server writes itself are counted as they come)."""
        stored = StoredFile(
            "file-" + uuid.uuid4().hex[:24], filename, purpose, content, len(content)
        )
        with self._lock:
            self._files[stored.id] = stored
            self._held += stored.size
            self._reserved -= reserved
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with this id (a freed one too: see ``freed``), or None."""
        with self._lock:
            return self._files.get(file_id)

    def free(self, file_id: str, why: str) -> None:
        """Drop a file's content, keeping its metadata and ``why`` (it stays listed and
        deletable; the oldest freed records are forgotten past MAX_FREED_RECORDS)."""
        with self._lock:
            stored = self._files.get(file_id)
            if stored is None or stored.freed is not None:
                return
            self._held -= len(stored.content)
            self._files[file_id] = replace(stored, content=b"", freed=why)
            self._freed += 1
            if self._freed > MAX_FREED_RECORDS:
                oldest = next(k for k, f in self._files.items() if f.freed is not None)
                del self._files[oldest]
                self._freed -= 1

    def delete(self, file_id: str) -> bool:
        """Forget a file; whether it existed."""
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is None:
                return False
            self._held -= len(stored.content)
            self._freed -= stored.freed is not None
            return True

    def all(self) -> list[StoredFile]:
        """Every file, newest first."""
        with self._lock:
            files = list(self._files.values())
        return files[::-1]


def freed_file(stored: StoredFile) -> RequestError:
    """The 404 for the content of a file the server freed."""
    return RequestError(
        404,
        f"The content of {stored.id} was freed: {stored.freed}. The local server keeps a batch's "
        "input only while the batch runs (output and error files stay until deleted); upload "
        "the file again to use it again.",
        code="file_freed",
        param="id",
    )


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
        reserved = [0]  # room held in the store for this upload, given back unless kept
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "purpose":
                    purpose = (await part.text()).strip()
                elif part.name == "file":
                    filename = part.filename or filename
                    content = await self._read_limited(part, reserved)
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
                    f"Invalid value for 'purpose' ({shown}): the local server keeps files for "
                    "the Batch API only, so use purpose='batch'.",
                    code="invalid_value",
                    param="purpose",
                )
            stored = self.store.add(filename, purpose, content, reserved=len(content))
            reserved[0] -= len(content)
        finally:
            self.store.release(reserved[0])
        return json_response(stored.info())

    async def _read_limited(self, part: BodyPartReader, reserved: list[int]) -> bytes:
        """The part's bytes, read within ``max_file_bytes``, each chunk's room reserved in the
        store (``reserved[0]`` counts it) before it is kept."""
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
            self.store.reserve(len(chunk), mine=reserved[0])
            reserved[0] += len(chunk)
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
        if stored.freed is not None:
            raise freed_file(stored)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if not self.store.delete(file_id):
            raise no_such_file(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})
