"""Where batch jobs are kept: the interface both job stores share, and what names a job.

A job store keeps, per job id, the manifest (JSON: the endpoint, the parts with their provider
batch ids, what is recorded) and the request lines, and gives the job's lock. Two stores share
it: folders under ``HOLYNB_HOME/batches`` (``holynb.batch.manifest.FileJobs``, the default) and
the team database (``holynb.team.jobs.TeamJobs``, with ``Session(database=...)``), where a
teammate on another machine attaches the same job. Downloaded output and error files stay in a
local folder either way (``files``): they can be fetched again from the provider.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from holynb.errors import BatchError

__all__ = ["JobStore", "checked_job_id", "is_job_id"]

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


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


class JobStore(Protocol):
    """Manifests, request lines and locks of batch jobs, by job id (ids are checked by the
    caller with ``checked_job_id`` before they reach a store)."""

    where: str  # how messages name the store ("HOLYNB_HOME" or the database, no password)

    @property
    def user(self) -> str | None:
        """Who its new jobs are made by (a team database's user; None: one machine)."""
        ...

    def lock(self, job_id: str) -> AbstractAsyncContextManager[None]:
        """Hold the job's lock (across objects, processes and, for a database, machines),
        waiting without blocking the loop; a process that dies lets go of it."""
        ...

    def load(self, job_id: str) -> bytes | None:
        """The job's manifest (JSON), or None when the store has none."""
        ...

    def save(self, job_id: str, manifest: bytes) -> None:
        """Replace the job's manifest, whole (never half written), committed on return."""
        ...

    def write_requests(self, job_id: str, lines: bytes) -> None:
        """Keep the job's request lines (before its first manifest is saved)."""
        ...

    def read_requests(self, job_id: str) -> bytes:
        """The request lines kept for the job."""
        ...

    def known(self) -> list[tuple[str, bytes]]:
        """``(job id, manifest)`` of every job in the store, oldest first."""
        ...

    def remove(self, job_id: str) -> None:
        """Forget the job (its manifest, requests and local files)."""
        ...

    def files(self, job_id: str) -> Path:
        """The local folder where the job's downloaded files are kept."""
        ...
