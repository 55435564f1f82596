"""The local record of Batch API jobs, so a restarted kernel finds them again.

Each job is a folder ``$HOLYNB_HOME/batches/<job id>/`` (``HOLYNB_HOME`` defaults to
``~/.holynb``) holding ``manifest.json`` (the endpoint, the parts with their provider batch ids
and last known status), ``requests.jsonl`` (every request, for results and resubmission) and the
output and error files once downloaded (named by holynb, ``r<round>-p<part>.output.jsonl``,
never by a provider's id). The manifest is rewritten atomically (a temporary file renamed over
it), so a crash never leaves half a manifest, and it is the one truth about its job: whoever
changes it (any ``BatchJob`` object, in any process) holds the job's lock (``job_lock``), reads
it again, changes it and writes it back before letting go. No API key is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from holynb._config import holynb_home
from holynb.errors import BatchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per job
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
REQUESTS = "requests.jsonl"
LOCK = ".lock"
VERSION = 1
UNKNOWN = "unknown"  # a part whose POST /batches got no answer: it may exist on the provider
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_LOCK_POLL_S = 0.02


def batches_dir() -> Path:
    """The folder holding one sub-folder per batch job."""
    return holynb_home() / "batches"


def new_job_id() -> str:
    """A fresh job id that sorts by creation time, e.g. ``job-20261127-101500-3f9a1c``."""
    return f"job-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def is_job_id(job_id: Any) -> bool:
    """Whether ``job_id`` can name a job's folder: letters, digits, ``_`` and ``-``, no path."""
    return isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) is not None


def checked_job_id(job_id: Any) -> str:
    """``job_id`` when it is a job id, else BatchError (nothing is read with it)."""
    if not is_job_id(job_id):
        raise BatchError(
            f"{job_id!r} is not a job id (like 'job-20261127-101500-3f9a1c': letters, digits, "
            "_ and -); s.batches() lists the jobs this machine knows."
        )
    return str(job_id)


@contextlib.asynccontextmanager
async def job_lock(job_id: str) -> AsyncIterator[None]:
    """Hold the lock of job ``job_id`` (an exclusive ``flock`` on its folder's ``.lock``,
    across processes and across objects in one process), waiting without blocking the loop."""
    folder = batches_dir() / checked_job_id(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def part_key(job_id: str, round_: int, rows: list[int]) -> str:
    """The name of a job's part (its round and first row), for the budget's holds."""
    return f"{job_id}:{round_}:{rows[0] if rows else ''}"


@dataclass
class Part:
    """One provider batch of a job: which input rows it carries and where it stands."""

    batch_id: str
    input_file_id: str
    rows: list[int]
    round: int = 0
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    recorded: bool = False  # its lines are in the ledger
    worst_usd: float = 0.0  # its worst case at batch prices, held against the budget
    hold: int | None = None  # that hold's id (in the ledger log when the budget is shared)
    errors: list[str] = field(default_factory=list)  # why the provider refused its file
    label: str = ""  # "<round>:<n>/<parts>", the holynb_part metadata it was created with
    sent_at: float = 0.0  # when its POST /batches went out (epoch seconds)

    @property
    def created(self) -> bool:
        """Whether the provider is known to have created it (it has a batch id)."""
        return bool(self.batch_id)

    def stem(self, position: int) -> str:
        """The name of its local files (``r0-p1``): from its label, never from the provider."""
        head, _, tail = self.label.partition(":")
        number = tail.partition("/")[0]
        if head.isdigit() and number.isdigit():
            return f"r{int(head)}-p{int(number)}"
        return f"r{self.round}-x{position}"  # a manifest from before labels

    def key(self, job_id: str) -> str:
        """This part's name within every job, for the budget's holds."""
        return part_key(job_id, self.round, self.rows)


@dataclass
class Manifest:
    """What this machine knows about one job."""

    id: str
    base_url: str
    model: str
    created_at: str
    index: list[Any]
    index_name: Any = None
    texts: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    max_requests_per_file: int = 50_000
    max_bytes_per_file: int = 200 * 2**20
    schema: dict[str, Any] | None = None  # schema=: {"name", "schema"}, for the answer columns
    requests_sha256: str = ""  # of requests.jsonl: the same requests sent again are noticed
    # it ran on holynb's offline server of the process (kernel) that created it: the server,
    # and its batches, stop with that process
    offline_in_process: bool = False
    version: int = VERSION
    api: str = "openai"  # the wire format: "anthropic" for Message Batches

    @property
    def folder(self) -> Path:
        """This job's folder."""
        return batches_dir() / self.id

    def save(self) -> None:
        """Write the manifest atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2, default=str)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / MANIFEST)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_requests(self, encoded: list[bytes]) -> None:
        """Keep every request line (position = input row)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / REQUESTS).write_bytes(b"".join(encoded))

    def read_requests(self) -> list[bytes]:
        """The request lines kept at creation, one per input row."""
        return (self.folder / REQUESTS).read_bytes().splitlines(keepends=True)

    @classmethod
    def load(cls, job_id: str) -> Manifest | None:
        """The manifest of ``job_id``, or None when this machine does not know it. Raises
        BatchError for an id that is not a job id, or a manifest that names another job."""
        path = batches_dir() / checked_job_id(job_id) / MANIFEST
        if not path.is_file():
            return None
        manifest = cls.from_json(orjson.loads(path.read_bytes()))
        if manifest.id != job_id:
            raise BatchError(
                f"The manifest in the folder of job {job_id!r} names another job "
                f"({str(manifest.id)[:80]!r}): it is not trusted. Remove that folder from "
                "HOLYNB_HOME/batches if you did not put it there."
            )
        return manifest

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON form (keys a newer holynb added are ignored)."""
        part_keys = {f.name for f in fields(Part)}
        parts = [Part(**{k: v for k, v in p.items() if k in part_keys}) for p in data["parts"]]
        keys = {f.name for f in fields(cls)} - {"parts"}
        return cls(**{k: v for k, v in data.items() if k in keys}, parts=parts)


def known_jobs() -> list[Manifest]:
    """Every job this machine knows, oldest first (unreadable folders are skipped)."""
    root = batches_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            manifest = Manifest.from_json(orjson.loads(path.read_bytes()))
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            continue
        if manifest.id == path.parent.name and is_job_id(manifest.id):  # else planted
            found.append(manifest)
    return sorted(found, key=lambda m: (m.created_at, m.id))  # ids alone tie within a second
