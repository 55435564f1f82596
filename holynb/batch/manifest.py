"""The record of Batch API jobs, so a restarted kernel (or a teammate) finds them again.

A job's manifest (the endpoint, the parts with their provider batch ids and last known status,
what is recorded) and its request lines (for results and resubmission) live in a job store
(``holynb.jobstore.JobStore``): by default ``FileJobs``, a folder ``$HOLYNB_HOME/batches/<job
id>/`` (``HOLYNB_HOME`` defaults to ``~/.holynb``) holding ``manifest.json`` and
``requests.jsonl``; with a team database ``holynb.team.jobs.TeamJobs``. The output and error
files once downloaded stay in a local folder (named by holynb, ``r<round>-p<part>.output.jsonl``,
never by a provider's id). A manifest is replaced whole (a file renamed over it, or one committed
row), so a crash never leaves half a manifest, and it is the one truth about its job: whoever
changes it (any ``BatchJob`` object, in any process) holds the job's lock, reads it again,
changes it and writes it back before letting go. No API key is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from holynb._config import holynb_home
from holynb.errors import BatchError
from holynb.jobstore import JobStore, checked_job_id, is_job_id

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per job
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
REQUESTS = "requests.jsonl"
LOCK = ".lock"
VERSION = 1
UNKNOWN = "unknown"  # a part whose POST /batches got no answer: it may exist on the provider
_LOCK_POLL_S = 0.02


def batches_dir() -> Path:
    """The folder holding one sub-folder per batch job."""
    return holynb_home() / "batches"


def new_job_id() -> str:
    """A fresh job id that sorts by creation time, e.g. ``job-20261127-101500-3f9a1c``."""
    return f"job-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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


class FileJobs:
    """The jobs of this machine: one folder per job under ``HOLYNB_HOME/batches`` (read when
    used, so a changed ``HOLYNB_HOME`` is followed), locked with ``job_lock``.

    >>> FileJobs().known()      # [(job id, manifest JSON)], oldest folder name first
    """

    where = "HOLYNB_HOME"
    user: str | None = None  # one machine's jobs are its user's

    def __repr__(self) -> str:
        return f"FileJobs({str(batches_dir())!r})"

    def lock(self, job_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The job's ``flock`` (``job_lock``)."""
        return job_lock(job_id)

    def files(self, job_id: str) -> Path:
        """The job's folder: its manifest, requests and downloads."""
        return batches_dir() / checked_job_id(job_id)

    def load(self, job_id: str) -> bytes | None:
        """``manifest.json`` of the job's folder, or None."""
        path = self.files(job_id) / MANIFEST
        return path.read_bytes() if path.is_file() else None

    def save(self, job_id: str, manifest: bytes) -> None:
        """Write ``manifest.json`` atomically (a temporary file renamed over it)."""
        folder = self.files(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(manifest)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / MANIFEST)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_requests(self, job_id: str, lines: bytes) -> None:
        """Write ``requests.jsonl``."""
        folder = self.files(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / REQUESTS).write_bytes(lines)

    def read_requests(self, job_id: str) -> bytes:
        """``requests.jsonl``."""
        return (self.files(job_id) / REQUESTS).read_bytes()

    def known(self) -> list[tuple[str, bytes]]:
        """Every folder with a manifest (a folder not named as a job id is skipped)."""
        root = batches_dir()
        if not root.is_dir():
            return []
        found = []
        for path in sorted(root.glob(f"*/{MANIFEST}")):
            if is_job_id(path.parent.name):
                with contextlib.suppress(OSError):
                    found.append((path.parent.name, path.read_bytes()))
        return found

    def remove(self, job_id: str) -> None:
        """Remove the job's folder."""
        shutil.rmtree(self.files(job_id), ignore_errors=True)


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
    team_hold: int | None = None  # its hold on the named budget (team database), if any
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
    budget: str | None = None  # the named budget (team database) its parts are held on
    user: str | None = None  # who made it, in a team database
    # where it is kept: not part of its JSON
    store: JobStore = field(default_factory=FileJobs, repr=False, compare=False)

    @property
    def folder(self) -> Path:
        """This job's local folder (its downloads; with ``FileJobs`` its manifest too)."""
        return self.store.files(self.id)

    def lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold this job's lock in its store."""
        return self.store.lock(self.id)

    def to_json(self) -> bytes:
        """The manifest's JSON form (without its store)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "store"}
        data["parts"] = [asdict(p) for p in self.parts]
        return orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str)

    def save(self) -> None:
        """Write the manifest whole into its store."""
        self.store.save(self.id, self.to_json())

    def write_requests(self, encoded: list[bytes]) -> None:
        """Keep every request line (position = input row)."""
        self.store.write_requests(self.id, b"".join(encoded))

    def read_requests(self) -> list[bytes]:
        """The request lines kept at creation, one per input row."""
        return self.store.read_requests(self.id).splitlines(keepends=True)

    @classmethod
    def load(cls, job_id: str, store: JobStore | None = None) -> Manifest | None:
        """The manifest of ``job_id`` in ``store`` (default: this machine's folders), or None
        when it has none. Raises BatchError for an id that is not a job id, or a manifest that
        names another job."""
        store = store if store is not None else FileJobs()
        data = store.load(checked_job_id(job_id))
        if data is None:
            return None
        manifest = cls.from_json(orjson.loads(data), store)
        if manifest.id != job_id:
            raise BatchError(
                f"The manifest of job {job_id!r} in {store.where} names another job "
                f"({str(manifest.id)[:80]!r}): it is not trusted. Remove it (HOLYNB_HOME/batches "
                "or the team database's holynb_jobs) if you did not put it there."
            )
        return manifest

    @classmethod
    def from_json(cls, data: dict[str, Any], store: JobStore | None = None) -> Manifest:
        """A manifest from its JSON form (keys a newer holynb added are ignored)."""
        part_keys = {f.name for f in fields(Part)}
        parts = [Part(**{k: v for k, v in p.items() if k in part_keys}) for p in data["parts"]]
        keys = {f.name for f in fields(cls)} - {"parts", "store"}
        kept = {k: v for k, v in data.items() if k in keys}
        return cls(**kept, parts=parts, store=store if store is not None else FileJobs())


def known_jobs(store: JobStore | None = None) -> list[Manifest]:
    """Every job ``store`` (default: this machine's folders) knows, oldest first (unreadable
    manifests are skipped)."""
    store = store if store is not None else FileJobs()
    found = []
    for job_id, data in store.known():
        try:
            manifest = Manifest.from_json(orjson.loads(data), store)
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            continue
        if manifest.id == job_id and is_job_id(manifest.id):  # else planted
            found.append(manifest)
    return sorted(found, key=lambda m: (m.created_at, m.id))  # ids alone tie within a second
