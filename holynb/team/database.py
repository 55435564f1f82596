"""The team database: one PostgreSQL URL, a connection pool per process, the schema migrated.

``Database.of(url)`` gives the process's one ``Database`` for a URL (sessions naming the same
URL share its pool). The first use connects (``connect_timeout``, 5 s unless the URL says
otherwise), brings the schema up to date (``holynb.team.schema``) and opens a psycopg pool.
Every failure is a ``StoreError`` naming host, port and database; the password never appears
in a message, a repr or a log line (``redact``). psycopg is imported here only, on first use.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from holynb.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["DATABASE_ENV", "Database", "database_url", "redact"]

DATABASE_ENV = "HOLYNB_DATABASE_URL"
CONNECT_TIMEOUT_S = 5
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)([^@]*)(@)")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def database_url(database: str | None) -> str | None:
    """The database a session uses: ``database``, else ``HOLYNB_DATABASE_URL``, else None
    (``""``: none, whatever the environment says)."""
    if database is None:
        database = os.environ.get(DATABASE_ENV, "").strip() or None
    return database or None


def redact(text: str, password: str | None = None) -> str:
    """``text`` with any password in it replaced by ``***`` (a URL's, ``password=...``, and
    ``password`` itself wherever it appears)."""
    text = _PASSWORD_IN_URL.sub(r"\1***\3", text)
    text = _PASSWORD_KV.sub(r"\1***", text)
    if password:
        text = text.replace(password, "***")
    return text


class Database:
    """A team's PostgreSQL database, as one process uses it.

    >>> db = Database.of("postgresql://alice:pw@db.internal/holynb")
    >>> db.where
    'db.internal:5432/holynb'
    >>> with db.connection() as conn: conn.execute("SELECT 1")
    """

    _open: ClassVar[dict[tuple[str, int], Database]] = {}
    _open_lock = threading.Lock()

    def __init__(self, url: str, *, connect_timeout: float | None = None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(
                "database must be a PostgreSQL URL such as postgresql://user:pw@host/holynb."
            )
        self._url = url.strip()
        self._password: str | None = None
        self.host, self.port, self.dbname, self.user = "?", "5432", "?", "?"
        self._parse()
        self.connect_timeout = connect_timeout or CONNECT_TIMEOUT_S
        self._pool: Any = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, url: str) -> Database:
        """This process's ``Database`` for ``url`` (one pool per URL and process)."""
        key = (url.strip(), os.getpid())
        with cls._open_lock:
            found = cls._open.get(key)
            if found is None:
                found = cls._open[key] = cls(url)
            return found

    @classmethod
    def close_all(cls) -> None:
        """Close every pool this process opened (e.g. before the server goes away)."""
        with cls._open_lock:
            opened = list(cls._open.values())
        for db in opened:
            db.close()

    def _parse(self) -> None:
        if not self._url.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(
                f"database must be a URL starting with postgresql://, got "
                f"{redact(self._url)!r}: e.g. postgresql://user:pw@host:5432/holynb."
            )
        from urllib.parse import unquote, urlsplit

        try:
            parts = urlsplit(self._url)
            port = parts.port
        except ValueError as err:
            raise ConfigurationError(
                f"database URL {redact(self._url)!r} cannot be read ({redact(str(err))}): "
                "write it as postgresql://user:pw@host:5432/holynb."
            ) from None
        self._password = unquote(parts.password) if parts.password else None
        self.host = parts.hostname or "localhost"
        self.port = str(port or 5432)
        self.dbname = parts.path.lstrip("/") or (parts.username or "?")
        self.user = unquote(parts.username) if parts.username else "?"

    @property
    def where(self) -> str:
        """``host:port/database``: how messages name this database (no user, no password)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    # -- connections ---------------------------------------------------------------------------

    def _failure(self, err: BaseException, doing: str = "connect to") -> StoreError:
        import psycopg

        reason = redact(str(err).strip().replace("\n", " "), self._password)
        hint = (
            "Check that the server is up, and the URL's host, port, database, user and "
            "password (HOLYNB_DATABASE_URL or database=)."
            if isinstance(err, psycopg.OperationalError)
            else "Nothing of this request was changed in it."
        )
        return StoreError(
            f"holynb could not {doing} the team database {self.where} (user {self.user!r}): "
            f"{reason}. {hint}"
        )

    def _conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self._url, connect_timeout=max(1, round(self.connect_timeout)))

    def _start(self) -> Any:
        import psycopg
        from psycopg_pool import ConnectionPool

        from holynb.team.schema import migrate

        conninfo = self._conninfo()
        try:  # one plain connection first: its error says why (a pool's says "timeout")
            with psycopg.connect(conninfo, autocommit=True) as conn:
                migrate(conn, self.where)
        except psycopg.Error as err:
            raise self._failure(err) from None
        pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=16,
            kwargs={"autocommit": True},
            timeout=self.connect_timeout,
            name=f"holynb {self.where}",
            open=False,
        )
        pool.open(wait=False)
        return pool

    def probe(self) -> None:
        """Connect once, outside the pool (``connect_timeout``); ``StoreError`` if it fails."""
        import psycopg

        try:
            with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as err:
            raise self._failure(err) from None

    def ensure(self) -> Database:
        """Connect and migrate now (else on first use); ``self``. Raises ``StoreError``."""
        with self._lock:
            if self._pool is None:
                self._pool = self._start()
        return self

    @contextlib.contextmanager
    def connection(self, doing: str = "use") -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit; ``with conn.transaction():`` for more than one
        statement); psycopg's errors become ``StoreError`` naming this database."""
        import psycopg

        pool = self.ensure()._pool
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as err:
            raise self._failure(err, doing) from None

    def close(self) -> None:
        """Close the pool (it opens again on next use)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
            self._pool = None
