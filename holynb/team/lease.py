"""A process's lease in the team database: what its budget holds and checkpoint claims hang on.

One row of ``holynb_leases`` per process and database, its ``expires`` pushed forward by a
heartbeat thread every third of the lease time (``HOLYNB_LEASE_S``, 30 s unless set). A process
that dies (``kill -9``, a lost machine) stops renewing; once its lease has expired, the next
reservation on a budget drops its holds, and its checkpoint claims can be taken over. A
process whose heartbeat was late renews a lapsed lease: its later settlements still count.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from holynb.team.database import Database

__all__ = ["LEASE_ENV", "Lease", "lease_seconds"]

LEASE_ENV = "HOLYNB_LEASE_S"
DEFAULT_LEASE_S = 30.0


def lease_seconds() -> float:
    """The lease time: ``HOLYNB_LEASE_S`` (seconds, at least 1), else 30."""
    try:
        value = float(os.environ.get(LEASE_ENV, "") or DEFAULT_LEASE_S)
    except ValueError:
        value = DEFAULT_LEASE_S
    return max(value, 1.0)


class Lease:
    """This process's lease on ``db`` (``Lease.of(db, user)``), renewed while the process lives."""

    _leases: ClassVar[dict[tuple[int, int], Lease]] = {}
    _lock = threading.Lock()

    def __init__(self, db: Database, user: str, seconds: float | None = None) -> None:
        self.db = db
        self.user = user
        self.seconds = seconds or lease_seconds()
        self.id = uuid.uuid4().hex
        self._stop = threading.Event()
        self.renew()
        with db.connection("clean up old leases in") as conn:
            conn.execute("DELETE FROM holynb_leases WHERE expires < now() - interval '1 day'")
        self._thread = threading.Thread(target=self._beat, name="holynb-lease", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, db: Database, user: str) -> Lease:
        """The process's one lease on ``db`` (made on first use)."""
        key = (id(db), os.getpid())
        with cls._lock:
            lease = cls._leases.get(key)
            if lease is None:
                lease = cls._leases[key] = cls(db, user)
            return lease

    def renew(self) -> None:
        """Push ``expires`` forward (making the row again if it was dropped)."""
        with self.db.connection("renew this process's lease in") as conn:
            conn.execute(
                'INSERT INTO holynb_leases (id, "user", host, pid, expires)'
                " VALUES (%s, %s, %s, %s, now() + %s * interval '1 second')"
                " ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires",
                (self.id, self.user, socket.gethostname(), os.getpid(), self.seconds),
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except Exception:
                continue

    def stop(self) -> None:
        """Stop renewing (the lease then expires by itself)."""
        self._stop.set()
