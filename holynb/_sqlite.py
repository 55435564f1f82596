"""One SQLite file that threads and processes share: the base of the ledger log and the store
of answers (checkpoint and cache).

WAL journal with ``synchronous=NORMAL`` (a SIGKILL loses nothing committed; see REFERENCE.md),
one connection per process (a forked child never reuses its parent's), a lock around every use,
and the file's own checks and migrations when a connection opens (``_open``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Self

from holynb.errors import ConfigurationError


class SQLiteFile:
    """A SQLite file opened on first use in each process; subclasses say how to prepare it."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self._timeout = timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = -1

    def _open(self, db: sqlite3.Connection) -> None:
        """Check and migrate a new connection (subclasses); ``use_wal`` turns the journal on."""
        use_wal(db)

    def _unusable(self, err: sqlite3.DatabaseError) -> str:
        """The error message when the file cannot be used (subclasses say what it is for)."""
        return f"Cannot use {str(self.path)!r} ({err}): give a new file name."

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        # First use, or in a forked child: never reuse a parent's connection.
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            self._open(db)
        except sqlite3.DatabaseError as err:
            raise ConfigurationError(self._unusable(err)) from err
        self._db, self._pid = db, os.getpid()
        return db

    def close(self) -> None:
        """Close the file (the last connection to close folds the WAL back into it)."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def use_wal(db: sqlite3.Connection) -> None:
    """WAL journal, ``synchronous=NORMAL``: safe under SIGKILL, one fsync per checkpoint."""
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
