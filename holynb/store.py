"""The ledger on disk: every CallRecord appended to SQLite as it happens, and loaded back.

SQLite in WAL mode with ``synchronous=NORMAL``: each ``append`` is its own committed
transaction, so a crash of the process (even ``kill -9``) loses no row whose ``append`` returned,
and never corrupts the file. (A power cut may lose the last few commits, never older ones.)
Several threads and several processes may append to one file at once; SQLite's locks
serialise the writes. Keep the file on a local disk: WAL does not work over network shares.

The schema has a version (``PRAGMA user_version``) and a list of migrations, like simonw/llm:
a file written by an older holynb is upgraded when opened.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from holynb._sqlite import Migration, SQLiteFile, use_wal
from holynb.budget import JOB_OWNER
from holynb.errors import ConfigurationError, StoreError
from holynb.ledger import COLUMNS, CallRecord

if TYPE_CHECKING:
    from holynb.budget import Check
    from holynb.jobstore import JobStore
    from holynb.keystore import AnswerStore

__all__ = ["LOG_PATH_ENV", "LedgerLog", "LedgerStore", "default_log_path", "foreign_database"]

LOG_PATH_ENV = "HOLYNB_LOG_PATH"
TABLE = "calls"
HOLDS = "holds"
PARTS = "batch_parts"
_COLUMN_LIST = ", ".join(COLUMNS)
_INSERT = f"INSERT INTO {TABLE} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"


def default_log_path() -> Path | None:
    """The log file named by the ``HOLYNB_LOG_PATH`` environment variable (``~`` expanded),
    or None when it is unset or empty."""
    value = os.environ.get(LOG_PATH_ENV, "").strip()
    return Path(value).expanduser() if value else None


class LedgerLog(Protocol):
    """Where a meter records its calls: this SQLite file (``LedgerStore``) or the team's
    PostgreSQL database (``holynb.team.ledger.TeamLog``). ``release`` ends a budget hold in
    the same write as the record (a hold of the store's own kind); ``shares_holds`` says
    whether a session's ``budget_usd`` keeps its holds in the store for other processes."""

    shares_holds: bool

    def append(self, record: CallRecord, *, release: int | None = None) -> None:
        """Write one record, committed when this returns."""
        ...

    def extend(
        self,
        records: Iterable[CallRecord],
        *,
        release: int | None = None,
        budget: str | None = None,
        once: str | None = None,
    ) -> bool:
        """Write several records in one transaction; ``budget`` names the team database's
        named budget they are charged to (a batch job's; ``""``: none; None: the session's).
        ``once`` (a batch part's key) writes them only if that key was never written with
        them (a store that remembers keys); whether they were written."""
        ...

    def load(self) -> list[CallRecord]:
        """The records a new session starts its ledger with, oldest first."""
        ...

    def close(self) -> None:
        """Let go of the store's connection (it opens again on the next write)."""
        ...

    def answer_store(self) -> AnswerStore | None:
        """Where ``cache=True`` keeps answers beside this log (None: the default file)."""
        ...

    def shared_checkpoint(self, name: str) -> AnswerStore | None:
        """The job ``checkpoint=name`` names beside this log (None: ``name`` is a file)."""
        ...

    def job_store(self) -> JobStore | None:
        """Where batch jobs live beside this log (None: this machine's folders)."""
        ...


# -- migrations: append new ones, never edit old ones -------------------------------------------


def _m001_calls(db: sqlite3.Connection) -> None:
    db.execute(
        f"""CREATE TABLE {TABLE} (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            model TEXT NOT NULL,
            kind TEXT NOT NULL,
            ok INTEGER NOT NULL,
            error TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            latency_ms REAL,
            ttft_ms REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            request_id TEXT,
            tag TEXT,
            interrupted INTEGER NOT NULL DEFAULT 0,
            usage_estimated INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(f"CREATE INDEX {TABLE}_ts ON {TABLE} (ts)")


def _m002_cache_columns(db: sqlite3.Connection) -> None:
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0")
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN saved_usd REAL")


def _m003_holds(db: sqlite3.Connection) -> None:
    # Budget reservations of calls in flight, so kernels sharing the log hold one budget.
    db.execute(
        f"""CREATE TABLE {HOLDS} (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            usd REAL NOT NULL,
            created TEXT NOT NULL
        )"""
    )


def _m004_cheaper_paths(db: sqlite3.Connection) -> None:
    # service tiers and prompt caching (issue 20): columns added, nothing else changed
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN service_tier TEXT")
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0")
    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN cache_ttl TEXT")


def _m005_batch_parts(db: sqlite3.Connection) -> None:
    # the batch parts whose rows this file holds, written with them: a part whose manifest
    # save was lost after its rows were written is not written twice
    db.execute(f"CREATE TABLE {PARTS} (key TEXT PRIMARY KEY, recorded TEXT NOT NULL)")


MIGRATIONS: tuple[Migration, ...] = (
    _m001_calls,
    _m002_cache_columns,
    _m003_holds,
    _m004_cheaper_paths,
    _m005_batch_parts,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema of ``db`` up to ``SCHEMA_VERSION``, in one transaction (safe when several
    processes open a new file at once); return the version it had before."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"This ledger file has schema version {version}, newer than this holynb knows "
                f"({SCHEMA_VERSION}): upgrade holynb, or use another log_path."
            )
        for number in range(version, SCHEMA_VERSION):
            MIGRATIONS[number](db)
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return version


def foreign_database(db: sqlite3.Connection) -> bool:
    """Whether ``db`` already holds tables that are not a holynb log (read only: it changes
    nothing, so a refused file stays byte-identical)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return False  # a new or empty file
    version = db.execute("PRAGMA user_version").fetchone()[0]
    return TABLE not in tables or version == 0


# -- the store ---------------------------------------------------------------------------------


class LedgerStore(SQLiteFile):
    """An append-only SQLite file of CallRecords that survives crashes and kernel restarts.

    >>> store = LedgerStore("calls.sqlite")
    >>> store.append(record)           # committed when it returns
    >>> records = store.load()         # oldest first, equal to what was appended
    >>> store.close()
    """

    MIGRATIONS = MIGRATIONS
    WHAT = "ledger log"
    shares_holds = True  # a budget_usd over this log is held by every process sharing it

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        super().__init__(path, timeout=timeout)
        self._last_id = 0  # the highest row id this store has read or written
        self._mine: set[int] = set()  # ids this store wrote above _last_id
        self._connect()

    def _open(self, db: sqlite3.Connection) -> None:
        if foreign_database(db):  # before WAL is switched on: someone else's file stays as it is
            db.close()
            raise ConfigurationError(
                f"{self.path.name!r} is an SQLite database that is not a holynb log; holynb "
                "leaves it untouched. Choose another file for log_path= (or "
                "HOLYNB_LOG_PATH), e.g. a new name ending in .sqlite."
            )
        use_wal(db)
        migrate(db)

    def answer_store(self) -> None:
        """None: with a log file, ``cache=True`` keeps its file under ``HOLYNB_HOME``."""
        return None

    def shared_checkpoint(self, name: str) -> None:
        """None: with a log file, a checkpoint is a file too."""
        return None

    def job_store(self) -> None:
        """None: with a log file, batch jobs stay in this machine's folders."""
        return None

    def _unusable(self, err: sqlite3.DatabaseError) -> str:
        return (
            f"Cannot use {str(self.path)!r} as a ledger log ({err}): give log_path= a new "
            "file name or an existing holynb log."
        )

    def _damaged(self, err: sqlite3.DatabaseError) -> str:
        return (
            f"{str(self.path)!r} is damaged ({err}): move it away and keep it (it is the record "
            "of what was spent; sqlite3's .recover may save its rows), then give log_path= a "
            "new file name (this session's calls are in session.ledger)."
        )

    def append(self, record: CallRecord, *, release: int | None = None) -> None:
        """Write one record; it is committed (crash-safe) when this returns. Thread-safe.
        ``release`` ends that budget hold in the same transaction (see ``hold``), so other
        processes never see the call counted twice or not at all."""
        row = _to_row(record)
        with self._using() as db:
            if release is None:
                rowid = db.execute(_INSERT, row).lastrowid
            else:
                with _transaction(db):
                    rowid = db.execute(_INSERT, row).lastrowid
                    db.execute(f"DELETE FROM {HOLDS} WHERE id = ?", (release,))
            if rowid is not None and rowid > self._last_id:
                self._mine.add(rowid)

    # -- budget holds (holynb.budget.SharedHolds) ------------------------------------------------

    def hold(self, usd: float, check: Check) -> int:
        """Reserve ``usd`` for a call about to be sent, atomically with the budget's check:
        in one write transaction, the records other processes appended since this store last
        looked and the total still held by calls in flight (holds of processes that died are
        dropped first) are given to ``check``, which raises to refuse; then the hold is
        written. Its id goes to ``append(..., release=)`` or ``release``."""
        return self.hold_all([usd], check)[0]

    def hold_all(
        self, amounts: Sequence[float], check: Check, owner: str | None = None
    ) -> list[int]:
        """``hold`` for several amounts checked together (a batch job's parts): all are held
        or none. ``owner`` names who holds them when it is not this process (``job:<id>``:
        a batch job's holds outlive the kernel that made them, until its results are
        recorded)."""
        who = owner or process_owner()
        with self._using() as db, _transaction(db):
            others = self._read_others(db)
            _drop_dead_holds(db)
            held = db.execute(f"SELECT coalesce(sum(usd), 0) FROM {HOLDS}").fetchone()[0]
            check(others, float(held))
            created = datetime.now(UTC).isoformat()
            ids = []
            for usd in amounts:
                cursor = db.execute(
                    f"INSERT INTO {HOLDS} (owner, usd, created) VALUES (?, ?, ?)",
                    (who, float(usd), created),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            return ids

    def release(self, hold: int) -> None:
        """End a hold without a record (the call was refused, failed before any answer, or its
        record could not be written); a no-op when it has ended already."""
        with self._using() as db:
            db.execute(f"DELETE FROM {HOLDS} WHERE id = ?", (hold,))

    def held_usd(self) -> float:
        """What calls in flight hold in this file, every process's (dead ones' dropped)."""
        with self._using() as db, _transaction(db):
            _drop_dead_holds(db)
            return float(db.execute(f"SELECT coalesce(sum(usd), 0) FROM {HOLDS}").fetchone()[0])

    def extend(
        self,
        records: Iterable[CallRecord],
        *,
        release: int | None = None,
        budget: str | None = None,
        once: str | None = None,
    ) -> bool:
        """Write several records in one transaction (all or none), ending the hold
        ``release`` in the same transaction; True. ``budget``: named budgets live in a team
        database only, so a file refuses one. ``once`` (a batch part's key) is kept with the
        rows: a part this file holds already is not written again (False; the hold ends)."""
        if budget:
            raise ConfigurationError(
                f"The named budget {budget!r} lives in a team database, not in {self.path}."
            )
        rows = [_to_row(r) for r in records]
        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                first = self._max_id(db) + 1
                written = True
                if once is not None:
                    stamp = datetime.now(UTC).isoformat()
                    new = db.execute(f"INSERT OR IGNORE INTO {PARTS} VALUES (?, ?)", (once, stamp))
                    written = new.rowcount > 0  # else this file holds that part already
                    rows = rows if written else []
                db.executemany(_INSERT, rows)
                if release is not None:
                    db.execute(f"DELETE FROM {HOLDS} WHERE id = ?", (release,))
                self._mine.update(range(max(first, self._last_id + 1), self._max_id(db) + 1))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return written

    def load(self) -> list[CallRecord]:
        """Every record in the file, oldest first."""
        with self._using() as db:
            cursor = db.execute(f"SELECT id, {_COLUMN_LIST} FROM {TABLE} ORDER BY id")
            rows = cursor.fetchall()
            if rows:
                self._last_id = max(self._last_id, rows[-1][0])
            self._mine.clear()
            return [self._record(row) for row in rows]

    def load_others(self) -> list[CallRecord]:
        """The records other connections (other processes, kernels) appended since this store
        last read or wrote, oldest first: what a budget on a shared log must also count."""
        with self._using() as db:
            return self._read_others(db)

    def _read_others(self, db: sqlite3.Connection) -> list[CallRecord]:
        rows = db.execute(
            f"SELECT id, {_COLUMN_LIST} FROM {TABLE} WHERE id > ? ORDER BY id", (self._last_id,)
        )
        records = []
        for row in rows.fetchall():
            self._last_id = max(self._last_id, row[0])
            if row[0] not in self._mine:
                records.append(self._record(row))
        self._mine.clear()
        return records

    def _record(self, row: tuple[Any, ...]) -> CallRecord:
        """The record of a row read with its id first; an unreadable one is a ``StoreError``
        (skipping it would hide what was spent)."""
        try:
            return _from_row(row[1:])
        except (TypeError, ValueError) as err:
            raise StoreError(
                f"{str(self.path)!r} holds a row holynb did not write (row {row[0]}: {err}), so "
                "what it says was spent cannot be trusted. Move it away (keep it for the record) "
                "and give log_path= a new file name."
            ) from None

    def _max_id(self, db: sqlite3.Connection) -> int:
        return db.execute(f"SELECT max(id) FROM {TABLE}").fetchone()[0] or 0

    def __len__(self) -> int:
        with self._using() as db:
            return db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


_owner: tuple[int, str] | None = None


def process_owner() -> str:
    """This process as the owner of budget holds: ``host:pid:start``, where ``start`` (the
    process's start time, from /proc where there is one) tells a reused pid apart."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"{socket.gethostname()}:{pid}:{_start_time(pid)}")
    return _owner[1]


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat.rsplit(b")", 1)[-1].split()[19].decode()  # field 22, after the command name


def _alive(owner: str) -> bool:
    if owner.startswith(JOB_OWNER):
        return True  # a batch job's hold lasts until its results are recorded
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's (a log is a local file: unusual) is kept
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return not start or _start_time(pid) in ("", start)


def _drop_dead_holds(db: sqlite3.Connection) -> None:
    owners = [o for (o,) in db.execute(f"SELECT DISTINCT owner FROM {HOLDS}")]
    dead = [o for o in owners if o != process_owner() and not _alive(o)]
    if dead:
        db.executemany(f"DELETE FROM {HOLDS} WHERE owner = ?", [(o,) for o in dead])


def _to_row(record: CallRecord) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in COLUMNS:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, str):
            value = _encodable(value)
        row.append(value)
    return tuple(row)


def _from_row(row: tuple[Any, ...]) -> CallRecord:
    """The CallRecord of one row, every column checked first (a shared file may hold anything:
    a cost that is text would break every sum later); raises ValueError saying which."""
    values = dict(zip(COLUMNS, row, strict=True))
    for name, value in values.items():
        kind = _KINDS[name]
        if value is None and kind.endswith("| None"):
            continue
        if not _fits(kind, value):
            raise ValueError(f"{name} is {value!r}, not a valid {kind}")
        if kind == "bool":
            values[name] = bool(value)
    try:
        values["ts"] = datetime.fromisoformat(values["ts"])
    except ValueError:
        raise ValueError(f"ts is {values['ts']!r}, not a date and time") from None
    return CallRecord(**values)


_KINDS = {f.name: str(f.type) for f in fields(CallRecord)}


def _fits(kind: str, value: Any) -> bool:
    base = kind.removesuffix(" | None")
    if base in ("str", "datetime"):
        return isinstance(value, str)
    if base == "bool":
        return value in (0, 1) and isinstance(value, int)
    if base == "int":
        return isinstance(value, int) and value >= 0
    if base == "float":  # any float holynb may have written (a cost is checked when made)
        return isinstance(value, (int, float))
    return True


def _encodable(text: str) -> str:
    # A lone surrogate (from a bad decode upstream) cannot be stored as UTF-8: replace it
    # rather than lose the whole row.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
