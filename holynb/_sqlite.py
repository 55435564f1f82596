"""One SQLite file that threads and processes share: the base of the ledger log and the store
of answers (checkpoint and cache).

WAL journal with ``synchronous=NORMAL`` (a SIGKILL loses nothing committed; see REFERENCE.md),
one connection per process (a forked child never reuses its parent's), a lock around every use,
and the file's own checks and migrations when a connection opens (``_open``).

These files may be shared (a team's cache, a checkpoint sent along with a notebook), so a file
is distrusted until checked: it is opened with ``trusted_schema`` off, and refused when its
schema holds anything holynb did not make (a trigger could rewrite the answers other people
store later, a view or a changed table could show something else than what is stored). A file
that turns out damaged while in use is a ``StoreError`` naming it and saying what to do, never a
raw ``sqlite3.DatabaseError``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Self

from holynb.errors import StoreError

__all__ = ["SQLiteFile", "check_schema", "reference_schema", "schema_of", "use_wal"]

Migration = Callable[[sqlite3.Connection], None]
SchemaEntry = tuple[str, str, str, str]  # type, name, table, SQL (whitespace squeezed)
_SPACE = re.compile(r"\s+")
_PRAGMA_NAME = re.compile(r"[a-z_]+")
_AROUND_PUNCTUATION = re.compile(r"\s*([(),])\s*")


class SQLiteFile:
    """A SQLite file opened on first use in each process; subclasses say how to prepare it.

    ``MIGRATIONS`` (the subclass's schema, one function per ``user_version``) is also what a
    file is checked against: at a version holynb knows, its schema must be exactly what those
    migrations make. ``WHAT`` names the file in messages (``"answer store"``)."""

    MIGRATIONS: ClassVar[tuple[Migration, ...]] = ()
    WHAT: ClassVar[str] = "holynb file"

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

    def _damaged(self, err: sqlite3.DatabaseError) -> str:
        """The error message when the file turns out damaged in use (subclasses say what is
        lost by deleting it)."""
        return (
            f"{str(self.path)!r} is damaged ({err}): delete it (what it holds is lost) or give "
            "another path."
        )

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        # First use, or in a forked child: never reuse a parent's connection.
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA trusted_schema = OFF")  # no functions run from the file's schema
            check_schema(db, self.path, self.WHAT, self.MIGRATIONS)  # before anything is written
            self._open(db)
        except sqlite3.DatabaseError as err:
            if db is not None:
                db.close()
            raise StoreError(self._unusable(err)) from err
        except BaseException:
            if db is not None:
                db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; a damaged file raises ``StoreError`` (a locked or
        busy one keeps its ``sqlite3.OperationalError``: it may pass)."""
        with self._lock:
            db = self._connect()
            try:
                yield db
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.IntegrityError):
                    raise
                raise StoreError(self._damaged(err)) from err

    def wait_at_most(self, seconds: float) -> None:
        """How long a write waits for another process's lock on the file before it fails
        (30 s unless set): this process's busy timeout."""
        with self._lock:
            self._timeout = seconds
            if self._db is not None and self._pid == os.getpid():
                self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def pragma(self, name: str) -> object:
        """The value of ``PRAGMA name`` on this process's connection (read only), e.g.
        ``store.pragma("trusted_schema")`` is 0: for checks and diagnostics."""
        if not _PRAGMA_NAME.fullmatch(name):
            raise ValueError(f"not a pragma name: {name!r}")
        with self._using() as db:
            row = db.execute(f"PRAGMA {name}").fetchone()
        return None if row is None else row[0]

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


def check_schema(
    db: sqlite3.Connection, path: Path, what: str, migrations: tuple[Migration, ...]
) -> None:
    """Refuse (``StoreError``, the file untouched) a file whose schema holds a trigger or a
    view, or, at a version these ``migrations`` know, anything but exactly what they make.
    A new file passes; a version 0 file with tables or a newer version is left to the
    store's own checks (someone else's database, a newer holynb)."""
    found = schema_of(db)
    for kind, name, _, _ in sorted(found):
        if kind in ("trigger", "view"):
            raise StoreError(_planted(path, what, kind, name))
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if not found or not 0 < version <= len(migrations):
        return
    expected = reference_schema(migrations, version)
    for kind, name, table, sql in sorted(found ^ expected):
        if (kind, name, table, sql) in found:
            raise StoreError(_planted(path, what, kind, name))
        raise StoreError(
            f"{str(path)!r} lacks the {kind} {name!r} of a holynb {what}, or holds another one "
            "under that name: holynb will not use it. Delete it or give another path."
        )


def schema_of(db: sqlite3.Connection) -> frozenset[SchemaEntry]:
    """What ``sqlite_master`` lists (SQLite's own statistics tables left out), SQL squeezed."""
    rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return frozenset(
        (kind, name, table, _squeeze(sql))
        for kind, name, table, sql in rows
        if not (kind == "table" and name.startswith("sqlite_stat"))
    )


@functools.cache
def reference_schema(migrations: tuple[Migration, ...], version: int) -> frozenset[SchemaEntry]:
    """The schema the first ``version`` of ``migrations`` make, read from an in-memory file."""
    db = sqlite3.connect(":memory:")
    try:
        for migration in migrations[:version]:
            migration(db)
        return schema_of(db)
    finally:
        db.close()


def _squeeze(sql: str | None) -> str:
    return _AROUND_PUNCTUATION.sub(r"\1", _SPACE.sub(" ", sql or "")).strip()


def _planted(path: Path, what: str, kind: str, name: str) -> str:
    return (
        f"{str(path)!r} holds a {kind} {name!r} that holynb did not make (a holynb {what} has "
        "no triggers or views): it may have been planted to change what is stored or shown. "
        "holynb will not use the file and leaves it untouched: delete it or give another path."
    )
