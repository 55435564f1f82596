"""The local record of Batch API jobs, so a restarted kernel finds them again.

Each job is a folder ``$HOLYNB_HOME/batches/<job id>/`` (``HOLYNB_HOME`` defaults to
``~/.holynb``) holding ``manifest.json`` (the endpoint, the parts with their provider batch ids
and last known status), ``requests.jsonl`` (every request, for results and resubmission) and the
output and error files once downloaded. The manifest is rewritten atomically (a temporary file
renamed over it), so a crash never leaves half a manifest. No API key is ever written.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from holynb._config import holynb_home

MANIFEST = "manifest.json"
REQUESTS = "requests.jsonl"
VERSION = 1


def batches_dir() -> Path:
    """The folder holding one sub-folder per batch job."""
    return holynb_home() / "batches"


def new_job_id() -> str:
    """A fresh job id that sorts by creation time, e.g. ``job-20261127-101500-3f9a1c``."""
    return f"job-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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
    version: int = VERSION

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
        """The manifest of ``job_id``, or None when this machine does not know it."""
        path = batches_dir() / job_id / MANIFEST
        if "/" in job_id or not path.is_file():
            return None
        return cls.from_json(orjson.loads(path.read_bytes()))

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
            found.append(Manifest.from_json(orjson.loads(path.read_bytes())))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
    return sorted(found, key=lambda m: (m.created_at, m.id))  # ids alone tie within a second
