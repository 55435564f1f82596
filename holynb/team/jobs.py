"""Batch jobs in the team database: ``holynb.batch.manifest.FileJobs``'s twin.

``Session(database=URL).batch(...)`` keeps the job's manifest and request lines in one row of
``holynb_jobs`` (with who made it and when), so a teammate on another machine (another
``HOLYNB_HOME``, the same database) sees it in ``s.batches()``, attaches it, follows it and
reads its results. Each save is one committed statement: a crash never leaves half a manifest,
and a provider batch's id is in the database before anything else happens. The job's lock is a
transaction-level advisory lock held on a pooled connection for as long as the lock is: a
process that dies (its connection closed) lets go of it at once. A save also renews the lease
``job:<id>`` its holds on a named budget hang on (``TeamBudget.reserve_all``). Downloaded
output and error files stay in a local folder, ``HOLYNB_HOME/team-batches/<id>``: they can be
fetched again from the provider. No API key is ever stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from holynb._config import holynb_home
from holynb.budget import JOB_OWNER
from holynb.errors import BatchError
from holynb.jobstore import checked_job_id
from holynb.team.budgets import JOB_HOLD_S

if TYPE_CHECKING:
    from holynb.team.database import Database

__all__ = ["TeamJobs"]

_LOCK_CLASS = 0x686F6C79  # "holy": the advisory lock space of jobs (migrations use another)
_LOCK_POLL_S = 0.05


class TeamJobs:
    """The batch jobs of a team database, as a ``holynb.jobstore.JobStore``.

    >>> jobs = TeamJobs(Database.of(url), user="alice")
    >>> jobs.known()            # [(job id, manifest JSON)] of every user, oldest first
    """

    def __init__(self, db: Database, user: str) -> None:
        self.db = db
        self.user = user
        self.where = f"the team database {db.where}"

    def __repr__(self) -> str:
        return f"TeamJobs({self.db.where!r})"

    @contextlib.asynccontextmanager
    async def lock(self, job_id: str) -> AsyncIterator[None]:
        """Hold the job's lock across processes and machines: a transaction-level advisory
        lock on a connection kept for as long as it is held (tried, then polled with
        ``asyncio.sleep``, so the loop is never blocked while another holds it)."""
        key = checked_job_id(job_id)
        while True:
            with self.db.connection("lock a batch job in") as conn, conn.transaction():
                row = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, key)
                ).fetchone()
                if row is not None and row[0]:
                    yield  # the lock ends with this transaction (or its connection)
                    return
            await asyncio.sleep(_LOCK_POLL_S)

    def load(self, job_id: str) -> bytes | None:
        """The job's manifest, or None."""
        with self.db.connection("read a batch job from") as conn:
            row = conn.execute(
                "SELECT manifest FROM holynb_jobs WHERE id = %s", (checked_job_id(job_id),)
            ).fetchone()
        return row[0].encode() if row is not None and row[0] is not None else None

    def save(self, job_id: str, manifest: bytes) -> None:
        """Replace the job's manifest (one committed transaction) and renew the lease its
        holds on a named budget hang on: a job someone follows keeps them."""
        job_id = checked_job_id(job_id)
        with self.db.connection("save a batch job in") as conn, conn.transaction():
            conn.execute(
                'INSERT INTO holynb_jobs (id, "user", manifest) VALUES (%s, %s, %s)'
                " ON CONFLICT (id) DO UPDATE SET manifest = EXCLUDED.manifest, updated = now()",
                (job_id, self.user, manifest.decode()),
            )
            conn.execute(
                "UPDATE holynb_leases SET expires = greatest(expires,"
                " now() + %s * interval '1 second') WHERE id = %s",
                (JOB_HOLD_S, JOB_OWNER + job_id),
            )

    def write_requests(self, job_id: str, lines: bytes) -> None:
        """Keep the job's request lines (its row is made here, its manifest saved next)."""
        with self.db.connection("save a batch job in") as conn:
            conn.execute(
                'INSERT INTO holynb_jobs (id, "user", requests) VALUES (%s, %s, %s)'
                " ON CONFLICT (id) DO UPDATE SET requests = EXCLUDED.requests, updated = now()",
                (checked_job_id(job_id), self.user, lines),
            )

    def read_requests(self, job_id: str) -> bytes:
        """The job's request lines."""
        with self.db.connection("read a batch job from") as conn:
            row = conn.execute(
                "SELECT requests FROM holynb_jobs WHERE id = %s", (checked_job_id(job_id),)
            ).fetchone()
        if row is None or row[0] is None:
            raise BatchError(
                f"The team database {self.db.where} keeps no requests for job {job_id!r}: its "
                "rows cannot be read back or sent again."
            )
        return bytes(row[0])

    def known(self) -> list[tuple[str, bytes]]:
        """``(job id, manifest)`` of every job in the database, oldest first."""
        with self.db.connection("read the batch jobs of") as conn:
            rows = conn.execute(
                "SELECT id, manifest FROM holynb_jobs WHERE manifest IS NOT NULL"
                " ORDER BY created, id"
            ).fetchall()
        return [(job_id, manifest.encode()) for job_id, manifest in rows]

    def remove(self, job_id: str) -> None:
        """Forget the job in the database, and its local downloads."""
        job_id = checked_job_id(job_id)
        with self.db.connection("forget a batch job in") as conn, conn.transaction():
            conn.execute("DELETE FROM holynb_jobs WHERE id = %s", (job_id,))
            conn.execute(
                "DELETE FROM holynb_batch_parts WHERE starts_with(key, %s)", (job_id + ":",)
            )
        shutil.rmtree(self.files(job_id), ignore_errors=True)

    def files(self, job_id: str) -> Path:
        """``HOLYNB_HOME/team-batches/<id>``: where this machine keeps the job's downloads."""
        return holynb_home() / "team-batches" / checked_job_id(job_id)
